/* The ap_kafka handle shared by the files of core/kafka (not part of the public API). */
#ifndef AP_KAFKA_INTERNAL_H
#define AP_KAFKA_INTERNAL_H

#include <librdkafka/rdkafka.h>

#include "kafka.h"

/* Messages handed out per loop turn before yielding to the rest of the loop. */
#define AP_KAFKA_BATCH 256

struct ap_kafka {
    uv_loop_t *loop;
    rd_kafka_t *rk;
    rd_kafka_queue_t *queue; /* the queue we serve: main (producer) or consumer */
    uv_async_t wake;         /* librdkafka threads signal it when `queue` gets work */
    uv_timer_t drain_timer;  /* producer: polls the out-queue at close; consumer: idle polls */
    ap_kafka_handlers h;
    void *ud;
    int consumer;
    int closing;    /* close() was called */
    int destroying; /* the pool owns rk now; the loop must not touch it */
    int busy;       /* pool jobs that use rk */
    int paused;     /* consumer: the whole assignment is paused */
    int handles_closed;
    int64_t close_deadline_ms;
    /* consumer: a revoke waiting for ap_kafka_rebalance_done() */
    rd_kafka_topic_partition_list_t *revoking;
    int revoking_coop;
};

void ap_kafka_consumer_serve(ap_kafka *k);
void ap_kafka_producer_serve(ap_kafka *k);
void ap_kafka_consumer_setup(rd_kafka_conf_t *conf);
void ap_kafka_producer_setup(rd_kafka_conf_t *conf);
/* Called when a pool job ends, so a pending close can go on. */
void ap_kafka_job_done(ap_kafka *k);
/* Copies a librdkafka partition list into an array (strings point into `list`). */
ap_kafka_tp *ap_kafka_tps_from(const rd_kafka_topic_partition_list_t *list);

#endif
