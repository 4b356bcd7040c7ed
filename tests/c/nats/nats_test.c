/* Tests for core/nats against a real nats-server with JetStream (tests/services/nats.sh):
 * core queue subscriptions, JetStream publish acknowledgements and de-duplication, pull
 * consumers that fetch only what was asked for, ack/nak/redelivery counts, and a close that
 * keeps the durable consumer (and what it has not acknowledged) for the next connection.
 * Under scripts/test.sh the server is the run's shared one (AUTOPGO_SERVICES_DIR), so subjects
 * and streams carry this process's PID; run on its own, the test starts and stops a server. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../test.h"
#include "nats.h"

#define MAXMSG 128

typedef struct {
    int msgs;
    natsMsg *held[MAXMSG];
    void *sub_of[MAXMSG];
    int pubacks, puback_errors, duplicates;
    uint64_t last_seq;
    int closed;
    int fetch_errors;
    int stopped;
} state;

static void on_msg(void *ud, void *sub_opaque, natsMsg *m)
{
    state *s = ud;
    if (s->msgs < MAXMSG) {
        s->held[s->msgs] = m;
        s->sub_of[s->msgs] = sub_opaque;
    } else {
        natsMsg_Destroy(m);
    }
    s->msgs++;
}

static void on_puback(void *ud, void *opaque, const char *err, uint64_t seq, int duplicate)
{
    state *s = ud;
    (void)opaque;
    if (err) {
        fprintf(stderr, "puback error: %s\n", err);
        s->puback_errors++;
        return;
    }
    s->pubacks++;
    s->duplicates += duplicate;
    s->last_seq = seq;
}

static void on_event(void *ud, ap_nats_event ev, const char *text)
{
    (void)ud;
    fprintf(stderr, "nats event %d: %s\n", (int)ev, text ? text : "");
}

static void on_fetch_error(void *ud, void *sub_opaque, const char *err)
{
    state *s = ud;
    (void)sub_opaque;
    fprintf(stderr, "fetch error: %s\n", err);
    s->fetch_errors++;
}

static void on_stopped(void *ud, void *sub_opaque)
{
    (void)sub_opaque;
    ((state *)ud)->stopped++;
}

static void on_closed(void *ud)
{
    ((state *)ud)->closed = 1;
}

static const ap_nats_handlers handlers = {on_msg,         on_puback,  on_event,
                                          on_fetch_error, on_stopped, on_closed};

static int64_t deliveries(natsMsg *m)
{
    int64_t d;
    uint64_t seq;
    ap_nats_msg_meta(m, &d, &seq);
    return d;
}

static uv_loop_t loop;
static char url[512];
/* subjects and streams of this process only: the server may be shared */
static char core_subject[64], events_stream[64], events_subject[64], expiry_stream[64],
    expiry_subject[64];

static void on_tick(uv_timer_t *t)
{
    (void)t;
}

static int run_until(const int *flag, int want, int timeout_ms)
{
    uv_timer_t tick;
    uv_timer_init(&loop, &tick);
    uv_timer_start(&tick, on_tick, 10, 10);
    uint64_t deadline = uv_now(&loop) + (uint64_t)timeout_ms;
    while (*flag < want && uv_now(&loop) < deadline) uv_run(&loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&tick, NULL);
    uv_run(&loop, UV_RUN_NOWAIT);
    return *flag >= want;
}

static void release(state *s)
{
    for (int i = 0; i < s->msgs && i < MAXMSG; i++) {
        natsMsg_Destroy(s->held[i]);
        s->held[i] = NULL;
    }
}

static ap_nats *connect_new(state *s)
{
    char err[256];
    ap_nats *n = ap_nats_new(&loop, &handlers, s, err, sizeof err);
    CHECK(n != NULL);
    /* Blocking: the bus runs this on the thread pool; here the test thread waits. */
    if (ap_nats_connect(n, url, "nats_test", 5000, err, sizeof err) != 0) {
        fprintf(stderr, "connect: %s\n", err);
        CHECK(0);
    }
    return n;
}

static void close_and_free(ap_nats *n, state *s)
{
    release(s);
    ap_nats_close(n);
    CHECK(run_until(&s->closed, 1, 20000));
    ap_nats_free(n);
}

static void test_connect_failure(void)
{
    char err[256];
    state s = {0};
    ap_nats *n = ap_nats_new(&loop, &handlers, &s, err, sizeof err);
    CHECK(ap_nats_connect(n, "nats://127.0.0.1:1", "x", 2000, err, sizeof err) != 0);
    CHECK_STR(err, "No server available for connection");
    close_and_free(n, &s);
}

static void test_core_queue_group(void)
{
    state s = {0};
    ap_nats *n = connect_new(&s);
    char err[256];
    int a = 1, b = 2;
    CHECK(ap_nats_subscribe(n, core_subject, "workers", &a, err, sizeof err) != NULL);
    CHECK(ap_nats_subscribe(n, core_subject, "workers", &b, err, sizeof err) != NULL);
    state ps = {0};
    ap_nats *p = connect_new(&ps);
    /* the subscriptions must reach the server before anything is published */
    uv_sleep(200);
    for (int i = 0; i < 20; i++) {
        char body[16];
        snprintf(body, sizeof body, "m%d", i);
        CHECK(ap_nats_publish(p, core_subject, "app-1", body, strlen(body), err, sizeof err) == 0);
    }
    CHECK(run_until(&s.msgs, 20, 5000));
    run_until(&s.msgs, 21, 300);
    CHECK(s.msgs == 20); /* each message once across the queue group */
    int na = 0;
    for (int i = 0; i < s.msgs; i++) na += s.sub_of[i] == &a;
    CHECK(na > 0 && na < 20);
    const char *key = ap_nats_msg_key(s.held[0]);
    CHECK(key != NULL && strcmp(key, "app-1") == 0);
    CHECK(deliveries(s.held[0]) == 0);
    close_and_free(p, &ps);
    close_and_free(n, &s);
}

static void test_jetstream(void)
{
    state s = {0};
    ap_nats *n = connect_new(&s);
    char err[256];
    CHECK(ap_nats_ensure_stream(n, events_stream, events_subject, 0, 120000, err, sizeof err) == 0);
    CHECK(ap_nats_ensure_stream(n, events_stream, events_subject, 0, 120000, err, sizeof err) == 0);
    for (int i = 0; i < 10; i++) {
        char body[16], id[16];
        snprintf(body, sizeof body, "j%d", i);
        snprintf(id, sizeof id, "id-%d", i);
        CHECK(ap_nats_js_publish(n, events_subject, "app", id, body, strlen(body), 5000, NULL, err,
                                 sizeof err) == 0);
    }
    CHECK(run_until(&s.pubacks, 10, 5000));
    CHECK(s.last_seq == 10);
    /* the same message id again is recognised as a duplicate and not stored twice */
    CHECK(ap_nats_js_publish(n, events_subject, "app", "id-3", "j3", 2, 5000, NULL, err,
                             sizeof err) == 0);
    CHECK(run_until(&s.pubacks, 11, 5000));
    CHECK(s.duplicates == 1);

    int tag = 7;
    ap_nats_sub *sub = ap_nats_pull_subscribe(n, events_stream, events_subject, "workers", 30000,
                                              1000, &tag, err, sizeof err);
    CHECK(sub != NULL);
    if (!sub) fprintf(stderr, "pull subscribe: %s\n", err);
    /* nothing arrives until asked for, then only as much as asked for */
    run_until(&s.msgs, 1, 300);
    CHECK(s.msgs == 0);
    ap_nats_sub_want(sub, 4);
    CHECK(run_until(&s.msgs, 4, 5000));
    run_until(&s.msgs, 5, 1200);
    CHECK(s.msgs == 4);
    CHECK(strncmp(natsMsg_GetData(s.held[0]), "j0", 2) == 0);
    CHECK(deliveries(s.held[0]) == 1);
    {
        int64_t d;
        uint64_t seq;
        ap_nats_msg_meta(s.held[1], &d, &seq);
        CHECK(seq == 2);
    }
    /* ack the first three; nak the fourth with a delay: it comes back, counted */
    for (int i = 0; i < 3; i++)
        CHECK(ap_nats_msg_ack(s.held[i], AP_NATS_ACK, 0, err, sizeof err) == 0);
    CHECK(ap_nats_msg_ack(s.held[3], AP_NATS_PROGRESS, 0, err, sizeof err) == 0);
    CHECK(ap_nats_msg_ack(s.held[3], AP_NATS_NAK, 200, err, sizeof err) == 0);
    ap_nats_sub_want(sub, 20);
    CHECK(run_until(&s.msgs, 11, 5000));
    int redelivered = 0;
    for (int i = 4; i < s.msgs; i++) {
        if (strncmp(natsMsg_GetData(s.held[i]), "j3", 2) == 0) {
            redelivered++;
            CHECK(deliveries(s.held[i]) == 2);
        }
    }
    CHECK(redelivered == 1);
    /* ack j4..j6 and hand the rest back, as the bus does at close: first stop fetching, so
     * that what is handed back cannot go to a pull request of ours still open at the server */
    ap_nats_sub_stop(sub);
    CHECK(run_until(&s.stopped, 1, 5000));
    for (int i = 4; i < s.msgs; i++) {
        const char *d = natsMsg_GetData(s.held[i]);
        int done = strncmp(d, "j4", 2) == 0 || strncmp(d, "j5", 2) == 0 || strncmp(d, "j6", 2) == 0;
        CHECK(ap_nats_msg_ack(s.held[i], done ? AP_NATS_ACK : AP_NATS_NAK, 0, err, sizeof err) ==
              0);
    }
    close_and_free(n, &s);

    /* The durable survives the close: a new connection gets exactly what was handed back. */
    state s2 = {0};
    ap_nats *n2 = connect_new(&s2);
    ap_nats_sub *sub2 = ap_nats_pull_subscribe(n2, events_stream, events_subject, "workers", 30000,
                                               1000, &tag, err, sizeof err);
    CHECK(sub2 != NULL);
    if (sub2) ap_nats_sub_want(sub2, 20);
    CHECK(run_until(&s2.msgs, 4, 10000));
    run_until(&s2.msgs, 5, 1500);
    CHECK(s2.msgs == 4); /* j3, j7, j8, j9 */
    for (int i = 0; i < s2.msgs; i++) {
        const char *d = natsMsg_GetData(s2.held[i]);
        CHECK(strncmp(d, "j3", 2) == 0 || strncmp(d, "j7", 2) == 0 || strncmp(d, "j8", 2) == 0 ||
              strncmp(d, "j9", 2) == 0);
        CHECK(deliveries(s2.held[i]) >= 2);
        CHECK(ap_nats_msg_ack(s2.held[i], AP_NATS_TERM, 0, err, sizeof err) == 0);
    }
    close_and_free(n2, &s2);
}

static void test_ack_wait_expiry(void)
{
    state s = {0};
    ap_nats *n = connect_new(&s);
    char err[256];
    CHECK(ap_nats_ensure_stream(n, expiry_stream, expiry_subject, 0, 120000, err, sizeof err) == 0);
    CHECK(ap_nats_js_publish(n, expiry_subject, NULL, NULL, "x", 1, 5000, NULL, err, sizeof err) ==
          0);
    CHECK(run_until(&s.pubacks, 1, 5000));
    ap_nats_sub *sub = ap_nats_pull_subscribe(n, expiry_stream, expiry_subject, "slow", 1000, 1000,
                                              NULL, err, sizeof err);
    CHECK(sub != NULL);
    if (!sub) return;
    ap_nats_sub_want(sub, 2);
    CHECK(run_until(&s.msgs, 1, 5000));
    /* never settled: after the ack wait (1 s) the server hands it out again */
    CHECK(run_until(&s.msgs, 2, 5000));
    CHECK(deliveries(s.held[1]) == 2);
    CHECK(ap_nats_msg_ack(s.held[1], AP_NATS_ACK, 0, err, sizeof err) == 0);
    close_and_free(n, &s);
}

/* A server this test started itself is stopped by PID even when the test dies (an assertion, a
 * sanitizer abort). */
static volatile pid_t server_pid;

static void stop_server(void)
{
    if (server_pid > 0) kill(server_pid, SIGTERM);
    server_pid = 0;
}

static void on_fatal(int sig)
{
    stop_server();
    signal(sig, SIG_DFL);
    raise(sig);
}

static void remember_server(const char *dir)
{
    char path[600];
    snprintf(path, sizeof path, "%s/nats/pids", dir);
    FILE *f = fopen(path, "r");
    int pid = 0;
    if (f && fscanf(f, "%d", &pid) == 1) server_pid = pid;
    if (f) fclose(f);
    atexit(stop_server);
    int sigs[] = {SIGABRT, SIGSEGV, SIGBUS, SIGTERM, SIGINT};
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) signal(sigs[i], on_fatal);
}

int main(void)
{
    /* the run's services directory, or one of our own */
    char dir[512] = "/tmp/autopgo-nats-test-XXXXXX";
    const char *shared = getenv("AUTOPGO_SERVICES_DIR");
    int own = shared == NULL || shared[0] == '\0';
    if (own) {
        if (mkdtemp(dir) == NULL) return 1;
    } else {
        snprintf(dir, sizeof dir, "%s", shared);
    }
    int pid = (int)getpid();
    snprintf(core_subject, sizeof core_subject, "core.test.%d", pid);
    snprintf(events_stream, sizeof events_stream, "EVENTS_%d", pid);
    snprintf(events_subject, sizeof events_subject, "events.test.%d", pid);
    snprintf(expiry_stream, sizeof expiry_stream, "EXPIRY_%d", pid);
    snprintf(expiry_subject, sizeof expiry_subject, "expiry.test.%d", pid);

    char cmd[1400];
    snprintf(cmd, sizeof cmd, "AUTOPGO_SERVICES_DIR='%s' '%s/tests/services/nats.sh' start", dir,
             AP_SOURCE_DIR);
    FILE *p = popen(cmd, "r");
    char line[512];
    while (p && fgets(line, sizeof line, p)) {
        if (strncmp(line, "NATS_SERVER_URL=", 16) == 0) {
            snprintf(url, sizeof url, "%s", line + 16);
            url[strcspn(url, "\n")] = '\0';
        }
    }
    if (p == NULL || pclose(p) != 0 || url[0] == '\0') {
        fprintf(stderr, "cannot start nats-server\n");
        return 1;
    }
    if (own) remember_server(dir);
    uv_loop_init(&loop);

    RUN(test_connect_failure);
    RUN(test_core_queue_group);
    RUN(test_jetstream);
    RUN(test_ack_wait_expiry);

    uv_run(&loop, UV_RUN_NOWAIT);
    CHECK(uv_loop_close(&loop) == 0);
    if (own) {
        snprintf(cmd, sizeof cmd,
                 "AUTOPGO_SERVICES_DIR='%s' '%s/tests/services/nats.sh' stop && rm -rf '%s'", dir,
                 AP_SOURCE_DIR, dir);
        if (system(cmd) != 0) fprintf(stderr, "could not stop nats-server\n");
        server_pid = 0;
    }
    nats_Close();
    TEST_MAIN_END();
}
