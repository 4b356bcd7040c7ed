/* core/redis: one Redis connection on the libuv loop, plain TCP or TLS (OpenSSL over memory BIOs),
 * speaking RESP through hiredis's reader and command formatter (no Lua here). */
#ifndef AP_REDIS_H
#define AP_REDIS_H

#include <hiredis/hiredis.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct ap_redis ap_redis;

typedef struct {
    const char *host; /* a name or an address */
    int port;
    int tls;               /* rediss:// */
    const char *ca_file;   /* PEM bundle of trusted CAs (NULL: the system's) */
    const char *cert_file; /* client certificate (PEM), with key_file */
    const char *key_file;
    const char *server_name; /* name checked against the certificate and sent as SNI (NULL: host) */
    int verify;              /* check the certificate chain and the name (default on) */
    unsigned timeout_ms; /* connect + handshake, and the longest silence while replies are due */
} ap_redis_opts;

/* Called once: code NULL when connected (and the TLS handshake done), else the failure
 * (code "UNAVAILABLE", "TIMEOUT" or "TLS" and a message naming the cause). */
typedef void (*ap_redis_connect_cb)(ap_redis *r, void *ud, const char *code, const char *msg);
/* One reply per command, in order: reply is hiredis's (freed after the call) or NULL with
 * code/msg when the connection failed before it came (every pending command gets one). */
typedef void (*ap_redis_reply_cb)(ap_redis *r, void *ud, uint64_t tag, const redisReply *reply,
                                  const char *code, const char *msg);

/* Starts connecting; returns NULL only when out of memory or the options are invalid (msg says). */
ap_redis *ap_redis_connect(uv_loop_t *loop, const ap_redis_opts *opts,
                           ap_redis_connect_cb on_connect, ap_redis_reply_cb on_reply, void *ud,
                           char *msg, size_t msglen);
/* Queues a command (argv as hiredis's redisFormatCommandArgv takes it); its reply comes to
 * on_reply with `tag`. Returns 0, or -1 when the connection is not usable (nothing was queued). */
int ap_redis_command(ap_redis *r, int argc, const char **argv, const size_t *argvlen, uint64_t tag);
/* Bytes queued for writing and not yet written to the socket. */
size_t ap_redis_write_queue(const ap_redis *r);
/* Whether commands can be sent (connected and not failed or closed). */
int ap_redis_usable(const ap_redis *r);
/* Fails every pending command with code/msg (on_reply), stops callbacks and frees the connection
 * once libuv has closed its handles. No callback runs after this returns. */
void ap_redis_close(ap_redis *r, const char *code, const char *msg);

#endif
