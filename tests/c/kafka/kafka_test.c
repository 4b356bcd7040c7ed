/* Tests for core/kafka against librdkafka's in-process mock cluster: delivery reports, group
 * consumption on the loop, commits with metadata read back at assignment, a revoke held open
 * until the in-flight work is committed, pausing, and closing without blocking the loop. */
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kafka.h"
#include "../test.h"

#define MAXMSG 256

typedef struct {
    int delivered, delivery_errors;
    int received;
    int32_t partition[MAXMSG];
    int64_t offset[MAXMSG];
    char value[MAXMSG][32];
    int assigned, revoked, lost;
    int owned; /* partitions held now (eager rebalancing: all go at each revoke) */
    ap_kafka_tp assign_tps[64];
    char assign_meta[64][64];
    int assign_n;
    int commits, commit_errors;
    int probes, probe_brokers;
    int closed;
    int hold_revoke; /* do not complete revokes from the callback */
    ap_kafka *self;
} state;

static void on_message(void *ud, const ap_kafka_msg *m)
{
    state *s = ud;
    if (s->received < MAXMSG) {
        s->partition[s->received] = m->partition;
        s->offset[s->received] = m->offset;
        snprintf(s->value[s->received], sizeof s->value[0], "%.*s", (int)m->value_len,
                 (const char *)m->value);
    }
    s->received++;
}

static void on_delivery(void *ud, void *opaque, const char *err, int32_t p, int64_t o)
{
    state *s = ud;
    (void)opaque, (void)p, (void)o;
    if (err)
        s->delivery_errors++;
    else
        s->delivered++;
}

static void on_rebalance(void *ud, ap_kafka_rebalance kind, const ap_kafka_tp *tps, int n)
{
    state *s = ud;
    if (kind == AP_KAFKA_ASSIGN) {
        s->assigned++;
        s->owned = n;
        s->assign_n = n;
        for (int i = 0; i < n && i < 64; i++) {
            s->assign_tps[i] = tps[i];
            snprintf(s->assign_meta[i], sizeof s->assign_meta[0], "%.*s", (int)tps[i].metadata_len,
                     tps[i].metadata ? tps[i].metadata : "");
            s->assign_tps[i].topic = NULL; /* the string does not outlive the callback */
        }
    } else if (kind == AP_KAFKA_REVOKE) {
        s->revoked++;
        s->owned = 0;
        if (!s->hold_revoke) {
            char err[128];
            CHECK(ap_kafka_rebalance_done(s->self, err, sizeof err) == 0);
        }
    } else {
        s->lost++;
        s->owned = 0;
    }
}

static void on_commit(void *ud, void *opaque, const char *err)
{
    state *s = ud;
    (void)opaque;
    if (err) {
        fprintf(stderr, "commit error: %s\n", err);
        s->commit_errors++;
    } else {
        s->commits++;
    }
}

static void on_probe(void *ud, void *opaque, const char *err, int brokers)
{
    state *s = ud;
    (void)opaque;
    s->probes++;
    s->probe_brokers = err ? -1 : brokers;
}

static void on_error(void *ud, const char *err, int fatal)
{
    (void)ud;
    fprintf(stderr, "kafka error (fatal=%d): %s\n", fatal, err);
}

static void on_closed(void *ud)
{
    ((state *)ud)->closed = 1;
}

static const ap_kafka_handlers handlers = {on_message, on_delivery, on_rebalance, on_commit,
                                           on_probe,   on_error,    on_closed};

static uv_loop_t loop;
static char bootstraps[256];

static void on_tick(uv_timer_t *t)
{
    (void)t;
}

/* Turns the loop until *flag >= want or timeout_ms passes; returns whether it got there. */
static int run_until(const int *flag, int want, int timeout_ms)
{
    uv_timer_t tick;
    uv_timer_init(&loop, &tick);
    uv_timer_start(&tick, on_tick, 10, 10);
    uint64_t deadline = uv_now(&loop) + (uint64_t)timeout_ms;
    while (*flag < want && uv_now(&loop) < deadline) uv_run(&loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&tick, NULL);
    uv_run(&loop, UV_RUN_NOWAIT);
    return *flag >= want;
}

static ap_kafka *producer(state *s)
{
    const char *conf[] = {"bootstrap.servers",
                          bootstraps,
                          "enable.idempotence",
                          "true",
                          "partitioner",
                          "fnv1a_random",
                          "message.timeout.ms",
                          "10000",
                          NULL};
    char err[256];
    ap_kafka *k = ap_kafka_new(&loop, 0, conf, &handlers, s, err, sizeof err);
    if (k == NULL) fprintf(stderr, "producer: %s\n", err);
    s->self = k;
    return k;
}

static ap_kafka *consumer(state *s, const char *group)
{
    const char *conf[] = {"bootstrap.servers",
                          bootstraps,
                          "group.id",
                          group,
                          "enable.auto.commit",
                          "false",
                          "enable.auto.offset.store",
                          "false",
                          "auto.offset.reset",
                          "earliest",
                          "session.timeout.ms",
                          "6000",
                          "heartbeat.interval.ms",
                          "500",
                          NULL};
    char err[256];
    ap_kafka *k = ap_kafka_new(&loop, 1, conf, &handlers, s, err, sizeof err);
    if (k == NULL) fprintf(stderr, "consumer: %s\n", err);
    s->self = k;
    return k;
}

static void close_and_free(ap_kafka *k, state *s)
{
    ap_kafka_close(k);
    CHECK(run_until(&s->closed, 1, 20000));
    ap_kafka_free(k);
}

static void produce_n(const char *topic, int n, const char *prefix)
{
    state ps = {0};
    ap_kafka *p = producer(&ps);
    CHECK(p != NULL);
    if (!p) return;
    char err[256];
    for (int i = 0; i < n; i++) {
        char key[16], val[32];
        snprintf(key, sizeof key, "app-%d", i % 5);
        snprintf(val, sizeof val, "%s%d", prefix, i);
        CHECK(ap_kafka_produce(p, topic, key, strlen(key), val, strlen(val), NULL, err,
                               sizeof err) == 0);
    }
    CHECK(run_until(&ps.delivered, n, 10000));
    CHECK(ps.delivery_errors == 0);
    close_and_free(p, &ps);
}

static void test_produce_and_probe(void)
{
    state s = {0};
    ap_kafka *p = producer(&s);
    CHECK(p != NULL);
    char err[256];
    CHECK(ap_kafka_probe(p, 5000, NULL, err, sizeof err) == 0);
    CHECK(run_until(&s.probes, 1, 10000));
    CHECK(s.probe_brokers == 3);
    CHECK(ap_kafka_produce(p, "t-probe", "k", 1, "v", 1, NULL, err, sizeof err) == 0);
    CHECK(run_until(&s.delivered, 1, 10000));
    /* Closing returns at once and finishes on the pool; the handle is unusable meanwhile. */
    ap_kafka_close(p);
    CHECK(ap_kafka_produce(p, "t-probe", "k", 1, "v", 1, NULL, err, sizeof err) != 0);
    CHECK_STR(err, "closed");
    CHECK(run_until(&s.closed, 1, 20000));
    ap_kafka_free(p);
}

static void test_consume_commit_metadata(void)
{
    produce_n("t-commit", 20, "m");
    state s = {0};
    ap_kafka *c = consumer(&s, "g-commit");
    const char *topics[] = {"t-commit"};
    char err[256];
    CHECK(ap_kafka_subscribe(c, topics, 1, err, sizeof err) == 0);
    CHECK(run_until(&s.received, 20, 20000));
    CHECK(s.assigned == 1);
    /* per partition, offsets arrive in order */
    for (int i = 0; i < s.received && i < MAXMSG; i++)
        for (int j = 0; j < i; j++)
            if (s.partition[j] == s.partition[i]) CHECK(s.offset[j] < s.offset[i]);
    /* commit partition 0 at offset 1 with metadata naming offsets handled past it */
    ap_kafka_tp tp = {"t-commit", 0, 1, "acked=3,4", 9};
    CHECK(ap_kafka_commit(c, &tp, 1, NULL, err, sizeof err) == 0);
    CHECK(run_until(&s.commits, 1, 10000));
    CHECK(s.commit_errors == 0);
    close_and_free(c, &s);

    /* a new member of the group reads the offset and the metadata back at assignment */
    state s2 = {0};
    ap_kafka *c2 = consumer(&s2, "g-commit");
    CHECK(ap_kafka_subscribe(c2, topics, 1, err, sizeof err) == 0);
    CHECK(run_until(&s2.assigned, 1, 20000));
    int found = 0;
    for (int i = 0; i < s2.assign_n; i++) {
        if (s2.assign_tps[i].partition == 0) {
            found = 1;
            CHECK(s2.assign_tps[i].offset == 1);
            CHECK_STR(s2.assign_meta[i], "acked=3,4");
        }
    }
    CHECK(found);
    close_and_free(c2, &s2);
}

static void test_revoke_waits_for_done(void)
{
    produce_n("t-rebal", 40, "r");
    const char *topics[] = {"t-rebal"};
    char err[256];
    state a = {0};
    a.hold_revoke = 1;
    ap_kafka *ca = consumer(&a, "g-rebal");
    CHECK(ap_kafka_subscribe(ca, topics, 1, err, sizeof err) == 0);
    CHECK(run_until(&a.received, 40, 20000));
    CHECK(a.assign_n == 4);

    /* A commits what it handled while the group is stable (the bus commits after every ack). */
    ap_kafka_tp tps[4];
    for (int p = 0; p < 4; p++) {
        int64_t next = 0;
        for (int i = 0; i < a.received; i++)
            if (a.partition[i] == p && a.offset[i] + 1 > next) next = a.offset[i] + 1;
        tps[p] = (ap_kafka_tp){"t-rebal", p, next, NULL, 0};
    }
    CHECK(ap_kafka_commit(ca, tps, 4, NULL, err, sizeof err) == 0);
    CHECK(run_until(&a.commits, 1, 10000));

    /* A second member joins: A is asked to give its partitions back and holds on to them, and
     * nobody gets anything until A says it is done. */
    state b = {0};
    ap_kafka *cb = consumer(&b, "g-rebal");
    CHECK(ap_kafka_subscribe(cb, topics, 1, err, sizeof err) == 0);
    CHECK(run_until(&a.revoked, 1, 20000));
    run_until(&b.assigned, 1, 1500);
    CHECK(b.assigned == 0);
    a.hold_revoke = 0; /* later rebalances (if the group needs more than one) go through */
    CHECK(ap_kafka_rebalance_done(ca, err, sizeof err) == 0);
    CHECK(run_until(&b.assigned, 1, 20000));
    /* the group settles with the four partitions split between the two */
    int split = 0;
    for (int i = 0; i < 400 && !split; i++) {
        run_until(&split, 1, 50);
        split = a.owned > 0 && b.owned > 0 && a.owned + b.owned == 4;
    }
    if (!split) fprintf(stderr, "a owns %d, b owns %d\n", a.owned, b.owned);
    CHECK(split);
    for (int i = 0; i < b.assign_n; i++) {
        int p = b.assign_tps[i].partition;
        CHECK(b.assign_tps[i].offset == tps[p].offset);
    }
    /* nothing is redelivered to B: everything was committed before the hand-over */
    run_until(&b.received, 1, 1500);
    CHECK(b.received == 0);
    /* new messages are shared between the two */
    a.received = 0;
    produce_n("t-rebal", 40, "s");
    for (int i = 0; i < 200 && a.received + b.received < 40; i++)
        run_until(&b.received, b.received + 1, 50);
    CHECK(a.received + b.received == 40);
    CHECK(b.received > 0);
    CHECK(a.received > 0);
    close_and_free(cb, &b);
    close_and_free(ca, &a);
}

static void test_pause(void)
{
    const char *topics[] = {"t-pause"};
    char err[256];
    produce_n("t-pause", 4, "p");
    state s = {0};
    ap_kafka *c = consumer(&s, "g-pause");
    /* paused before the assignment: the assignment arrives paused */
    CHECK(ap_kafka_pause(c, 1, err, sizeof err) == 0);
    CHECK(ap_kafka_subscribe(c, topics, 1, err, sizeof err) == 0);
    CHECK(run_until(&s.assigned, 1, 20000));
    run_until(&s.received, 1, 1500);
    CHECK(s.received == 0);
    CHECK(ap_kafka_pause(c, 0, err, sizeof err) == 0);
    CHECK(run_until(&s.received, 4, 10000));
    close_and_free(c, &s);
}

static void test_bad_config(void)
{
    const char *conf[] = {"no.such.property", "1", NULL};
    char err[256] = "";
    state s = {0};
    CHECK(ap_kafka_new(&loop, 0, conf, &handlers, &s, err, sizeof err) == NULL);
    CHECK(strstr(err, "no.such.property") != NULL);
}

int main(void)
{
    uv_loop_init(&loop);
    char err[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "log_level", "3", err, sizeof err);
    rd_kafka_t *host = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
    rd_kafka_mock_cluster_t *mc = rd_kafka_mock_cluster_new(host, 3);
    if (mc == NULL) {
        fprintf(stderr, "cannot start the mock cluster\n");
        return 1;
    }
    snprintf(bootstraps, sizeof bootstraps, "%s", rd_kafka_mock_cluster_bootstraps(mc));
    rd_kafka_mock_topic_create(mc, "t-commit", 4, 1);
    rd_kafka_mock_topic_create(mc, "t-rebal", 4, 1);
    rd_kafka_mock_topic_create(mc, "t-pause", 2, 1);

    RUN(test_bad_config);
    RUN(test_produce_and_probe);
    RUN(test_consume_commit_metadata);
    RUN(test_revoke_waits_for_done);
    RUN(test_pause);

    rd_kafka_mock_cluster_destroy(mc);
    rd_kafka_destroy(host);
    uv_run(&loop, UV_RUN_NOWAIT);
    CHECK(uv_loop_close(&loop) == 0);
    TEST_MAIN_END();
}
