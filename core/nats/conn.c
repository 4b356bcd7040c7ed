/* The connection: the mailbox from libnats' threads to the loop, connecting, JetStream streams
 * and publishing, and the close that runs on the thread pool. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "internal.h"
#include "log.h"

void ap_nats_status_text(natsStatus s, char *err, size_t errlen)
{
    const char *text = natsStatus_GetText(s);
    const char *detail = nats_GetLastError(NULL);
    /* libnats prefixes details with "(file.c:line): "; users do not need that. */
    while (detail && detail[0] == '(') {
        const char *end = strstr(detail, "): ");
        if (end == NULL) break;
        detail = end + 3;
    }
    if (detail && *detail && strcasecmp(detail, text) != 0)
        snprintf(err, errlen, "%s: %s", text, detail);
    else
        snprintf(err, errlen, "%s", text);
}

void ap_nats_post(ap_nats *n, ev_kind kind, void *opaque, natsMsg *msg, int code, uint64_t seq,
                  int duplicate, const char *text)
{
    ev *e = calloc(1, sizeof *e);
    if (e == NULL) {
        ap_log_error("nats: out of memory; an event was dropped", NULL);
        if (msg) natsMsg_Destroy(msg);
        return;
    }
    e->kind = kind;
    e->opaque = opaque;
    e->msg = msg;
    e->code = code;
    e->seq = seq;
    e->duplicate = duplicate;
    e->text = text ? strdup(text) : NULL;
    uv_mutex_lock(&n->lock);
    if (n->tail)
        n->tail->next = e;
    else
        n->head = e;
    n->tail = e;
    uv_mutex_unlock(&n->lock);
    uv_async_send(&n->wake);
}

static void free_ev(ev *e)
{
    if (e->msg) natsMsg_Destroy(e->msg);
    free(e->text);
    free(e);
}

/* Loop thread: hands every queued event to the handlers. */
static void on_wake(uv_async_t *a)
{
    ap_nats *n = a->data;
    uv_mutex_lock(&n->lock);
    ev *e = n->head;
    n->head = n->tail = NULL;
    uv_mutex_unlock(&n->lock);
    while (e) {
        ev *next = e->next;
        if (!n->shutting_down) {
            switch (e->kind) {
            case EV_MSG:
                if (n->h.on_msg) {
                    n->h.on_msg(n->ud, e->opaque, e->msg);
                    e->msg = NULL;
                }
                break;
            case EV_PUBACK:
                if (n->h.on_puback) n->h.on_puback(n->ud, e->opaque, e->text, e->seq, e->duplicate);
                break;
            case EV_EVENT:
                if (n->h.on_event) n->h.on_event(n->ud, (ap_nats_event)e->code, e->text);
                break;
            case EV_FETCH_ERROR:
                if (n->h.on_fetch_error) n->h.on_fetch_error(n->ud, e->opaque, e->text);
                break;
            case EV_STOPPED:
                if (n->h.on_stopped) n->h.on_stopped(n->ud, e->opaque);
                break;
            }
        }
        free_ev(e);
        e = next;
    }
}

/* ---- libnats threads ---- */

static void on_disconnected(natsConnection *nc, void *closure)
{
    (void)nc;
    ap_nats_post(closure, EV_EVENT, NULL, NULL, AP_NATS_DISCONNECTED, 0, 0, "disconnected");
}

static void on_reconnected(natsConnection *nc, void *closure)
{
    (void)nc;
    ap_nats_post(closure, EV_EVENT, NULL, NULL, AP_NATS_RECONNECTED, 0, 0, "reconnected");
}

/* libnats runs connection callbacks on its own thread, possibly after natsConnection_Destroy
 * returned; the closed callback is the last one, so the close waits for it before `n` goes. */
static void on_closed_cb(natsConnection *nc, void *closure)
{
    (void)nc;
    ap_nats *n = closure;
    ap_nats_post(n, EV_EVENT, NULL, NULL, AP_NATS_CLOSED, 0, 0, "closed");
    uv_mutex_lock(&n->lock);
    n->closed_seen = 1;
    uv_cond_signal(&n->closed_cond);
    uv_mutex_unlock(&n->lock);
}

static void on_async_error(natsConnection *nc, natsSubscription *sub, natsStatus s, void *closure)
{
    (void)nc, (void)sub;
    ap_nats_post(closure, EV_EVENT, NULL, NULL, AP_NATS_ERROR, 0, 0, natsStatus_GetText(s));
}

static void on_puback(jsCtx *js, natsMsg *msg, jsPubAck *pa, jsPubAckErr *pae, void *closure)
{
    (void)js;
    ap_nats *n = closure;
    void *opaque = NULL;
    int found = 0;
    uv_mutex_lock(&n->lock);
    for (pending_pub **pp = &n->pubs; *pp; pp = &(*pp)->next) {
        if ((*pp)->msg == msg) {
            pending_pub *p = *pp;
            *pp = p->next;
            opaque = p->opaque;
            found = 1;
            free(p);
            break;
        }
    }
    uv_mutex_unlock(&n->lock);
    if (found) {
        char err[300] = "";
        if (pae)
            snprintf(err, sizeof err, "%s%s%s", natsStatus_GetText(pae->Err),
                     pae->ErrText ? ": " : "", pae->ErrText ? pae->ErrText : "");
        else if (pa == NULL)
            snprintf(err, sizeof err, "no acknowledgement");
        ap_nats_post(n, EV_PUBACK, opaque, NULL, 0, pa ? pa->Sequence : 0, pa ? pa->Duplicate : 0,
                     err[0] ? err : NULL);
    }
    natsMsg_Destroy(msg);
}

/* ---- handle ---- */

ap_nats *ap_nats_new(uv_loop_t *loop, const ap_nats_handlers *h, void *ud, char *err, size_t errlen)
{
    ap_nats *n = calloc(1, sizeof *n);
    if (n == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    n->loop = loop;
    n->h = *h;
    n->ud = ud;
    uv_mutex_init(&n->lock);
    uv_cond_init(&n->closed_cond);
    uv_async_init(loop, &n->wake, on_wake);
    n->wake.data = n;
    return n;
}

void ap_nats_free(ap_nats *n)
{
    if (n == NULL) return;
    uv_cond_destroy(&n->closed_cond);
    uv_mutex_destroy(&n->lock);
    free(n);
}

int ap_nats_connect(ap_nats *n, const char *urls, const char *name, int64_t timeout_ms, char *err,
                    size_t errlen)
{
    natsOptions *opts = NULL;
    natsConnection *nc = NULL;
    jsCtx *js = NULL;
    natsStatus s = natsOptions_Create(&opts);
    if (s == NATS_OK) s = natsOptions_SetURL(opts, urls);
    if (s == NATS_OK && name) s = natsOptions_SetName(opts, name);
    if (s == NATS_OK) s = natsOptions_SetTimeout(opts, timeout_ms);
    /* Reconnect for ever: a worker outlives a NATS restart. */
    if (s == NATS_OK) s = natsOptions_SetMaxReconnect(opts, -1);
    if (s == NATS_OK) s = natsOptions_SetReconnectWait(opts, 1000);
    if (s == NATS_OK) s = natsOptions_SetDisconnectedCB(opts, on_disconnected, n);
    if (s == NATS_OK) s = natsOptions_SetReconnectedCB(opts, on_reconnected, n);
    if (s == NATS_OK) s = natsOptions_SetClosedCB(opts, on_closed_cb, n);
    if (s == NATS_OK) s = natsOptions_SetErrorHandler(opts, on_async_error, n);
    if (s == NATS_OK) s = natsConnection_Connect(&nc, opts);
    if (s == NATS_OK) {
        jsOptions jo;
        jsOptions_Init(&jo);
        jo.PublishAsync.MaxPending = 4096;
        jo.PublishAsync.AckHandler = on_puback;
        jo.PublishAsync.AckHandlerClosure = n;
        s = natsConnection_JetStream(&js, nc, &jo);
    }
    if (s != NATS_OK) {
        ap_nats_status_text(s, err, errlen);
        natsConnection_Destroy(nc);
        natsOptions_Destroy(opts);
        return -1;
    }
    natsOptions_Destroy(opts);
    n->nc = nc;
    n->js = js;
    return 0;
}

int ap_nats_flush(ap_nats *n, int64_t timeout_ms, char *err, size_t errlen)
{
    natsStatus s = natsConnection_FlushTimeout(n->nc, timeout_ms);
    if (s != NATS_OK) {
        ap_nats_status_text(s, err, errlen);
        return -1;
    }
    return 0;
}

int ap_nats_connected(ap_nats *n)
{
    return n->nc && !n->shutting_down && natsConnection_Status(n->nc) == NATS_CONN_STATUS_CONNECTED;
}

int ap_nats_ensure_stream(ap_nats *n, const char *stream, const char *subject, int64_t max_age_ms,
                          int64_t dup_window_ms, char *err, size_t errlen)
{
    jsStreamInfo *si = NULL;
    jsErrCode code = 0;
    natsStatus s = js_GetStreamInfo(&si, n->js, stream, NULL, &code);
    if (s == NATS_OK) {
        jsStreamInfo_Destroy(si);
        return 0;
    }
    if (s != NATS_NOT_FOUND) {
        ap_nats_status_text(s, err, errlen);
        return -1;
    }
    jsStreamConfig cfg;
    jsStreamConfig_Init(&cfg);
    const char *subjects[] = {subject};
    cfg.Name = stream;
    cfg.Subjects = subjects;
    cfg.SubjectsLen = 1;
    cfg.Storage = js_FileStorage;
    cfg.Retention = js_LimitsPolicy;
    cfg.MaxAge = max_age_ms * 1000000;
    cfg.Duplicates = dup_window_ms * 1000000;
    s = js_AddStream(&si, n->js, &cfg, NULL, &code);
    if (s == NATS_OK) {
        jsStreamInfo_Destroy(si);
        return 0;
    }
    /* Another connection created it meanwhile. nats-server answers a create that races with an
     * identical one either "name already in use" or "subjects overlap with an existing stream"
     * (seen with 2.9 when a writer and a reader of a new subject start together), so ask again. */
    if (code == JSStreamNameExistErr) return 0;
    ap_nats_status_text(s, err, errlen);
    if (js_GetStreamInfo(&si, n->js, stream, NULL, &code) == NATS_OK) {
        jsStreamInfo_Destroy(si);
        return 0;
    }
    return -1;
}

static natsMsg *new_msg(const char *subject, const char *key, const void *data, size_t len,
                        char *err, size_t errlen)
{
    natsMsg *m = NULL;
    natsStatus s = natsMsg_Create(&m, subject, NULL, data, (int)len);
    if (s == NATS_OK && key && *key) s = natsMsgHeader_Set(m, AP_NATS_KEY_HEADER, key);
    if (s != NATS_OK) {
        ap_nats_status_text(s, err, errlen);
        natsMsg_Destroy(m);
        return NULL;
    }
    return m;
}

int ap_nats_publish(ap_nats *n, const char *subject, const char *key, const void *data, size_t len,
                    char *err, size_t errlen)
{
    if (n->nc == NULL || n->closing) {
        snprintf(err, errlen, n->nc ? "closed" : "not connected");
        return -1;
    }
    natsMsg *m = new_msg(subject, key, data, len, err, errlen);
    if (m == NULL) return -1;
    natsStatus s = natsConnection_PublishMsg(n->nc, m);
    natsMsg_Destroy(m);
    if (s != NATS_OK) {
        ap_nats_status_text(s, err, errlen);
        return -1;
    }
    return 0;
}

int ap_nats_js_publish(ap_nats *n, const char *subject, const char *key, const char *msg_id,
                       const void *data, size_t len, int64_t timeout_ms, void *opaque, char *err,
                       size_t errlen)
{
    if (n->js == NULL || n->closing) {
        snprintf(err, errlen, n->js ? "closed" : "not connected");
        return -1;
    }
    natsMsg *m = new_msg(subject, key, data, len, err, errlen);
    if (m == NULL) return -1;
    pending_pub *p = calloc(1, sizeof *p);
    if (p == NULL) {
        natsMsg_Destroy(m);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    p->msg = m;
    p->opaque = opaque;
    /* Registered first: the acknowledgement may come before js_PublishMsgAsync returns. */
    uv_mutex_lock(&n->lock);
    p->next = n->pubs;
    n->pubs = p;
    uv_mutex_unlock(&n->lock);
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MaxWait = timeout_ms;
    po.MsgId = msg_id;
    natsMsg *owned = m;
    natsStatus s = js_PublishMsgAsync(n->js, &owned, &po);
    if (s != NATS_OK) {
        uv_mutex_lock(&n->lock);
        for (pending_pub **pp = &n->pubs; *pp; pp = &(*pp)->next) {
            if (*pp == p) {
                *pp = p->next;
                break;
            }
        }
        uv_mutex_unlock(&n->lock);
        free(p);
        natsMsg_Destroy(owned); /* NULL when the library took it */
        ap_nats_status_text(s, err, errlen);
        return -1;
    }
    return 0;
}

void ap_nats_job_begin(ap_nats *n)
{
    n->busy++;
}

/* ---- close ---- */

static void shutdown_work(uv_work_t *req)
{
    ap_nats *n = req->data;
    ap_nats_subs_shutdown(n);
    if (n->js) {
        jsPubOptions po;
        jsPubOptions_Init(&po);
        po.MaxWait = 5000;
        js_PublishAsyncComplete(n->js, &po);
    }
    if (n->nc) natsConnection_FlushTimeout(n->nc, 2000);
    if (n->js) jsCtx_Destroy(n->js);
    n->js = NULL;
    if (n->nc) {
        natsConnection_Close(n->nc);
        uv_mutex_lock(&n->lock);
        uint64_t deadline = uv_hrtime() + 10ull * 1000000000ull;
        while (!n->closed_seen && uv_hrtime() < deadline)
            uv_cond_timedwait(&n->closed_cond, &n->lock, 100ull * 1000000ull);
        uv_mutex_unlock(&n->lock);
        natsConnection_Destroy(n->nc);
        n->nc = NULL;
    }
}

static void on_wake_closed(uv_handle_t *h)
{
    ap_nats *n = h->data;
    if (n->h.on_closed) n->h.on_closed(n->ud);
}

static void shutdown_after(uv_work_t *req, int status)
{
    (void)status;
    ap_nats *n = req->data;
    free(req);
    /* Whatever is still queued is dropped (messages are destroyed, never acked). */
    on_wake(&n->wake);
    uv_mutex_lock(&n->lock);
    pending_pub *p = n->pubs;
    n->pubs = NULL;
    uv_mutex_unlock(&n->lock);
    while (p) {
        pending_pub *next = p->next;
        free(p); /* the library destroyed (or will never report) the message */
        p = next;
    }
    uv_close((uv_handle_t *)&n->wake, on_wake_closed);
}

static void start_shutdown(ap_nats *n)
{
    n->shutting_down = 1;
    uv_work_t *req = calloc(1, sizeof *req);
    if (req) req->data = n;
    if (req == NULL || uv_queue_work(n->loop, req, shutdown_work, shutdown_after) != 0) {
        ap_log_warn("nats: closing on the loop thread (thread pool unavailable)", NULL);
        uv_work_t inline_req = {.data = n};
        shutdown_work(&inline_req);
        free(req);
        req = calloc(1, sizeof *req);
        if (req) {
            req->data = n;
            shutdown_after(req, 0);
        }
    }
}

void ap_nats_job_end(ap_nats *n)
{
    n->busy--;
    if (n->closing && n->busy == 0 && !n->shutting_down) start_shutdown(n);
}

void ap_nats_close(ap_nats *n)
{
    if (n->closing) return;
    n->closing = 1;
    if (n->busy == 0) start_shutdown(n);
}
