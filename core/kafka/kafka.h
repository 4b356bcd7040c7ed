/* core/kafka: librdkafka producers and consumers driven from the process's one libuv loop.
 * librdkafka keeps its own threads; everything it reports (deliveries, messages, rebalances,
 * commits, errors) is handed to the handlers below on the loop thread, never elsewhere. */
#ifndef AP_KAFKA_H
#define AP_KAFKA_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct ap_kafka ap_kafka;

/* A topic partition with an offset, as passed to and from commits and rebalances. */
typedef struct {
    const char *topic;
    int32_t partition;
    int64_t offset;       /* next offset to consume; negative when unknown */
    const char *metadata; /* commit metadata (may be NULL) */
    size_t metadata_len;
} ap_kafka_tp;

typedef struct {
    const char *topic;
    int32_t partition;
    int64_t offset;
    const void *key;
    size_t key_len;
    const void *value;
    size_t value_len;
    int64_t timestamp_ms; /* -1 when the broker gave none */
} ap_kafka_msg;

typedef enum { AP_KAFKA_ASSIGN = 1, AP_KAFKA_REVOKE, AP_KAFKA_LOST } ap_kafka_rebalance;

/* Every callback runs on the loop thread. `err` is NULL on success. */
typedef struct {
    void (*on_message)(void *ud, const ap_kafka_msg *m);
    void (*on_delivery)(void *ud, void *opaque, const char *err, int32_t partition, int64_t offset);
    /* ASSIGN: the partitions with their committed offsets and commit metadata; the assignment
     * takes effect right after the callback returns. REVOKE: the consumer keeps the partitions
     * until ap_kafka_rebalance_done(), so in-flight work can finish and be committed (messages
     * of those partitions may still arrive meanwhile; the application drops them).
     * LOST: the partitions are already gone (session timed out); nothing can be committed. */
    void (*on_rebalance)(void *ud, ap_kafka_rebalance kind, const ap_kafka_tp *tps, int n);
    void (*on_commit)(void *ud, void *opaque, const char *err);
    void (*on_probe)(void *ud, void *opaque, const char *err, int brokers);
    void (*on_error)(void *ud, const char *err, int fatal);
    /* After ap_kafka_close(): the handle is gone and may be freed with ap_kafka_free(). */
    void (*on_closed)(void *ud);
} ap_kafka_handlers;

/* conf: NULL-terminated list of librdkafka property names and values ("k", "v", ..., NULL).
 * Returns NULL and fills err on failure. A consumer needs "group.id". */
ap_kafka *ap_kafka_new(uv_loop_t *loop, int consumer, const char *const *conf,
                       const ap_kafka_handlers *h, void *ud, char *err, size_t errlen);
/* Frees a handle after on_closed (or one whose close never started). */
void ap_kafka_free(ap_kafka *k);

/* Producer: queues one message; on_delivery(opaque) reports the broker's answer. */
int ap_kafka_produce(ap_kafka *k, const char *topic, const void *key, size_t key_len,
                     const void *value, size_t value_len, void *opaque, char *err, size_t errlen);
/* Messages queued or in flight (producer). */
int ap_kafka_outq_len(ap_kafka *k);

/* Consumer. */
int ap_kafka_subscribe(ap_kafka *k, const char *const *topics, int n, char *err, size_t errlen);
/* Commits offsets (with metadata) asynchronously; on_commit(opaque) reports the result. */
int ap_kafka_commit(ap_kafka *k, const ap_kafka_tp *tps, int n, void *opaque, char *err,
                    size_t errlen);
/* Completes a revoke announced by on_rebalance(REVOKE). */
int ap_kafka_rebalance_done(ap_kafka *k, char *err, size_t errlen);
/* Pauses (or resumes) fetching for the whole assignment, now and after later rebalances. */
int ap_kafka_pause(ap_kafka *k, int pause, char *err, size_t errlen);

/* Asks the cluster for metadata off the loop; on_probe reports how many brokers answered. */
int ap_kafka_probe(ap_kafka *k, int timeout_ms, void *opaque, char *err, size_t errlen);

/* Starts closing: a consumer leaves its group, a producer waits (up to its message timeout)
 * for queued messages; the blocking parts run on the libuv thread pool. on_closed follows. */
void ap_kafka_close(ap_kafka *k);
int ap_kafka_is_consumer(const ap_kafka *k);

#endif
