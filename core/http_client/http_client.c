/* The outbound HTTP client (see http_client.h): curl multi sockets and timeouts on the libuv
 * loop, per-request state, flow control both ways, and owner callbacks run from a uv_idle
 * dispatcher so that owners may start, feed, resume or cancel requests freely. */
#include "http_client.h"
#include "url.h"

#include <curl/curl.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

/* Streamed responses: bytes curl may buffer ahead of an owner that has not acknowledged. */
#define RX_CAP (64 * 1024)
/* While requests are in flight a repeating timer keeps the loop alive: a paused transfer
 * watches no socket and may have no curl timeout, and must not let uv_run return. */
#define KEEPALIVE_MS (3600 * 1000)

enum { EV_DATA = 1, EV_NEED = 2, EV_DONE = 4 };
enum { ST_RUNNING, ST_FINISHED, ST_DELIVERED };

typedef struct {
    char *data;
    size_t len, cap;
} buf;

typedef struct {
    char *name, *value;
} header;

typedef struct sock_ctx {
    uv_poll_t poll;
    curl_socket_t fd;
    ap_http_client *c;
    struct sock_ctx *prev, *next;
} sock_ctx;

struct ap_http_client {
    uv_loop_t *loop;
    CURLM *multi;
    uv_timer_t timer;     /* curl's timeout */
    uv_timer_t keepalive; /* see KEEPALIVE_MS */
    uv_idle_t dispatcher; /* runs owner callbacks outside curl */
    ap_http_call *ready_head, *ready_tail;
    ap_http_call *reqs; /* every request not yet freed */
    size_t active;
    sock_ctx *socks;
    int closing;
    int handles; /* open uv handles; the client is freed when the last one has closed */
};

struct ap_http_call {
    ap_http_client *c;
    CURL *easy;
    struct curl_slist *hdr_list;
    struct curl_slist *connect_to; /* tls_server_name: the real address for the name */
    ap_http_call_handlers h;
    void *ud;
    int state;
    ap_http_call_result result;
    char *msg;
    char *label; /* "METHOD scheme://host/path" (no credentials, no query) for messages */
    char errbuf[CURL_ERROR_SIZE];
    /* response */
    long status;
    header *headers;
    size_t nheaders, cap_headers;
    int stream_response;
    int64_t max_body;
    int too_large;
    buf body;       /* buffered response */
    buf rx, rx_out; /* streamed response: filled by curl / being handed to the owner */
    int rx_inflight, rx_paused;
    /* request body */
    ap_http_call_body_kind body_kind;
    const char *src; /* BODY_MEMORY */
    size_t src_len, src_off;
    FILE *fp;
    char *body_path;
    int read_errno;
    buf tx;
    size_t tx_off;
    int tx_eof, need_pending, tx_paused;
    /* dispatch */
    unsigned pending;
    int queued;
    ap_http_call *next_ready;
    ap_http_call *prev, *next;
};

static int curl_ready;

const char *ap_http_call_result_code(ap_http_call_result r)
{
    switch (r) {
    case AP_HTTP_CALL_OK:
        return "OK";
    case AP_HTTP_CALL_UNAVAILABLE:
        return "UNAVAILABLE";
    case AP_HTTP_CALL_TIMEOUT:
        return "TIMEOUT";
    case AP_HTTP_CALL_TLS:
        return "TLS";
    case AP_HTTP_CALL_INVALID:
        return "INVALID";
    case AP_HTTP_CALL_TOO_LARGE:
        return "TOO_LARGE";
    case AP_HTTP_CALL_CANCELED:
        return "CANCELED";
    }
    return "UNAVAILABLE";
}

static int buf_append(buf *b, const char *p, size_t n)
{
    if (n == 0) return 0;
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 16384;
        while (cap < b->len + n) cap *= 2;
        char *d = realloc(b->data, cap);
        if (d == NULL) return -1;
        b->data = d;
        b->cap = cap;
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

/* ---- handles and the dispatcher ---------------------------------------------------------- */

static void on_handle_closed(uv_handle_t *h)
{
    ap_http_client *c = h->data;
    if (--c->handles == 0 && c->closing) free(c);
}

static void on_sock_closed(uv_handle_t *h)
{
    sock_ctx *sc = h->data;
    ap_http_client *c = sc->c;
    free(sc);
    if (--c->handles == 0 && c->closing) free(c);
}

static void sock_close(sock_ctx *sc)
{
    ap_http_client *c = sc->c;
    if (sc->prev)
        sc->prev->next = sc->next;
    else
        c->socks = sc->next;
    if (sc->next) sc->next->prev = sc->prev;
    uv_poll_stop(&sc->poll);
    uv_close((uv_handle_t *)&sc->poll, on_sock_closed);
}

static void on_dispatch(uv_idle_t *idle);

static void queue(ap_http_call *r, unsigned ev)
{
    ap_http_client *c = r->c;
    r->pending |= ev;
    if (!r->queued) {
        r->queued = 1;
        r->next_ready = NULL;
        if (c->ready_tail)
            c->ready_tail->next_ready = r;
        else
            c->ready_head = r;
        c->ready_tail = r;
    }
    if (!c->closing && !uv_is_active((uv_handle_t *)&c->dispatcher))
        uv_idle_start(&c->dispatcher, on_dispatch);
}

static void unqueue(ap_http_call *r)
{
    if (!r->queued) return;
    ap_http_client *c = r->c;
    ap_http_call *prev = NULL;
    for (ap_http_call *it = c->ready_head; it; prev = it, it = it->next_ready) {
        if (it != r) continue;
        if (prev)
            prev->next_ready = it->next_ready;
        else
            c->ready_head = it->next_ready;
        if (c->ready_tail == it) c->ready_tail = prev;
        break;
    }
    r->queued = 0;
    r->next_ready = NULL;
}

static void req_free(ap_http_call *r)
{
    ap_http_client *c = r->c;
    if (r->prev)
        r->prev->next = r->next;
    else
        c->reqs = r->next;
    if (r->next) r->next->prev = r->prev;
    if (r->easy) curl_easy_cleanup(r->easy);
    curl_slist_free_all(r->hdr_list);
    curl_slist_free_all(r->connect_to);
    if (r->fp) fclose(r->fp);
    for (size_t i = 0; i < r->nheaders; i++) {
        free(r->headers[i].name);
        free(r->headers[i].value);
    }
    free(r->headers);
    free(r->body.data);
    free(r->rx.data);
    free(r->rx_out.data);
    free(r->tx.data);
    free(r->body_path);
    free(r->label);
    free(r->msg);
    free(r);
}

/* Ends a running request: detaches it from curl and queues on_done. Never called from inside
 * a curl callback (curl_multi_remove_handle is not allowed there). */
static void finish(ap_http_call *r, ap_http_call_result res, const char *msg)
{
    if (r->state != ST_RUNNING) return;
    ap_http_client *c = r->c;
    r->state = ST_FINISHED;
    r->result = res;
    r->msg = strdup(msg ? msg : "");
    if (c->multi) curl_multi_remove_handle(c->multi, r->easy);
    if (r->fp) {
        fclose(r->fp);
        r->fp = NULL;
    }
    if (--c->active == 0) uv_timer_stop(&c->keepalive);
    queue(r, EV_DONE);
}

/* Curl's pause state follows the two flags (curl_easy_pause sets both directions at once). */
static void apply_pause(ap_http_call *r)
{
    if (r->state != ST_RUNNING) return;
    int mask = (r->rx_paused ? CURLPAUSE_RECV : 0) | (r->tx_paused ? CURLPAUSE_SEND : 0);
    curl_easy_pause(r->easy, mask);
}

static void deliver(ap_http_call *r)
{
    unsigned ev = r->pending;
    r->pending = 0;
    int ok = r->state == ST_RUNNING || (r->state == ST_FINISHED && r->result == AP_HTTP_CALL_OK);
    if ((ev & EV_DATA) && ok && !r->rx_inflight && r->rx.len > 0) {
        buf t = r->rx;
        r->rx = r->rx_out;
        r->rx_out = t;
        r->rx.len = 0;
        r->rx_inflight = 1;
        /* rx is empty again: let curl refill it while the owner works on this piece */
        if (r->rx_paused) {
            r->rx_paused = 0;
            apply_pause(r);
        }
        r->h.on_data(r, r->ud, r->rx_out.data, r->rx_out.len);
        r->rx_out.len = 0;
    }
    if ((ev & EV_NEED) && r->state == ST_RUNNING && r->need_pending && r->h.on_need)
        r->h.on_need(r, r->ud);
    /* A successful response is handed over whole before on_done; a failure cuts it short. */
    if (r->state == ST_FINISHED && (r->result != AP_HTTP_CALL_OK || r->rx.len == 0)) {
        unqueue(r);
        r->state = ST_DELIVERED;
        r->h.on_done(r, r->ud, r->result, r->msg);
        req_free(r);
    }
}

static void on_dispatch(uv_idle_t *idle)
{
    ap_http_client *c = idle->data;
    uv_idle_stop(idle);
    ap_http_call *r;
    while ((r = c->ready_head) != NULL) {
        c->ready_head = r->next_ready;
        if (c->ready_head == NULL) c->ready_tail = NULL;
        r->queued = 0;
        r->next_ready = NULL;
        deliver(r);
    }
}

/* ---- curl <-> libuv ---------------------------------------------------------------------- */

static int is_tls_error(CURLcode rc)
{
    switch (rc) {
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_SSL_ENGINE_NOTFOUND:
    case CURLE_SSL_ENGINE_SETFAILED:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_ENGINE_INITFAILED:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_SHUTDOWN_FAILED:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
    case CURLE_SSL_CLIENTCERT:
    case CURLE_USE_SSL_FAILED:
        return 1;
    default:
        return 0;
    }
}

static void finish_curl(ap_http_call *r, CURLcode rc)
{
    if (rc == CURLE_OK) {
        finish(r, AP_HTTP_CALL_OK, "");
        return;
    }
    const char *detail = r->errbuf[0] ? r->errbuf : curl_easy_strerror(rc);
    ap_http_call_result res = AP_HTTP_CALL_UNAVAILABLE;
    char *msg = NULL;
    if (rc == CURLE_OPERATION_TIMEDOUT) {
        res = AP_HTTP_CALL_TIMEOUT;
    } else if (is_tls_error(rc)) {
        res = AP_HTTP_CALL_TLS;
    } else if (rc == CURLE_UNSUPPORTED_PROTOCOL || rc == CURLE_URL_MALFORMAT ||
               rc == CURLE_BAD_FUNCTION_ARGUMENT || rc == CURLE_NOT_BUILT_IN) {
        res = AP_HTTP_CALL_INVALID;
    } else if (rc == CURLE_FILESIZE_EXCEEDED || (rc == CURLE_WRITE_ERROR && r->too_large)) {
        res = AP_HTTP_CALL_TOO_LARGE;
        msg = ap_http_fmt("%s: response body larger than %lld bytes", r->label,
                          (long long)r->max_body);
    } else if ((rc == CURLE_READ_ERROR || rc == CURLE_ABORTED_BY_CALLBACK) && r->read_errno) {
        res = AP_HTTP_CALL_INVALID;
        msg = ap_http_fmt("%s: cannot read %s: %s", r->label, r->body_path ? r->body_path : "body",
                          strerror(r->read_errno));
    }
    if (msg == NULL) msg = ap_http_fmt("%s: %s", r->label, detail);
    finish(r, res, msg ? msg : detail);
    free(msg);
}

static void check_done(ap_http_client *c)
{
    CURLMsg *m;
    int left;
    while (c->multi && (m = curl_multi_info_read(c->multi, &left)) != NULL) {
        if (m->msg != CURLMSG_DONE) continue;
        CURL *easy = m->easy_handle;
        CURLcode rc = m->data.result;
        ap_http_call *r = NULL;
        curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&r);
        if (r) finish_curl(r, rc);
    }
}

static void on_poll(uv_poll_t *p, int status, int events)
{
    sock_ctx *sc = p->data;
    ap_http_client *c = sc->c;
    int flags = 0;
    if (status < 0) {
        flags = CURL_CSELECT_ERR;
    } else {
        if (events & UV_READABLE) flags |= CURL_CSELECT_IN;
        if (events & UV_WRITABLE) flags |= CURL_CSELECT_OUT;
    }
    int running;
    curl_multi_socket_action(c->multi, sc->fd, flags, &running);
    check_done(c);
}

static void on_timeout(uv_timer_t *t)
{
    ap_http_client *c = t->data;
    int running;
    curl_multi_socket_action(c->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    check_done(c);
}

static int on_curl_socket(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
    (void)easy;
    ap_http_client *c = userp;
    sock_ctx *sc = socketp;
    if (what == CURL_POLL_REMOVE) {
        if (sc) {
            if (c->multi) curl_multi_assign(c->multi, s, NULL);
            sock_close(sc);
        }
        return 0;
    }
    if (c->closing) return 0;
    if (sc == NULL) {
        sc = calloc(1, sizeof *sc);
        if (sc == NULL) return -1;
        if (uv_poll_init_socket(c->loop, &sc->poll, s) != 0) {
            free(sc);
            return -1;
        }
        sc->fd = s;
        sc->c = c;
        sc->poll.data = sc;
        sc->next = c->socks;
        if (c->socks) c->socks->prev = sc;
        c->socks = sc;
        c->handles++;
        curl_multi_assign(c->multi, s, sc);
    }
    int events = 0;
    if (what & CURL_POLL_IN) events |= UV_READABLE;
    if (what & CURL_POLL_OUT) events |= UV_WRITABLE;
    uv_poll_start(&sc->poll, events, on_poll);
    return 0;
}

static int on_curl_timer(CURLM *multi, long timeout_ms, void *userp)
{
    (void)multi;
    ap_http_client *c = userp;
    if (c->closing) return 0;
    if (timeout_ms < 0)
        uv_timer_stop(&c->timer);
    else
        uv_timer_start(&c->timer, on_timeout, (uint64_t)timeout_ms, 0);
    return 0;
}

static void on_keepalive(uv_timer_t *t)
{
    (void)t;
}

/* ---- curl data callbacks (no owner code runs in here) ------------------------------------ */

static size_t on_write(char *ptr, size_t size, size_t n, void *userp)
{
    ap_http_call *r = userp;
    size_t len = size * n;
    if (r->state != ST_RUNNING) return 0;
    if (!r->stream_response) {
        if (r->max_body > 0 && (int64_t)(r->body.len + len) > r->max_body) {
            r->too_large = 1;
            return 0;
        }
        return buf_append(&r->body, ptr, len) == 0 ? len : 0;
    }
    if (r->rx.len > 0 && r->rx.len + len > RX_CAP) {
        r->rx_paused = 1;
        return CURL_WRITEFUNC_PAUSE;
    }
    if (buf_append(&r->rx, ptr, len) != 0) return 0;
    if (!r->rx_inflight) queue(r, EV_DATA);
    return len;
}

static size_t on_header(char *line, size_t size, size_t n, void *userp)
{
    ap_http_call *r = userp;
    size_t len = size * n;
    if (len >= 5 && memcmp(line, "HTTP/", 5) == 0) {
        /* a new response (after 1xx or a redirect): forget the previous one's headers */
        for (size_t i = 0; i < r->nheaders; i++) {
            free(r->headers[i].name);
            free(r->headers[i].value);
        }
        r->nheaders = 0;
        const char *sp = memchr(line, ' ', len);
        r->status = sp ? strtol(sp + 1, NULL, 10) : 0;
        return len;
    }
    const char *colon = memchr(line, ':', len);
    if (colon == NULL || colon == line) return len;
    const char *ns = line, *ne = colon;
    while (ne > ns && (ne[-1] == ' ' || ne[-1] == '\t')) ne--;
    const char *vs = colon + 1, *ve = line + len;
    while (vs < ve && (*vs == ' ' || *vs == '\t')) vs++;
    while (ve > vs && (ve[-1] == '\r' || ve[-1] == '\n' || ve[-1] == ' ' || ve[-1] == '\t')) ve--;
    if (r->nheaders == r->cap_headers) {
        size_t cap = r->cap_headers ? r->cap_headers * 2 : 16;
        header *h = realloc(r->headers, cap * sizeof *h);
        if (h == NULL) return 0;
        r->headers = h;
        r->cap_headers = cap;
    }
    char *name = strndup(ns, (size_t)(ne - ns));
    char *value = strndup(vs, (size_t)(ve - vs));
    if (name == NULL || value == NULL) {
        free(name);
        free(value);
        return 0;
    }
    for (char *p = name; *p; p++)
        if (*p >= 'A' && *p <= 'Z') *p = (char)(*p - 'A' + 'a');
    r->headers[r->nheaders].name = name;
    r->headers[r->nheaders].value = value;
    r->nheaders++;
    return len;
}

static void request_more(ap_http_call *r)
{
    if (r->need_pending || r->tx_eof || r->state != ST_RUNNING) return;
    r->need_pending = 1;
    queue(r, EV_NEED);
}

static size_t on_read(char *dst, size_t size, size_t n, void *userp)
{
    ap_http_call *r = userp;
    size_t len = size * n;
    switch (r->body_kind) {
    case AP_HTTP_CALL_BODY_MEMORY: {
        size_t left = r->src_len - r->src_off;
        size_t k = left < len ? left : len;
        memcpy(dst, r->src + r->src_off, k);
        r->src_off += k;
        return k;
    }
    case AP_HTTP_CALL_BODY_FILE: {
        size_t k = fread(dst, 1, len, r->fp);
        if (k == 0 && ferror(r->fp)) {
            r->read_errno = errno ? errno : EIO;
            return CURL_READFUNC_ABORT;
        }
        return k;
    }
    case AP_HTTP_CALL_BODY_STREAM: {
        size_t avail = r->tx.len - r->tx_off;
        if (avail > 0) {
            size_t k = avail < len ? avail : len;
            memcpy(dst, r->tx.data + r->tx_off, k);
            r->tx_off += k;
            if (r->tx_off == r->tx.len) {
                r->tx.len = r->tx_off = 0;
                request_more(r); /* the owner produces the next chunk while curl sends */
            }
            return k;
        }
        if (r->tx_eof) return 0;
        request_more(r);
        r->tx_paused = 1;
        return CURL_READFUNC_PAUSE;
    }
    case AP_HTTP_CALL_BODY_NONE:
        break;
    }
    return 0;
}

static int on_seek(void *userp, curl_off_t off, int origin)
{
    ap_http_call *r = userp;
    if (origin != SEEK_SET || off < 0) return CURL_SEEKFUNC_CANTSEEK;
    if (r->body_kind == AP_HTTP_CALL_BODY_MEMORY && (size_t)off <= r->src_len) {
        r->src_off = (size_t)off;
        return CURL_SEEKFUNC_OK;
    }
    if (r->body_kind == AP_HTTP_CALL_BODY_FILE && r->fp && fseeko(r->fp, (off_t)off, SEEK_SET) == 0)
        return CURL_SEEKFUNC_OK;
    return CURL_SEEKFUNC_CANTSEEK;
}

/* ---- public API -------------------------------------------------------------------------- */

ap_http_client *ap_http_client_new(uv_loop_t *loop)
{
    if (!curl_ready) {
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) return NULL;
        curl_ready = 1;
    }
    ap_http_client *c = calloc(1, sizeof *c);
    if (c == NULL) return NULL;
    c->loop = loop;
    c->multi = curl_multi_init();
    if (c->multi == NULL) {
        free(c);
        return NULL;
    }
    curl_multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, on_curl_socket);
    curl_multi_setopt(c->multi, CURLMOPT_SOCKETDATA, c);
    curl_multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer);
    curl_multi_setopt(c->multi, CURLMOPT_TIMERDATA, c);
    uv_timer_init(loop, &c->timer);
    uv_timer_init(loop, &c->keepalive);
    uv_idle_init(loop, &c->dispatcher);
    c->timer.data = c->keepalive.data = c->dispatcher.data = c;
    c->handles = 3;
    return c;
}

size_t ap_http_client_active(const ap_http_client *c)
{
    return c->active;
}

void ap_http_client_close(ap_http_client *c)
{
    if (c == NULL || c->closing) return;
    c->closing = 1;
    while (c->reqs) {
        ap_http_call *r = c->reqs;
        if (r->state == ST_RUNNING) finish(r, AP_HTTP_CALL_CANCELED, "the HTTP client was closed");
        unqueue(r);
        r->state = ST_DELIVERED;
        r->h.on_done(r, r->ud, r->result, r->msg);
        req_free(r);
    }
    CURLM *multi = c->multi;
    c->multi = NULL;
    curl_multi_cleanup(multi);
    while (c->socks) sock_close(c->socks);
    uv_close((uv_handle_t *)&c->timer, on_handle_closed);
    uv_close((uv_handle_t *)&c->keepalive, on_handle_closed);
    uv_close((uv_handle_t *)&c->dispatcher, on_handle_closed);
}

static int valid_method(const char *m)
{
    if (m == NULL || *m == 0 || strlen(m) > 32) return 0;
    for (const char *p = m; *p; p++)
        if (!((*p >= 'A' && *p <= 'Z') || *p == '-' || *p == '_')) return 0;
    return 1;
}

/* Checks the URL (http or https) and makes the label used in messages. */
#define SETOPT(opt, val)                                                                           \
    do {                                                                                           \
        CURLcode rc_ = curl_easy_setopt(e, opt, val);                                              \
        if (rc_ != CURLE_OK) {                                                                     \
            snprintf(err, errlen, "%s: %s: %s", r->label, #opt, curl_easy_strerror(rc_));          \
            goto fail;                                                                             \
        }                                                                                          \
    } while (0)

static int set_blob(CURL *e, CURLoption opt, const char *data, size_t len)
{
    struct curl_blob b = {(void *)data, len, CURL_BLOB_COPY};
    return curl_easy_setopt(e, opt, &b) == CURLE_OK ? 0 : -1;
}

ap_http_call *ap_http_call_start(ap_http_client *c, const ap_http_call_opts *o,
                                 const ap_http_call_handlers *h, void *ud, char *err, size_t errlen)
{
    const char *method = o->method ? o->method : "GET";
    if (c->closing) {
        snprintf(err, errlen, "the HTTP client is closed");
        return NULL;
    }
    if (!valid_method(method)) {
        snprintf(err, errlen, "invalid method \"%s\"", method);
        return NULL;
    }
    if (o->url == NULL) {
        snprintf(err, errlen, "no URL");
        return NULL;
    }
    for (size_t i = 0; i < o->nheaders; i++) {
        if (strpbrk(o->headers[i], "\r\n") || strchr(o->headers[i], ':') == NULL) {
            snprintf(err, errlen, "invalid header line \"%s\"", o->headers[i]);
            return NULL;
        }
    }
    if (o->body_kind == AP_HTTP_CALL_BODY_STREAM && h->on_need == NULL) {
        snprintf(err, errlen, "a streamed body needs on_need");
        return NULL;
    }
    if (o->stream_response && h->on_data == NULL) {
        snprintf(err, errlen, "a streamed response needs on_data");
        return NULL;
    }

    ap_http_call *r = calloc(1, sizeof *r);
    if (r == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    r->c = c;
    r->h = *h;
    r->ud = ud;
    r->state = ST_RUNNING;
    r->stream_response = o->stream_response;
    r->max_body = o->max_body;
    r->body_kind = o->body_kind;
    r->label = ap_http_url_label(method, o->url, err, errlen);
    if (r->label == NULL) {
        free(r);
        return NULL;
    }
    ap_http_route rt = {0};
    CURL *e = r->easy = curl_easy_init();
    if (e == NULL) {
        snprintf(err, errlen, "cannot create a curl handle");
        goto fail;
    }

    int64_t upload_size = -1;
    switch (o->body_kind) {
    case AP_HTTP_CALL_BODY_MEMORY:
        r->src = o->body ? o->body : "";
        r->src_len = o->body ? o->body_len : 0;
        upload_size = (int64_t)r->src_len;
        break;
    case AP_HTTP_CALL_BODY_FILE: {
        struct stat st;
        r->body_path = strdup(o->body_path ? o->body_path : "");
        r->fp = o->body_path ? fopen(o->body_path, "rb") : NULL;
        if (r->body_path == NULL || r->fp == NULL || fstat(fileno(r->fp), &st) != 0) {
            snprintf(err, errlen, "cannot read %s: %s", o->body_path ? o->body_path : "(no path)",
                     strerror(errno));
            goto fail;
        }
        if (!S_ISREG(st.st_mode)) {
            snprintf(err, errlen, "cannot read %s: not a regular file", o->body_path);
            goto fail;
        }
        upload_size = (int64_t)st.st_size;
        break;
    }
    case AP_HTTP_CALL_BODY_STREAM:
        upload_size = o->body_length >= 0 ? o->body_length : -1;
        break;
    case AP_HTTP_CALL_BODY_NONE:
        break;
    }

    if (o->tls_server_name &&
        ap_http_route_server_name(o->url, o->tls_server_name, &rt, err, errlen) != 0)
        goto fail;
    SETOPT(CURLOPT_URL, rt.url ? rt.url : o->url);
    if (rt.connect_to) {
        if ((r->connect_to = curl_slist_append(NULL, rt.connect_to)) == NULL) {
            snprintf(err, errlen, "out of memory");
            goto fail;
        }
        SETOPT(CURLOPT_CONNECT_TO, r->connect_to);
    }
    if (o->proxy) SETOPT(CURLOPT_PROXY, o->proxy);
    SETOPT(CURLOPT_PRIVATE, (void *)r);
    SETOPT(CURLOPT_NOSIGNAL, 1L);
    SETOPT(CURLOPT_ERRORBUFFER, r->errbuf);
    SETOPT(CURLOPT_PROTOCOLS_STR, "http,https");
    SETOPT(CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    SETOPT(CURLOPT_WRITEFUNCTION, on_write);
    SETOPT(CURLOPT_WRITEDATA, (void *)r);
    SETOPT(CURLOPT_HEADERFUNCTION, on_header);
    SETOPT(CURLOPT_HEADERDATA, (void *)r);
    SETOPT(CURLOPT_TCP_KEEPALIVE, 1L);
    if (o->user_agent) SETOPT(CURLOPT_USERAGENT, o->user_agent);
    if (o->timeout_ms > 0) SETOPT(CURLOPT_TIMEOUT_MS, o->timeout_ms);
    if (o->connect_timeout_ms > 0) SETOPT(CURLOPT_CONNECTTIMEOUT_MS, o->connect_timeout_ms);
    if (o->follow_redirects) {
        SETOPT(CURLOPT_FOLLOWLOCATION, 1L);
        SETOPT(CURLOPT_MAXREDIRS, 10L);
    }
    if (!o->stream_response && o->max_body > 0)
        SETOPT(CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)o->max_body);

    if (strcmp(method, "HEAD") == 0) {
        SETOPT(CURLOPT_NOBODY, 1L);
    } else if (o->body_kind != AP_HTTP_CALL_BODY_NONE) {
        /* One path for every method with a body: an upload, with the method string replaced
         * (curl sends Content-Length, or chunked when the size is unknown). */
        SETOPT(CURLOPT_UPLOAD, 1L);
        SETOPT(CURLOPT_READFUNCTION, on_read);
        SETOPT(CURLOPT_READDATA, (void *)r);
        SETOPT(CURLOPT_SEEKFUNCTION, on_seek);
        SETOPT(CURLOPT_SEEKDATA, (void *)r);
        SETOPT(CURLOPT_INFILESIZE_LARGE, (curl_off_t)upload_size);
        if (strcmp(method, "PUT") != 0) SETOPT(CURLOPT_CUSTOMREQUEST, method);
        /* A streamed body cannot be rewound, so it never goes on a reused connection that
         * might turn out to be dead (curl would have to resend from the start). */
        if (o->body_kind == AP_HTTP_CALL_BODY_STREAM) SETOPT(CURLOPT_FRESH_CONNECT, 1L);
    } else if (strcmp(method, "GET") != 0) {
        SETOPT(CURLOPT_CUSTOMREQUEST, method);
    }

    int has_expect = 0, has_host = 0;
    for (size_t i = 0; i < o->nheaders; i++) {
        if (strncasecmp(o->headers[i], "expect:", 7) == 0) has_expect = 1;
        if (strncasecmp(o->headers[i], "host:", 5) == 0) has_host = 1;
        struct curl_slist *l = curl_slist_append(r->hdr_list, o->headers[i]);
        if (l == NULL) {
            snprintf(err, errlen, "out of memory");
            goto fail;
        }
        r->hdr_list = l;
    }
    /* no "Expect: 100-continue" round trip before every upload; the URL's own authority in
     * Host when TLS names another host */
    const char *extra[] = {has_expect ? NULL : "Expect:", has_host ? NULL : rt.host_header};
    for (size_t i = 0; i < sizeof extra / sizeof *extra; i++) {
        if (extra[i] == NULL) continue;
        struct curl_slist *l = curl_slist_append(r->hdr_list, extra[i]);
        if (l == NULL) {
            snprintf(err, errlen, "out of memory");
            goto fail;
        }
        r->hdr_list = l;
    }
    SETOPT(CURLOPT_HTTPHEADER, r->hdr_list);
    SETOPT(CURLOPT_HEADEROPT, CURLHEADER_SEPARATE); /* our headers never go to a proxy */

    if (o->insecure) {
        SETOPT(CURLOPT_SSL_VERIFYPEER, 0L);
        SETOPT(CURLOPT_SSL_VERIFYHOST, 0L);
    }
    if (o->ca_file) SETOPT(CURLOPT_CAINFO, o->ca_file);
    if (o->client_cert) SETOPT(CURLOPT_SSLCERT, o->client_cert);
    if (o->client_key) SETOPT(CURLOPT_SSLKEY, o->client_key);
    if ((o->ca_pem && set_blob(e, CURLOPT_CAINFO_BLOB, o->ca_pem, o->ca_pem_len) != 0) ||
        (o->client_cert_pem &&
         set_blob(e, CURLOPT_SSLCERT_BLOB, o->client_cert_pem, o->client_cert_pem_len) != 0) ||
        (o->client_key_pem &&
         set_blob(e, CURLOPT_SSLKEY_BLOB, o->client_key_pem, o->client_key_pem_len) != 0)) {
        snprintf(err, errlen, "%s: in-memory certificates are not supported by this libcurl",
                 r->label);
        goto fail;
    }
    if (o->client_cert || o->client_cert_pem) SETOPT(CURLOPT_SSLCERTTYPE, "PEM");
    if (o->client_key || o->client_key_pem) SETOPT(CURLOPT_SSLKEYTYPE, "PEM");

    CURLMcode mc = curl_multi_add_handle(c->multi, e);
    if (mc != CURLM_OK) {
        snprintf(err, errlen, "%s: %s", r->label, curl_multi_strerror(mc));
        goto fail;
    }
    r->next = c->reqs;
    if (c->reqs) c->reqs->prev = r;
    c->reqs = r;
    if (c->active++ == 0) uv_timer_start(&c->keepalive, on_keepalive, KEEPALIVE_MS, KEEPALIVE_MS);
    if (o->body_kind == AP_HTTP_CALL_BODY_STREAM) request_more(r); /* have the first chunk ready */
    ap_http_route_free(&rt);
    return r;

fail:
    ap_http_route_free(&rt);
    if (r->easy) curl_easy_cleanup(r->easy);
    curl_slist_free_all(r->hdr_list);
    curl_slist_free_all(r->connect_to);
    if (r->fp) fclose(r->fp);
    free(r->body_path);
    free(r->label);
    free(r);
    return NULL;
}

void ap_http_call_ack(ap_http_call *r)
{
    if (r == NULL || r->state == ST_DELIVERED) return;
    r->rx_inflight = 0;
    if (r->rx.len > 0) queue(r, EV_DATA);
}

void ap_http_call_feed(ap_http_call *r, const char *data, size_t len, int eof)
{
    if (r == NULL || r->state != ST_RUNNING || r->body_kind != AP_HTTP_CALL_BODY_STREAM) return;
    r->need_pending = 0;
    if (eof) {
        r->tx_eof = 1;
    } else if (len == 0) {
        request_more(r);
        return;
    } else {
        if (r->tx_off > 0) { /* keep only what curl has not taken yet */
            memmove(r->tx.data, r->tx.data + r->tx_off, r->tx.len - r->tx_off);
            r->tx.len -= r->tx_off;
            r->tx_off = 0;
        }
        if (buf_append(&r->tx, data, len) != 0) {
            finish(r, AP_HTTP_CALL_UNAVAILABLE, "out of memory buffering the request body");
            return;
        }
    }
    if (r->tx_paused) {
        r->tx_paused = 0;
        apply_pause(r);
    }
}

void ap_http_call_cancel(ap_http_call *r, const char *reason)
{
    if (r == NULL || r->state != ST_RUNNING) return;
    finish(r, AP_HTTP_CALL_CANCELED, reason && *reason ? reason : "the request was canceled");
}

long ap_http_call_status(const ap_http_call *r)
{
    return r->status;
}

size_t ap_http_call_header_count(const ap_http_call *r)
{
    return r->nheaders;
}

void ap_http_call_header(const ap_http_call *r, size_t i, const char **name, const char **value)
{
    *name = i < r->nheaders ? r->headers[i].name : NULL;
    *value = i < r->nheaders ? r->headers[i].value : NULL;
}

const char *ap_http_call_body(const ap_http_call *r, size_t *len)
{
    if (r->stream_response) {
        *len = 0;
        return NULL;
    }
    *len = r->body.len;
    return r->body.data ? r->body.data : "";
}
