/* Consuming in a group: messages and rebalances are served on the loop thread. A revoke is
 * held open until the application says its in-flight work is committed, and an assignment
 * first reads the committed offsets and their metadata (off the loop), so the application can
 * tell which messages past the committed offset were already handled by the previous owner. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "log.h"

#define COMMITTED_TIMEOUT_MS 10000

static int is_coop(rd_kafka_t *rk)
{
    return strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE") == 0;
}

static void log_error(const char *what, rd_kafka_error_t *e)
{
    if (e == NULL) return;
    ap_log_warn(what, "error", rd_kafka_error_string(e), NULL);
    rd_kafka_error_destroy(e);
}

static void apply_assign(ap_kafka *k, rd_kafka_topic_partition_list_t *parts, int coop)
{
    if (coop) {
        log_error("kafka incremental assign", rd_kafka_incremental_assign(k->rk, parts));
    } else {
        rd_kafka_resp_err_t e = rd_kafka_assign(k->rk, parts);
        if (e) ap_log_warn("kafka assign", "error", rd_kafka_err2str(e), NULL);
    }
    /* A partition paused under an earlier assignment may come back paused; make its state
     * match what the application asked for. */
    if (k->paused)
        rd_kafka_pause_partitions(k->rk, parts);
    else
        rd_kafka_resume_partitions(k->rk, parts);
}

static void apply_unassign(ap_kafka *k, rd_kafka_topic_partition_list_t *parts, int coop)
{
    rd_kafka_resume_partitions(k->rk, parts);
    if (coop) {
        log_error("kafka incremental unassign", rd_kafka_incremental_unassign(k->rk, parts));
    } else {
        rd_kafka_resp_err_t e = rd_kafka_assign(k->rk, NULL);
        if (e) ap_log_warn("kafka unassign", "error", rd_kafka_err2str(e), NULL);
    }
}

static void notify(ap_kafka *k, ap_kafka_rebalance kind, const rd_kafka_topic_partition_list_t *l)
{
    if (k->h.on_rebalance == NULL) return;
    ap_kafka_tp *tps = ap_kafka_tps_from(l);
    if (tps == NULL) {
        ap_log_error("kafka rebalance: out of memory", NULL);
        return;
    }
    k->h.on_rebalance(k->ud, kind, tps, l->cnt);
    free(tps);
}

/* ---- assignment: committed offsets + metadata are fetched on the pool first ---- */

typedef struct {
    uv_work_t req;
    ap_kafka *k;
    rd_kafka_topic_partition_list_t *parts;
    int coop;
    char err[256];
} assign_job;

static void assign_work(uv_work_t *req)
{
    assign_job *j = req->data;
    rd_kafka_resp_err_t e = rd_kafka_committed(j->k->rk, j->parts, COMMITTED_TIMEOUT_MS);
    if (e) snprintf(j->err, sizeof j->err, "%s", rd_kafka_err2str(e));
}

static void assign_after(uv_work_t *req, int status)
{
    assign_job *j = req->data;
    ap_kafka *k = j->k;
    if (status != 0 && !j->err[0]) snprintf(j->err, sizeof j->err, "%s", uv_strerror(status));
    if (j->err[0]) {
        /* Fall back to librdkafka's own lookup of the committed offsets; only the metadata
         * (handled-ahead offsets) is lost, which can mean redelivering such messages. */
        ap_log_warn("kafka: cannot read committed offsets before assigning", "error", j->err, NULL);
        for (int i = 0; i < j->parts->cnt; i++) {
            rd_kafka_topic_partition_t *p = &j->parts->elems[i];
            p->offset = RD_KAFKA_OFFSET_INVALID;
            free(p->metadata);
            p->metadata = NULL;
            p->metadata_size = 0;
        }
    }
    if (!k->closing) notify(k, AP_KAFKA_ASSIGN, j->parts);
    /* Even while closing: the group waits for this call before it lets us leave. */
    apply_assign(k, j->parts, j->coop);
    rd_kafka_topic_partition_list_destroy(j->parts);
    free(j);
    ap_kafka_job_done(k);
}

static void start_assign(ap_kafka *k, const rd_kafka_topic_partition_list_t *parts, int coop)
{
    assign_job *j = calloc(1, sizeof *j);
    if (j == NULL) goto inline_assign;
    j->k = k;
    j->coop = coop;
    j->parts = rd_kafka_topic_partition_list_copy(parts);
    j->req.data = j;
    if (uv_queue_work(k->loop, &j->req, assign_work, assign_after) != 0) {
        rd_kafka_topic_partition_list_destroy(j->parts);
        free(j);
        goto inline_assign;
    }
    k->busy++;
    return;
inline_assign:
    ap_log_warn("kafka: assigning without reading commit metadata", NULL);
    {
        rd_kafka_topic_partition_list_t *copy = rd_kafka_topic_partition_list_copy(parts);
        notify(k, AP_KAFKA_ASSIGN, copy);
        apply_assign(k, copy, coop);
        rd_kafka_topic_partition_list_destroy(copy);
    }
}

/* Runs inside rd_kafka_consumer_poll() on the loop thread, or inside rd_kafka_consumer_close()
 * on a pool thread once close() has started (then the loop no longer touches the handle). */
static void on_rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                            rd_kafka_topic_partition_list_t *parts, void *opaque)
{
    ap_kafka *k = opaque;
    int coop = is_coop(rk);
    if (k->destroying) {
        if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS)
            apply_assign(k, parts, coop);
        else
            apply_unassign(k, parts, coop);
        return;
    }
    switch (err) {
    case RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS:
        start_assign(k, parts, coop);
        break;
    case RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS:
        if (rd_kafka_assignment_lost(rk)) {
            notify(k, AP_KAFKA_LOST, parts);
            apply_unassign(k, parts, coop);
            break;
        }
        if (k->revoking) { /* never completed: finish it before starting another */
            apply_unassign(k, k->revoking, k->revoking_coop);
            rd_kafka_topic_partition_list_destroy(k->revoking);
        }
        k->revoking = rd_kafka_topic_partition_list_copy(parts);
        k->revoking_coop = coop;
        notify(k, AP_KAFKA_REVOKE, parts);
        break;
    default:
        if (k->h.on_error) k->h.on_error(k->ud, rd_kafka_err2str(err), 0);
        notify(k, AP_KAFKA_LOST, parts);
        rd_kafka_assign(rk, NULL);
        break;
    }
}

int ap_kafka_rebalance_done(ap_kafka *k, char *err, size_t errlen)
{
    if (!k->consumer || k->destroying) {
        snprintf(err, errlen, k->consumer ? "closed" : "not a consumer");
        return -1;
    }
    if (k->revoking == NULL) return 0; /* already completed (or superseded) */
    rd_kafka_topic_partition_list_t *parts = k->revoking;
    k->revoking = NULL;
    apply_unassign(k, parts, k->revoking_coop);
    rd_kafka_topic_partition_list_destroy(parts);
    return 0;
}

/* ---- commits ---- */

static void on_commit_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *offsets, void *opaque)
{
    ap_kafka *k = rd_kafka_opaque(rk);
    if (k->destroying || k->h.on_commit == NULL) return;
    char buf[300] = "";
    if (err) {
        snprintf(buf, sizeof buf, "%s", rd_kafka_err2str(err));
    } else if (offsets) {
        for (int i = 0; i < offsets->cnt; i++) {
            if (offsets->elems[i].err) {
                snprintf(buf, sizeof buf, "%s [%d]: %s", offsets->elems[i].topic,
                         offsets->elems[i].partition, rd_kafka_err2str(offsets->elems[i].err));
                break;
            }
        }
    }
    k->h.on_commit(k->ud, opaque, buf[0] ? buf : NULL);
}

int ap_kafka_commit(ap_kafka *k, const ap_kafka_tp *tps, int n, void *opaque, char *err,
                    size_t errlen)
{
    if (!k->consumer || k->closing) {
        snprintf(err, errlen, k->consumer ? "closed" : "not a consumer");
        return -1;
    }
    rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(n);
    for (int i = 0; i < n; i++) {
        rd_kafka_topic_partition_t *p =
            rd_kafka_topic_partition_list_add(list, tps[i].topic, tps[i].partition);
        p->offset = tps[i].offset;
        if (tps[i].metadata_len > 0) {
            /* The list owns (and frees) its metadata. */
            p->metadata = malloc(tps[i].metadata_len);
            if (p->metadata == NULL) {
                rd_kafka_topic_partition_list_destroy(list);
                snprintf(err, errlen, "out of memory");
                return -1;
            }
            memcpy(p->metadata, tps[i].metadata, tps[i].metadata_len);
            p->metadata_size = tps[i].metadata_len;
        }
    }
    /* The result is posted on the queue we serve and reaches on_commit_cb from poll. */
    rd_kafka_resp_err_t e = rd_kafka_commit_queue(k->rk, list, k->queue, on_commit_cb, opaque);
    rd_kafka_topic_partition_list_destroy(list);
    if (e) {
        snprintf(err, errlen, "%s", rd_kafka_err2str(e));
        return -1;
    }
    return 0;
}

/* ---- subscription, flow control, serving ---- */

void ap_kafka_consumer_setup(rd_kafka_conf_t *conf)
{
    rd_kafka_conf_set_rebalance_cb(conf, on_rebalance_cb);
}

int ap_kafka_subscribe(ap_kafka *k, const char *const *topics, int n, char *err, size_t errlen)
{
    if (!k->consumer || k->closing) {
        snprintf(err, errlen, k->consumer ? "closed" : "not a consumer");
        return -1;
    }
    rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(n);
    for (int i = 0; i < n; i++)
        rd_kafka_topic_partition_list_add(list, topics[i], RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t e = rd_kafka_subscribe(k->rk, list);
    rd_kafka_topic_partition_list_destroy(list);
    if (e) {
        snprintf(err, errlen, "%s", rd_kafka_err2str(e));
        return -1;
    }
    return 0;
}

int ap_kafka_pause(ap_kafka *k, int pause, char *err, size_t errlen)
{
    if (!k->consumer || k->destroying) {
        snprintf(err, errlen, k->consumer ? "closed" : "not a consumer");
        return -1;
    }
    k->paused = pause;
    rd_kafka_topic_partition_list_t *list = NULL;
    rd_kafka_resp_err_t e = rd_kafka_assignment(k->rk, &list);
    if (e) {
        snprintf(err, errlen, "%s", rd_kafka_err2str(e));
        return -1;
    }
    if (pause)
        rd_kafka_pause_partitions(k->rk, list);
    else
        rd_kafka_resume_partitions(k->rk, list);
    rd_kafka_topic_partition_list_destroy(list);
    return 0;
}

void ap_kafka_consumer_serve(ap_kafka *k)
{
    for (int n = 0; n < AP_KAFKA_BATCH; n++) {
        if (k->destroying) return; /* a handler closed us */
        rd_kafka_message_t *m = rd_kafka_consumer_poll(k->rk, 0);
        if (m == NULL) return;
        if (m->err) {
            if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF && k->h.on_error) {
                char buf[400];
                snprintf(buf, sizeof buf, "%s: %s", rd_kafka_err2name(m->err),
                         rd_kafka_message_errstr(m));
                k->h.on_error(k->ud, buf, 0);
            }
        } else if (k->h.on_message) {
            rd_kafka_timestamp_type_t tstype;
            ap_kafka_msg msg = {
                .topic = rd_kafka_topic_name(m->rkt),
                .partition = m->partition,
                .offset = m->offset,
                .key = m->key,
                .key_len = m->key_len,
                .value = m->payload,
                .value_len = m->len,
                .timestamp_ms = rd_kafka_message_timestamp(m, &tstype),
            };
            k->h.on_message(k->ud, &msg);
        }
        rd_kafka_message_destroy(m);
    }
    uv_async_send(&k->wake);
}
