/* Producing: messages are queued without blocking and each delivery report (the broker's
 * acknowledgement or the final error) reaches on_delivery on the loop thread. */
#include <stdio.h>

#include "internal.h"

/* Served by rd_kafka_poll() on the loop thread. */
static void on_delivery_report(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    ap_kafka *k = opaque;
    if (k->destroying || k->h.on_delivery == NULL) return;
    k->h.on_delivery(k->ud, m->_private, m->err ? rd_kafka_err2str(m->err) : NULL, m->partition,
                     m->offset);
}

void ap_kafka_producer_setup(rd_kafka_conf_t *conf)
{
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery_report);
}

void ap_kafka_producer_serve(ap_kafka *k)
{
    int n = 0;
    while (n < AP_KAFKA_BATCH && rd_kafka_poll(k->rk, 0) > 0) n++;
    /* More may be waiting; the queue only signals again once it has been emptied. */
    if (n == AP_KAFKA_BATCH) uv_async_send(&k->wake);
}

int ap_kafka_produce(ap_kafka *k, const char *topic, const void *key, size_t key_len,
                     const void *value, size_t value_len, void *opaque, char *err, size_t errlen)
{
    if (k->consumer || k->closing) {
        snprintf(err, errlen, k->consumer ? "not a producer" : "closed");
        return -1;
    }
    rd_kafka_resp_err_t e = rd_kafka_producev(
        k->rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY((void *)key, key_len),
        RD_KAFKA_V_VALUE((void *)value, value_len), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
        RD_KAFKA_V_OPAQUE(opaque), RD_KAFKA_V_END);
    if (e) {
        snprintf(err, errlen, "%s", rd_kafka_err2str(e));
        return -1;
    }
    return 0;
}

int ap_kafka_outq_len(ap_kafka *k)
{
    return k->rk && !k->destroying ? rd_kafka_outq_len(k->rk) : 0;
}
