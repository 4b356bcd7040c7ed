/* The HTTP/1.1 server: libh2o on the process's libuv loop. h2o parses requests and buffers each
 * body (bounded by max_body, refused with 413 past it); this file accepts connections, hands
 * requests to one callback, streams responses with back-pressure and stops gracefully. */
#include "server.h"

#include <h2o.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

typedef struct {
    uv_tcp_t tcp; /* first: h2o's close callback hands us the handle */
    h2o_socket_t *sock;
    ap_http_server *srv;
    h2o_linklist_t link;
    int read_shut;
} ap_http_conn;

typedef struct {
    h2o_handler_t super;
    ap_http_server *srv;
} ap_http_handler;

typedef struct {
    h2o_filter_t super;
    ap_http_server *srv;
} ap_http_errjson_filter;

struct ap_http_server {
    uv_loop_t *loop;
    uv_tcp_t listener;
    uv_timer_t reaper;
    h2o_globalconf_t config;
    h2o_context_t ctx;
    h2o_accept_ctx_t accept_ctx;
    ap_http_server_config cfg;
    int port;
    h2o_linklist_t conns;
    size_t nconns;
    size_t active;
    size_t too_large; /* requests h2o refused with 413 before any handler saw them */
    int closing;
    int closed;
    int own_response; /* set while our code starts a response: the error filter leaves it alone */
    void (*on_closed)(void *data);
    void *closed_data;
    ap_http_server *next_retired;
};

/* Closed servers: still reachable (so leak checkers stay quiet), never used again. */
static ap_http_server *retired;

struct ap_http_req {
    h2o_generator_t gen;
    h2o_req_t *req; /* NULL once h2o released the request */
    ap_http_server *srv;
    int started;
    int finished;
    void (*on_proceed)(void *cbdata, int ok);
    void *cbdata;
    void (*on_gone)(void *data);
    void *gone_data;
};

const char *ap_http_reason(int status)
{
    switch (status) {
    case 100:
        return "Continue";
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 204:
        return "No Content";
    case 206:
        return "Partial Content";
    case 301:
        return "Moved Permanently";
    case 302:
        return "Found";
    case 304:
        return "Not Modified";
    case 307:
        return "Temporary Redirect";
    case 308:
        return "Permanent Redirect";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 411:
        return "Length Required";
    case 412:
        return "Precondition Failed";
    case 413:
        return "Request Entity Too Large";
    case 415:
        return "Unsupported Media Type";
    case 416:
        return "Range Not Satisfiable";
    case 417:
        return "Expectation Failed";
    case 422:
        return "Unprocessable Entity";
    case 429:
        return "Too Many Requests";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    default:
        return status < 200   ? "Informational"
               : status < 300 ? "OK"
               : status < 400 ? "Redirect"
               : status < 500 ? "Client Error"
                              : "Server Error";
    }
}

/* ---- requests ---------------------------------------------------------------------------- */

static void on_gen_proceed(h2o_generator_t *gen, h2o_req_t *req)
{
    ap_http_req *r = H2O_STRUCT_FROM_MEMBER(ap_http_req, gen, gen);
    void (*cb)(void *, int) = r->on_proceed;
    r->on_proceed = NULL;
    if (cb) cb(r->cbdata, 1);
}

static void on_gen_stop(h2o_generator_t *gen, h2o_req_t *req)
{
    ap_http_req *r = H2O_STRUCT_FROM_MEMBER(ap_http_req, gen, gen);
    void (*cb)(void *, int) = r->on_proceed;
    r->on_proceed = NULL;
    r->finished = 1;
    if (cb) cb(r->cbdata, 0);
}

/* Runs when h2o clears the request's memory pool: after the response went out, or when the
 * connection was lost. */
static void on_req_dispose(void *p)
{
    ap_http_req *r = p;
    r->req = NULL;
    r->finished = 1;
    r->srv->active--;
    void (*cb)(void *, int) = r->on_proceed;
    r->on_proceed = NULL;
    if (cb) cb(r->cbdata, 0);
    if (r->on_gone) r->on_gone(r->gone_data);
}

static int on_req(h2o_handler_t *self, h2o_req_t *req)
{
    ap_http_server *srv = ((ap_http_handler *)self)->srv;
    ap_http_req *r = h2o_mem_alloc_shared(&req->pool, sizeof *r, on_req_dispose);
    memset(r, 0, sizeof *r);
    r->req = req;
    r->srv = srv;
    r->gen.proceed = on_gen_proceed;
    r->gen.stop = on_gen_stop;
    srv->active++;
    srv->cfg.on_request(srv->cfg.data, r);
    return 0;
}

ap_http_str ap_http_req_method(const ap_http_req *r)
{
    if (!r->req) return (ap_http_str){"", 0};
    return (ap_http_str){r->req->method.base, r->req->method.len};
}

ap_http_str ap_http_req_path(const ap_http_req *r)
{
    if (!r->req) return (ap_http_str){"", 0};
    return (ap_http_str){r->req->path.base, r->req->path.len};
}

size_t ap_http_req_header_count(const ap_http_req *r)
{
    return r->req ? r->req->headers.size : 0;
}

int ap_http_req_header(const ap_http_req *r, size_t i, ap_http_str *name, ap_http_str *value)
{
    if (!r->req || i >= r->req->headers.size) return -1;
    const h2o_header_t *h = r->req->headers.entries + i;
    *name = (ap_http_str){h->name->base, h->name->len};
    *value = (ap_http_str){h->value.base, h->value.len};
    return 0;
}

ap_http_str ap_http_req_body(const ap_http_req *r)
{
    if (!r->req || r->req->entity.base == NULL) return (ap_http_str){"", 0};
    return (ap_http_str){r->req->entity.base, r->req->entity.len};
}

int ap_http_req_has_body(const ap_http_req *r)
{
    return r->req && r->req->entity.base != NULL;
}

ap_http_str ap_http_req_authority(const ap_http_req *r)
{
    if (!r->req) return (ap_http_str){"", 0};
    return (ap_http_str){r->req->input.authority.base, r->req->input.authority.len};
}

int ap_http_req_peer(const ap_http_req *r, char *buf, size_t len)
{
    if (!r->req) return -1;
    struct sockaddr_storage ss;
    socklen_t sslen = r->req->conn->callbacks->get_peername(r->req->conn, (struct sockaddr *)&ss);
    if (sslen == 0) return -1;
    char host[64];
    int port = 0;
    if (ss.ss_family == AF_INET) {
        struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
        uv_ip4_name(sin, host, sizeof host);
        port = ntohs(sin->sin_port);
    } else if (ss.ss_family == AF_INET6) {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
        uv_ip6_name(sin6, host, sizeof host);
        port = ntohs(sin6->sin6_port);
    } else {
        return -1;
    }
    snprintf(buf, len, "%s:%d", host, port);
    return 0;
}

void ap_http_req_set_owner(ap_http_req *r, void (*on_gone)(void *data), void *data)
{
    r->on_gone = on_gone;
    r->gone_data = data;
}

int ap_http_req_started(const ap_http_req *r)
{
    return r->started;
}

int ap_http_req_finished(const ap_http_req *r)
{
    return r->finished;
}

static void set_response(ap_http_req *r, int status, const ap_http_str *headers, size_t nheaders)
{
    h2o_req_t *req = r->req;
    req->res.status = status;
    req->res.reason = ap_http_reason(status);
    for (size_t i = 0; i < nheaders; i++) {
        h2o_iovec_t name = h2o_strdup(&req->pool, headers[2 * i].base, headers[2 * i].len);
        h2o_strtolower(name.base, name.len);
        h2o_iovec_t value = h2o_strdup(&req->pool, headers[2 * i + 1].base, headers[2 * i + 1].len);
        h2o_add_header_by_str(&req->pool, &req->res.headers, name.base, name.len, 1, NULL,
                              value.base, value.len);
    }
    /* Once a stop was asked for, no connection goes back to waiting for another request. */
    if (r->srv->closing) req->http1_is_persistent = 0;
}

int ap_http_req_start(ap_http_req *r, int status, const ap_http_str *headers, size_t nheaders,
                      size_t content_length)
{
    if (!r->req || r->started) return -1;
    set_response(r, status, headers, nheaders);
    r->req->res.content_length = content_length;
    r->started = 1;
    r->srv->own_response = 1;
    h2o_start_response(r->req, &r->gen);
    r->srv->own_response = 0;
    return 0;
}

int ap_http_req_send(ap_http_req *r, const char *data, size_t len, int final,
                     void (*on_proceed)(void *cbdata, int ok), void *cbdata)
{
    if (!r->req || !r->started || r->finished || r->on_proceed) return -1;
    h2o_iovec_t buf = h2o_iovec_init(data, len);
    if (final) {
        r->finished = 1;
        /* h2o may release the request before this returns: r is not touched afterwards. */
        h2o_send(r->req, &buf, len ? 1 : 0,
                 final == AP_HTTP_SEND_ABORT ? H2O_SEND_STATE_ERROR : H2O_SEND_STATE_FINAL);
        return 0;
    }
    r->on_proceed = on_proceed;
    r->cbdata = cbdata;
    h2o_send(r->req, &buf, 1, H2O_SEND_STATE_IN_PROGRESS);
    return 0;
}

int ap_http_req_send_file(ap_http_req *r, int status, const ap_http_str *headers, size_t nheaders,
                          const char *path, const char *mime)
{
    if (!r->req || r->started) return -1;
    FILE *probe = fopen(path, "rb");
    if (probe == NULL) return -1;
    fclose(probe);
    set_response(r, status, headers, nheaders);
    r->started = 1;
    r->finished = 1;
    r->srv->own_response = 1;
    int rc = h2o_file_send(r->req, status, ap_http_reason(status), path,
                           h2o_iovec_init(mime, strlen(mime)), H2O_FILE_FLAG_NO_ETAG);
    r->srv->own_response = 0;
    if (rc != 0) {
        /* Raced with the file going away: answer rather than leave the client waiting. */
        r->srv->own_response = 1;
        h2o_send_error_generic(r->req, 500, "Internal Server Error", "file vanished", 0);
        r->srv->own_response = 0;
    }
    return 0;
}

/* ---- JSON bodies for the errors h2o answers itself ------------------------------------------ */

typedef struct {
    h2o_ostream_t super;
    ap_http_server *srv;
} ap_http_errjson;

static size_t json_escape(char *dst, const char *src, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)src[i];
        if (c == '"' || c == '\\') {
            dst[o++] = '\\';
            dst[o++] = (char)c;
        } else if (c < 0x20) {
            dst[o++] = '\\';
            dst[o++] = 'u';
            dst[o++] = '0';
            dst[o++] = '0';
            dst[o++] = hex[c >> 4];
            dst[o++] = hex[c & 15];
        } else {
            dst[o++] = (char)c;
        }
    }
    return o;
}

static void errjson_send(h2o_ostream_t *self, h2o_req_t *req, h2o_iovec_t *bufs, size_t n,
                         h2o_send_state_t state)
{
    ap_http_errjson *e = (ap_http_errjson *)self;
    /* h2o's error responses arrive whole, in one final piece; anything else passes unchanged. */
    if (h2o_send_state_is_in_progress(state)) {
        h2o_ostream_send_next(self, req, bufs, n, state);
        return;
    }
    char text[512];
    size_t tlen = 0;
    if (req->res.status == 413) {
        tlen = (size_t)snprintf(text, sizeof text,
                                "request body is larger than the limit of %zu bytes",
                                e->srv->cfg.max_body);
    } else {
        for (size_t i = 0; i < n && tlen < sizeof text; i++) {
            size_t take = bufs[i].len < sizeof text - tlen ? bufs[i].len : sizeof text - tlen;
            memcpy(text + tlen, bufs[i].base, take);
            tlen += take;
        }
        while (tlen > 0 && (text[tlen - 1] == '\n' || text[tlen - 1] == '\r')) tlen--;
    }
    char *json = h2o_mem_alloc_pool(&req->pool, tlen * 6 + 64);
    size_t o = 0;
    memcpy(json, "{\"message\":\"", 12);
    o = 12;
    o += json_escape(json + o, text, tlen);
    o += (size_t)sprintf(json + o, "\",\"code\":%d}\n", req->res.status);
    req->res.content_length = o;
    ssize_t ct = h2o_find_header(&req->res.headers, H2O_TOKEN_CONTENT_TYPE, -1);
    if (ct != -1)
        req->res.headers.entries[ct].value = h2o_iovec_init(H2O_STRLIT("application/json"));
    h2o_iovec_t buf = h2o_iovec_init(json, o);
    h2o_ostream_send_next(self, req, &buf, 1, state);
}

static void errjson_setup(h2o_filter_t *self, h2o_req_t *req, h2o_ostream_t **slot)
{
    ap_http_server *srv = ((ap_http_errjson_filter *)self)->srv;
    if (!srv->own_response && req->res.status == 413) srv->too_large++;
    if (srv->cfg.json_errors && !srv->own_response && req->res.status >= 400) {
        ap_http_errjson *e = (ap_http_errjson *)h2o_add_ostream(req, sizeof *e, slot);
        e->super.do_send = errjson_send;
        e->srv = srv;
        slot = &e->super.next;
    }
    h2o_setup_next_ostream(req, slot);
}

static void add_errjson_filter(ap_http_server *srv, h2o_pathconf_t *pathconf)
{
    ap_http_errjson_filter *f = (ap_http_errjson_filter *)h2o_create_filter(pathconf, sizeof *f);
    f->super.on_setup_ostream = errjson_setup;
    f->srv = srv;
}

/* ---- connections -------------------------------------------------------------------------- */

static void maybe_closed(ap_http_server *srv)
{
    if (!srv->closing || srv->closed || srv->nconns > 0 ||
        !uv_is_closing((uv_handle_t *)&srv->listener))
        return;
    srv->closed = 1;
    uv_timer_stop(&srv->reaper);
    uv_close((uv_handle_t *)&srv->reaper, NULL);
    /* The h2o context is not disposed: h2o_context_dispose runs a nested uv_run, which would run
     * unrelated callbacks (Lua ones included) in the middle of this one. The server's memory (a
     * few kilobytes) is kept on the retired list instead; its handles were unref'd at start and
     * are idle now. */
    srv->next_retired = retired;
    retired = srv;
    if (srv->on_closed) srv->on_closed(srv->closed_data);
}

static void on_conn_close(uv_handle_t *handle)
{
    ap_http_conn *conn = (ap_http_conn *)handle;
    ap_http_server *srv = conn->srv;
    h2o_linklist_unlink(&conn->link);
    srv->nconns--;
    free(conn);
    maybe_closed(srv);
}

static void on_accept(uv_stream_t *listener, int status)
{
    ap_http_server *srv = listener->data;
    if (status != 0 || srv->closing) return;
    ap_http_conn *conn = calloc(1, sizeof *conn);
    if (conn == NULL) return;
    uv_tcp_init(srv->loop, &conn->tcp);
    if (uv_accept(listener, (uv_stream_t *)&conn->tcp) != 0) {
        uv_close((uv_handle_t *)&conn->tcp, (uv_close_cb)free);
        return;
    }
    uv_tcp_nodelay(&conn->tcp, 1);
    conn->srv = srv;
    h2o_linklist_insert(&srv->conns, &conn->link);
    srv->nconns++;
    conn->sock = h2o_uv_socket_create((uv_stream_t *)&conn->tcp, on_conn_close);
    h2o_accept(&srv->accept_ctx, conn->sock);
}

/* While stopping: a connection with nothing buffered and nothing being written is idle between
 * requests. Shutting down its read side makes h2o see end-of-stream and close it through its own
 * path; connections with a request in progress are left until it is done. */
static void reap_idle(ap_http_server *srv)
{
    for (h2o_linklist_t *n = srv->conns.next; n != &srv->conns; n = n->next) {
        ap_http_conn *conn = H2O_STRUCT_FROM_MEMBER(ap_http_conn, link, n);
        /* input is NULL once h2o has disposed of a closing socket (its uv close is pending) */
        if (conn->read_shut || conn->sock->input == NULL || conn->sock->input->size != 0 ||
            h2o_socket_is_writing(conn->sock))
            continue;
        uv_os_fd_t fd;
        if (uv_fileno((uv_handle_t *)&conn->tcp, &fd) == 0) shutdown(fd, SHUT_RD);
        conn->read_shut = 1;
    }
}

static void on_reap(uv_timer_t *t)
{
    ap_http_server *srv = t->data;
    reap_idle(srv);
    maybe_closed(srv);
}

static void on_listener_closed(uv_handle_t *h)
{
    maybe_closed(h->data);
}

void ap_http_server_close(ap_http_server *srv, void (*on_closed)(void *data), void *data)
{
    if (srv->closing) return;
    srv->closing = 1;
    srv->on_closed = on_closed;
    srv->closed_data = data;
    h2o_context_request_shutdown(&srv->ctx);
    uv_close((uv_handle_t *)&srv->listener, on_listener_closed);
    reap_idle(srv);
    uv_timer_start(&srv->reaper, on_reap, 20, 20);
}

/* ---- start -------------------------------------------------------------------------------- */

typedef struct {
    uv_handle_t **items;
    size_t n, cap;
} handle_set;

static void collect_handle(uv_handle_t *h, void *arg)
{
    handle_set *s = arg;
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 64;
        uv_handle_t **items = realloc(s->items, cap * sizeof *items);
        if (items == NULL) return;
        s->items = items;
        s->cap = cap;
    }
    s->items[s->n++] = h;
}

static int in_set(const handle_set *s, uv_handle_t *h)
{
    for (size_t i = 0; i < s->n; i++)
        if (s->items[i] == h) return 1;
    return 0;
}

/* h2o_context_init opens loop handles (an async for its cross-thread queue, timers). They must not
 * keep the process alive on their own: only the listener and connections should. */
static void init_context_unref(ap_http_server *srv)
{
    handle_set before = {0}, after = {0};
    uv_walk(srv->loop, collect_handle, &before);
    h2o_context_init(&srv->ctx, srv->loop, &srv->config);
    uv_walk(srv->loop, collect_handle, &after);
    for (size_t i = 0; i < after.n; i++)
        if (!in_set(&before, after.items[i])) uv_unref(after.items[i]);
    free(before.items);
    free(after.items);
}

static void free_server_handle(uv_handle_t *h)
{
    free(h->data);
}

int ap_http_server_start(uv_loop_t *loop, const ap_http_server_config *cfg, ap_http_server **out,
                         char *err, size_t errlen)
{
    struct sockaddr_storage addr;
    if (uv_ip4_addr(cfg->host, cfg->port, (struct sockaddr_in *)&addr) != 0 &&
        uv_ip6_addr(cfg->host, cfg->port, (struct sockaddr_in6 *)&addr) != 0) {
        snprintf(err, errlen, "invalid listen address %s", cfg->host);
        return -1;
    }
    if (cfg->spool_dir != NULL) {
        char tmpl[sizeof h2o_socket_buffer_mmap_settings.fn_template];
        int n = snprintf(tmpl, sizeof tmpl, "%s/h2o.b.XXXXXX", cfg->spool_dir);
        if (n < 0 || (size_t)n >= sizeof tmpl) {
            snprintf(err, errlen, "the spool directory name is too long");
            return -1;
        }
        memcpy(h2o_socket_buffer_mmap_settings.fn_template, tmpl, (size_t)n + 1);
    }
    ap_http_server *srv = calloc(1, sizeof *srv);
    if (srv == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    srv->loop = loop;
    srv->cfg = *cfg;
    h2o_linklist_init_anchor(&srv->conns);

    uv_tcp_init(loop, &srv->listener);
    srv->listener.data = srv;
    int rc = uv_tcp_bind(&srv->listener, (struct sockaddr *)&addr, 0);
    if (rc == 0) rc = uv_listen((uv_stream_t *)&srv->listener, 1024, on_accept);
    if (rc != 0) {
        snprintf(err, errlen, "cannot listen on %s:%d: %s", cfg->host, cfg->port, uv_strerror(rc));
        uv_close((uv_handle_t *)&srv->listener, free_server_handle);
        return -1;
    }
    struct sockaddr_storage bound;
    int blen = sizeof bound;
    uv_tcp_getsockname(&srv->listener, (struct sockaddr *)&bound, &blen);
    srv->port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                                  : ((struct sockaddr_in *)&bound)->sin_port);

    h2o_config_init(&srv->config);
    srv->config.server_name = h2o_iovec_init(H2O_STRLIT("")); /* no Server header */
    srv->config.max_request_entity_size = cfg->max_body;
    srv->config.http1.req_timeout = cfg->request_timeout_ms;
    srv->config.http1.upgrade_to_http2 = 0; /* HTTP/1.1 only */
    h2o_hostconf_t *host = h2o_config_register_host(
        &srv->config, h2o_iovec_init(H2O_STRLIT("default")), (uint16_t)srv->port);
    h2o_pathconf_t *path = h2o_config_register_path(host, "/", 0);
    ap_http_handler *handler = (ap_http_handler *)h2o_create_handler(path, sizeof *handler);
    handler->super.on_req = on_req;
    handler->srv = srv;
    add_errjson_filter(srv, path);
    add_errjson_filter(srv, &host->fallback_path);

    init_context_unref(srv);
    srv->accept_ctx.ctx = &srv->ctx;
    srv->accept_ctx.hosts = srv->config.hosts;
    uv_timer_init(loop, &srv->reaper);
    srv->reaper.data = srv;
    uv_unref((uv_handle_t *)&srv->reaper);
    *out = srv;
    return 0;
}

int ap_http_server_port(const ap_http_server *srv)
{
    return srv->port;
}

size_t ap_http_server_active_requests(const ap_http_server *srv)
{
    return srv->active;
}

size_t ap_http_server_connections(const ap_http_server *srv)
{
    return srv->nconns;
}

size_t ap_http_server_too_large(const ap_http_server *srv)
{
    return srv->too_large;
}
