/* Lua binding of core/nats, connections (subscriptions: nats_sub.c, messages: nats_msg.c).
 *   nats.connect(urls, opts, on_event, cb(err, conn))   opts: name, timeout_ms
 * on_event(kind, text) gets "disconnected", "reconnected", "closed" or "error". Connecting,
 * creating streams and pull subscriptions wait for the server, so they run on the pool. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "nats_lua.h"

static conn_ud *ap_check_nats(lua_State *L, int idx)
{
    return luaL_checkudata(L, idx, CONN_TYPE);
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
    ap_nats_lua_push_msg(L, c, m);
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
    if (!ap_pending_take(L, &c->pending, (lua_Integer)(intptr_t)opaque)) return;
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
    c->closed = 1;
    ap_nats_free(c->n);
    c->n = NULL;
    /* Subscriptions end with the connection. */
    ap_pending_push_table(L, &c->pending);
    ap_nats_lua_release_subs(L, lua_gettop(L));
    lua_pop(L, 1);
    ap_pending_closed(L, &c->pending, "the nats connection");
    luaL_unref(L, LUA_REGISTRYINDEX, c->event_ref);
    c->event_ref = LUA_NOREF;
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
        lua_rawgeti(L, LUA_REGISTRYINDEX, c->pending.self_ref);
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
    c->pending.self_ref = c->event_ref = LUA_NOREF;
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
    c->pending.self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
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
    lua_Integer id = ap_pending_add(L, &c->pending, 1, 7);
    char err[300];
    if (ap_nats_js_publish(c->n, subject, key, msg_id, data, len, timeout, (void *)(intptr_t)id,
                           err, sizeof err) != 0) {
        ap_pending_take(L, &c->pending, id);
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

/* conn:subscribe(subject, queue|nil, on_msg(msg)) -> sub | nil, err, code */
static int l_subscribe(lua_State *L)
{
    conn_ud *c = check_usable(L, 1);
    const char *subject = luaL_checkstring(L, 2);
    const char *queue = luaL_optstring(L, 3, NULL);
    luaL_checktype(L, 4, LUA_TFUNCTION);
    FAIL_IF_CLOSED(L, c);
    sub_ud *s = ap_nats_lua_new_sub(L, c, 1, 4, 0);
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
    sub_ud *s = ap_nats_lua_new_sub(L, c, 1, 7, 8);
    s->pull = 1;
    lua_pop(L, 1);
    job *j = new_job(L, JOB_PULL, c, stream, subject, durable);
    j->x = ack_wait;
    j->y = max_pending;
    j->sub = s;
    queue_job(L, 1, 9, j);
    return 0;
}

/* conn:close([cb]): stops fetching, waits (bounded) for publish acknowledgements, flushes and
 * closes; messages not yet settled are released (never acked). cb() runs once it is gone. */
static int l_close(lua_State *L)
{
    conn_ud *c = ap_check_nats(L, 1);
    if (!ap_pending_close_begin(L, c->closed) || c->closing) return 0;
    c->closing = 1;
    /* Messages must not outlive the threads that could still touch their subscription. */
    ap_nats_lua_release_msgs(c);
    ap_nats_close(c->n);
    return 0;
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
    ap_nats_lua_register_sub(L);
    ap_nats_lua_register_msg(L);
    static const luaL_Reg funcs[] = {{"connect", l_connect}, {NULL, NULL}};
    luaL_newlib(L, funcs);
    return 1;
}
