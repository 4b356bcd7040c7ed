/* Lua binding of core/nats, messages: msg:data(), key(), subject(), meta(), ack(), nak(),
 * in_progress(), term(), destroy(). A message keeps its connection alive and is freed at the
 * latest when the connection closes. */
#include <stdint.h>
#include <string.h>

#include "nats_lua.h"

static msg_ud *ap_check_nats_msg(lua_State *L, int idx)
{
    return luaL_checkudata(L, idx, MSG_TYPE);
}

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
void ap_nats_lua_push_msg(lua_State *L, conn_ud *c, natsMsg *m)
{
    msg_ud *u = lua_newuserdatauv(L, sizeof *u, 1);
    memset(u, 0, sizeof *u);
    luaL_setmetatable(L, MSG_TYPE);
    lua_rawgeti(L, LUA_REGISTRYINDEX, c->pending.self_ref);
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

void ap_nats_lua_release_msgs(conn_ud *c)
{
    for (msg_ud *m = c->msgs; m;) {
        msg_ud *next = m->next;
        if (m->m) natsMsg_Destroy(m->m);
        m->m = NULL;
        m->c = NULL;
        m->prev = m->next = NULL;
        m = next;
    }
    c->msgs = NULL;
}

static int l_msg_gc(lua_State *L)
{
    return l_msg_destroy(L);
}

void ap_nats_lua_register_msg(lua_State *L)
{
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
}
