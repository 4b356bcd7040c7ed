/* The outbound HTTP client: libcurl's multi interface driven by a libuv loop (one uv_poll per
 * socket, one uv_timer), with request and response bodies streamed under flow control. It
 * runs no thread of its own (host-name lookups aside: Debian's libcurl does those on a
 * short-lived resolver thread) and never calls its owner from inside a curl callback. */
#ifndef AP_HTTP_CLIENT_H
#define AP_HTTP_CLIENT_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct ap_http_client ap_http_client;
typedef struct ap_http_call ap_http_call;

/* How a request ended. Only transport failures are failures: any HTTP status is AP_HTTP_CALL_OK. */
typedef enum {
    AP_HTTP_CALL_OK = 0,
    AP_HTTP_CALL_UNAVAILABLE, /* refused, reset, DNS, broken transfer */
    AP_HTTP_CALL_TIMEOUT,
    AP_HTTP_CALL_TLS,
    AP_HTTP_CALL_INVALID, /* bad URL or options, unreadable body file */
    AP_HTTP_CALL_TOO_LARGE,
    AP_HTTP_CALL_CANCELED,
} ap_http_call_result;

/* "UNAVAILABLE", "TIMEOUT", ... (the house error codes). */
const char *ap_http_call_result_code(ap_http_call_result r);

typedef enum {
    AP_HTTP_CALL_BODY_NONE = 0,
    AP_HTTP_CALL_BODY_MEMORY, /* body/body_len, not copied: must stay valid until on_done */
    AP_HTTP_CALL_BODY_FILE,   /* body_path, streamed from disk with its size as Content-Length */
    AP_HTTP_CALL_BODY_STREAM, /* chunks come from the owner through on_need/ap_http_call_feed */
} ap_http_call_body_kind;

typedef struct {
    const char *method; /* NULL: GET */
    const char *url;
    const char *const *headers; /* "Name: value" lines; "Name:" removes a default header */
    size_t nheaders;
    ap_http_call_body_kind body_kind;
    const char *body;
    size_t body_len;
    const char *body_path;
    int64_t body_length; /* STREAM: the total, or -1 for chunked transfer encoding */
    int stream_response; /* 1: the body goes to on_data; 0: it is buffered for on_done */
    int64_t max_body;    /* buffered responses: larger ones fail with TOO_LARGE; 0: no limit */
    long timeout_ms;     /* whole request; 0: none */
    long connect_timeout_ms;
    int insecure;
    int follow_redirects;
    const char *ca_file, *client_cert, *client_key;
    const char *ca_pem, *client_cert_pem, *client_key_pem; /* in-memory PEM, copied */
    size_t ca_pem_len, client_cert_pem_len, client_key_pem_len;
    const char *user_agent;
    /* https: the name TLS uses instead of the URL's host, for SNI and certificate verification
     * (kubeconfig's tls-server-name); the connection still goes to the URL's host */
    const char *tls_server_name;
    const char *proxy; /* http://, https:// or socks5:// proxy; NULL: curl's *_proxy variables */
} ap_http_call_opts;

/* Called from the loop, never from inside curl. A request is freed right after on_done. */
typedef struct {
    /* stream_response: a piece of the body. No more arrives until ap_http_call_ack. */
    void (*on_data)(ap_http_call *r, void *ud, const char *data, size_t len);
    /* BODY_STREAM: curl wants more; answer (now or later) with one ap_http_call_feed. */
    void (*on_need)(ap_http_call *r, void *ud);
    /* Exactly once. `msg` is a one-line description on failure, "" on success. */
    void (*on_done)(ap_http_call *r, void *ud, ap_http_call_result res, const char *msg);
} ap_http_call_handlers;

ap_http_client *ap_http_client_new(uv_loop_t *loop);
/* Ends every request with CANCELED (on_done runs before this returns) and closes the client;
 * its memory is released once the loop has run the handles' close callbacks. Not to be called
 * from inside a handler (the call being handled would be freed under it). */
void ap_http_client_close(ap_http_client *c);
/* Requests started and not yet finished. */
size_t ap_http_client_active(const ap_http_client *c);

/* Starts a request. Returns NULL with `err` filled (INVALID or out of memory) when it cannot
 * start; otherwise on_done will run exactly once, later, from the loop. */
ap_http_call *ap_http_call_start(ap_http_client *c, const ap_http_call_opts *o,
                                 const ap_http_call_handlers *h, void *ud, char *err,
                                 size_t errlen);
/* The owner consumed the last on_data piece: let the next one come (resumes a paused read). */
void ap_http_call_ack(ap_http_call *r);
/* The answer to on_need: a chunk (copied), or eof = 1 for the end of the body. An empty chunk
 * without eof asks again. */
void ap_http_call_feed(ap_http_call *r, const char *data, size_t len, int eof);
/* Ends the request with CANCELED and `reason`; on_done follows from the loop. */
void ap_http_call_cancel(ap_http_call *r, const char *reason);

/* The response so far: status (0 before the status line), headers (names lower-cased, in
 * order, repeats kept), and the buffered body (NULL with stream_response). */
long ap_http_call_status(const ap_http_call *r);
size_t ap_http_call_header_count(const ap_http_call *r);
void ap_http_call_header(const ap_http_call *r, size_t i, const char **name, const char **value);
const char *ap_http_call_body(const ap_http_call *r, size_t *len);

#endif
