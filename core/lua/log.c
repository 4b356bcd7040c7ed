/* Lua binding of the structured logger, so Lua and C write the same lines. */
#include <string.h>

#include "binding.h"
#include "log.h"

static ap_log_level check_level(lua_State *L, int idx)
{
    ap_log_level level;
    const char *name = luaL_checkstring(L, idx);
    if (ap_log_parse_level(name, &level) != 0)
        luaL_argerror(L, idx, lua_pushfstring(L, "invalid log level '%s'", name));
    return level;
}

/* log.write(level, msg, key1, value1, ...) */
static int l_write(lua_State *L)
{
    ap_log_level level = check_level(L, 1);
    const char *msg = luaL_checkstring(L, 2);
    if (!ap_log_enabled(level)) return 0;
    int top = lua_gettop(L);
    int n = (top - 2) / 2;
    if (n > 32) n = 32;
    ap_log_field fields[32];
    for (int i = 0; i < n; i++) {
        int k = 3 + 2 * i, v = k + 1;
        fields[i].key = luaL_checkstring(L, k);
        int t = lua_type(L, v);
        fields[i].raw = (t == LUA_TNUMBER || t == LUA_TBOOLEAN || t == LUA_TNIL);
        if (t == LUA_TSTRING || t == LUA_TNUMBER) {
            /* lua_tolstring converts numbers in place; that is fine for our own argument slots */
            fields[i].val = lua_tolstring(L, v, &fields[i].len);
        } else {
            fields[i].val = luaL_tolstring(L, v, &fields[i].len);
            lua_replace(L, v);
            if (t == LUA_TNIL) {
                fields[i].val = "null";
                fields[i].len = 4;
            }
        }
    }
    ap_log_fields(level, msg, fields, (size_t)n);
    return 0;
}

/* log.set_level(name) */
static int l_set_level(lua_State *L)
{
    ap_log_set_level(check_level(L, 1));
    return 0;
}

/* log.level() -> name */
static int l_level(lua_State *L)
{
    lua_pushstring(L, ap_log_level_name(ap_log_get_level()));
    return 1;
}

/* log.enabled(level) -> boolean */
static int l_enabled(lua_State *L)
{
    lua_pushboolean(L, ap_log_enabled(check_level(L, 1)));
    return 1;
}

/* log.set_format("text"|"json") */
static int l_set_format(lua_State *L)
{
    static const char *const formats[] = {"text", "json", NULL};
    ap_log_set_json(luaL_checkoption(L, 1, NULL, formats));
    return 0;
}

/* log.format() -> "text"|"json" */
static int l_format(lua_State *L)
{
    lua_pushstring(L, ap_log_is_json() ? "json" : "text");
    return 1;
}

int ap_open_log(lua_State *L)
{
    static const luaL_Reg fns[] = {
        {"write", l_write},     {"set_level", l_set_level},   {"level", l_level},
        {"enabled", l_enabled}, {"set_format", l_set_format}, {"format", l_format},
        {NULL, NULL},
    };
    luaL_newlib(L, fns);
    return 1;
}
