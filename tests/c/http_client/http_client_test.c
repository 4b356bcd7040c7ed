/* Tests core/http_client/http_client.c against a tiny libuv HTTP server in this file: buffered
 * and streamed responses with acknowledgements, memory/file/streamed request bodies, every
 * failure result, cancellation and closing the client with requests in flight. Run under
 * ASan with leak detection, so every path must free what it allocated. */
#define _GNU_SOURCE /* strcasestr */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../test.h"
#include "http_client.h"

/* ---- the server ---------------------------------------------------------------------------- */

#define BIG_SIZE (4 * 1024 * 1024)

typedef struct {
    uv_tcp_t tcp;
    char *buf;
    size_t len, cap;
    int responded;
} conn;

static uv_loop_t *loop;
static uv_tcp_t server;
static int port;
static char *big_body;

static void on_conn_closed(uv_handle_t *h)
{
    conn *c = h->data;
    free(c->buf);
    free(c);
}

typedef struct {
    uv_write_t w;
    conn *c;
    char head[512];
} write_req;

static void on_written(uv_write_t *w, int status)
{
    (void)status;
    write_req *wr = w->data;
    conn *c = wr->c;
    free(wr);
    if (!uv_is_closing((uv_handle_t *)&c->tcp)) uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
}

/* The body must outlive the write (it is static or lives in the connection's buffer). */
static void respond(conn *c, int status, const char *extra, const char *body, size_t len)
{
    write_req *wr = malloc(sizeof *wr);
    wr->w.data = wr;
    wr->c = c;
    snprintf(wr->head, sizeof wr->head,
             "HTTP/1.1 %d X\r\n%sContent-Length: %zu\r\nConnection: close\r\n\r\n", status, extra,
             len);
    uv_buf_t bufs[2] = {uv_buf_init(wr->head, (unsigned)strlen(wr->head)),
                        uv_buf_init((char *)body, (unsigned)len)};
    uv_write(&wr->w, (uv_stream_t *)&c->tcp, bufs, len ? 2 : 1, on_written);
}

/* Decodes a chunked body in place; returns its length. */
static size_t dechunk(char *p, size_t len)
{
    size_t in = 0, out = 0;
    while (in < len) {
        size_t n = strtoul(p + in, NULL, 16);
        char *eol = strstr(p + in, "\r\n");
        if (eol == NULL || n == 0) break;
        in = (size_t)(eol - p) + 2;
        memmove(p + out, p + in, n);
        out += n;
        in += n + 2;
    }
    return out;
}

static void handle(conn *c, char *head_end)
{
    char *path = strchr(c->buf, ' ') + 1;
    char *body = head_end + 4;
    size_t body_len = c->len - (size_t)(body - c->buf);
    if (strstr(c->buf, "Transfer-Encoding: chunked")) body_len = dechunk(body, body_len);
    c->responded = 1;
    if (strncmp(path, "/hello ", 7) == 0) {
        respond(c, 200, "X-Multi: a\r\nX-Multi: b\r\nContent-Type: text/plain\r\n", "hello", 5);
    } else if (strncmp(path, "/big ", 5) == 0) {
        respond(c, 200, "", big_body, BIG_SIZE);
    } else if (strncmp(path, "/echo ", 6) == 0) {
        /* the body lives in c->buf, which outlives the write */
        respond(c, 201, "", body, body_len);
    } else if (strncmp(path, "/silent ", 8) == 0) {
        /* never answers */
    } else {
        respond(c, 404, "", "nope", 4);
    }
}

/* A request is complete when its head is in and, if it has a body, the body too. */
static char *complete(conn *c)
{
    char *end = strstr(c->buf, "\r\n\r\n");
    if (end == NULL) return NULL;
    size_t have = c->len - (size_t)(end + 4 - c->buf);
    char *cl = strcasestr(c->buf, "Content-Length: ");
    if (cl && cl < end) return have >= strtoul(cl + 16, NULL, 10) ? end : NULL;
    if (strstr(c->buf, "Transfer-Encoding: chunked"))
        return have >= 5 && memcmp(c->buf + c->len - 5, "0\r\n\r\n", 5) == 0 ? end : NULL;
    return end;
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    (void)hint;
    conn *c = h->data;
    if (c->cap - c->len < 65537) {
        c->cap = c->cap ? c->cap * 2 : 131072;
        c->buf = realloc(c->buf, c->cap);
    }
    *b = uv_buf_init(c->buf + c->len, (unsigned)(c->cap - c->len - 1));
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    (void)b;
    conn *c = s->data;
    if (n < 0) {
        if (!uv_is_closing((uv_handle_t *)s)) uv_close((uv_handle_t *)s, on_conn_closed);
        return;
    }
    c->len += (size_t)n;
    c->buf[c->len] = 0;
    char *end;
    if (!c->responded && (end = complete(c)) != NULL) handle(c, end);
}

static void on_connection(uv_stream_t *s, int status)
{
    (void)status;
    conn *c = calloc(1, sizeof *c);
    uv_tcp_init(loop, &c->tcp);
    c->tcp.data = c;
    uv_accept(s, (uv_stream_t *)&c->tcp);
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

static void server_start(void)
{
    struct sockaddr_in addr;
    uv_ip4_addr("127.0.0.1", 0, &addr);
    uv_tcp_init(loop, &server);
    uv_tcp_bind(&server, (const struct sockaddr *)&addr, 0);
    uv_listen((uv_stream_t *)&server, 16, on_connection);
    struct sockaddr_in bound;
    int len = sizeof bound;
    uv_tcp_getsockname(&server, (struct sockaddr *)&bound, &len);
    port = ntohs(bound.sin_port);
}

/* At the end only the listener and connections that were never answered are left open. */
static void close_any(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (uv_is_closing(h)) return;
    uv_close(h, h == (uv_handle_t *)&server || h->type != UV_TCP ? NULL : on_conn_closed);
}

/* ---- the owner ----------------------------------------------------------------------------- */

typedef struct {
    ap_http_call_result result;
    int done_calls;
    long status;
    char msg[512];
    char *body;
    size_t body_len;
    char headers[512];
    /* streaming */
    size_t received, max_piece, pieces;
    int defer_ack;
    uv_timer_t ack_timer;
    ap_http_call *req;
    /* streamed request body */
    const char *const *chunks;
    int next_chunk, defer_feed, needs;
    uv_timer_t feed_timer;
} owner;

static void on_done(ap_http_call *r, void *ud, ap_http_call_result res, const char *msg)
{
    owner *o = ud;
    o->done_calls++;
    o->result = res;
    o->status = ap_http_call_status(r);
    snprintf(o->msg, sizeof o->msg, "%s", msg);
    size_t len;
    const char *b = ap_http_call_body(r, &len);
    if (b) {
        o->body = malloc(len + 1);
        memcpy(o->body, b, len);
        o->body[len] = 0;
        o->body_len = len;
    }
    o->headers[0] = 0;
    for (size_t i = 0; i < ap_http_call_header_count(r); i++) {
        const char *n, *v;
        ap_http_call_header(r, i, &n, &v);
        size_t at = strlen(o->headers);
        snprintf(o->headers + at, sizeof o->headers - at, "%s=%s;", n, v);
    }
    o->req = NULL;
}

static void on_ack_timer(uv_timer_t *t)
{
    owner *o = t->data;
    if (o->req) ap_http_call_ack(o->req);
}

static void on_data(ap_http_call *r, void *ud, const char *data, size_t len)
{
    owner *o = ud;
    (void)data;
    o->received += len;
    o->pieces++;
    if (len > o->max_piece) o->max_piece = len;
    if (o->defer_ack)
        uv_timer_start(&o->ack_timer, on_ack_timer, 1, 0); /* a slow consumer */
    else
        ap_http_call_ack(r);
}

static void feed_next(owner *o)
{
    o->needs++;
    const char *c = o->chunks[o->next_chunk];
    if (c == NULL) {
        ap_http_call_feed(o->req, NULL, 0, 1);
    } else {
        o->next_chunk++;
        ap_http_call_feed(o->req, c, strlen(c), 0);
    }
}

static void on_feed_timer(uv_timer_t *t)
{
    owner *o = t->data;
    if (o->req) feed_next(o);
}

static void on_need(ap_http_call *r, void *ud)
{
    (void)r;
    owner *o = ud;
    if (o->defer_feed)
        uv_timer_start(&o->feed_timer, on_feed_timer, 2, 0); /* a producer that takes its time */
    else
        feed_next(o);
}

static const ap_http_call_handlers handlers = {on_data, on_need, on_done};

static void owner_init(owner *o)
{
    memset(o, 0, sizeof *o);
    uv_timer_init(loop, &o->ack_timer);
    uv_timer_init(loop, &o->feed_timer);
    o->ack_timer.data = o->feed_timer.data = o;
}

static void owner_free(owner *o)
{
    uv_close((uv_handle_t *)&o->ack_timer, NULL);
    uv_close((uv_handle_t *)&o->feed_timer, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
    free(o->body);
}

static ap_http_client *client;

static void run_until_done(owner *o)
{
    while (o->done_calls == 0) uv_run(loop, UV_RUN_ONCE);
}

static ap_http_call *start(owner *o, ap_http_call_opts *opts, const char *path)
{
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", port, path);
    opts->url = url;
    char err[256];
    o->req = ap_http_call_start(client, opts, &handlers, o, err, sizeof err);
    if (o->req == NULL) fprintf(stderr, "request failed to start: %s\n", err);
    return o->req;
}

/* ---- tests --------------------------------------------------------------------------------- */

static void test_buffered(void)
{
    owner o;
    owner_init(&o);
    ap_http_call_opts opts = {0};
    CHECK(start(&o, &opts, "/hello") != NULL);
    run_until_done(&o);
    CHECK(o.done_calls == 1);
    CHECK(o.result == AP_HTTP_CALL_OK);
    CHECK(o.status == 200);
    CHECK_STR(o.body, "hello");
    CHECK(strstr(o.headers, "x-multi=a;x-multi=b;") != NULL);
    CHECK(strstr(o.headers, "content-type=text/plain;") != NULL);
    owner_free(&o);
}

static void test_streamed_with_slow_acks(void)
{
    owner o;
    owner_init(&o);
    o.defer_ack = 1;
    ap_http_call_opts opts = {0};
    opts.stream_response = 1;
    CHECK(start(&o, &opts, "/big") != NULL);
    run_until_done(&o);
    CHECK(o.result == AP_HTTP_CALL_OK);
    CHECK(o.received == BIG_SIZE);
    CHECK(o.body == NULL);
    /* pieces are bounded by the read-ahead buffer, however slow the consumer */
    CHECK(o.max_piece <= 64 * 1024 + 16 * 1024);
    CHECK(o.pieces >= BIG_SIZE / (80 * 1024));
    owner_free(&o);
}

static void test_bodies(void)
{
    owner o;
    owner_init(&o);
    ap_http_call_opts opts = {0};
    opts.method = "POST";
    opts.body_kind = AP_HTTP_CALL_BODY_MEMORY;
    opts.body = "from memory";
    opts.body_len = 11;
    CHECK(start(&o, &opts, "/echo") != NULL);
    run_until_done(&o);
    CHECK(o.status == 201);
    CHECK_STR(o.body, "from memory");
    owner_free(&o);

    char path[] = "/tmp/autopgo-http-test-XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    CHECK(write(fd, "from a file", 11) == 11);
    close(fd);
    owner_init(&o);
    memset(&opts, 0, sizeof opts);
    opts.method = "PUT";
    opts.body_kind = AP_HTTP_CALL_BODY_FILE;
    opts.body_path = path;
    CHECK(start(&o, &opts, "/echo") != NULL);
    run_until_done(&o);
    CHECK_STR(o.body, "from a file");
    owner_free(&o);
    unlink(path);

    static const char *const chunks[] = {"one,", "", "two,", "three", NULL};
    for (int deferred = 0; deferred < 2; deferred++) {
        owner_init(&o);
        o.chunks = chunks;
        o.defer_feed = deferred;
        memset(&opts, 0, sizeof opts);
        opts.method = "POST";
        opts.body_kind = AP_HTTP_CALL_BODY_STREAM;
        opts.body_length = -1;
        CHECK(start(&o, &opts, "/echo") != NULL);
        run_until_done(&o);
        CHECK(o.result == AP_HTTP_CALL_OK);
        CHECK_STR(o.body, "one,two,three");
        CHECK(o.needs >= 5);
        owner_free(&o);
    }
}

static void test_failures(void)
{
    owner o;
    owner_init(&o);
    ap_http_call_opts opts = {0};
    opts.timeout_ms = 200;
    CHECK(start(&o, &opts, "/silent") != NULL);
    run_until_done(&o);
    CHECK(o.result == AP_HTTP_CALL_TIMEOUT);
    CHECK(strstr(o.msg, "GET http://127.0.0.1:") != NULL);
    owner_free(&o);

    owner_init(&o);
    memset(&opts, 0, sizeof opts);
    opts.max_body = 1000;
    CHECK(start(&o, &opts, "/big") != NULL);
    run_until_done(&o);
    CHECK(o.result == AP_HTTP_CALL_TOO_LARGE);
    CHECK(o.body == NULL || o.body_len == 0 || o.body_len <= 1000);
    owner_free(&o);

    /* a port nothing listens on: bind one, note it, close it */
    uv_tcp_t probe;
    struct sockaddr_in addr, bound;
    int len = sizeof bound;
    uv_ip4_addr("127.0.0.1", 0, &addr);
    uv_tcp_init(loop, &probe);
    uv_tcp_bind(&probe, (const struct sockaddr *)&addr, 0);
    uv_tcp_getsockname(&probe, (struct sockaddr *)&bound, &len);
    uv_close((uv_handle_t *)&probe, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/", ntohs(bound.sin_port));
    owner_init(&o);
    memset(&opts, 0, sizeof opts);
    opts.url = url;
    char err[256];
    o.req = ap_http_call_start(client, &opts, &handlers, &o, err, sizeof err);
    CHECK(o.req != NULL);
    run_until_done(&o);
    CHECK(o.result == AP_HTTP_CALL_UNAVAILABLE);
    owner_free(&o);

    memset(&opts, 0, sizeof opts);
    opts.url = "gopher://x/";
    CHECK(ap_http_call_start(client, &opts, &handlers, &o, err, sizeof err) == NULL);
    CHECK(strstr(err, "only http and https") != NULL);
    opts.url = "http://127.0.0.1/";
    opts.method = "G E T";
    CHECK(ap_http_call_start(client, &opts, &handlers, &o, err, sizeof err) == NULL);
    opts.method = NULL;
    opts.body_kind = AP_HTTP_CALL_BODY_FILE;
    opts.body_path = "/nonexistent/file";
    CHECK(ap_http_call_start(client, &opts, &handlers, &o, err, sizeof err) == NULL);
    CHECK(strstr(err, "/nonexistent/file") != NULL);
    CHECK(ap_http_client_active(client) == 0);
}

static void test_cancel(void)
{
    owner o;
    owner_init(&o);
    ap_http_call_opts opts = {0};
    CHECK(start(&o, &opts, "/silent") != NULL);
    for (int i = 0; i < 5; i++) uv_run(loop, UV_RUN_NOWAIT);
    ap_http_call_cancel(o.req, "stop now");
    ap_http_call_cancel(o.req, "twice is harmless");
    CHECK(o.done_calls == 0); /* on_done comes from the loop, never from inside cancel */
    run_until_done(&o);
    CHECK(o.done_calls == 1);
    CHECK(o.result == AP_HTTP_CALL_CANCELED);
    CHECK_STR(o.msg, "stop now");
    owner_free(&o);
    CHECK(ap_http_client_active(client) == 0);
}

static void test_close_in_flight(void)
{
    ap_http_client *c2 = ap_http_client_new(loop);
    owner a, b;
    owner_init(&a);
    owner_init(&b);
    b.defer_ack = 1;
    char u1[64], u2[64], err[256];
    snprintf(u1, sizeof u1, "http://127.0.0.1:%d/silent", port);
    snprintf(u2, sizeof u2, "http://127.0.0.1:%d/big", port);
    ap_http_call_opts o1 = {0}, o2 = {0};
    o1.url = u1;
    o2.url = u2;
    o2.stream_response = 1;
    a.req = ap_http_call_start(c2, &o1, &handlers, &a, err, sizeof err);
    b.req = ap_http_call_start(c2, &o2, &handlers, &b, err, sizeof err);
    CHECK(a.req && b.req);
    while (b.received == 0) uv_run(loop, UV_RUN_ONCE);
    CHECK(ap_http_client_active(c2) == 2);
    ap_http_client_close(c2);
    CHECK(a.done_calls == 1 && a.result == AP_HTTP_CALL_CANCELED);
    CHECK(b.done_calls == 1 && b.result == AP_HTTP_CALL_CANCELED);
    owner_free(&a);
    owner_free(&b);
    uv_run(loop, UV_RUN_NOWAIT);
}

int main(void)
{
    loop = uv_default_loop();
    big_body = malloc(BIG_SIZE);
    for (size_t i = 0; i < BIG_SIZE; i++) big_body[i] = (char)('a' + i % 26);
    server_start();
    client = ap_http_client_new(loop);
    CHECK(client != NULL);

    RUN(test_buffered);
    RUN(test_streamed_with_slow_acks);
    RUN(test_bodies);
    RUN(test_failures);
    RUN(test_cancel);
    RUN(test_close_in_flight);

    ap_http_client_close(client);
    uv_walk(loop, close_any, NULL);
    uv_run(loop, UV_RUN_DEFAULT);
    CHECK(uv_loop_close(loop) == 0);
    free(big_body);
    TEST_MAIN_END();
}
