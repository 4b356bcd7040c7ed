/* The HTTP server: libh2o on the process's libuv loop, HTTP/1.1 and, over TLS, HTTP/2 (ALPN). h2o
 * parses requests and buffers each body (bounded by max_body, refused with 413 past it); this file
 * accepts connections (up to a cap), keeps a budget of buffered request bytes, refuses ambiguous
 * framing, hands requests to one callback, streams responses with back-pressure and stops
 * gracefully. */
#include "server.h"

#include <errno.h>
#include <h2o.h>
#include <h2o/http2.h>
#include <h2o/http2_internal.h> /* the stream that holds an HTTP/2 body (see body_of) */
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>

typedef struct {
    uv_tcp_t tcp; /* first: h2o's close callback hands us the handle */
    h2o_socket_t *sock;
    ap_http_server *srv;
    h2o_linklist_t link;
    int read_shut;
    size_t active;          /* requests of this connection being handled */
    int rejected;           /* answered 503 over the buffer budget; closing */
    int draining;           /* reading (and dropping) what the client still sends before closing */
    size_t drained;         /* bytes dropped so far */
    int parsed;             /* the headers of the request arriving now were read for its length */
    size_t declared;        /* its Content-Length: what it will cost once its body is in */
    uint64_t drain_until;   /* loop time (ms) at which draining stops */
    h2o_socket_cb h2o_read; /* h2o's read callback, restored to let h2o close the connection */
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
    size_t over_budget;
    size_t refused_conns;
    size_t bad_framing;
    size_t buffered;
    SSL_CTX *ssl_ctx;
    char *tls_cert, *tls_key, *tls_client_ca; /* owned copies, read again on reload */
    uv_timer_t budget;
    int closing;
    int closed;
    int own_response; /* set while our code starts a response: the error filter leaves it alone */
    void (*on_closed)(void *data);
    void *closed_data;
    ap_http_server *next_retired;
};

/* Closed servers: still reachable (so leak checkers stay quiet), never used again. */
static ap_http_server *retired;

/* A request's body (see ap_http_req_body_bytes). */
typedef struct {
    ap_bytes super;
    h2o_buffer_t *owned; /* HTTP/2: the stream's buffer, taken from h2o */
    ap_http_req *req;    /* HTTP/1.x: the request whose response waits for the readers */
} ap_http_body;

struct ap_http_req {
    h2o_generator_t gen;
    h2o_req_t *req; /* NULL once h2o released the request */
    ap_http_server *srv;
    ap_http_conn *conn; /* NULL if not found; a request never outlives its connection */
    ap_http_body *body; /* the request's own reference, NULL without a body */
    int deferred;       /* a final send waiting for the body's readers: its `final` value */
    h2o_iovec_t deferred_buf;
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
    if (r->body) {
        ap_http_body *b = r->body;
        r->body = NULL;
        b->req = NULL;
        if (b->owned == NULL) {
            /* h2o's buffer goes with the request. Only a lost HTTP/1 connection could take it
             * while a reader holds the body, and h2o does not read one during a request. */
            b->super.base = NULL;
            b->super.len = 0;
        }
        ap_bytes_unref(&b->super);
    }
    r->srv->active--;
    if (r->conn && --r->conn->active == 0) {
        r->conn->parsed = 0;
        r->conn->declared = 0;
    }
    void (*cb)(void *, int) = r->on_proceed;
    r->on_proceed = NULL;
    if (cb) cb(r->cbdata, 0);
    if (r->on_gone) r->on_gone(r->gone_data);
}

static ap_http_conn *conn_of_socket(ap_http_server *srv, h2o_socket_t *sock)
{
    if (sock == NULL) return NULL;
    for (h2o_linklist_t *n = srv->conns.next; n != &srv->conns; n = n->next) {
        ap_http_conn *conn = H2O_STRUCT_FROM_MEMBER(ap_http_conn, link, n);
        if (conn->sock == sock) return conn;
    }
    return NULL;
}

static ap_http_conn *conn_of_req(ap_http_server *srv, h2o_req_t *req)
{
    if (req->conn == NULL || req->conn->callbacks->get_socket == NULL) return NULL;
    return conn_of_socket(srv, req->conn->callbacks->get_socket(req->conn));
}

static int header_is(const char *name, size_t len, const char *want)
{
    return len == strlen(want) && strncasecmp(name, want, len) == 0;
}

/* RFC 9112 section 6.3: a message with Transfer-Encoding and Content-Length, or with Content-Length
 * values that differ, has no reliable length; a server must answer 400 and close, or a proxy in
 * front and this server may split the stream into different requests (smuggling). h2o 2.2.5 keeps
 * neither header in req->headers (it takes the first length, or chunked), so the raw header block
 * is read: for HTTP/1 it is still in the connection's input buffer, right before the body. */
static const char *framing_problem(h2o_req_t *req)
{
    if (req->version >= 0x200 || req->entity.base == NULL) return NULL;
    if (req->conn->callbacks->get_socket == NULL) return NULL;
    h2o_socket_t *sock = req->conn->callbacks->get_socket(req->conn);
    if (sock == NULL || sock->input == NULL || sock->input->bytes == NULL) return NULL;
    const char *p = sock->input->bytes, *end = req->entity.base;
    if (end < p || end > p + sock->input->size) return NULL;
    const char *eol = memchr(p, '\n', (size_t)(end - p)); /* skip the request line */
    if (eol == NULL) return NULL;
    int te = 0, ncl = 0, differ = 0;
    const char *cl = NULL;
    size_t cllen = 0;
    for (p = eol + 1; p < end; p = eol + 1) {
        eol = memchr(p, '\n', (size_t)(end - p));
        if (eol == NULL) eol = end;
        const char *colon = memchr(p, ':', (size_t)(eol - p));
        if (colon == NULL) continue;
        const char *v = colon + 1, *ve = eol;
        if (header_is(p, (size_t)(colon - p), "transfer-encoding")) {
            te = 1;
        } else if (header_is(p, (size_t)(colon - p), "content-length")) {
            /* each element of a comma-separated list counts as one value */
            while (v < ve) {
                const char *comma = memchr(v, ',', (size_t)(ve - v));
                const char *e = comma ? comma : ve;
                const char *a = v, *b = e;
                while (a < b && (*a == ' ' || *a == '\t')) a++;
                while (b > a && (b[-1] == ' ' || b[-1] == '\t' || b[-1] == '\r')) b--;
                if (ncl++ == 0) {
                    cl = a;
                    cllen = (size_t)(b - a);
                } else if ((size_t)(b - a) != cllen || memcmp(a, cl, cllen) != 0) {
                    differ = 1;
                }
                v = comma ? comma + 1 : ve;
            }
        }
    }
    if (te && ncl) return "a request with both Transfer-Encoding and Content-Length is refused";
    if (differ) return "a request with differing Content-Length values is refused";
    return NULL;
}

static void body_free(ap_bytes *p)
{
    ap_http_body *b = (ap_http_body *)p;
    if (b->owned) h2o_buffer_dispose(&b->owned);
    free(b);
}

/* The last reader is done: a response end that waited for it goes out now. */
static void body_idle(ap_bytes *p)
{
    ap_http_body *b = (ap_http_body *)p;
    ap_http_req *r = b->req;
    if (r == NULL || !r->deferred || r->req == NULL) return;
    int final = r->deferred;
    r->deferred = 0;
    h2o_send(r->req, &r->deferred_buf, r->deferred_buf.len ? 1 : 0,
             final == AP_HTTP_SEND_ABORT ? H2O_SEND_STATE_ERROR : H2O_SEND_STATE_FINAL);
}

/* The body of a request that has one. HTTP/2 (h2o 2.2.5 buffers a stream's whole body in
 * stream->_req_body before the handler runs and only disposes of it when the stream closes): the
 * buffer becomes ours, so the stream can go at any time. NULL when out of memory. */
static ap_http_body *body_of(ap_http_req *r)
{
    h2o_req_t *req = r->req;
    ap_http_body *b = calloc(1, sizeof *b);
    if (b == NULL) return NULL;
    b->super = (ap_bytes){.base = req->entity.base,
                          .len = req->entity.len,
                          .refs = 1,
                          .on_idle = body_idle,
                          .on_free = body_free};
    if (req->version >= 0x200) {
        h2o_http2_stream_t *stream = H2O_STRUCT_FROM_MEMBER(h2o_http2_stream_t, req, req);
        h2o_buffer_t *buf = stream->_req_body;
        if (buf != NULL && req->entity.base >= buf->bytes &&
            req->entity.base + req->entity.len <= buf->bytes + buf->size) {
            stream->_req_body = NULL;
            b->owned = buf;
            return b;
        }
        /* Not where 2.2.5 keeps it: one copy, which then is the only one held. */
        b->owned = NULL;
        h2o_buffer_init(&b->owned, &h2o_socket_buffer_prototype);
        h2o_iovec_t room = h2o_buffer_reserve(&b->owned, req->entity.len ? req->entity.len : 1);
        if (room.base == NULL) {
            free(b);
            return NULL;
        }
        memcpy(room.base, req->entity.base, req->entity.len);
        b->owned->size += req->entity.len;
        b->super.base = room.base;
        req->entity = h2o_iovec_init(room.base, req->entity.len);
        return b;
    }
    b->req = r;
    return b;
}

static int on_req(h2o_handler_t *self, h2o_req_t *req)
{
    ap_http_server *srv = ((ap_http_handler *)self)->srv;
    const char *bad = framing_problem(req);
    if (bad != NULL) {
        srv->bad_framing++;
        req->http1_is_persistent = 0;
        h2o_send_error_generic(req, 400, "Bad Request", bad, H2O_SEND_ERROR_HTTP1_CLOSE_CONNECTION);
        return 0;
    }
    ap_http_req *r = h2o_mem_alloc_shared(&req->pool, sizeof *r, on_req_dispose);
    memset(r, 0, sizeof *r);
    r->req = req;
    r->srv = srv;
    r->conn = conn_of_req(srv, req);
    if (r->conn) r->conn->active++;
    r->gen.proceed = on_gen_proceed;
    r->gen.stop = on_gen_stop;
    if (req->entity.base != NULL) r->body = body_of(r);
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

ap_bytes *ap_http_req_body_bytes(ap_http_req *r)
{
    if (r->req == NULL || r->body == NULL) return NULL;
    ap_bytes_ref(&r->body->super);
    return &r->body->super;
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
    if (final && r->body && r->body->super.readers > 0 && r->body->owned == NULL) {
        /* The end of an HTTP/1 response lets h2o reuse the buffer a reader still reads. */
        r->finished = 1;
        r->deferred = final;
        r->deferred_buf = buf;
        return 0;
    }
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
    uv_timer_stop(&srv->budget);
    uv_close((uv_handle_t *)&srv->budget, NULL);
    if (srv->ssl_ctx) SSL_CTX_free(srv->ssl_ctx);
    srv->ssl_ctx = NULL;
    free(srv->tls_cert);
    free(srv->tls_key);
    free(srv->tls_client_ca);
    srv->tls_cert = srv->tls_key = srv->tls_client_ca = NULL;
    srv->accept_ctx.ssl_ctx = NULL;
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
    /* Past the cap the connection is closed at once: taken off the backlog (so it does not fill
     * up and stall everyone) without costing a parser, a buffer or a TLS handshake. */
    if (srv->cfg.max_connections && srv->nconns >= srv->cfg.max_connections) {
        srv->refused_conns++;
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

/* h2o closed the socket (its input buffer is gone) and our close callback has not run yet. */
static int conn_closing(const ap_http_conn *conn)
{
    return uv_is_closing((const uv_handle_t *)&conn->tcp) || conn->sock->input == NULL;
}

/* While stopping: a connection with nothing buffered and nothing being written is idle between
 * requests. Shutting down its read side makes h2o see end-of-stream and close it through its own
 * path; connections with a request in progress are left until it is done. */
static void reap_idle(ap_http_server *srv)
{
    for (h2o_linklist_t *n = srv->conns.next; n != &srv->conns; n = n->next) {
        ap_http_conn *conn = H2O_STRUCT_FROM_MEMBER(ap_http_conn, link, n);
        if (conn_closing(conn) || conn->read_shut || conn->active || conn->rejected ||
            conn->sock->input->size != 0 || h2o_socket_is_writing(conn->sock))
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

/* ---- the buffer budget --------------------------------------------------------------------- */

static const char reject_body[] =
    "{\"message\":\"the server is receiving as much as it may hold; retry later\",\"code\":503}\n";

static int is_http2(h2o_socket_t *sock)
{
    if (sock->ssl == NULL) return 0;
    h2o_iovec_t proto = h2o_socket_ssl_get_selected_protocol(sock);
    return proto.len >= 2 && memcmp(proto.base, "h2", 2) == 0;
}

static size_t buffer_bytes(const h2o_buffer_t *b)
{
    return b != NULL && b->bytes != NULL ? b->capacity : 0;
}

/* The end of a refused connection: h2o's read callback comes back on a socket whose read side is
 * shut, so h2o sees end-of-stream and closes the connection through its own path (freeing the
 * request and its buffer). */
static void reject_finish(ap_http_conn *conn)
{
    if (!conn->draining) return;
    conn->draining = 0;
    if (conn_closing(conn)) return;
    uv_read_stop((uv_stream_t *)&conn->tcp);
    uv_os_fd_t fd;
    if (uv_fileno((uv_handle_t *)&conn->tcp, &fd) == 0) shutdown(fd, SHUT_RD);
    h2o_socket_read_start(conn->sock, conn->h2o_read);
}

static void drain_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    static char scratch[64 * 1024];
    (void)h;
    (void)suggested;
    *buf = uv_buf_init(scratch, sizeof scratch);
}

static void drain_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    ap_http_conn *conn = (ap_http_conn *)stream;
    (void)buf;
    if (nread > 0) conn->drained += (size_t)nread;
    if (nread < 0 || conn->drained > ((size_t)64 << 20)) reject_finish(conn);
}

/* The 503 went out: the body the client is still sending is read and dropped for a moment (up to
 * 64 MiB or two seconds, into one static scratch buffer: it costs no memory), so closing does not
 * reset the connection before the client has read the answer; clients that read early answers
 * (curl, Go) stop sending sooner. */
static void on_reject_written(h2o_socket_t *sock, const char *err)
{
    /* sock->data is h2o's HTTP/1 connection, whose first member is the h2o_conn_t holding our
     * context: from it the server, and from the server our connection. */
    h2o_conn_t *hc = sock->data;
    ap_http_server *srv = H2O_STRUCT_FROM_MEMBER(ap_http_server, ctx, hc->ctx);
    ap_http_conn *conn = conn_of_socket(srv, sock);
    if (conn == NULL || conn_closing(conn)) return;
    if (err != NULL) {
        reject_finish(conn);
        return;
    }
    uv_os_fd_t fd;
    if (uv_fileno((uv_handle_t *)&conn->tcp, &fd) == 0) shutdown(fd, SHUT_WR);
    conn->drain_until = uv_now(srv->loop) + 2000;
    if (uv_read_start((uv_stream_t *)&conn->tcp, drain_alloc, drain_read) != 0) reject_finish(conn);
}

/* Answers a connection whose request is still arriving with 503 and closes it. h2o stops reading
 * it first, so what it buffered stops growing; the buffer goes when h2o closes the connection. */
static void reject(ap_http_server *srv, ap_http_conn *conn)
{
    static char head[256];
    static size_t head_len;
    if (head_len == 0)
        head_len = (size_t)snprintf(head, sizeof head,
                                    "HTTP/1.1 503 Service Unavailable\r\n"
                                    "Content-Type: application/json\r\n"
                                    "Retry-After: 1\r\n"
                                    "Connection: close\r\n"
                                    "Content-Length: %zu\r\n\r\n",
                                    sizeof reject_body - 1);
    srv->over_budget++;
    conn->rejected = 1;
    conn->draining = 1;
    conn->h2o_read = conn->sock->_cb.read;
    h2o_socket_read_stop(conn->sock);
    h2o_iovec_t bufs[2] = {h2o_iovec_init(head, head_len),
                           h2o_iovec_init(reject_body, sizeof reject_body - 1)};
    h2o_socket_write(conn->sock, bufs, 2, on_reject_written);
}

/* The Content-Length of the request whose headers start the buffer (0 without one, or while the
 * headers are incomplete: then *complete stays 0). */
static size_t declared_length(const h2o_buffer_t *in, int *complete)
{
    size_t n = in->size < 65536 ? in->size : 65536;
    const char *p = in->bytes, *end = p + n;
    *complete = 0;
    for (const char *q = p; q + 3 < end; q++)
        if (q[0] == '\r' && q[1] == '\n' && q[2] == '\r' && q[3] == '\n') {
            end = q + 2;
            *complete = 1;
            break;
        }
    if (!*complete) return 0;
    for (const char *line = p; line < end;) {
        const char *eol = memchr(line, '\n', (size_t)(end - line));
        if (eol == NULL) break;
        if ((size_t)(eol - line) > 15 && strncasecmp(line, "content-length:", 15) == 0)
            return (size_t)strtoull(line + 15, NULL, 10);
        line = eol + 1;
    }
    return 0;
}

/* What a connection's request holds or, once its body is in, will hold. */
static size_t conn_cost(ap_http_conn *conn)
{
    size_t held = buffer_bytes(conn->sock->input);
    return conn->declared > held ? conn->declared : held;
}

/* Every 10 ms: adds up what the connections buffer for requests (or, once their headers are in,
 * will buffer); over max_buffered, refuses the requests still arriving, largest first, until the
 * rest fits. Bodies already complete (being handled) are never refused here: they hold their share
 * until answered. Idle keep-alive connections give back the buffer of their last request (h2o
 * keeps it otherwise). */
static void on_budget(uv_timer_t *t)
{
    ap_http_server *srv = t->data;
    size_t total = 0;
    uint64_t now = uv_now(srv->loop);
    for (h2o_linklist_t *n = srv->conns.next; n != &srv->conns; n = n->next) {
        ap_http_conn *conn = H2O_STRUCT_FROM_MEMBER(ap_http_conn, link, n);
        if (conn_closing(conn)) continue;
        if (conn->rejected) {
            if (conn->draining && conn->drain_until && now >= conn->drain_until)
                reject_finish(conn);
            continue;
        }
        h2o_buffer_t *in = conn->sock->input;
        if (!conn->active && in->size == 0 && buffer_bytes(in) > (1 << 20) &&
            !is_http2(conn->sock)) {
            h2o_buffer_dispose(&conn->sock->input);
            h2o_buffer_init(&conn->sock->input, &h2o_socket_buffer_prototype);
            continue;
        }
        if (!conn->active && in->size == 0) conn->parsed = 0, conn->declared = 0;
        /* A request whose headers are in is charged its announced length at once: the budget is
         * decided before its body is buffered, not after. */
        if (!conn->active && in->size != 0 && !conn->parsed && !is_http2(conn->sock)) {
            int complete;
            size_t len = declared_length(in, &complete);
            if (complete) {
                conn->parsed = 1;
                conn->declared = len;
            }
        }
        total += conn_cost(conn);
    }
    srv->buffered = total;
    if (!srv->cfg.max_buffered) return;
    while (total > srv->cfg.max_buffered) {
        ap_http_conn *worst = NULL;
        size_t worst_bytes = 0;
        for (h2o_linklist_t *n = srv->conns.next; n != &srv->conns; n = n->next) {
            ap_http_conn *conn = H2O_STRUCT_FROM_MEMBER(ap_http_conn, link, n);
            if (conn_closing(conn) || conn->rejected || conn->active ||
                conn->sock->input->size == 0 || h2o_socket_is_writing(conn->sock) ||
                is_http2(conn->sock))
                continue;
            size_t b = conn_cost(conn);
            if (b > worst_bytes) {
                worst = conn;
                worst_bytes = b;
            }
        }
        if (worst == NULL) break;
        reject(srv, worst);
        total -= worst_bytes;
    }
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

/* ---- TLS ---------------------------------------------------------------------------------- */

static void ssl_error(char *err, size_t errlen, const char *what, const char *path)
{
    char detail[256] = "";
    unsigned long e = ERR_peek_last_error();
    if (e != 0) ERR_error_string_n(e, detail, sizeof detail);
    ERR_clear_error();
    snprintf(err, errlen, "%s %s%s%s", what, path, detail[0] ? ": " : "", detail);
}

/* OpenSSL says only "system lib" for a file it cannot open: say which file and why first. */
static int readable(const char *what, const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        snprintf(err, errlen, "cannot read the %s %s: %s", what, path, strerror(errno));
        return 0;
    }
    fclose(f);
    return 1;
}

static SSL_CTX *make_ssl_ctx(const char *cert, const char *key, const char *client_ca, char *err,
                             size_t errlen)
{
    if (!readable("TLS certificate", cert, err, errlen) || !readable("TLS key", key, err, errlen) ||
        (client_ca != NULL && !readable("client CA", client_ca, err, errlen)))
        return NULL;
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL) {
        ssl_error(err, errlen, "cannot create a TLS context", "");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_CIPHER_SERVER_PREFERENCE |
                                 SSL_OP_NO_SESSION_RESUMPTION_ON_RENEGOTIATION);
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
        ssl_error(err, errlen, "cannot read the TLS certificate", cert);
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
        ssl_error(err, errlen, "cannot read the TLS key", key);
        goto fail;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        ssl_error(err, errlen, "the TLS key does not match the certificate", cert);
        goto fail;
    }
    if (client_ca != NULL) {
        STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(client_ca);
        if (names == NULL || SSL_CTX_load_verify_locations(ctx, client_ca, NULL) != 1) {
            if (names) sk_X509_NAME_pop_free(names, X509_NAME_free);
            ssl_error(err, errlen, "cannot read the client CA", client_ca);
            goto fail;
        }
        SSL_CTX_set_client_CA_list(ctx, names);
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
    }
    /* h2, then http/1.1: what stock curl and Go's net/http offer */
    h2o_ssl_register_alpn_protocols(ctx, h2o_alpn_protocols);
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}

int ap_http_server_reload_tls(ap_http_server *srv, char *err, size_t errlen)
{
    if (srv->tls_cert == NULL) {
        snprintf(err, errlen, "the server does not use TLS");
        return -1;
    }
    SSL_CTX *ctx = make_ssl_ctx(srv->tls_cert, srv->tls_key, srv->tls_client_ca, err, errlen);
    if (ctx == NULL) return -1;
    /* Connections hold a reference to the context they were accepted with: freeing ours leaves
     * them theirs until they close. */
    SSL_CTX_free(srv->ssl_ctx);
    srv->ssl_ctx = ctx;
    srv->accept_ctx.ssl_ctx = ctx;
    return 0;
}

long ap_http_raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return -1;
    if (rl.rlim_cur < rl.rlim_max) {
        rlim_t want = rl.rlim_max;
        rl.rlim_cur = want;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0) getrlimit(RLIMIT_NOFILE, &rl);
    }
    return rl.rlim_cur == RLIM_INFINITY ? -1 : (long)rl.rlim_cur;
}

static char *dup_opt(const char *s)
{
    return s ? strdup(s) : NULL;
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
    if ((cfg->tls_cert == NULL) != (cfg->tls_key == NULL)) {
        snprintf(err, errlen, "TLS needs both a certificate and a key");
        return -1;
    }
    if (cfg->tls_client_ca != NULL && cfg->tls_cert == NULL) {
        snprintf(err, errlen,
                 "client certificates (a client CA) need TLS: give a certificate and key");
        return -1;
    }
    SSL_CTX *ssl_ctx = NULL;
    if (cfg->tls_cert != NULL) {
        ssl_ctx = make_ssl_ctx(cfg->tls_cert, cfg->tls_key, cfg->tls_client_ca, err, errlen);
        if (ssl_ctx == NULL) return -1;
    }
    ap_http_server *srv = calloc(1, sizeof *srv);
    if (srv == NULL) {
        SSL_CTX_free(ssl_ctx);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    srv->loop = loop;
    srv->cfg = *cfg;
    srv->cfg.spool_dir = NULL; /* used above only; the caller's strings need not outlive start */
    srv->ssl_ctx = ssl_ctx;
    srv->tls_cert = dup_opt(cfg->tls_cert);
    srv->tls_key = dup_opt(cfg->tls_key);
    srv->tls_client_ca = dup_opt(cfg->tls_client_ca);
    srv->cfg.host = NULL;
    srv->cfg.tls_cert = srv->cfg.tls_key = srv->cfg.tls_client_ca = NULL;
    h2o_linklist_init_anchor(&srv->conns);

    uv_tcp_init(loop, &srv->listener);
    srv->listener.data = srv;
    int rc = uv_tcp_bind(&srv->listener, (struct sockaddr *)&addr, 0);
    if (rc == 0) rc = uv_listen((uv_stream_t *)&srv->listener, 1024, on_accept);
    if (rc != 0) {
        snprintf(err, errlen, "cannot listen on %s:%d: %s", cfg->host, cfg->port, uv_strerror(rc));
        SSL_CTX_free(srv->ssl_ctx);
        free(srv->tls_cert);
        free(srv->tls_key);
        free(srv->tls_client_ca);
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
    srv->config.http1.upgrade_to_http2 = 0; /* no h2c: HTTP/2 only over TLS, by ALPN */
    srv->config.http2.idle_timeout = cfg->request_timeout_ms;
    srv->config.handshake_timeout =
        cfg->request_timeout_ms < 10000 ? cfg->request_timeout_ms : 10000;
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
    srv->accept_ctx.ssl_ctx = srv->ssl_ctx;
    uv_timer_init(loop, &srv->reaper);
    srv->reaper.data = srv;
    uv_unref((uv_handle_t *)&srv->reaper);
    uv_timer_init(loop, &srv->budget);
    srv->budget.data = srv;
    uv_unref((uv_handle_t *)&srv->budget);
    uv_timer_start(&srv->budget, on_budget, 10, 10);
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

size_t ap_http_server_over_budget(const ap_http_server *srv)
{
    return srv->over_budget;
}

size_t ap_http_server_refused_connections(const ap_http_server *srv)
{
    return srv->refused_conns;
}

size_t ap_http_server_bad_framing(const ap_http_server *srv)
{
    return srv->bad_framing;
}

size_t ap_http_server_buffered(const ap_http_server *srv)
{
    return srv->buffered;
}
