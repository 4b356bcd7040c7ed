/* Tests for core/redis against real redis-server processes (tests/services/redis.sh): pipelined
 * replies in order, large values, TLS with AUTH, named TLS failures, a connection the server
 * drops, a server silent past the timeout. */
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>
#include <uv.h>

#include "../test.h"
#include "redis.h"

static uv_loop_t loop;
static int plain_port, tls_port;
static char password[800], ca_file[800], other_ca_file[800];

typedef struct {
    int connected, failed;
    char code[32], msg[600];
    int replies;
    uint64_t tags[256];
    int types[256];
    char strs[256][64];
    size_t lens[256];
    char err_code[32], err_msg[600];
    int errors;
} state;

static void on_connect(ap_redis *r, void *ud, const char *code, const char *msg)
{
    state *s = ud;
    (void)r;
    if (code) {
        s->failed = 1;
        snprintf(s->code, sizeof s->code, "%s", code);
        snprintf(s->msg, sizeof s->msg, "%s", msg);
    } else {
        s->connected = 1;
    }
}

static void on_reply(ap_redis *r, void *ud, uint64_t tag, const redisReply *reply, const char *code,
                     const char *msg)
{
    state *s = ud;
    (void)r;
    int i = s->replies++;
    if (i >= 256) return;
    s->tags[i] = tag;
    if (reply == NULL) {
        s->types[i] = -1;
        s->errors++;
        snprintf(s->err_code, sizeof s->err_code, "%s", code);
        snprintf(s->err_msg, sizeof s->err_msg, "%s", msg);
        return;
    }
    s->types[i] = reply->type;
    s->lens[i] = reply->len;
    if (reply->str) snprintf(s->strs[i], sizeof s->strs[i], "%.*s", (int)reply->len, reply->str);
    if (reply->type == REDIS_REPLY_INTEGER)
        snprintf(s->strs[i], sizeof s->strs[i], "%lld", reply->integer);
}

static int run_until(const int *flag, int want, int ms)
{
    uint64_t end = uv_now(&loop) + (uint64_t)ms;
    while (*flag < want && uv_now(&loop) < end) uv_run(&loop, UV_RUN_ONCE);
    return *flag >= want;
}

static int done_connecting(state *s, int ms)
{
    uint64_t end = uv_now(&loop) + (uint64_t)ms;
    while (!s->connected && !s->failed && uv_now(&loop) < end) uv_run(&loop, UV_RUN_ONCE);
    return s->connected;
}

static int cmd(ap_redis *r, uint64_t tag, int argc, const char **argv)
{
    size_t lens[8];
    for (int i = 0; i < argc; i++) lens[i] = strlen(argv[i]);
    return ap_redis_command(r, argc, argv, lens, tag);
}

static ap_redis *connect_to(state *s, int port, int tls, const char *ca, const char *name,
                            unsigned ms)
{
    memset(s, 0, sizeof *s);
    ap_redis_opts o = {.host = "127.0.0.1",
                       .port = port,
                       .tls = tls,
                       .ca_file = ca,
                       .server_name = name,
                       .verify = 1,
                       .timeout_ms = ms};
    char msg[512];
    ap_redis *r = ap_redis_connect(&loop, &o, on_connect, on_reply, s, msg, sizeof msg);
    if (r == NULL) fprintf(stderr, "connect: %s\n", msg);
    return r;
}

/* Drains the loop until the closed connection's handles are gone (ASan checks the frees). */
static void close_and_drain(ap_redis *r)
{
    ap_redis_close(r, "CLOSED", "test");
    for (int i = 0; i < 10; i++) uv_run(&loop, UV_RUN_NOWAIT);
}

static void test_plain_pipeline(void)
{
    state s;
    ap_redis *r = connect_to(&s, plain_port, 0, NULL, NULL, 5000);
    CHECK(r != NULL);
    if (!r) return;
    CHECK(done_connecting(&s, 5000));
    char key[64], val[64];
    snprintf(key, sizeof key, "c-test-%d", (int)getpid());
    for (int i = 0; i < 50; i++) {
        snprintf(val, sizeof val, "v%d", i);
        const char *set[] = {"SET", key, val};
        const char *get[] = {"GET", key};
        CHECK(cmd(r, (uint64_t)(2 * i), 3, set) == 0);
        CHECK(cmd(r, (uint64_t)(2 * i + 1), 2, get) == 0);
    }
    const char *bogus[] = {"NO-SUCH-COMMAND"};
    CHECK(cmd(r, 100, 1, bogus) == 0);
    CHECK(run_until(&s.replies, 101, 5000));
    int in_order = 1, values = 1;
    for (int i = 0; i < 100; i++) {
        if (s.tags[i] != (uint64_t)i) in_order = 0;
        if (i % 2 == 1) {
            snprintf(val, sizeof val, "v%d", i / 2);
            if (s.types[i] != REDIS_REPLY_STRING || strcmp(s.strs[i], val) != 0) values = 0;
        }
    }
    CHECK(in_order);
    CHECK(values);
    CHECK(s.types[100] == REDIS_REPLY_ERROR);
    CHECK(ap_redis_usable(r));

    /* 3 MB in and out: written in pieces, read across many socket reads */
    size_t big = 3 * 1024 * 1024 + 7;
    char *data = malloc(big);
    for (size_t i = 0; i < big; i++) data[i] = (char)(i * 31 % 251);
    const char *argv[] = {"SET", key, data};
    size_t lens[] = {3, strlen(key), big};
    CHECK(ap_redis_command(r, 3, argv, lens, 200) == 0);
    CHECK(ap_redis_write_queue(r) > 0);
    const char *get[] = {"STRLEN", key};
    CHECK(cmd(r, 201, 2, get) == 0);
    const char *del[] = {"DEL", key};
    CHECK(cmd(r, 202, 2, del) == 0);
    CHECK(run_until(&s.replies, 104, 10000));
    char want[32];
    snprintf(want, sizeof want, "%zu", big);
    CHECK_STR(s.strs[102], want);
    CHECK(s.errors == 0);
    free(data);

    /* pending commands at close get no callback after ap_redis_close returns */
    const char *ping[] = {"PING"};
    CHECK(cmd(r, 300, 1, ping) == 0);
    int before = s.replies;
    close_and_drain(r);
    CHECK(s.replies == before);
}

static void test_server_drops_connection(void)
{
    state s;
    ap_redis *r = connect_to(&s, plain_port, 0, NULL, NULL, 5000);
    CHECK(r != NULL);
    if (!r) return;
    CHECK(done_connecting(&s, 5000));
    const char *quit[] = {"QUIT"};
    const char *ping[] = {"PING"};
    CHECK(cmd(r, 1, 1, quit) == 0);
    CHECK(cmd(r, 2, 1, ping) == 0);
    CHECK(run_until(&s.replies, 2, 5000));
    CHECK(s.types[0] == REDIS_REPLY_STATUS);
    CHECK(s.types[1] == -1);
    CHECK_STR(s.err_code, "UNAVAILABLE");
    CHECK(strstr(s.err_msg, "closed the connection") != NULL);
    CHECK(!ap_redis_usable(r));
    CHECK(cmd(r, 3, 1, ping) == -1);
    close_and_drain(r);
}

static void test_silence_times_out(void)
{
    state s;
    ap_redis *r = connect_to(&s, plain_port, 0, NULL, NULL, 300);
    CHECK(r != NULL);
    if (!r) return;
    CHECK(done_connecting(&s, 5000));
    /* the server holds the reply for 2 s: longer than the 300 ms the connection allows */
    char key[64];
    snprintf(key, sizeof key, "c-test-empty-%d", (int)getpid());
    const char *blpop[] = {"BLPOP", key, "2"};
    CHECK(cmd(r, 1, 3, blpop) == 0);
    CHECK(run_until(&s.replies, 1, 5000));
    CHECK(s.types[0] == -1);
    CHECK_STR(s.err_code, "TIMEOUT");
    CHECK(strstr(s.err_msg, "no reply") != NULL);
    CHECK(!ap_redis_usable(r));
    close_and_drain(r);
}

static void test_tls_with_auth(void)
{
    state s;
    ap_redis *r = connect_to(&s, tls_port, 1, ca_file, NULL, 5000);
    CHECK(r != NULL);
    if (!r) return;
    CHECK(done_connecting(&s, 5000));
    const char *ping[] = {"PING"};
    const char *auth[] = {"AUTH", password};
    CHECK(cmd(r, 1, 1, ping) == 0);
    CHECK(cmd(r, 2, 2, auth) == 0);
    CHECK(cmd(r, 3, 1, ping) == 0);
    CHECK(run_until(&s.replies, 3, 5000));
    CHECK(s.types[0] == REDIS_REPLY_ERROR);
    CHECK(strncmp(s.strs[0], "NOAUTH", 6) == 0);
    CHECK_STR(s.strs[1], "OK");
    CHECK_STR(s.strs[2], "PONG");
    close_and_drain(r);
}

static void expect_failure(int port, int tls, const char *ca, const char *name, const char *code,
                           const char *text)
{
    state s;
    ap_redis *r = connect_to(&s, port, tls, ca, name, 1500);
    CHECK(r != NULL);
    if (!r) return;
    CHECK(!done_connecting(&s, 5000));
    CHECK(s.failed);
    CHECK_STR(s.code, code);
    if (strstr(s.msg, text) == NULL) {
        fprintf(stderr, "\"%s\" does not say \"%s\"\n", s.msg, text);
        ap_test_failures++;
    }
    close_and_drain(r);
}

static void test_connect_failures(void)
{
    expect_failure(tls_port, 1, other_ca_file, NULL, "TLS", "certificate verification failed");
    expect_failure(tls_port, 1, ca_file, "redis.example", "TLS", "hostname mismatch");
    expect_failure(plain_port, 1, ca_file, NULL, "TLS", "TLS");
    expect_failure(1, 0, NULL, NULL, "UNAVAILABLE", "connection refused");
}

static char services_dir[512] = "/tmp/autopgo-redis-test-XXXXXX";
static int own_dir;

static void stop_service(void)
{
    if (!own_dir) return;
    own_dir = 0;
    char cmd_line[1400];
    snprintf(cmd_line, sizeof cmd_line,
             "AUTOPGO_SERVICES_DIR='%s' '%s/tests/services/redis.sh' stop && rm -rf '%s'",
             services_dir, AP_SOURCE_DIR, services_dir);
    if (system(cmd_line) != 0) fprintf(stderr, "could not stop redis-server\n");
}

static void on_fatal(int sig)
{
    stop_service();
    signal(sig, SIG_DFL);
    raise(sig);
}

int main(void)
{
    const char *shared = getenv("AUTOPGO_SERVICES_DIR");
    own_dir = shared == NULL || shared[0] == '\0';
    if (own_dir) {
        if (mkdtemp(services_dir) == NULL) return 1;
        atexit(stop_service);
        int sigs[] = {SIGABRT, SIGSEGV, SIGBUS, SIGTERM, SIGINT};
        for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) signal(sigs[i], on_fatal);
    } else {
        snprintf(services_dir, sizeof services_dir, "%s", shared);
    }
    char cmd_line[1400];
    snprintf(cmd_line, sizeof cmd_line,
             "AUTOPGO_SERVICES_DIR='%s' '%s/tests/services/redis.sh' start", services_dir,
             AP_SOURCE_DIR);
    FILE *p = popen(cmd_line, "r");
    char line[800];
    while (p && fgets(line, sizeof line, p)) {
        line[strcspn(line, "\n")] = '\0';
        if (strncmp(line, "REDIS_PLAIN_PORT=", 17) == 0) plain_port = atoi(line + 17);
        if (strncmp(line, "REDIS_TLS_PORT=", 15) == 0) tls_port = atoi(line + 15);
        if (strncmp(line, "REDIS_PASSWORD=", 15) == 0)
            snprintf(password, sizeof password, "%s", line + 15);
        if (strncmp(line, "REDIS_CA_FILE=", 14) == 0)
            snprintf(ca_file, sizeof ca_file, "%s", line + 14);
        if (strncmp(line, "REDIS_OTHER_CA_FILE=", 20) == 0)
            snprintf(other_ca_file, sizeof other_ca_file, "%s", line + 20);
    }
    if (p == NULL || pclose(p) != 0 || plain_port == 0 || tls_port == 0) {
        fprintf(stderr, "cannot start redis-server\n");
        return 1;
    }
    uv_loop_init(&loop);

    RUN(test_plain_pipeline);
    RUN(test_server_drops_connection);
    RUN(test_silence_times_out);
    RUN(test_tls_with_auth);
    RUN(test_connect_failures);

    for (int i = 0; i < 10; i++) uv_run(&loop, UV_RUN_NOWAIT);
    CHECK(uv_loop_close(&loop) == 0);
    stop_service();
    TEST_MAIN_END();
}
