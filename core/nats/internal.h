/* The ap_nats handle and its mailbox, shared by the files of core/nats (not public). */
#ifndef AP_NATS_INTERNAL_H
#define AP_NATS_INTERNAL_H

#include "nats.h"

typedef enum { EV_MSG, EV_PUBACK, EV_EVENT, EV_FETCH_ERROR, EV_STOPPED } ev_kind;

/* One thing a libnats thread hands to the loop. */
typedef struct ev {
    struct ev *next;
    ev_kind kind;
    void *opaque;
    natsMsg *msg;
    int code; /* EV_EVENT: ap_nats_event */
    uint64_t seq;
    int duplicate;
    char *text; /* owned; NULL when none */
} ev;

/* A JetStream publish waiting for its acknowledgement. */
typedef struct pending_pub {
    struct pending_pub *next;
    natsMsg *msg;
    void *opaque;
} pending_pub;

struct ap_nats_sub {
    struct ap_nats_sub *next;
    ap_nats *n;
    natsSubscription *sub;
    void *opaque;
    int pull;
    /* pull subscriptions: the fetch thread and its credit */
    uv_thread_t thread;
    int thread_started;
    int credit;
    int stop;
    int stopped; /* the fetch thread has returned */
    uv_cond_t cond;
};

struct ap_nats {
    uv_loop_t *loop;
    ap_nats_handlers h;
    void *ud;
    natsConnection *nc;
    jsCtx *js;
    uv_async_t wake;
    uv_mutex_t lock; /* guards the mailbox, pending publishes, subscriptions and credits */
    ev *head, *tail;
    pending_pub *pubs;
    ap_nats_sub *subs;
    int busy;
    int closing;
    int shutting_down; /* the pool owns the connection now */
    uv_cond_t closed_cond;
    int closed_seen; /* libnats ran our closed callback: no callback can follow */
};

/* Queues an event for the loop (any thread). `text` is copied. */
void ap_nats_post(ap_nats *n, ev_kind kind, void *opaque, natsMsg *msg, int code, uint64_t seq,
                  int duplicate, const char *text);
/* Stops every fetch thread and destroys the subscriptions (pool thread, at shutdown). */
void ap_nats_subs_shutdown(ap_nats *n);
/* Formats a libnats failure: the status text plus the library's last error detail. */
void ap_nats_status_text(natsStatus s, char *err, size_t errlen);

#endif
