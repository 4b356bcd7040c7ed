/* core/nats: NATS and JetStream over libnats, reported on the process's one libuv loop.
 * libnats keeps its own threads (socket reader, flusher, one fetch thread per pull
 * subscription); what they produce (messages, publish acknowledgements, connection changes)
 * is queued and handed to the handlers on the loop thread. Calls marked "blocking" wait for the
 * server and must run on the libuv thread pool; the rest never wait on the network. */
#ifndef AP_NATS_H
#define AP_NATS_H

#include <nats/nats.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct ap_nats ap_nats;
typedef struct ap_nats_sub ap_nats_sub;

typedef enum {
    AP_NATS_DISCONNECTED = 1,
    AP_NATS_RECONNECTED,
    AP_NATS_CLOSED,
    AP_NATS_ERROR, /* an asynchronous error, e.g. a slow consumer */
} ap_nats_event;

/* Every callback runs on the loop thread. */
typedef struct {
    /* A message for subscription `sub_opaque`; the handler owns `m` (natsMsg_Destroy). */
    void (*on_msg)(void *ud, void *sub_opaque, natsMsg *m);
    /* JetStream's answer to ap_nats_js_publish(opaque); err is NULL when the stream stored it. */
    void (*on_puback)(void *ud, void *opaque, const char *err, uint64_t seq, int duplicate);
    void (*on_event)(void *ud, ap_nats_event ev, const char *text);
    /* A pull subscription's fetch failed (it retries by itself). */
    void (*on_fetch_error)(void *ud, void *sub_opaque, const char *err);
    /* A pull subscription stopped by ap_nats_sub_stop() fetches no more: what it fetched has
     * been handed to on_msg, so the caller can now hand back what it will not handle. */
    void (*on_stopped)(void *ud, void *sub_opaque);
    /* After ap_nats_close(): every thread is gone and the handle may be freed. */
    void (*on_closed)(void *ud);
} ap_nats_handlers;

ap_nats *ap_nats_new(uv_loop_t *loop, const ap_nats_handlers *h, void *ud, char *err,
                     size_t errlen);
void ap_nats_free(ap_nats *n);

/* Blocking: connects to `urls` (comma-separated nats:// URLs, credentials allowed in them). */
int ap_nats_connect(ap_nats *n, const char *urls, const char *name, int64_t timeout_ms, char *err,
                    size_t errlen);
/* Blocking: creates the stream capturing `subject` unless it exists (file storage, limits
 * retention, max_age_ms = 0 for no limit, duplicate window dup_window_ms). */
int ap_nats_ensure_stream(ap_nats *n, const char *stream, const char *subject, int64_t max_age_ms,
                          int64_t dup_window_ms, char *err, size_t errlen);
/* Blocking: creates the durable pull consumer unless it exists, binds to it and starts its
 * fetch thread, which fetches only as much as ap_nats_sub_want() allowed. */
ap_nats_sub *ap_nats_pull_subscribe(ap_nats *n, const char *stream, const char *subject,
                                    const char *durable, int64_t ack_wait_ms,
                                    int64_t max_ack_pending, void *opaque, char *err,
                                    size_t errlen);

/* Blocking: waits until the server has processed everything sent so far (PING/PONG), e.g. so
 * that a new subscription is in place before anything is published. */
int ap_nats_flush(ap_nats *n, int64_t timeout_ms, char *err, size_t errlen);

/* Pool jobs that use the handle are counted, so close waits for them. */
void ap_nats_job_begin(ap_nats *n);
void ap_nats_job_end(ap_nats *n);

/* Loop thread. */
int ap_nats_connected(ap_nats *n);
/* Core publish (at most once): buffered and sent by libnats' flusher. */
int ap_nats_publish(ap_nats *n, const char *subject, const char *key, const void *data, size_t len,
                    char *err, size_t errlen);
/* JetStream publish; on_puback(opaque) follows. msg_id (may be NULL) de-duplicates. */
int ap_nats_js_publish(ap_nats *n, const char *subject, const char *key, const char *msg_id,
                       const void *data, size_t len, int64_t timeout_ms, void *opaque, char *err,
                       size_t errlen);
/* Core (queue) subscription; queue may be NULL. */
ap_nats_sub *ap_nats_subscribe(ap_nats *n, const char *subject, const char *queue, void *opaque,
                               char *err, size_t errlen);
/* Allows a pull subscription to fetch `more` messages. */
void ap_nats_sub_want(ap_nats_sub *s, int more);
/* Stops a pull subscription's fetching (on_stopped follows); a no-op for core ones. */
void ap_nats_sub_stop(ap_nats_sub *s);

/* Starts closing: stops fetching, waits for publish acknowledgements (bounded), flushes and
 * closes the connection on the pool; on_closed follows. Messages still held by the caller
 * must be destroyed first. */
void ap_nats_close(ap_nats *n);

/* Messages. The key is the Autopgo-Key header. */
const char *ap_nats_msg_key(natsMsg *m);
typedef enum { AP_NATS_ACK, AP_NATS_NAK, AP_NATS_PROGRESS, AP_NATS_TERM } ap_nats_ack_kind;
int ap_nats_msg_ack(natsMsg *m, ap_nats_ack_kind kind, int64_t delay_ms, char *err, size_t errlen);
/* JetStream's delivery count (1 the first time) and stream sequence; both 0 for core
 * messages. */
void ap_nats_msg_meta(natsMsg *m, int64_t *deliveries, uint64_t *stream_seq);

#define AP_NATS_KEY_HEADER "Autopgo-Key"

#endif
