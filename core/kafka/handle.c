/* The ap_kafka handle: configuration, the bridge from librdkafka's threads to the loop (a queue
 * event callback that wakes a uv_async), health probes and the non-blocking close. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "log.h"

/* librdkafka thread: the queue went from empty to non-empty. uv_async_send is thread-safe. */
static void on_queue_event(rd_kafka_t *rk, void *opaque)
{
    (void)rk;
    ap_kafka *k = opaque;
    uv_async_send(&k->wake);
}

static void on_wake(uv_async_t *a)
{
    ap_kafka *k = a->data;
    if (k->destroying) return;
    if (k->consumer)
        ap_kafka_consumer_serve(k);
    else
        ap_kafka_producer_serve(k);
}

/* Any librdkafka thread; our logger is thread-safe. Syslog levels 0-2 are errors; 3-4 are
 * mostly connection trouble that error_cb reports as well, so they are warnings. */
static void on_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    (void)rk;
    ap_log_level l = level <= 2 ? AP_LOG_ERROR : level <= 4 ? AP_LOG_WARN : AP_LOG_DEBUG;
    if (!ap_log_enabled(l)) return;
    ap_log(l, "librdkafka", "facility", fac, "message", buf, NULL);
}

/* Served from poll on the loop, or on the pool thread while closing. */
static void on_error(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    ap_kafka *k = opaque;
    char buf[512];
    int fatal = 0;
    if (err == RD_KAFKA_RESP_ERR__FATAL) {
        fatal = 1;
        char why[400];
        rd_kafka_fatal_error(rk, why, sizeof why);
        snprintf(buf, sizeof buf, "fatal: %s", why);
    } else {
        snprintf(buf, sizeof buf, "%s: %s", rd_kafka_err2name(err), reason);
    }
    if (k->destroying || k->h.on_error == NULL) {
        ap_log_warn("kafka error while closing", "error", buf, NULL);
        return;
    }
    k->h.on_error(k->ud, buf, fatal);
}

static void on_idle_tick(uv_timer_t *t)
{
    on_wake(&((ap_kafka *)t->data)->wake);
}

ap_kafka *ap_kafka_new(uv_loop_t *loop, int consumer, const char *const *conf,
                       const ap_kafka_handlers *h, void *ud, char *err, size_t errlen)
{
    ap_kafka *k = calloc(1, sizeof *k);
    if (k == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    k->loop = loop;
    k->h = *h;
    k->ud = ud;
    k->consumer = consumer;

    rd_kafka_conf_t *c = rd_kafka_conf_new();
    for (int i = 0; conf && conf[i] && conf[i + 1]; i += 2) {
        if (rd_kafka_conf_set(c, conf[i], conf[i + 1], err, errlen) != RD_KAFKA_CONF_OK) {
            rd_kafka_conf_destroy(c);
            free(k);
            return NULL;
        }
    }
    rd_kafka_conf_set_opaque(c, k);
    rd_kafka_conf_set_log_cb(c, on_log);
    rd_kafka_conf_set_error_cb(c, on_error);
    if (consumer)
        ap_kafka_consumer_setup(c);
    else
        ap_kafka_producer_setup(c);
    char buf[32];
    size_t len = sizeof buf;
    int64_t msg_timeout = 300000;
    if (rd_kafka_conf_get(c, "message.timeout.ms", buf, &len) == RD_KAFKA_CONF_OK)
        msg_timeout = atoll(buf);
    k->close_deadline_ms = msg_timeout + 5000; /* relative until close() */

    /* rd_kafka_new owns `c` on success only. */
    k->rk = rd_kafka_new(consumer ? RD_KAFKA_CONSUMER : RD_KAFKA_PRODUCER, c, err, errlen);
    if (k->rk == NULL) {
        rd_kafka_conf_destroy(c);
        free(k);
        return NULL;
    }
    if (consumer) {
        rd_kafka_poll_set_consumer(k->rk);
        k->queue = rd_kafka_queue_get_consumer(k->rk);
    } else {
        k->queue = rd_kafka_queue_get_main(k->rk);
    }
    uv_async_init(loop, &k->wake, on_wake);
    k->wake.data = k;
    uv_timer_init(loop, &k->drain_timer);
    k->drain_timer.data = k;
    rd_kafka_queue_cb_event_enable(k->queue, on_queue_event, k);
    uv_async_send(&k->wake); /* anything queued before the callback was set */
    /* librdkafka counts a consumer that has not polled for max.poll.interval.ms as dead and
     * takes its partitions away; we only poll on events, so poll on an idle tick as well. */
    if (consumer) uv_timer_start(&k->drain_timer, on_idle_tick, 1000, 1000);
    return k;
}

int ap_kafka_is_consumer(const ap_kafka *k)
{
    return k->consumer;
}

void ap_kafka_free(ap_kafka *k)
{
    if (k == NULL) return;
    if (k->revoking) rd_kafka_topic_partition_list_destroy(k->revoking);
    free(k);
}

ap_kafka_tp *ap_kafka_tps_from(const rd_kafka_topic_partition_list_t *list)
{
    ap_kafka_tp *tps = calloc(list->cnt ? (size_t)list->cnt : 1, sizeof *tps);
    if (tps == NULL) return NULL;
    for (int i = 0; i < list->cnt; i++) {
        const rd_kafka_topic_partition_t *p = &list->elems[i];
        tps[i].topic = p->topic;
        tps[i].partition = p->partition;
        tps[i].offset = p->offset;
        tps[i].metadata = p->metadata;
        tps[i].metadata_len = p->metadata_size;
    }
    return tps;
}

/* ---- health probe: a metadata request, which blocks, so it runs on the pool ---- */

typedef struct {
    uv_work_t req;
    ap_kafka *k;
    void *opaque;
    int timeout_ms;
    int brokers;
    char err[256];
} probe_job;

static void probe_work(uv_work_t *req)
{
    probe_job *j = req->data;
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t e = rd_kafka_metadata(j->k->rk, 0, NULL, &md, j->timeout_ms);
    if (e) {
        snprintf(j->err, sizeof j->err, "%s", rd_kafka_err2str(e));
        return;
    }
    j->brokers = md->broker_cnt;
    rd_kafka_metadata_destroy(md);
}

static void probe_after(uv_work_t *req, int status)
{
    probe_job *j = req->data;
    ap_kafka *k = j->k;
    if (status != 0) snprintf(j->err, sizeof j->err, "%s", uv_strerror(status));
    if (k->h.on_probe) k->h.on_probe(k->ud, j->opaque, j->err[0] ? j->err : NULL, j->brokers);
    free(j);
    ap_kafka_job_done(k);
}

int ap_kafka_probe(ap_kafka *k, int timeout_ms, void *opaque, char *err, size_t errlen)
{
    if (k->closing) {
        snprintf(err, errlen, "closed");
        return -1;
    }
    probe_job *j = calloc(1, sizeof *j);
    if (j == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    j->k = k;
    j->opaque = opaque;
    j->timeout_ms = timeout_ms;
    j->req.data = j;
    int rc = uv_queue_work(k->loop, &j->req, probe_work, probe_after);
    if (rc != 0) {
        snprintf(err, errlen, "%s", uv_strerror(rc));
        free(j);
        return -1;
    }
    k->busy++;
    return 0;
}

/* ---- close ---- */

static void on_handle_closed(uv_handle_t *h)
{
    ap_kafka *k = h->data;
    /* libuv does not promise an order between the two handles' close callbacks. */
    if (++k->handles_closed == 2 && k->h.on_closed) k->h.on_closed(k->ud);
}

static void destroy_work(uv_work_t *req)
{
    ap_kafka *k = req->data;
    if (k->consumer) {
        rd_kafka_resp_err_t e = rd_kafka_consumer_close(k->rk);
        if (e) ap_log_warn("kafka consumer close", "error", rd_kafka_err2str(e), NULL);
    }
    rd_kafka_destroy(k->rk);
    k->rk = NULL;
}

static void destroy_after(uv_work_t *req, int status)
{
    (void)status;
    ap_kafka *k = req->data;
    free(req);
    uv_close((uv_handle_t *)&k->wake, on_handle_closed);
    uv_close((uv_handle_t *)&k->drain_timer, on_handle_closed);
}

static void start_destroy(ap_kafka *k)
{
    if (k->destroying) return;
    k->destroying = 1;
    uv_timer_stop(&k->drain_timer);
    rd_kafka_queue_cb_event_enable(k->queue, NULL, NULL);
    rd_kafka_queue_destroy(k->queue);
    k->queue = NULL;
    if (k->revoking) {
        /* A revoke nobody completed: the close below leaves the group anyway. */
        rd_kafka_topic_partition_list_destroy(k->revoking);
        k->revoking = NULL;
    }
    uv_work_t *req = calloc(1, sizeof *req);
    if (req) req->data = k;
    if (req == NULL || uv_queue_work(k->loop, req, destroy_work, destroy_after) != 0) {
        /* No pool: destroying inline blocks the loop briefly, but leaks nothing. */
        ap_log_warn("kafka: closing on the loop thread (thread pool unavailable)", NULL);
        free(req);
        uv_work_t inline_req = {.data = k};
        destroy_work(&inline_req);
        uv_close((uv_handle_t *)&k->wake, on_handle_closed);
        uv_close((uv_handle_t *)&k->drain_timer, on_handle_closed);
        return;
    }
}

static void on_drain_tick(uv_timer_t *t)
{
    ap_kafka *k = t->data;
    ap_kafka_producer_serve(k);
    if (k->busy == 0 &&
        (rd_kafka_outq_len(k->rk) == 0 || (int64_t)uv_now(k->loop) >= k->close_deadline_ms))
        start_destroy(k);
}

void ap_kafka_job_done(ap_kafka *k)
{
    k->busy--;
    if (k->closing && k->busy == 0 && k->consumer) start_destroy(k);
}

void ap_kafka_close(ap_kafka *k)
{
    if (k->closing) return;
    k->closing = 1;
    if (k->consumer) {
        uv_timer_stop(&k->drain_timer);
        if (k->busy == 0) start_destroy(k);
        return;
    }
    k->close_deadline_ms += (int64_t)uv_now(k->loop);
    uv_timer_start(&k->drain_timer, on_drain_tick, 0, 20);
}
