/* Lua binding of core/nats, subscriptions: sub:want(n) and sub:stop() for pull subscriptions.
 * A subscription is owned by its connection and ends with it. */
#include "nats_lua.h"

static sub_ud *ap_check_nats_sub(lua_State *L, int idx)
{
    return luaL_checkudata(L, idx, SUB_TYPE);
}

sub_ud *ap_nats_lua_new_sub(lua_State *L, conn_ud *c, int conn_idx, int on_msg_idx,
                            int on_stopped_idx)
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

void ap_nats_lua_release_subs(lua_State *L, int uv_idx)
{
    lua_getfield(L, uv_idx, "subs");
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
    lua_setfield(L, uv_idx, "subs");
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

void ap_nats_lua_register_sub(lua_State *L)
{
    static const luaL_Reg sub_methods[] = {
        {"want", l_sub_want}, {"stop", l_sub_stop}, {NULL, NULL}};
    static const luaL_Reg sub_meta[] = {
        {"__gc", l_sub_gc}, {"__tostring", l_sub_tostring}, {"__close", l_sub_gc}, {NULL, NULL}};
    ap_register_type(L, SUB_TYPE, sub_methods, sub_meta);
}
