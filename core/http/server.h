/* An HTTP/1.1 (and, over TLS, HTTP/2) server on the process's libuv loop, built on libh2o (libuv
 * build). Plain C: the Lua binding (core/lua/http_server.c) turns requests into coroutines. */
#ifndef AP_HTTP_SERVER_H
#define AP_HTTP_SERVER_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "bytes.h"

typedef struct ap_http_server ap_http_server;
typedef struct ap_http_req ap_http_req;

typedef struct {
    const char *base;
    size_t len;
} ap_http_str;

typedef struct {
    const char *host; /* address to bind, e.g. "0.0.0.0" or "127.0.0.1" */
    int port;         /* 0 picks a free port (see ap_http_server_port) */
    size_t max_body;  /* larger request bodies are refused with 413 before being read */
    /* Time allowed to receive a request's headers and body, also the keep-alive idle timeout. */
    uint64_t request_timeout_ms;
    /* Errors the server answers itself (413, 400 for broken framing) get a JSON body
     * {"message": "...", "code": N} instead of text, like the handlers' own errors. */
    int json_errors;
    /* Directory for request bodies over 32 MiB, which h2o keeps in an mmap'd temporary file
     * (created and unlinked at once) rather than in memory; NULL keeps h2o's /tmp. h2o has one such
     * setting per process, so the last server started decides. */
    const char *spool_dir;
    /* TLS: PEM certificate chain and key (both or neither); ALPN offers h2 and http/1.1. With
     * tls_client_ca, clients must present a certificate signed by one of those CAs. */
    const char *tls_cert;
    const char *tls_key;
    const char *tls_client_ca;
    /* Connections past this many are closed as soon as they are accepted (0: no cap). */
    size_t max_connections;
    /* Budget of request bytes the server buffers at once (bodies still arriving or being handled,
     * HTTP/1.1). Past it the connection whose request is still arriving with the most buffered
     * is answered 503 with Retry-After and closed, before it can buffer more. 0: no budget. */
    size_t max_buffered;
    /* Called on the loop for every request; the request stays valid until on_gone (see
     * ap_http_req_set_owner) whether or not a response has been sent. */
    void (*on_request)(void *data, ap_http_req *req);
    void *data;
} ap_http_server_config;

/* Binds, listens and starts serving. Returns 0, or -1 with a message in err. */
int ap_http_server_start(uv_loop_t *loop, const ap_http_server_config *cfg, ap_http_server **out,
                         char *err, size_t errlen);
/* The bound port (useful with port 0). */
int ap_http_server_port(const ap_http_server *srv);
/* Requests being handled and connections open right now. */
size_t ap_http_server_active_requests(const ap_http_server *srv);
size_t ap_http_server_connections(const ap_http_server *srv);
/* Requests refused with 413 (body over max_body) by the server itself, before any handler ran. */
size_t ap_http_server_too_large(const ap_http_server *srv);
/* Requests refused by the server itself: 503 past max_buffered, connections closed past
 * max_connections, and 400 for ambiguous framing (two Content-Lengths, or Transfer-Encoding with
 * Content-Length). */
size_t ap_http_server_over_budget(const ap_http_server *srv);
size_t ap_http_server_refused_connections(const ap_http_server *srv);
size_t ap_http_server_bad_framing(const ap_http_server *srv);
/* Bytes buffered for requests right now (what max_buffered bounds). */
size_t ap_http_server_buffered(const ap_http_server *srv);
/* Reads the TLS certificate, key (and client CA) files again: new handshakes use them, open
 * connections keep theirs. Returns 0, or -1 with a message in err (the old ones stay). */
int ap_http_server_reload_tls(ap_http_server *srv, char *err, size_t errlen);
/* Raises the soft limit on open files to the hard limit, as Go's runtime does at start. Returns
 * the new soft limit. */
long ap_http_raise_fd_limit(void);
/* Graceful stop: closes the listener at once, lets requests in flight (including uploads whose
 * body is still arriving) finish, closes idle keep-alive connections, then frees the server and
 * calls on_closed. Calling it twice is harmless (the second callback is ignored). */
void ap_http_server_close(ap_http_server *srv, void (*on_closed)(void *data), void *data);

/* The request. Strings point into the request's memory and are valid until on_gone. */
ap_http_str ap_http_req_method(const ap_http_req *r);
ap_http_str ap_http_req_path(const ap_http_req *r); /* as sent, with the query string */
size_t ap_http_req_header_count(const ap_http_req *r);
/* Header i (names are lower case); returns 0, or -1 past the end. */
int ap_http_req_header(const ap_http_req *r, size_t i, ap_http_str *name, ap_http_str *value);
ap_http_str ap_http_req_body(const ap_http_req *r); /* the whole body, already received */
int ap_http_req_has_body(const ap_http_req *r);
/* The body as shared bytes (a new reference; NULL without a body or once the request is gone),
 * held once whatever the protocol. HTTP/2: the stream's buffer is taken over from h2o at once (no
 * copy), so a reset stream cannot free it under a reader. HTTP/1.x: the bytes stay in the
 * connection's buffer, which h2o releases only after the response (it does not read a connection
 * while a request is handled); the end of the response waits until no reader holds the body. */
ap_bytes *ap_http_req_body_bytes(ap_http_req *r);
ap_http_str ap_http_req_authority(const ap_http_req *r); /* the Host header */
/* The client's address as "ip:port" into buf; returns 0 or -1. */
int ap_http_req_peer(const ap_http_req *r, char *buf, size_t len);
/* on_gone runs once when the request's memory is released (response sent or connection lost);
 * a send still waiting for its on_proceed gets on_proceed(..., 0) first. */
void ap_http_req_set_owner(ap_http_req *r, void (*on_gone)(void *data), void *data);

/* The response. Headers are copied. content_length is SIZE_MAX when unknown (chunked). Returns 0,
 * or -1 when a response was already started. */
int ap_http_req_start(ap_http_req *r, int status, const ap_http_str *headers, size_t nheaders,
                      size_t content_length);
/* Sends a piece of the body (start first). The bytes must stay valid until on_proceed runs for a
 * non-final piece, or until on_gone for the final one. on_proceed(cbdata, ok) runs once the
 * connection wants more (ok = 1) or has gone away (ok = 0); it is not called for the final piece.
 * Only one piece may be in flight. final = AP_HTTP_SEND_ABORT ends the response as broken (the
 * connection closes without completing the body), so a client never takes it for the whole.
 * Returns 0, or -1 on misuse (not started, already finished, a piece still in flight). */
#define AP_HTTP_SEND_ABORT 2
int ap_http_req_send(ap_http_req *r, const char *data, size_t len, int final,
                     void (*on_proceed)(void *cbdata, int ok), void *cbdata);
/* Answers with the contents of a file (read by the server as the client takes it, with Range
 * support), status and headers set by ap_http_req_start's rules. Returns 0, or -1 if the file
 * cannot be opened (nothing is sent then). */
int ap_http_req_send_file(ap_http_req *r, int status, const ap_http_str *headers, size_t nheaders,
                          const char *path, const char *mime);
int ap_http_req_started(const ap_http_req *r);
int ap_http_req_finished(const ap_http_req *r);

/* The reason phrase of a status code ("OK", "Not Found", ...). */
const char *ap_http_reason(int status);

#endif
