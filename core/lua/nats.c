/* Lua binding of core/nats: connections, core and JetStream pull subscriptions, messages.
 *   nats.connect(urls, opts, on_event, cb(err, conn))   opts: name, timeout_ms
 * on_event(kind, text) gets "disconnected", "reconnected", "closed" or "error". Connecting,
 * creating streams and pull subscriptions wait for the server, so they run on the pool. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "binding.h"
#include "log.h"
#include "nats.h"

#define CONN_TYPE "autopgo.nats"
#define SUB_TYPE  "autopgo.nats_sub"
#define MSG_TYPE  "autopgo.nats_msg"

typedef struct msg_ud msg_ud;

typedef struct {
    ap_nats *n;
    lua_State *L;
    int self_ref;  /* pins the userdata while the connection is open */
    int event_ref; /* on_event */
    int connected_once;
    int closing, closed;
    lua_Integer next_id;
    msg_ud *msgs; /* live messages: they must not outlive the connection's threads */
} conn_ud;

typedef struct {
    ap_nats_sub *s;
    conn_ud *c;
    int ref; /* registry ref to this userdata (the subscription's opaque finds it) */
    int pull;
} sub_ud;

struct msg_ud {
    natsMsg *m;
    conn_ud *c;
    msg_ud *prev, *next;
};

static conn_ud *ap_check_nats(lua_State *L, int idx)
{
    return luaL_checkudata(L, idx, CONN_TYPE);
}

static sub_ud *ap_check_nats_sub(lua_State *L, int idx)
{
    return luaL_checkudata(L, idx, SUB_TYPE);
}

static msg_ud *ap_check_nats_msg(lua_State *L, int idx)
{
    return luaL_checkudata(L, idx, MSG_TYPE);
}

/* ---- pending callbacks, kept in the connection's user value (integer keys) ---- */

static void push_uv(lua_State *L, conn_ud *c)
{
    lua_rawgeti(L, LUA_REGISTRYINDEX, c->self_ref);
    lua_getiuservalue(L, -1, 1);
    lua_remove(L, -2);
}

static lua_Integer add_pending(lua_State *L, conn_ud *c, int conn_idx, int fn_idx)
{
    fn_idx = lua_absindex(L, fn_idx);
    lua_Integer id = ++c->next_id;
    lua_getiuservalue(L, conn_idx, 1);
    lua_pushvalue(L, fn_idx);
    lua_rawseti(L, -2, id);
    lua_pop(L, 1);
    return id;
}

static int take_pending(lua_State *L, conn_ud *c, lua_Integer id)
{
    push_uv(L, c);
    lua_rawgeti(L, -1, id);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 2);
        return 0;
    }
    lua_pushnil(L);
    lua_rawseti(L, -3, id);
    lua_remove(L, -2);
    return 1;
}

/* ---- messages ---- */

static void msg_unlink(msg_ud *m)
{
    if (m->c == NULL) return;
    if (m->prev)
        m->prev->next = m->next;
    else
        m->c->msgs = m->next;
    if (m->next) m->next->prev = m->prev;
    m->prev = m->next = NULL;
}

/* Pushes a message userdata that owns `m` (its user value keeps the connection alive). */
static void push_msg(lua_State *L, conn_ud *c, natsMsg *m)
{
    msg_ud *u = lua_newuserdatauv(L, sizeof *u, 1);
    memset(u, 0, sizeof *u);
    luaL_setmetatable(L, MSG_TYPE);
    lua_rawgeti(L, LUA_REGISTRYINDEX, c->self_ref);
    lua_setiuservalue(L, -2, 1);
    u->m = m;
    u->c = c;
    u->next = c->msgs;
    if (c->msgs) c->msgs->prev = u;
    c->msgs = u;
}

static natsMsg *live_msg(lua_State *L, msg_ud *u)
{
    (void)L;
    return u->m;
}

/* msg:data() -> string */
static int l_msg_data(lua_State *L)
{
    msg_ud *u = ap_check_nats_msg(L, 1);
    natsMsg *m = live_msg(L, u);
    if (m == NULL) return ap_fail(L, "CLOSED", "the message's connection is closed");
    lua_pushlstring(L, natsMsg_GetData(m) ? natsMsg_GetData(m) : "",
                    (size_t)natsMsg_GetDataLength(m));
    return 1;
}

/* msg:key() -> string | nil */
static int l_msg_key(lua_State *L)
{
    msg_ud *u = ap_check_nats_msg(L, 1);
    natsMsg *m = live_msg(L, u);
    const char *k = m ? ap_nats_msg_key(m) : NULL;
    if (k == NULL) return 0;
    lua_pushstring(L, k);
    return 1;
}

/* msg:subject() -> string */
static int l_msg_subject(lua_State *L)
{
    msg_ud *u = ap_check_nats_msg(L, 1);
    natsMsg *m = live_msg(L, u);
    if (m == NULL) return ap_fail(L, "CLOSED", "the message's connection is closed");
    lua_pushstring(L, natsMsg_GetSubject(m));
    return 1;
}

/* msg:meta() -> deliveries, stream_seq (JetStream's; 0, 0 for core messages) */
static int l_msg_meta(lua_State *L)
{
    msg_ud *u = ap_check_nats_msg(L, 1);
    natsMsg *m = live_msg(L, u);
    int64_t d = 0;
    uint64_t seq = 0;
    if (m) ap_nats_msg_meta(m, &d, &seq);
    lua_pushinteger(L, d);
    lua_pushinteger(L, (lua_Integer)seq);
    return 2;
}

static int msg_op(lua_State *L, ap_nats_ack_kind kind)
{
    msg_ud *u = ap_check_nats_msg(L, 1);
    lua_Integer delay = kind == AP_NATS_NAK ? luaL_optinteger(L, 2, 0) : 0;
    natsMsg *m = live_msg(L, u);
    if (m == NULL) return ap_fail(L, "CLOSED", "the message's connection is closed");
    if (u->c->closing) return ap_fail(L, "CLOSED", "the message's connection is closing");
    char err[300];
    if (ap_nats_msg_ack(m, kind, delay, err, sizeof err) != 0)
        return ap_fail(L, "UNAVAILABLE", "nats: %s", err);
    lua_pushboolean(L, 1);
    return 1;
}

/* msg:ack() / msg:nak([delay_ms]) / msg:in_progress() / msg:term() -> true | nil, err, code */
static int l_msg_ack(lua_State *L)
{
    return msg_op(L, AP_NATS_ACK);
}
static int l_msg_nak(lua_State *L)
{
    return msg_op(L, AP_NATS_NAK);
}
static int l_msg_in_progress(lua_State *L)
{
    return msg_op(L, AP_NATS_PROGRESS);
}
static int l_msg_term(lua_State *L)
{
    return msg_op(L, AP_NATS_TERM);
}

/* msg:destroy(): frees the message now (also done by the garbage collector). */
static int l_msg_destroy(lua_State *L)
{
    msg_ud *u = ap_check_nats_msg(L, 1);
    if (u->m) natsMsg_Destroy(u->m);
    u->m = NULL;
    msg_unlink(u);
    u->c = NULL;
    return 0;
}

static int l_msg_tostring(lua_State *L)
{
    msg_ud *u = ap_check_nats_msg(L, 1);
    lua_pushfstring(L, MSG_TYPE " (%s): %p", u->m ? natsMsg_GetSubject(u->m) : "released",
                    (void *)u);
    return 1;
}

/* ---- handlers (loop thread) ---- */

static void on_msg(void *ud, void *sub_opaque, natsMsg *m)
{
    conn_ud *c = ud;
    sub_ud *s = sub_opaque;
    lua_State *L = c->L;
    if (c->closing || s == NULL || s->ref == LUA_NOREF) {
        natsMsg_Destroy(m);
        return;
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, s->ref);
    lua_getiuservalue(L, -1, 1); /* { on_msg, on_stopped } */
    lua_rawgeti(L, -1, 1);
    lua_replace(L, -3);
    lua_pop(L, 1);
    push_msg(L, c, m);
    ap_call(L, 1, 0, 0);
}

static void on_stopped(void *ud, void *sub_opaque)
{
    conn_ud *c = ud;
    sub_ud *s = sub_opaque;
    lua_State *L = c->L;
    if (s == NULL || s->ref == LUA_NOREF) return;
    lua_rawgeti(L, LUA_REGISTRYINDEX, s->ref);
    lua_getiuservalue(L, -1, 1);
    lua_rawgeti(L, -1, 2);
    lua_replace(L, -3);
    lua_pop(L, 1);
    if (lua_isfunction(L, -1))
        ap_call(L, 0, 0, 0);
    else
        lua_pop(L, 1);
}

static void on_puback(void *ud, void *opaque, const char *err, uint64_t seq, int duplicate)
{
    conn_ud *c = ud;
    lua_State *L = c->L;
    if (!take_pending(L, c, (lua_Integer)(intptr_t)opaque)) return;
    if (err) {
        ap_push_error(L, "UNAVAILABLE", "jetstream did not store the message: %s", err);
        ap_call(L, 1, 0, 0);
        return;
    }
    lua_pushnil(L);
    lua_pushinteger(L, (lua_Integer)seq);
    lua_pushboolean(L, duplicate);
    ap_call(L, 3, 0, 0);
}

static void push_event_fn(lua_State *L, conn_ud *c)
{
    lua_rawgeti(L, LUA_REGISTRYINDEX, c->event_ref);
}

static void on_event(void *ud, ap_nats_event ev, const char *text)
{
    conn_ud *c = ud;
    lua_State *L = c->L;
    if (c->event_ref == LUA_NOREF) return;
    static const char *names[] = {"", "disconnected", "reconnected", "closed", "error"};
    push_event_fn(L, c);
    lua_pushstring(L, names[ev]);
    lua_pushstring(L, text ? text : "");
    ap_call(L, 2, 0, 0);
}

static void on_fetch_error(void *ud, void *sub_opaque, const char *err)
{
    conn_ud *c = ud;
    lua_State *L = c->L;
    (void)sub_opaque;
    if (c->event_ref == LUA_NOREF) return;
    push_event_fn(L, c);
    lua_pushliteral(L, "error");
    lua_pushfstring(L, "fetch failed: %s", err ? err : "?");
    ap_call(L, 2, 0, 0);
}

static void on_closed(void *ud)
{
    conn_ud *c = ud;
    lua_State *L = c->L;
    int top = lua_gettop(L);
    c->closed = 1;
    ap_nats_free(c->n);
    c->n = NULL;
    push_uv(L, c);
    int uv = lua_gettop(L);
    /* Subscriptions end with the connection. */
    lua_getfield(L, uv, "subs");
    if (lua_istable(L, -1)) {
        lua_pushnil(L);
        while (lua_next(L, -2)) {
            sub_ud *s = lua_touserdata(L, -1);
            if (s) {
                luaL_unref(L, LUA_REGISTRYINDEX, s->ref);
                s->ref = LUA_NOREF;
                s->s = NULL;
            }
            lua_pop(L, 1);
        }
    }
    lua_pop(L, 1);
    lua_pushnil(L);
    lua_setfield(L, uv, "subs");
    lua_getfield(L, uv, "close");
    int close_cbs = lua_gettop(L);
    lua_pushnil(L);
    lua_setfield(L, uv, "close");
    /* Whatever never got an answer fails now. */
    lua_pushnil(L);
    while (lua_next(L, uv)) {
        lua_pushvalue(L, -2);
        lua_pushnil(L);
        lua_rawset(L, uv);
        if (lua_isfunction(L, -1)) {
            ap_push_error(L, "CLOSED", "the nats connection was closed");
            ap_call(L, 1, 0, 0);
        } else {
            lua_pop(L, 1);
        }
    }
    if (lua_istable(L, close_cbs)) {
        for (lua_Integer i = 1; lua_rawgeti(L, close_cbs, i) == LUA_TFUNCTION; i++)
            ap_call(L, 0, 0, 0);
    }
    lua_settop(L, top);
    luaL_unref(L, LUA_REGISTRYINDEX, c->event_ref);
    c->event_ref = LUA_NOREF;
    luaL_unref(L, LUA_REGISTRYINDEX, c->self_ref);
    c->self_ref = LUA_NOREF;
}

static const ap_nats_handlers handlers = {on_msg,         on_puback,  on_event,
                                          on_fetch_error, on_stopped, on_closed};

/* ---- pool jobs ---- */

typedef enum { JOB_CONNECT, JOB_STREAM, JOB_PULL, JOB_FLUSH } job_kind;

typedef struct {
    job_kind kind;
    conn_ud *c;
    char *a, *b, *d; /* urls/name, stream/subject/durable */
    int64_t x, y;    /* timeout / max_age, dup_window / ack_wait, max_ack_pending */
    sub_ud *sub;
    ap_nats_sub *result;
    int rc;
    char err[400];
} job;

static void job_work(void *data)
{
    job *j = data;
    ap_nats *n = j->c->n;
    switch (j->kind) {
    case JOB_CONNECT:
        j->rc = ap_nats_connect(n, j->a, j->b, j->x, j->err, sizeof j->err);
        break;
    case JOB_STREAM:
        j->rc = ap_nats_ensure_stream(n, j->a, j->b, j->x, j->y, j->err, sizeof j->err);
        break;
    case JOB_FLUSH:
        j->rc = ap_nats_flush(n, j->x, j->err, sizeof j->err);
        break;
    case JOB_PULL:
        j->result =
            ap_nats_pull_subscribe(n, j->a, j->b, j->d, j->x, j->y, j->sub, j->err, sizeof j->err);
        j->rc = j->result ? 0 : -1;
        break;
    }
}

static int job_after(lua_State *L, void *data)
{
    job *j = data;
    conn_ud *c = j->c;
    ap_nats_job_end(c->n);
    if (j->rc != 0) {
        ap_push_error(L, "UNAVAILABLE", "nats: %s", j->err);
        if (j->kind == JOB_CONNECT && !c->closing) {
            c->closing = 1;
            ap_nats_close(c->n);
        }
        return 1;
    }
    lua_pushnil(L);
    if (j->kind == JOB_CONNECT) {
        c->connected_once = 1;
        lua_rawgeti(L, LUA_REGISTRYINDEX, c->self_ref);
        return 2;
    }
    if (j->kind == JOB_PULL) {
        j->sub->s = j->result;
        lua_rawgeti(L, LUA_REGISTRYINDEX, j->sub->ref);
        return 2;
    }
    return 1;
}

static void job_cleanup(void *data)
{
    job *j = data;
    free(j->a);
    free(j->b);
    free(j->d);
    free(j);
}

static job *new_job(lua_State *L, job_kind kind, conn_ud *c, const char *a, const char *b,
                    const char *d)
{
    job *j = calloc(1, sizeof *j);
    if (j == NULL) luaL_error(L, "out of memory");
    j->kind = kind;
    j->c = c;
    j->a = a ? strdup(a) : NULL;
    j->b = b ? strdup(b) : NULL;
    j->d = d ? strdup(d) : NULL;
    return j;
}

static void queue_job(lua_State *L, int conn_idx, int cb_idx, job *j)
{
    int pins[] = {conn_idx};
    ap_nats_job_begin(j->c->n);
    ap_work_queue(L, cb_idx, pins, 1, j, job_work, job_after, job_cleanup);
}

/* ---- connection ---- */

/* nats.connect(urls, opts, on_event, cb(err, conn)) */
static int l_connect(lua_State *L)
{
    const char *urls = luaL_checkstring(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    luaL_checktype(L, 3, LUA_TFUNCTION);
    luaL_checktype(L, 4, LUA_TFUNCTION);
    lua_getfield(L, 2, "name");
    const char *name = luaL_optstring(L, -1, "autopgo");
    lua_getfield(L, 2, "timeout_ms");
    lua_Integer timeout = luaL_optinteger(L, -1, 5000);
    lua_pop(L, 2); /* `name` stays alive in opts */

    conn_ud *c = ap_new_udata(L, sizeof *c, CONN_TYPE);
    int idx = lua_gettop(L);
    c->L = ap_main_state(L);
    c->self_ref = c->event_ref = LUA_NOREF;
    lua_newtable(L);
    lua_setiuservalue(L, idx, 1);
    char err[256];
    c->n = ap_nats_new(ap_loop(L), &handlers, c, err, sizeof err);
    if (c->n == NULL) {
        c->closed = 1;
        return luaL_error(L, "nats: %s", err);
    }
    lua_pushvalue(L, 3);
    c->event_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pushvalue(L, idx);
    c->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    job *j = new_job(L, JOB_CONNECT, c, urls, name, NULL);
    j->x = timeout;
    queue_job(L, idx, 4, j);
    return 0;
}

static conn_ud *check_usable(lua_State *L, int idx)
{
    conn_ud *c = ap_check_nats(L, idx);
    return c;
}

#define FAIL_IF_CLOSED(L, c)                                                                       \
    do {                                                                                           \
        if ((c)->closing || (c)->closed || !(c)->connected_once)                                   \
            return ap_fail(L, "CLOSED", "the nats connection is %s",                               \
                           (c)->connected_once ? "closed" : "not connected");                      \
    } while (0)

/* conn:connected() -> boolean */
static int l_connected(lua_State *L)
{
    conn_ud *c = check_usable(L, 1);
    lua_pushboolean(L, c->n && !c->closing && c->connected_once && ap_nats_connected(c->n));
    return 1;
}

/* conn:publish(subject, data, key|nil) -> true | nil, err, code */
static int l_publish(lua_State *L)
{
    conn_ud *c = check_usable(L, 1);
    const char *subject = luaL_checkstring(L, 2);
    size_t len;
    const char *data = luaL_checklstring(L, 3, &len);
    const char *key = luaL_optstring(L, 4, NULL);
    FAIL_IF_CLOSED(L, c);
    char err[300];
    if (ap_nats_publish(c->n, subject, key, data, len, err, sizeof err) != 0)
        return ap_fail(L, "UNAVAILABLE", "nats publish: %s", err);
    lua_pushboolean(L, 1);
    return 1;
}

/* conn:js_publish(subject, data, key|nil, msg_id|nil, timeout_ms, cb(err, seq, duplicate))
 *   -> true | nil, err, code */
static int l_js_publish(lua_State *L)
{
    conn_ud *c = check_usable(L, 1);
    const char *subject = luaL_checkstring(L, 2);
    size_t len;
    const char *data = luaL_checklstring(L, 3, &len);
    const char *key = luaL_optstring(L, 4, NULL);
    const char *msg_id = luaL_optstring(L, 5, NULL);
    lua_Integer timeout = luaL_checkinteger(L, 6);
    luaL_checktype(L, 7, LUA_TFUNCTION);
    FAIL_IF_CLOSED(L, c);
    lua_Integer id = add_pending(L, c, 1, 7);
    char err[300];
    if (ap_nats_js_publish(c->n, subject, key, msg_id, data, len, timeout, (void *)(intptr_t)id,
                           err, sizeof err) != 0) {
        take_pending(L, c, id);
        lua_pop(L, 1);
        return ap_fail(L, "UNAVAILABLE", "jetstream publish: %s", err);
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* conn:ensure_stream(stream, subject, max_age_ms, dup_window_ms, cb(err)) */
static int l_ensure_stream(lua_State *L)
{
    conn_ud *c = check_usable(L, 1);
    const char *stream = luaL_checkstring(L, 2);
    const char *subject = luaL_checkstring(L, 3);
    lua_Integer max_age = luaL_checkinteger(L, 4);
    lua_Integer dup = luaL_checkinteger(L, 5);
    luaL_checktype(L, 6, LUA_TFUNCTION);
    if (c->closing || c->closed || !c->connected_once) {
        lua_pushvalue(L, 6);
        ap_push_error(L, "CLOSED", "the nats connection is closed");
        ap_call(L, 1, 0, 0);
        return 0;
    }
    job *j = new_job(L, JOB_STREAM, c, stream, subject, NULL);
    j->x = max_age;
    j->y = dup;
    queue_job(L, 1, 6, j);
    return 0;
}

/* conn:flush(timeout_ms, cb(err)): the server has seen everything sent so far. */
static int l_flush(lua_State *L)
{
    conn_ud *c = check_usable(L, 1);
    lua_Integer timeout = luaL_checkinteger(L, 2);
    luaL_checktype(L, 3, LUA_TFUNCTION);
    if (c->closing || c->closed || !c->connected_once) {
        lua_pushvalue(L, 3);
        ap_push_error(L, "CLOSED", "the nats connection is closed");
        ap_call(L, 1, 0, 0);
        return 0;
    }
    job *j = new_job(L, JOB_FLUSH, c, NULL, NULL, NULL);
    j->x = timeout;
    queue_job(L, 1, 3, j);
    return 0;
}

static sub_ud *new_sub(lua_State *L, conn_ud *c, int conn_idx, int on_msg_idx, int on_stopped_idx)
{
    on_msg_idx = lua_absindex(L, on_msg_idx);
    sub_ud *s = ap_new_udata(L, sizeof *s, SUB_TYPE);
    int idx = lua_gettop(L);
    s->c = c;
    lua_createtable(L, 2, 0);
    lua_pushvalue(L, on_msg_idx);
    lua_rawseti(L, -2, 1);
    if (on_stopped_idx) {
        lua_pushvalue(L, on_stopped_idx);
        lua_rawseti(L, -2, 2);
    }
    lua_setiuservalue(L, idx, 1);
    lua_pushvalue(L, idx);
    s->ref = luaL_ref(L, LUA_REGISTRYINDEX);
    /* remember it, so the close can release it */
    lua_getiuservalue(L, conn_idx, 1);
    if (lua_getfield(L, -1, "subs") != LUA_TTABLE) {
        lua_pop(L, 1);
        lua_newtable(L);
        lua_pushvalue(L, -1);
        lua_setfield(L, -3, "subs");
    }
    lua_pushvalue(L, idx);
    lua_rawsetp(L, -2, s);
    lua_pop(L, 2);
    return s;
}

/* conn:subscribe(subject, queue|nil, on_msg(msg)) -> sub | nil, err, code */
static int l_subscribe(lua_State *L)
{
    conn_ud *c = check_usable(L, 1);
    const char *subject = luaL_checkstring(L, 2);
    const char *queue = luaL_optstring(L, 3, NULL);
    luaL_checktype(L, 4, LUA_TFUNCTION);
    FAIL_IF_CLOSED(L, c);
    sub_ud *s = new_sub(L, c, 1, 4, 0);
    char err[300];
    s->s = ap_nats_subscribe(c->n, subject, queue, s, err, sizeof err);
    if (s->s == NULL) {
        luaL_unref(L, LUA_REGISTRYINDEX, s->ref);
        s->ref = LUA_NOREF;
        return ap_fail(L, "UNAVAILABLE", "nats subscribe: %s", err);
    }
    return 1;
}

/* conn:pull_subscribe(stream, subject, durable, ack_wait_ms, max_ack_pending, on_msg(msg),
 *                     on_stopped(), cb(err, sub)) */
static int l_pull_subscribe(lua_State *L)
{
    conn_ud *c = check_usable(L, 1);
    const char *stream = luaL_checkstring(L, 2);
    const char *subject = luaL_checkstring(L, 3);
    const char *durable = luaL_checkstring(L, 4);
    lua_Integer ack_wait = luaL_checkinteger(L, 5);
    lua_Integer max_pending = luaL_checkinteger(L, 6);
    luaL_checktype(L, 7, LUA_TFUNCTION);
    luaL_checktype(L, 8, LUA_TFUNCTION);
    luaL_checktype(L, 9, LUA_TFUNCTION);
    if (c->closing || c->closed || !c->connected_once) {
        lua_pushvalue(L, 9);
        ap_push_error(L, "CLOSED", "the nats connection is closed");
        ap_call(L, 1, 0, 0);
        return 0;
    }
    sub_ud *s = new_sub(L, c, 1, 7, 8);
    s->pull = 1;
    lua_pop(L, 1);
    job *j = new_job(L, JOB_PULL, c, stream, subject, durable);
    j->x = ack_wait;
    j->y = max_pending;
    j->sub = s;
    queue_job(L, 1, 9, j);
    return 0;
}

/* sub:want(n): a pull subscription may fetch n more messages. */
static int l_sub_want(lua_State *L)
{
    sub_ud *s = ap_check_nats_sub(L, 1);
    lua_Integer n = luaL_checkinteger(L, 2);
    if (s->s && s->c && !s->c->closing && n > 0)
        ap_nats_sub_want(s->s, (int)(n > 1 << 20 ? 1 << 20 : n));
    return 0;
}

/* sub:stop(): a pull subscription stops fetching; its on_stopped() follows. */
static int l_sub_stop(lua_State *L)
{
    sub_ud *s = ap_check_nats_sub(L, 1);
    if (s->s && s->c && !s->c->closing) ap_nats_sub_stop(s->s);
    return 0;
}

static int l_sub_tostring(lua_State *L)
{
    sub_ud *s = ap_check_nats_sub(L, 1);
    lua_pushfstring(L, SUB_TYPE " (%s, %s): %p", s->pull ? "pull" : "core",
                    s->s ? "open" : "closed", (void *)s);
    return 1;
}

static int l_sub_gc(lua_State *L)
{
    (void)ap_check_nats_sub(L, 1);
    return 0; /* subscriptions are owned by their connection */
}

/* conn:close([cb]): stops fetching, waits (bounded) for publish acknowledgements, flushes and
 * closes; messages not yet settled are released (never acked). cb() runs once it is gone. */
static int l_close(lua_State *L)
{
    conn_ud *c = ap_check_nats(L, 1);
    int has_cb = !lua_isnoneornil(L, 2);
    if (has_cb) luaL_checktype(L, 2, LUA_TFUNCTION);
    if (c->closed) {
        if (has_cb) {
            lua_pushvalue(L, 2);
            ap_call(L, 0, 0, 0);
        }
        return 0;
    }
    if (has_cb) {
        lua_getiuservalue(L, 1, 1);
        if (lua_getfield(L, -1, "close") != LUA_TTABLE) {
            lua_pop(L, 1);
            lua_newtable(L);
            lua_pushvalue(L, -1);
            lua_setfield(L, -3, "close");
        }
        lua_pushvalue(L, 2);
        lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
        lua_pop(L, 2);
    }
    if (c->closing) return 0;
    c->closing = 1;
    /* Messages must not outlive the threads that could still touch their subscription. */
    for (msg_ud *m = c->msgs; m;) {
        msg_ud *next = m->next;
        if (m->m) natsMsg_Destroy(m->m);
        m->m = NULL;
        m->c = NULL;
        m->prev = m->next = NULL;
        m = next;
    }
    c->msgs = NULL;
    ap_nats_close(c->n);
    return 0;
}

static int l_msg_gc(lua_State *L)
{
    return l_msg_destroy(L);
}

static int l_gc(lua_State *L)
{
    conn_ud *c = ap_check_nats(L, 1);
    /* Open connections are pinned; this runs for closed ones (or at state close). */
    if (c->closed && c->n) ap_nats_free(c->n);
    c->n = NULL;
    return 0;
}

static int l_tostring(lua_State *L)
{
    conn_ud *c = ap_check_nats(L, 1);
    lua_pushfstring(L, CONN_TYPE " (%s): %p",
                    c->closed           ? "closed"
                    : c->closing        ? "closing"
                    : c->connected_once ? "open"
                                        : "connecting",
                    (void *)c);
    return 1;
}

static int l_closemeta(lua_State *L)
{
    lua_settop(L, 1);
    return l_close(L);
}

int ap_open_nats(lua_State *L)
{
    static const luaL_Reg conn_methods[] = {
        {"connected", l_connected},           {"publish", l_publish}, {"js_publish", l_js_publish},
        {"ensure_stream", l_ensure_stream},   {"flush", l_flush},     {"subscribe", l_subscribe},
        {"pull_subscribe", l_pull_subscribe}, {"close", l_close},     {NULL, NULL},
    };
    static const luaL_Reg conn_meta[] = {
        {"__gc", l_gc}, {"__tostring", l_tostring}, {"__close", l_closemeta}, {NULL, NULL}};
    ap_register_type(L, CONN_TYPE, conn_methods, conn_meta);
    static const luaL_Reg sub_methods[] = {
        {"want", l_sub_want}, {"stop", l_sub_stop}, {NULL, NULL}};
    static const luaL_Reg sub_meta[] = {
        {"__gc", l_sub_gc}, {"__tostring", l_sub_tostring}, {"__close", l_sub_gc}, {NULL, NULL}};
    ap_register_type(L, SUB_TYPE, sub_methods, sub_meta);
    static const luaL_Reg msg_methods[] = {
        {"data", l_msg_data},
        {"key", l_msg_key},
        {"subject", l_msg_subject},
        {"meta", l_msg_meta},
        {"ack", l_msg_ack},
        {"nak", l_msg_nak},
        {"in_progress", l_msg_in_progress},
        {"term", l_msg_term},
        {"destroy", l_msg_destroy},
        {NULL, NULL},
    };
    static const luaL_Reg msg_meta[] = {{"__gc", l_msg_gc},
                                        {"__tostring", l_msg_tostring},
                                        {"__close", l_msg_destroy},
                                        {NULL, NULL}};
    ap_register_type(L, MSG_TYPE, msg_methods, msg_meta);
    static const luaL_Reg funcs[] = {{"connect", l_connect}, {NULL, NULL}};
    luaL_newlib(L, funcs);
    return 1;
}
