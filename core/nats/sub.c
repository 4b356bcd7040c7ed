/* Subscriptions: core (queue) subscriptions deliver through libnats' callback thread; JetStream
 * durable pull consumers are fetched by one thread per subscription, never more than the loop
 * asked for, so messages do not pile up unacknowledged in memory. Also the message helpers. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "log.h"

#define FETCH_BATCH   64
#define FETCH_WAIT_MS 1000

static void link_sub(ap_nats *n, ap_nats_sub *s)
{
    uv_mutex_lock(&n->lock);
    s->next = n->subs;
    n->subs = s;
    uv_mutex_unlock(&n->lock);
}

/* libnats delivery thread */
static void on_core_msg(natsConnection *nc, natsSubscription *sub, natsMsg *m, void *closure)
{
    (void)nc, (void)sub;
    ap_nats_sub *s = closure;
    ap_nats_post(s->n, EV_MSG, s->opaque, m, 0, 0, 0, NULL);
}

ap_nats_sub *ap_nats_subscribe(ap_nats *n, const char *subject, const char *queue, void *opaque,
                               char *err, size_t errlen)
{
    if (n->nc == NULL || n->closing) {
        snprintf(err, errlen, n->nc ? "closed" : "not connected");
        return NULL;
    }
    ap_nats_sub *s = calloc(1, sizeof *s);
    if (s == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    s->n = n;
    s->opaque = opaque;
    natsStatus st;
    if (queue && *queue)
        st = natsConnection_QueueSubscribe(&s->sub, n->nc, subject, queue, on_core_msg, s);
    else
        st = natsConnection_Subscribe(&s->sub, n->nc, subject, on_core_msg, s);
    /* Generous limits: past them the server's messages are dropped (core NATS is at most
     * once anyway) and an asynchronous "slow consumer" error is reported. */
    if (st == NATS_OK) st = natsSubscription_SetPendingLimits(s->sub, 65536, 64 * 1024 * 1024);
    if (st != NATS_OK) {
        ap_nats_status_text(st, err, errlen);
        natsSubscription_Destroy(s->sub);
        free(s);
        return NULL;
    }
    link_sub(n, s);
    return s;
}

/* ---- pull subscriptions ---- */

static void fetch_main(void *arg)
{
    ap_nats_sub *s = arg;
    ap_nats *n = s->n;
    int failures = 0;
    for (;;) {
        uv_mutex_lock(&n->lock);
        while (!s->stop && s->credit <= 0) uv_cond_wait(&s->cond, &n->lock);
        int stop = s->stop, batch = s->credit < FETCH_BATCH ? s->credit : FETCH_BATCH;
        uv_mutex_unlock(&n->lock);
        if (stop) break;

        natsMsgList list = {0};
        natsStatus st = natsSubscription_Fetch(&list, s->sub, batch, FETCH_WAIT_MS, NULL);
        if (st == NATS_OK || list.Count > 0) {
            failures = 0;
            uv_mutex_lock(&n->lock);
            s->credit -= list.Count;
            uv_mutex_unlock(&n->lock);
            for (int i = 0; i < list.Count; i++) {
                ap_nats_post(n, EV_MSG, s->opaque, list.Msgs[i], 0, 0, 0, NULL);
                list.Msgs[i] = NULL; /* now owned by the loop */
            }
            natsMsgList_Destroy(&list);
            continue;
        }
        natsMsgList_Destroy(&list);
        if (st == NATS_TIMEOUT) continue;
        char err[300];
        ap_nats_status_text(st, err, sizeof err);
        if (failures++ == 0) ap_nats_post(n, EV_FETCH_ERROR, s->opaque, NULL, 0, 0, 0, err);
        /* Back off (1 s) unless asked to stop; the connection reconnects meanwhile. */
        uv_mutex_lock(&n->lock);
        if (!s->stop) uv_cond_timedwait(&s->cond, &n->lock, 1000ull * 1000000ull);
        uv_mutex_unlock(&n->lock);
    }
    uv_mutex_lock(&n->lock);
    s->stopped = 1;
    uv_mutex_unlock(&n->lock);
    ap_nats_post(n, EV_STOPPED, s->opaque, NULL, 0, 0, 0, NULL);
}

ap_nats_sub *ap_nats_pull_subscribe(ap_nats *n, const char *stream, const char *subject,
                                    const char *durable, int64_t ack_wait_ms,
                                    int64_t max_ack_pending, void *opaque, char *err, size_t errlen)
{
    if (n->js == NULL || n->closing) {
        snprintf(err, errlen, n->js ? "closed" : "not connected");
        return NULL;
    }
    /* Create the durable ourselves, then bind to it: a consumer the library created on
     * subscribe would be deleted when we unsubscribe, losing its acknowledgement state. */
    jsConsumerConfig cc;
    jsConsumerConfig_Init(&cc);
    cc.Durable = durable;
    cc.AckPolicy = js_AckExplicit;
    cc.AckWait = ack_wait_ms * 1000000;
    cc.MaxDeliver = -1; /* the bus dead-letters after its own attempt limit */
    cc.FilterSubject = subject;
    cc.DeliverPolicy = js_DeliverAll;
    cc.MaxAckPending = max_ack_pending;
    jsConsumerInfo *ci = NULL;
    jsErrCode code = 0;
    natsStatus st = js_AddConsumer(&ci, n->js, stream, &cc, NULL, &code);
    if (st != NATS_OK && code != JSConsumerNameExistErr) {
        ap_nats_status_text(st, err, errlen);
        return NULL;
    }
    jsConsumerInfo_Destroy(ci);

    ap_nats_sub *s = calloc(1, sizeof *s);
    if (s == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    s->n = n;
    s->opaque = opaque;
    s->pull = 1;
    uv_cond_init(&s->cond);
    jsSubOptions so;
    jsSubOptions_Init(&so);
    so.Stream = stream;
    so.Consumer = durable;
    st = js_PullSubscribe(&s->sub, n->js, subject, durable, NULL, &so, &code);
    if (st != NATS_OK) {
        ap_nats_status_text(st, err, errlen);
        uv_cond_destroy(&s->cond);
        free(s);
        return NULL;
    }
    if (uv_thread_create(&s->thread, fetch_main, s) != 0) {
        snprintf(err, errlen, "cannot start the fetch thread");
        natsSubscription_Destroy(s->sub);
        uv_cond_destroy(&s->cond);
        free(s);
        return NULL;
    }
    s->thread_started = 1;
    link_sub(n, s);
    return s;
}

void ap_nats_sub_want(ap_nats_sub *s, int more)
{
    if (!s->pull || more <= 0) return;
    uv_mutex_lock(&s->n->lock);
    s->credit += more;
    uv_cond_signal(&s->cond);
    uv_mutex_unlock(&s->n->lock);
}

void ap_nats_sub_stop(ap_nats_sub *s)
{
    if (!s->pull) return;
    uv_mutex_lock(&s->n->lock);
    s->stop = 1;
    uv_cond_signal(&s->cond);
    uv_mutex_unlock(&s->n->lock);
}

void ap_nats_subs_shutdown(ap_nats *n)
{
    uv_mutex_lock(&n->lock);
    ap_nats_sub *s = n->subs;
    n->subs = NULL;
    for (ap_nats_sub *t = s; t; t = t->next) {
        t->stop = 1;
        if (t->pull) uv_cond_signal(&t->cond);
    }
    uv_mutex_unlock(&n->lock);
    while (s) {
        ap_nats_sub *next = s->next;
        if (s->thread_started) uv_thread_join(&s->thread);
        /* Destroy without unsubscribing from JetStream: the durable consumer stays. */
        natsSubscription_Destroy(s->sub);
        if (s->pull) uv_cond_destroy(&s->cond);
        free(s);
        s = next;
    }
}

/* ---- messages ---- */

const char *ap_nats_msg_key(natsMsg *m)
{
    const char *v = NULL;
    if (natsMsgHeader_Get(m, AP_NATS_KEY_HEADER, &v) != NATS_OK) return NULL;
    return v;
}

int ap_nats_msg_ack(natsMsg *m, ap_nats_ack_kind kind, int64_t delay_ms, char *err, size_t errlen)
{
    natsStatus st;
    switch (kind) {
    case AP_NATS_ACK:
        st = natsMsg_Ack(m, NULL);
        break;
    case AP_NATS_NAK:
        st = delay_ms > 0 ? natsMsg_NakWithDelay(m, delay_ms, NULL) : natsMsg_Nak(m, NULL);
        break;
    case AP_NATS_PROGRESS:
        st = natsMsg_InProgress(m, NULL);
        break;
    default:
        st = natsMsg_Term(m, NULL);
        break;
    }
    if (st != NATS_OK) {
        ap_nats_status_text(st, err, errlen);
        return -1;
    }
    return 0;
}

void ap_nats_msg_meta(natsMsg *m, int64_t *deliveries, uint64_t *stream_seq)
{
    jsMsgMetaData *meta = NULL;
    *deliveries = 0;
    *stream_seq = 0;
    if (natsMsg_GetMetaData(&meta, m) != NATS_OK) return;
    *deliveries = (int64_t)meta->NumDelivered;
    *stream_seq = meta->Sequence.Stream;
    jsMsgMetaData_Destroy(meta);
}
