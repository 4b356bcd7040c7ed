/* core/redis: a Redis connection on the libuv loop. TCP (and TLS through OpenSSL memory BIOs, as
 * Debian's hiredis 0.14 has no TLS) is ours; RESP parsing and command formatting are hiredis's. */
#include "redis.h"

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { ST_RESOLVING, ST_CONNECTING, ST_HANDSHAKE, ST_OPEN, ST_FAILED };

struct ap_redis {
    uv_loop_t *loop;
    uv_getaddrinfo_t gai;
    uv_connect_t creq;
    uv_tcp_t tcp;
    uv_timer_t timer;
    int state;
    int closing;         /* ap_redis_close was called: no more callbacks */
    int handles_closing; /* uv_close was called on tcp and timer */
    int handles_open;    /* of tcp and timer, not closed yet */
    int gai_active;
    int reading;
    unsigned long replies_seen;
    unsigned timeout_ms;
    char *host, *server_name;
    int port, tls, verify;
    char desc[300];
    const char *later_code; /* a failure found inside ap_redis_command, reported by the timer */
    char later_msg[512];
    SSL_CTX *ctx;
    SSL *ssl;
    BIO *rbio, *wbio;
    redisReader *reader;
    uint64_t *tags; /* ring of the tags of commands whose reply is due */
    size_t head, count, cap;
    size_t write_queue;
    ap_redis_connect_cb on_connect;
    ap_redis_reply_cb on_reply;
    void *ud;
    char rbuf[65536];
};

typedef struct {
    uv_write_t req;
    ap_redis *r;
    char *buf;
    size_t len;
    int formatted; /* buf came from redisFormatCommandArgv */
} write_req;

static void maybe_free(ap_redis *r)
{
    if (!r->closing || r->handles_open > 0 || r->gai_active) return;
    if (r->ssl) SSL_free(r->ssl); /* frees the BIOs */
    if (r->ctx) SSL_CTX_free(r->ctx);
    if (r->reader) redisReaderFree(r->reader);
    free(r->tags);
    free(r->host);
    free(r->server_name);
    free(r);
}

static void on_handle_closed(uv_handle_t *h)
{
    ap_redis *r = h->data;
    r->handles_open--;
    maybe_free(r);
}

static void close_handles(ap_redis *r)
{
    if (r->handles_closing) return;
    r->handles_closing = 1;
    uv_timer_stop(&r->timer);
    uv_close((uv_handle_t *)&r->tcp, on_handle_closed);
    uv_close((uv_handle_t *)&r->timer, on_handle_closed);
}

static int pop_tag(ap_redis *r, uint64_t *tag)
{
    if (r->count == 0) return 0;
    *tag = r->tags[r->head];
    r->head = (r->head + 1) % r->cap;
    r->count--;
    return 1;
}

static int push_tag(ap_redis *r, uint64_t tag)
{
    if (r->count == r->cap) {
        size_t ncap = r->cap ? r->cap * 2 : 16;
        uint64_t *n = malloc(ncap * sizeof *n);
        if (n == NULL) return -1;
        for (size_t i = 0; i < r->count; i++) n[i] = r->tags[(r->head + i) % r->cap];
        free(r->tags);
        r->tags = n;
        r->head = 0;
        r->cap = ncap;
    }
    r->tags[(r->head + r->count) % r->cap] = tag;
    r->count++;
    return 0;
}

/* The connection is unusable: tell whoever waits (the connect callback, or every pending
 * command) and close the socket. The struct lives on until ap_redis_close. */
static void fail(ap_redis *r, const char *code, const char *fmt, ...)
{
    if (r->state == ST_FAILED) return;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    int was = r->state;
    r->state = ST_FAILED;
    close_handles(r);
    if (r->closing) return;
    if (was < ST_OPEN) {
        r->on_connect(r, r->ud, code, msg);
        return;
    }
    uint64_t tag;
    while (!r->closing && pop_tag(r, &tag)) r->on_reply(r, r->ud, tag, NULL, code, msg);
}

static void on_timer(uv_timer_t *t);

/* Like fail, but from inside ap_redis_command: the callbacks run on the next loop turn, never
 * inside the caller's own call. */
static void fail_later(ap_redis *r, const char *code, const char *fmt, ...)
{
    if (r->state == ST_FAILED || r->later_code) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->later_msg, sizeof r->later_msg, fmt, ap);
    va_end(ap);
    r->later_code = code;
    uv_timer_start(&r->timer, on_timer, 0, 0);
}

static void on_written(uv_write_t *req, int status)
{
    write_req *w = (write_req *)req;
    ap_redis *r = w->r;
    r->write_queue -= w->len;
    if (w->formatted)
        redisFreeCommand(w->buf);
    else
        free(w->buf);
    free(w);
    if (status < 0 && status != UV_ECANCELED)
        fail(r, "UNAVAILABLE", "writing to %s failed: %s", r->desc, uv_strerror(status));
}

/* Writes buf (taking ownership); returns 0 or a libuv error (the caller decides how to fail). */
static int send_raw(ap_redis *r, char *buf, size_t len, int formatted)
{
    write_req *w = malloc(sizeof *w);
    if (w == NULL) {
        if (formatted)
            redisFreeCommand(buf);
        else
            free(buf);
        return UV_ENOMEM;
    }
    w->r = r;
    w->buf = buf;
    w->len = len;
    w->formatted = formatted;
    uv_buf_t b = uv_buf_init(buf, (unsigned)len);
    r->write_queue += len;
    int rc = uv_write(&w->req, (uv_stream_t *)&r->tcp, &b, 1, on_written);
    if (rc < 0) {
        r->write_queue -= len;
        if (formatted)
            redisFreeCommand(buf);
        else
            free(buf);
        free(w);
        return rc;
    }
    return 0;
}

/* Sends what OpenSSL has written into the outgoing memory BIO; 0 or a libuv error. */
static int flush_tls(ap_redis *r)
{
    size_t n;
    while ((n = BIO_ctrl_pending(r->wbio)) > 0) {
        char *buf = malloc(n);
        if (buf == NULL) return UV_ENOMEM;
        int got = BIO_read(r->wbio, buf, (int)n);
        if (got <= 0) {
            free(buf);
            return UV_EIO;
        }
        int rc = send_raw(r, buf, (size_t)got, 0);
        if (rc != 0) return rc;
    }
    return 0;
}

static void tls_error_text(ap_redis *r, char *out, size_t outlen)
{
    long v = SSL_get_verify_result(r->ssl);
    unsigned long e = ERR_get_error();
    if (v != X509_V_OK && r->verify) {
        snprintf(out, outlen, "certificate verification failed: %s",
                 X509_verify_cert_error_string(v));
    } else if (e != 0) {
        char buf[256];
        ERR_error_string_n(e, buf, sizeof buf);
        snprintf(out, outlen, "%s", buf);
    } else {
        snprintf(out, outlen, "the handshake failed");
    }
    ERR_clear_error();
}

static void arm_timer(ap_redis *r);

static void connected(ap_redis *r)
{
    r->state = ST_OPEN;
    uv_timer_stop(&r->timer);
    r->on_connect(r, r->ud, NULL, NULL);
}

static void do_handshake(ap_redis *r)
{
    ERR_clear_error();
    int rc = SSL_do_handshake(r->ssl);
    int wrc = flush_tls(r);
    if (wrc != 0) {
        fail(r, "UNAVAILABLE", "writing to %s failed: %s", r->desc, uv_strerror(wrc));
        return;
    }
    if (rc == 1) {
        connected(r);
        return;
    }
    int e = SSL_get_error(r->ssl, rc);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return;
    char text[400];
    int cert = r->verify && SSL_get_verify_result(r->ssl) != X509_V_OK;
    tls_error_text(r, text, sizeof text);
    fail(r, "TLS", "TLS handshake with %s failed: %s%s", r->desc, text,
         cert ? "" : " (is it a TLS port? redis:// is plain, rediss:// TLS)");
}

static void deliver_replies(ap_redis *r)
{
    for (;;) {
        if (r->state != ST_OPEN || r->closing) return;
        void *reply = NULL;
        if (redisReaderGetReply(r->reader, &reply) != REDIS_OK) {
            fail(r, "UNAVAILABLE", "protocol error from %s: %s", r->desc, r->reader->errstr);
            return;
        }
        if (reply == NULL) break;
        uint64_t tag;
        if (!pop_tag(r, &tag)) {
            freeReplyObject(reply);
            fail(r, "UNAVAILABLE", "%s sent a reply nobody asked for", r->desc);
            return;
        }
        r->replies_seen++;
        r->on_reply(r, r->ud, tag, reply, NULL, NULL);
        freeReplyObject(reply);
    }
    if (r->state == ST_OPEN) {
        if (r->count == 0)
            uv_timer_stop(&r->timer);
        else
            arm_timer(r);
    }
}

static void feed(ap_redis *r, const char *buf, size_t len)
{
    if (redisReaderFeed(r->reader, buf, len) != REDIS_OK)
        fail(r, "UNAVAILABLE", "protocol error from %s: %s", r->desc, r->reader->errstr);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    ap_redis *r = h->data;
    (void)suggested;
    *buf = uv_buf_init(r->rbuf, sizeof r->rbuf);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    ap_redis *r = s->data;
    if (r->state == ST_FAILED) return;
    if (nread == 0) return;
    if (nread < 0) {
        /* A TLS server drops a plain client at its first bytes: say so. */
        const char *hint =
            r->replies_seen == 0 && !r->tls ? " before answering (a TLS port? use rediss://)" : "";
        if (nread == UV_EOF)
            fail(r, "UNAVAILABLE", "%s closed the connection%s", r->desc, hint);
        else
            fail(r, "UNAVAILABLE", "connection to %s lost: %s%s", r->desc, uv_strerror((int)nread),
                 hint);
        return;
    }
    if (!r->tls) {
        feed(r, buf->base, (size_t)nread);
        deliver_replies(r);
        return;
    }
    BIO_write(r->rbio, buf->base, (int)nread);
    if (r->state == ST_HANDSHAKE) {
        do_handshake(r);
        if (r->state != ST_OPEN) return;
    }
    char plain[16384];
    for (;;) {
        ERR_clear_error();
        int n = SSL_read(r->ssl, plain, sizeof plain);
        if (n > 0) {
            feed(r, plain, (size_t)n);
            if (r->state != ST_OPEN) return;
            continue;
        }
        int e = SSL_get_error(r->ssl, n);
        if (e == SSL_ERROR_WANT_READ) break;
        if (e == SSL_ERROR_ZERO_RETURN) {
            fail(r, "UNAVAILABLE", "%s closed the TLS connection", r->desc);
            return;
        }
        char text[400];
        tls_error_text(r, text, sizeof text);
        fail(r, "TLS", "TLS error from %s: %s", r->desc, text);
        return;
    }
    int wrc = flush_tls(r);
    if (wrc != 0) {
        fail(r, "UNAVAILABLE", "writing to %s failed: %s", r->desc, uv_strerror(wrc));
        return;
    }
    deliver_replies(r);
}

static void on_timer(uv_timer_t *t)
{
    ap_redis *r = t->data;
    if (r->later_code)
        fail(r, r->later_code, "%s", r->later_msg);
    else if (r->state == ST_OPEN)
        fail(r, "TIMEOUT", "no reply from %s in %u ms", r->desc, r->timeout_ms);
    else if (r->state == ST_HANDSHAKE)
        fail(r, "TLS", "the TLS handshake with %s did not finish in %u ms (is it a TLS port?)",
             r->desc, r->timeout_ms);
    else
        fail(r, "TIMEOUT", "connecting to %s timed out after %u ms", r->desc, r->timeout_ms);
}

static void arm_timer(ap_redis *r)
{
    if (r->later_code) return;
    if (r->timeout_ms > 0) uv_timer_start(&r->timer, on_timer, r->timeout_ms, 0);
}

static int setup_tls(ap_redis *r, const ap_redis_opts *o, char *msg, size_t msglen)
{
    r->ctx = SSL_CTX_new(TLS_client_method());
    if (r->ctx == NULL) {
        snprintf(msg, msglen, "cannot create a TLS context");
        return -1;
    }
    SSL_CTX_set_min_proto_version(r->ctx, TLS1_2_VERSION);
    if (r->verify) {
        SSL_CTX_set_verify(r->ctx, SSL_VERIFY_PEER, NULL);
        int ok = o->ca_file && *o->ca_file ? SSL_CTX_load_verify_locations(r->ctx, o->ca_file, NULL)
                                           : SSL_CTX_set_default_verify_paths(r->ctx);
        if (ok != 1) {
            snprintf(msg, msglen, "cannot load the CA certificates %s",
                     o->ca_file ? o->ca_file : "(system)");
            return -1;
        }
    } else {
        SSL_CTX_set_verify(r->ctx, SSL_VERIFY_NONE, NULL);
    }
    if (o->cert_file && *o->cert_file) {
        if (SSL_CTX_use_certificate_chain_file(r->ctx, o->cert_file) != 1) {
            snprintf(msg, msglen, "cannot load the client certificate %s", o->cert_file);
            return -1;
        }
        const char *key = o->key_file && *o->key_file ? o->key_file : o->cert_file;
        if (SSL_CTX_use_PrivateKey_file(r->ctx, key, SSL_FILETYPE_PEM) != 1 ||
            SSL_CTX_check_private_key(r->ctx) != 1) {
            snprintf(msg, msglen,
                     "cannot load the client key %s (or it does not match the certificate)", key);
            return -1;
        }
    }
    ERR_clear_error();
    r->ssl = SSL_new(r->ctx);
    r->rbio = BIO_new(BIO_s_mem());
    r->wbio = BIO_new(BIO_s_mem());
    if (r->ssl == NULL || r->rbio == NULL || r->wbio == NULL) {
        if (r->rbio) BIO_free(r->rbio);
        if (r->wbio) BIO_free(r->wbio);
        r->rbio = r->wbio = NULL;
        snprintf(msg, msglen, "out of memory");
        return -1;
    }
    SSL_set_bio(r->ssl, r->rbio, r->wbio);
    SSL_set_connect_state(r->ssl);
    const char *name = r->server_name ? r->server_name : r->host;
    unsigned char addr[16];
    int is_ip = inet_pton(AF_INET, name, addr) == 1 || inet_pton(AF_INET6, name, addr) == 1;
    if (!is_ip) SSL_set_tlsext_host_name(r->ssl, name);
    if (r->verify) {
        X509_VERIFY_PARAM *p = SSL_get0_param(r->ssl);
        int ok = is_ip ? X509_VERIFY_PARAM_set1_ip_asc(p, name)
                       : X509_VERIFY_PARAM_set1_host(p, name, 0);
        if (ok != 1) {
            snprintf(msg, msglen, "cannot check the certificate against %s", name);
            return -1;
        }
    }
    return 0;
}

static void on_tcp_connect(uv_connect_t *req, int status)
{
    ap_redis *r = req->data;
    if (status == UV_ECANCELED || r->state == ST_FAILED) return;
    if (status < 0) {
        fail(r, "UNAVAILABLE", "cannot connect to %s: %s", r->desc, uv_strerror(status));
        return;
    }
    uv_tcp_nodelay(&r->tcp, 1);
    int rc = uv_read_start((uv_stream_t *)&r->tcp, on_alloc, on_read);
    if (rc < 0) {
        fail(r, "UNAVAILABLE", "cannot read from %s: %s", r->desc, uv_strerror(rc));
        return;
    }
    if (!r->tls) {
        connected(r);
        return;
    }
    r->state = ST_HANDSHAKE;
    do_handshake(r);
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    ap_redis *r = req->data;
    r->gai_active = 0;
    if (r->closing || r->state == ST_FAILED) {
        if (res) uv_freeaddrinfo(res);
        maybe_free(r);
        return;
    }
    if (status < 0 || res == NULL) {
        if (res) uv_freeaddrinfo(res);
        fail(r, "UNAVAILABLE", "cannot resolve %s: %s", r->host, uv_strerror(status));
        return;
    }
    r->state = ST_CONNECTING;
    r->creq.data = r;
    int rc = uv_tcp_connect(&r->creq, &r->tcp, res->ai_addr, on_tcp_connect);
    uv_freeaddrinfo(res);
    if (rc < 0) fail(r, "UNAVAILABLE", "cannot connect to %s: %s", r->desc, uv_strerror(rc));
}

ap_redis *ap_redis_connect(uv_loop_t *loop, const ap_redis_opts *o, ap_redis_connect_cb on_connect,
                           ap_redis_reply_cb on_reply, void *ud, char *msg, size_t msglen)
{
    if (o->host == NULL || *o->host == '\0' || o->port <= 0 || o->port > 65535) {
        snprintf(msg, msglen, "a host and a port in 1..65535 are needed");
        return NULL;
    }
    ap_redis *r = calloc(1, sizeof *r);
    if (r == NULL) {
        snprintf(msg, msglen, "out of memory");
        return NULL;
    }
    r->loop = loop;
    r->host = strdup(o->host);
    r->server_name = o->server_name && *o->server_name ? strdup(o->server_name) : NULL;
    r->port = o->port;
    r->tls = o->tls;
    r->verify = o->verify;
    r->timeout_ms = o->timeout_ms;
    r->on_connect = on_connect;
    r->on_reply = on_reply;
    r->ud = ud;
    r->reader = redisReaderCreate();
    snprintf(r->desc, sizeof r->desc, strchr(o->host, ':') ? "[%s]:%d" : "%s:%d", o->host, o->port);
    if (r->host == NULL || r->reader == NULL ||
        (o->server_name && *o->server_name && !r->server_name)) {
        snprintf(msg, msglen, "out of memory");
        r->closing = 1;
        maybe_free(r);
        return NULL;
    }
    if (r->tls && setup_tls(r, o, msg, msglen) != 0) {
        r->closing = 1;
        maybe_free(r);
        return NULL;
    }
    uv_tcp_init(loop, &r->tcp);
    uv_timer_init(loop, &r->timer);
    r->tcp.data = r->timer.data = r;
    r->handles_open = 2;
    arm_timer(r);
    char port[16];
    snprintf(port, sizeof port, "%d", o->port);
    struct addrinfo hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    r->gai.data = r;
    r->state = ST_RESOLVING;
    int rc = uv_getaddrinfo(loop, &r->gai, on_resolved, r->host, port, &hints);
    if (rc < 0) {
        snprintf(msg, msglen, "cannot resolve %s: %s", r->host, uv_strerror(rc));
        r->state = ST_FAILED;
        r->closing = 1;
        close_handles(r);
        return NULL;
    }
    r->gai_active = 1;
    return r;
}

int ap_redis_command(ap_redis *r, int argc, const char **argv, const size_t *argvlen, uint64_t tag)
{
    if (r->state != ST_OPEN || r->closing || r->later_code) return -1;
    char *cmd = NULL;
    int len = redisFormatCommandArgv(&cmd, argc, argv, argvlen);
    if (len < 0 || cmd == NULL) return -1;
    if (push_tag(r, tag) != 0) {
        redisFreeCommand(cmd);
        return -1;
    }
    if (r->count == 1) arm_timer(r);
    int rc;
    if (!r->tls) {
        rc = send_raw(r, cmd, (size_t)len, 1);
    } else {
        ERR_clear_error();
        int n = SSL_write(r->ssl, cmd, len);
        redisFreeCommand(cmd);
        if (n != len) {
            char text[400];
            tls_error_text(r, text, sizeof text);
            fail_later(r, "TLS", "TLS error writing to %s: %s", r->desc, text);
            return 0;
        }
        rc = flush_tls(r);
    }
    if (rc != 0) fail_later(r, "UNAVAILABLE", "writing to %s failed: %s", r->desc, uv_strerror(rc));
    return 0; /* a failure reaches on_reply on the next loop turn */
}

size_t ap_redis_write_queue(const ap_redis *r)
{
    return r->write_queue;
}

int ap_redis_usable(const ap_redis *r)
{
    return r->state == ST_OPEN && !r->closing;
}

void ap_redis_close(ap_redis *r, const char *code, const char *msg)
{
    (void)code;
    (void)msg;
    if (r->closing) return;
    r->closing = 1;
    r->count = 0;
    if (r->state != ST_FAILED) r->state = ST_FAILED;
    if (r->gai_active) uv_cancel((uv_req_t *)&r->gai);
    close_handles(r);
    maybe_free(r);
}
