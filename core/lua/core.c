/* luaopen_autopgo_core: the `autopgo.core` module, one table with a sub-table per binding. */
#include "binding.h"

#include <luv/luv.h>

#include "modules.h"

/* core.callback_errors() -> integer */
static int l_callback_errors(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)ap_callback_errors());
    return 1;
}

LUALIB_API int luaopen_autopgo_core(lua_State *L)
{
    /* Outside the host (plain lua5.4 + luarocks) the loop is luv's: make sure luv is loaded. */
    luaL_requiref(L, "luv", luaopen_luv, 0);
    lua_pop(L, 1);

    lua_newtable(L);
    lua_pushinteger(L, AP_ABI);
    lua_setfield(L, -2, "abi");
    lua_pushcfunction(L, l_callback_errors);
    lua_setfield(L, -2, "callback_errors");
    for (const ap_module *m = ap_modules; m->name; m++) {
        m->open(L);
        lua_setfield(L, -2, m->name);
    }
    return 1;
}
