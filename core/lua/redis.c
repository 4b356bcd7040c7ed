/* Lua binding of core/redis: one pipelined Redis connection on the loop.
 *   redis.connect(opts, cb(err, conn))   opts: host, port, tls, ca_file, cert_file, key_file,
 *                                        server_name, verify (default true), timeout_ms
 *   conn:call(args, cb(err, reply)) -> true | nil, err, code   args: strings and numbers
 * Replies: strings (bulk and status), integers, nil (false inside arrays), tables for arrays
 * ({ error = "..." } for an error inside one). A Redis error reply is the failure "SERVER: <its
 * text>"; a lost connection fails every pending call with UNAVAILABLE, TIMEOUT or TLS. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "binding.h"
#include "redis.h"

#define CONN_TYPE "autopgo.redis"

typedef struct {
    ap_redis *r;
    lua_State *L;
    int self_ref;    /* pins the userdata while the connection is open */
    int connect_ref; /* the connect callback until it has run */
    int connected;
    lua_Integer next_id;
    char desc[300];
} conn_ud;

static conn_ud *ap_check_redis(lua_State *L, int idx)
{
    return luaL_checkudata(L, idx, CONN_TYPE);
}

static void push_self(lua_State *L, conn_ud *c)
{
    lua_rawgeti(L, LUA_REGISTRYINDEX, c->self_ref);
}

/* Takes the pending callback `id` out of the connection's table; pushes it (1) or nothing (0). */
static int take_pending(lua_State *L, conn_ud *c, lua_Integer id)
{
    if (c->self_ref == LUA_NOREF) return 0;
    push_self(L, c);
    lua_getiuservalue(L, -1, 1);
    lua_rawgeti(L, -1, id);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 3);
        return 0;
    }
    lua_pushnil(L);
    lua_rawseti(L, -3, id);
    lua_replace(L, -3);
    lua_pop(L, 1);
    return 1;
}

static void push_reply(lua_State *L, const redisReply *r, int in_array)
{
    luaL_checkstack(L, 4, "redis reply too deep");
    switch (r->type) {
    case REDIS_REPLY_STRING:
    case REDIS_REPLY_STATUS:
        lua_pushlstring(L, r->str, r->len);
        break;
    case REDIS_REPLY_INTEGER:
        lua_pushinteger(L, (lua_Integer)r->integer);
        break;
    case REDIS_REPLY_ARRAY:
        lua_createtable(L, (int)r->elements, 0);
        for (size_t i = 0; i < r->elements; i++) {
            push_reply(L, r->element[i], 1);
            lua_rawseti(L, -2, (lua_Integer)i + 1);
        }
        break;
    case REDIS_REPLY_ERROR:
        lua_createtable(L, 0, 1);
        lua_pushlstring(L, r->str, r->len);
        lua_setfield(L, -2, "error");
        break;
    default: /* REDIS_REPLY_NIL */
        if (in_array)
            lua_pushboolean(L, 0);
        else
            lua_pushnil(L);
    }
}

static void on_reply(ap_redis *r, void *ud, uint64_t tag, const redisReply *reply, const char *code,
                     const char *msg)
{
    conn_ud *c = ud;
    lua_State *L = c->L;
    (void)r;
    if (!take_pending(L, c, (lua_Integer)tag)) return;
    if (reply == NULL) {
        ap_push_error(L, code, "%s", msg);
        ap_call(L, 1, 0, 0);
    } else if (reply->type == REDIS_REPLY_ERROR) {
        ap_push_error(L, "SERVER", "%.*s", (int)reply->len, reply->str);
        ap_call(L, 1, 0, 0);
    } else {
        lua_pushnil(L);
        push_reply(L, reply, 0);
        ap_call(L, 2, 0, 0);
    }
}

static void unpin(lua_State *L, conn_ud *c)
{
    if (c->connect_ref != LUA_NOREF) luaL_unref(L, LUA_REGISTRYINDEX, c->connect_ref);
    c->connect_ref = LUA_NOREF;
    if (c->self_ref != LUA_NOREF) luaL_unref(L, LUA_REGISTRYINDEX, c->self_ref);
    c->self_ref = LUA_NOREF;
}

static void on_connect(ap_redis *r, void *ud, const char *code, const char *msg)
{
    conn_ud *c = ud;
    lua_State *L = c->L;
    (void)r;
    if (c->connect_ref == LUA_NOREF) return;
    lua_rawgeti(L, LUA_REGISTRYINDEX, c->connect_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, c->connect_ref);
    c->connect_ref = LUA_NOREF;
    if (code != NULL) {
        /* Nothing is pending on a connection that never opened: free it now. */
        ap_redis_close(c->r, code, msg);
        c->r = NULL;
        ap_push_error(L, code, "%s", msg);
        luaL_unref(L, LUA_REGISTRYINDEX, c->self_ref);
        c->self_ref = LUA_NOREF;
        ap_call(L, 1, 0, 0);
        return;
    }
    c->connected = 1;
    lua_pushnil(L);
    push_self(L, c);
    ap_call(L, 2, 0, 0);
}

static void copy_str(lua_State *L, int idx, const char *field, const char **out)
{
    lua_getfield(L, idx, field);
    *out = lua_isnil(L, -1) ? NULL : luaL_checkstring(L, -1);
    lua_pop(L, 1); /* the string stays referenced by the options table */
}

/* redis.connect(opts, cb(err, conn)) */
static int l_connect(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    ap_redis_opts o;
    memset(&o, 0, sizeof o);
    copy_str(L, 1, "host", &o.host);
    lua_getfield(L, 1, "port");
    o.port = (int)luaL_checkinteger(L, -1);
    lua_pop(L, 1);
    lua_getfield(L, 1, "tls");
    o.tls = lua_toboolean(L, -1);
    lua_pop(L, 1);
    lua_getfield(L, 1, "verify");
    o.verify = lua_isnil(L, -1) ? 1 : lua_toboolean(L, -1);
    lua_pop(L, 1);
    lua_getfield(L, 1, "timeout_ms");
    o.timeout_ms = (unsigned)luaL_optinteger(L, -1, 10000);
    lua_pop(L, 1);
    copy_str(L, 1, "ca_file", &o.ca_file);
    copy_str(L, 1, "cert_file", &o.cert_file);
    copy_str(L, 1, "key_file", &o.key_file);
    copy_str(L, 1, "server_name", &o.server_name);
    if (o.host == NULL) return luaL_argerror(L, 1, "host is required");

    conn_ud *c = ap_new_udata(L, sizeof *c, CONN_TYPE);
    c->L = ap_main_state(L);
    c->self_ref = c->connect_ref = LUA_NOREF;
    lua_newtable(L);
    lua_setiuservalue(L, -2, 1);
    char msg[512];
    c->r = ap_redis_connect(ap_loop(L), &o, on_connect, on_reply, c, msg, sizeof msg);
    if (c->r == NULL)
        return ap_fail(L, o.tls ? "TLS" : "INVALID", "redis %s:%d: %s", o.host, o.port, msg);
    snprintf(c->desc, sizeof c->desc, "%s:%d", o.host, o.port);
    lua_pushvalue(L, -1);
    c->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pushvalue(L, 2);
    c->connect_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pushboolean(L, 1);
    return 1;
}

static int is_bytes(lua_State *L, int idx)
{
    const char *p;
    size_t len;
    return ap_test_bytes(L, idx, &p, &len) != NULL;
}

/* conn:call(args, cb(err, reply)) -> true | nil, err, code (args: strings, numbers, autopgo.bytes)
 */
static int l_call(lua_State *L)
{
    conn_ud *c = ap_check_redis(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    luaL_checktype(L, 3, LUA_TFUNCTION);
    int n = (int)lua_rawlen(L, 2);
    if (n < 1) return luaL_argerror(L, 2, "a command needs at least its name");
    luaL_checkstack(L, n + 8, "too many command arguments");
    int base = lua_gettop(L);
    for (int i = 1; i <= n; i++) {
        int t = lua_rawgeti(L, 2, i);
        if (t != LUA_TSTRING && t != LUA_TNUMBER && !(t == LUA_TUSERDATA && is_bytes(L, -1)))
            return luaL_argerror(L, 2,
                                 "command arguments must be strings, numbers or autopgo.bytes");
        if (t == LUA_TNUMBER) {
            /* integers without a trailing ".0" */
            if (lua_isinteger(L, -1)) {
                lua_Integer v = lua_tointeger(L, -1);
                lua_pop(L, 1);
                lua_pushfstring(L, "%I", (LUAI_UACINT)v);
            } else {
                lua_tolstring(L, -1, NULL);
            }
        }
    }
    if (c->r == NULL || !ap_redis_usable(c->r))
        return ap_fail(L, "UNAVAILABLE", "the connection to %s is closed", c->desc);
    const char **argv = lua_newuserdatauv(L, sizeof(char *) * (size_t)n, 0);
    size_t *lens = lua_newuserdatauv(L, sizeof(size_t) * (size_t)n, 0);
    /* hiredis copies the arguments into its output buffer before this returns */
    for (int i = 0; i < n; i++)
        if (lua_type(L, base + 1 + i) == LUA_TUSERDATA)
            ap_test_bytes(L, base + 1 + i, &argv[i], &lens[i]);
        else
            argv[i] = lua_tolstring(L, base + 1 + i, &lens[i]);
    lua_Integer id = ++c->next_id;
    lua_getiuservalue(L, 1, 1);
    lua_pushvalue(L, 3);
    lua_rawseti(L, -2, id);
    if (ap_redis_command(c->r, n, argv, lens, (uint64_t)id) != 0) {
        lua_pushnil(L);
        lua_rawseti(L, -2, id);
        return ap_fail(L, "UNAVAILABLE", "cannot send a command to %s", c->desc);
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* conn:usable() -> bool (connected, and the connection has not failed) */
static int l_usable(lua_State *L)
{
    conn_ud *c = ap_check_redis(L, 1);
    lua_pushboolean(L, c->r != NULL && c->connected && ap_redis_usable(c->r));
    return 1;
}

/* conn:write_queue() -> bytes sent to the connection and not yet on the socket */
static int l_write_queue(lua_State *L)
{
    conn_ud *c = ap_check_redis(L, 1);
    lua_pushinteger(L, c->r ? (lua_Integer)ap_redis_write_queue(c->r) : 0);
    return 1;
}

/* conn:close(): fails pending calls with CLOSED (and a connect still under way). */
static int l_close(lua_State *L)
{
    conn_ud *c = ap_check_redis(L, 1);
    if (c->r == NULL) return 0;
    ap_redis_close(c->r, "CLOSED", "closed");
    c->r = NULL;
    int pinned = c->self_ref != LUA_NOREF;
    if (c->connect_ref != LUA_NOREF) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, c->connect_ref);
        luaL_unref(L, LUA_REGISTRYINDEX, c->connect_ref);
        c->connect_ref = LUA_NOREF;
        ap_push_error(L, "CLOSED", "the connection to %s was closed while connecting", c->desc);
        ap_call(L, 1, 0, 0);
    }
    /* Collect the pending callbacks first: they may call back into this connection. */
    lua_getiuservalue(L, 1, 1);
    lua_newtable(L);
    lua_setiuservalue(L, 1, 1);
    int pending = lua_gettop(L);
    lua_newtable(L);
    int list = lua_gettop(L);
    lua_Integer k = 0;
    lua_pushnil(L);
    while (lua_next(L, pending)) lua_rawseti(L, list, ++k);
    if (pinned) unpin(L, c);
    for (lua_Integer i = 1; i <= k; i++) {
        lua_rawgeti(L, list, i);
        ap_push_error(L, "CLOSED", "the connection to %s was closed", c->desc);
        ap_call(L, 1, 0, 0);
    }
    return 0;
}

static int l_gc(lua_State *L)
{
    conn_ud *c = ap_check_redis(L, 1);
    if (c->r) ap_redis_close(c->r, "CLOSED", "collected");
    c->r = NULL;
    return 0;
}

static int l_tostring(lua_State *L)
{
    conn_ud *c = ap_check_redis(L, 1);
    lua_pushfstring(L, CONN_TYPE " (%s%s): %p", c->desc, c->r ? "" : ", closed", (void *)c);
    return 1;
}

int ap_open_redis(lua_State *L)
{
    static const luaL_Reg methods[] = {{"call", l_call},
                                       {"usable", l_usable},
                                       {"write_queue", l_write_queue},
                                       {"close", l_close},
                                       {NULL, NULL}};
    static const luaL_Reg meta[] = {
        {"__gc", l_gc}, {"__tostring", l_tostring}, {"__close", l_close}, {NULL, NULL}};
    ap_register_type(L, CONN_TYPE, methods, meta);
    static const luaL_Reg funcs[] = {{"connect", l_connect}, {NULL, NULL}};
    luaL_newlib(L, funcs);
    return 1;
}
