/* Lua binding of core/kafka: producers and group consumers whose callbacks run on the loop.
 *   kafka.producer(conf) -> producer        kafka.consumer(conf, on_event) -> consumer
 * conf is a table of librdkafka properties. on_event(kind, ...) gets "message", msg;
 * "assign" | "revoke" | "lost", partitions; "error", message, fatal. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "binding.h"
#include "kafka.h"
#include "log.h"

#define KAFKA_TYPE "autopgo.kafka"

typedef struct {
    ap_kafka *k;
    lua_State *L;
    int consumer;
    ap_pending pending; /* callbacks in flight; pins the userdata while the handle is open */
    int event_ref;      /* consumer: on_event */
    int closing, closed;
} kafka_ud;

static kafka_ud *ap_check_kafka(lua_State *L, int idx)
{
    return luaL_checkudata(L, idx, KAFKA_TYPE);
}

static kafka_ud *check_open(lua_State *L, int idx, int consumer)
{
    kafka_ud *u = ap_check_kafka(L, idx);
    if (consumer >= 0 && u->consumer != consumer)
        luaL_argerror(L, idx, consumer ? "not a consumer" : "not a producer");
    return u;
}

/* ---- handlers (loop thread) ---- */

static void push_event(lua_State *L, kafka_ud *u)
{
    lua_rawgeti(L, LUA_REGISTRYINDEX, u->event_ref);
}

static void on_message(void *ud, const ap_kafka_msg *m)
{
    kafka_ud *u = ud;
    lua_State *L = u->L;
    if (u->event_ref == LUA_NOREF) return;
    push_event(L, u);
    lua_pushliteral(L, "message");
    lua_createtable(L, 0, 6);
    lua_pushstring(L, m->topic);
    lua_setfield(L, -2, "topic");
    lua_pushinteger(L, m->partition);
    lua_setfield(L, -2, "partition");
    lua_pushinteger(L, m->offset);
    lua_setfield(L, -2, "offset");
    if (m->key) {
        lua_pushlstring(L, m->key, m->key_len);
        lua_setfield(L, -2, "key");
    }
    lua_pushlstring(L, m->value ? m->value : "", m->value_len);
    lua_setfield(L, -2, "value");
    if (m->timestamp_ms >= 0) {
        lua_pushinteger(L, m->timestamp_ms);
        lua_setfield(L, -2, "timestamp");
    }
    ap_call(L, 2, 0, 0);
}

static void on_delivery(void *ud, void *opaque, const char *err, int32_t partition, int64_t offset)
{
    kafka_ud *u = ud;
    lua_State *L = u->L;
    if (!ap_pending_take(L, &u->pending, (lua_Integer)(intptr_t)opaque)) return;
    if (err) {
        ap_push_error(L, "UNAVAILABLE", "kafka delivery failed: %s", err);
        ap_call(L, 1, 0, 0);
        return;
    }
    lua_pushnil(L);
    lua_pushinteger(L, partition);
    lua_pushinteger(L, offset);
    ap_call(L, 3, 0, 0);
}

static void push_parts(lua_State *L, const ap_kafka_tp *tps, int n)
{
    lua_createtable(L, n, 0);
    for (int i = 0; i < n; i++) {
        lua_createtable(L, 0, 4);
        lua_pushstring(L, tps[i].topic);
        lua_setfield(L, -2, "topic");
        lua_pushinteger(L, tps[i].partition);
        lua_setfield(L, -2, "partition");
        lua_pushinteger(L, tps[i].offset);
        lua_setfield(L, -2, "offset");
        if (tps[i].metadata && tps[i].metadata_len) {
            lua_pushlstring(L, tps[i].metadata, tps[i].metadata_len);
            lua_setfield(L, -2, "metadata");
        }
        lua_rawseti(L, -2, i + 1);
    }
}

static void on_rebalance(void *ud, ap_kafka_rebalance kind, const ap_kafka_tp *tps, int n)
{
    kafka_ud *u = ud;
    lua_State *L = u->L;
    if (u->event_ref == LUA_NOREF) return;
    push_event(L, u);
    lua_pushstring(L, kind == AP_KAFKA_ASSIGN   ? "assign"
                      : kind == AP_KAFKA_REVOKE ? "revoke"
                                                : "lost");
    push_parts(L, tps, n);
    ap_call(L, 2, 0, 0);
}

static void on_commit(void *ud, void *opaque, const char *err)
{
    kafka_ud *u = ud;
    lua_State *L = u->L;
    if (!ap_pending_take(L, &u->pending, (lua_Integer)(intptr_t)opaque)) return;
    if (err)
        ap_push_error(L, "UNAVAILABLE", "kafka commit failed: %s", err);
    else
        lua_pushnil(L);
    ap_call(L, 1, 0, 0);
}

static void on_probe(void *ud, void *opaque, const char *err, int brokers)
{
    kafka_ud *u = ud;
    lua_State *L = u->L;
    if (!ap_pending_take(L, &u->pending, (lua_Integer)(intptr_t)opaque)) return;
    if (err) {
        ap_push_error(L, "UNAVAILABLE", "kafka brokers unreachable: %s", err);
        ap_call(L, 1, 0, 0);
        return;
    }
    lua_pushnil(L);
    lua_pushinteger(L, brokers);
    ap_call(L, 2, 0, 0);
}

static void on_error(void *ud, const char *err, int fatal)
{
    kafka_ud *u = ud;
    lua_State *L = u->L;
    if (u->event_ref == LUA_NOREF) {
        ap_log_warn("kafka error", "error", err, NULL);
        return;
    }
    push_event(L, u);
    lua_pushliteral(L, "error");
    lua_pushstring(L, err);
    lua_pushboolean(L, fatal);
    ap_call(L, 3, 0, 0);
}

static void on_closed(void *ud)
{
    kafka_ud *u = ud;
    lua_State *L = u->L;
    u->closed = 1;
    ap_kafka_free(u->k);
    u->k = NULL;
    ap_pending_closed(L, &u->pending, "the kafka client");
    luaL_unref(L, LUA_REGISTRYINDEX, u->event_ref);
    u->event_ref = LUA_NOREF;
}

static const ap_kafka_handlers handlers = {on_message, on_delivery, on_rebalance, on_commit,
                                           on_probe,   on_error,    on_closed};

/* ---- constructors ---- */

static int new_client(lua_State *L, int consumer)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    if (consumer) luaL_checktype(L, 2, LUA_TFUNCTION);
    /* Collect the configuration as strings (kept alive in a table on the stack) before any C
     * memory exists, so argument errors cannot leak. */
    lua_newtable(L);
    int strs = lua_gettop(L);
    int n = 0;
    lua_pushnil(L);
    while (lua_next(L, 1)) {
        if (lua_type(L, -2) != LUA_TSTRING)
            luaL_argerror(L, 1, "configuration keys must be strings");
        int t = lua_type(L, -1);
        if (t != LUA_TSTRING && t != LUA_TNUMBER && t != LUA_TBOOLEAN)
            luaL_argerror(L, 1, "configuration values must be strings, numbers or booleans");
        lua_pushvalue(L, -2);
        lua_rawseti(L, strs, ++n);
        if (t == LUA_TBOOLEAN)
            lua_pushstring(L, lua_toboolean(L, -1) ? "true" : "false");
        else
            lua_pushstring(L, lua_tostring(L, -1)); /* a copy: converting the key-table value in
                                                       place would confuse lua_next */
        lua_rawseti(L, strs, ++n);
        lua_pop(L, 1);
    }
    const char **conf = lua_newuserdatauv(L, sizeof(char *) * (size_t)(n + 1), 0);
    for (int i = 0; i < n; i++) {
        lua_rawgeti(L, strs, i + 1);
        conf[i] = lua_tostring(L, -1);
        lua_pop(L, 1);
    }
    conf[n] = NULL;

    kafka_ud *u = ap_new_udata(L, sizeof *u, KAFKA_TYPE);
    int ud_idx = lua_gettop(L);
    u->consumer = consumer;
    u->L = ap_main_state(L);
    u->pending.self_ref = u->event_ref = LUA_NOREF;
    lua_newtable(L);
    lua_setiuservalue(L, ud_idx, 1);
    char err[512];
    u->k = ap_kafka_new(ap_loop(L), consumer, conf, &handlers, u, err, sizeof err);
    if (u->k == NULL) {
        u->closed = 1;
        return ap_fail(L, "INVALID", "kafka: %s", err);
    }
    if (consumer) {
        lua_pushvalue(L, 2);
        u->event_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    lua_pushvalue(L, ud_idx);
    u->pending.self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pushvalue(L, ud_idx);
    return 1;
}

/* kafka.producer(conf) -> producer | nil, err, code */
static int l_producer(lua_State *L)
{
    return new_client(L, 0);
}

/* kafka.consumer(conf, on_event) -> consumer | nil, err, code */
static int l_consumer(lua_State *L)
{
    return new_client(L, 1);
}

/* ---- methods ---- */

static int fail_closed(lua_State *L, kafka_ud *u)
{
    (void)u;
    return ap_fail(L, "CLOSED", "the kafka client is closed");
}

/* producer:produce(topic, key|nil, value, cb(err, partition, offset)) -> true | nil, err, code */
static int l_produce(lua_State *L)
{
    kafka_ud *u = check_open(L, 1, 0);
    const char *topic = luaL_checkstring(L, 2);
    size_t klen = 0, vlen;
    const char *key = luaL_optlstring(L, 3, NULL, &klen);
    const char *value = luaL_checklstring(L, 4, &vlen);
    luaL_checktype(L, 5, LUA_TFUNCTION);
    if (u->closing) return fail_closed(L, u);
    lua_Integer id = ap_pending_add(L, &u->pending, 1, 5);
    char err[256];
    if (ap_kafka_produce(u->k, topic, key, klen, value, vlen, (void *)(intptr_t)id, err,
                         sizeof err) != 0) {
        ap_pending_take(L, &u->pending, id);
        lua_pop(L, 1);
        return ap_fail(L, "UNAVAILABLE", "kafka produce: %s", err);
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* producer:outq_len() -> n */
static int l_outq_len(lua_State *L)
{
    kafka_ud *u = check_open(L, 1, 0);
    lua_pushinteger(L, u->k && !u->closed ? ap_kafka_outq_len(u->k) : 0);
    return 1;
}

/* consumer:subscribe({topic, ...}) -> true | nil, err, code */
static int l_subscribe(lua_State *L)
{
    kafka_ud *u = check_open(L, 1, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    int n = (int)luaL_len(L, 2);
    luaL_argcheck(L, n > 0 && n <= 64, 2, "between 1 and 64 topics");
    const char *topics[64];
    for (int i = 0; i < n; i++) {
        lua_rawgeti(L, 2, i + 1);
        topics[i] = luaL_checkstring(L, -1);
        lua_pop(L, 1); /* the string stays alive in the table */
    }
    if (u->closing) return fail_closed(L, u);
    char err[256];
    if (ap_kafka_subscribe(u->k, topics, n, err, sizeof err) != 0)
        return ap_fail(L, "INVALID", "kafka subscribe: %s", err);
    lua_pushboolean(L, 1);
    return 1;
}

/* consumer:commit({{topic, partition, offset, metadata}, ...}, cb(err)) -> true | nil, err, code */
static int l_commit(lua_State *L)
{
    kafka_ud *u = check_open(L, 1, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    luaL_checktype(L, 3, LUA_TFUNCTION);
    int n = (int)luaL_len(L, 2);
    luaL_argcheck(L, n > 0 && n <= 1024, 2, "between 1 and 1024 partitions");
    ap_kafka_tp *tps = lua_newuserdatauv(L, sizeof *tps * (size_t)n, 0);
    for (int i = 0; i < n; i++) {
        lua_rawgeti(L, 2, i + 1);
        luaL_checktype(L, -1, LUA_TTABLE);
        lua_getfield(L, -1, "topic");
        tps[i].topic = luaL_checkstring(L, -1);
        lua_getfield(L, -2, "partition");
        tps[i].partition = (int32_t)luaL_checkinteger(L, -1);
        lua_getfield(L, -3, "offset");
        tps[i].offset = luaL_checkinteger(L, -1);
        lua_getfield(L, -4, "metadata");
        tps[i].metadata = luaL_optlstring(L, -1, NULL, &tps[i].metadata_len);
        if (tps[i].metadata == NULL) tps[i].metadata_len = 0;
        lua_pop(L, 5); /* strings stay alive in the argument tables */
    }
    if (u->closing) return fail_closed(L, u);
    lua_Integer id = ap_pending_add(L, &u->pending, 1, 3);
    char err[256];
    if (ap_kafka_commit(u->k, tps, n, (void *)(intptr_t)id, err, sizeof err) != 0) {
        ap_pending_take(L, &u->pending, id);
        lua_pop(L, 1);
        return ap_fail(L, "UNAVAILABLE", "kafka commit: %s", err);
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* consumer:rebalance_done() -> true | nil, err, code */
static int l_rebalance_done(lua_State *L)
{
    kafka_ud *u = check_open(L, 1, 1);
    if (u->closed) return fail_closed(L, u);
    char err[256];
    if (ap_kafka_rebalance_done(u->k, err, sizeof err) != 0)
        return ap_fail(L, "CLOSED", "kafka rebalance: %s", err);
    lua_pushboolean(L, 1);
    return 1;
}

/* consumer:pause(paused) -> true | nil, err, code */
static int l_pause(lua_State *L)
{
    kafka_ud *u = check_open(L, 1, 1);
    int pause = lua_toboolean(L, 2);
    if (u->closing) return fail_closed(L, u);
    char err[256];
    if (ap_kafka_pause(u->k, pause, err, sizeof err) != 0)
        return ap_fail(L, "UNAVAILABLE", "kafka pause: %s", err);
    lua_pushboolean(L, 1);
    return 1;
}

/* client:probe(timeout_ms, cb(err, brokers)) -> true | nil, err, code */
static int l_probe(lua_State *L)
{
    kafka_ud *u = check_open(L, 1, -1);
    lua_Integer timeout = luaL_checkinteger(L, 2);
    luaL_checktype(L, 3, LUA_TFUNCTION);
    luaL_argcheck(L, timeout > 0 && timeout <= 600000, 2, "between 1 and 600000 ms");
    if (u->closing) return fail_closed(L, u);
    lua_Integer id = ap_pending_add(L, &u->pending, 1, 3);
    char err[256];
    if (ap_kafka_probe(u->k, (int)timeout, (void *)(intptr_t)id, err, sizeof err) != 0) {
        ap_pending_take(L, &u->pending, id);
        lua_pop(L, 1);
        return ap_fail(L, "UNAVAILABLE", "kafka probe: %s", err);
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* client:close([cb]) — idempotent; every cb() given runs once the client is gone. */
static int l_close(lua_State *L)
{
    kafka_ud *u = ap_check_kafka(L, 1);
    if (!ap_pending_close_begin(L, u->closed) || u->closing) return 0;
    u->closing = 1;
    ap_kafka_close(u->k);
    return 0;
}

static int l_gc(lua_State *L)
{
    kafka_ud *u = ap_check_kafka(L, 1);
    /* Open handles are pinned, so this only runs for closed (or never opened) ones, or when
     * the whole state goes away; an open handle is then left to the OS. */
    if (u->closed && u->k) ap_kafka_free(u->k);
    u->k = NULL;
    return 0;
}

static int l_tostring(lua_State *L)
{
    kafka_ud *u = ap_check_kafka(L, 1);
    lua_pushfstring(L, KAFKA_TYPE " (%s, %s): %p", u->consumer ? "consumer" : "producer",
                    u->closed    ? "closed"
                    : u->closing ? "closing"
                                 : "open",
                    (void *)u);
    return 1;
}

static int l_closemeta(lua_State *L)
{
    lua_settop(L, 1);
    return l_close(L);
}

int ap_open_kafka(lua_State *L)
{
    static const luaL_Reg methods[] = {
        {"produce", l_produce},
        {"outq_len", l_outq_len},
        {"subscribe", l_subscribe},
        {"commit", l_commit},
        {"rebalance_done", l_rebalance_done},
        {"pause", l_pause},
        {"probe", l_probe},
        {"close", l_close},
        {NULL, NULL},
    };
    static const luaL_Reg meta[] = {
        {"__gc", l_gc}, {"__tostring", l_tostring}, {"__close", l_closemeta}, {NULL, NULL}};
    ap_register_type(L, KAFKA_TYPE, methods, meta);
    static const luaL_Reg funcs[] = {
        {"producer", l_producer}, {"consumer", l_consumer}, {NULL, NULL}};
    luaL_newlib(L, funcs);
    return 1;
}
