/* The `autopgo` host: one Lua 5.4 state and one libuv loop shared by luv, the HTTP server and
 * client; hands argv to the embedded autopgo.main and runs the loop until nothing is left. */
#include <lauxlib.h>
#include <lua-cjson.h>
#include <lualib.h>
#include <luv/luv.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <uv.h>

#include "binding.h"
#include "log.h"
#include "preload.h"

LUALIB_API int luaopen_autopgo_core(lua_State *L);
LUALIB_API int luaopen_cjson_safe(lua_State *L); /* exported by liblua5.4-cjson, not declared */

static int report(lua_State *L, int status)
{
    if (status != LUA_OK) {
        const char *msg = lua_tostring(L, -1);
        ap_log_error("fatal", "error", msg ? msg : "(no message)", NULL);
        lua_pop(L, 1);
    }
    return status;
}

/* Calls require("autopgo.main")[fn](args...) with `nargs` arguments already pushed. */
static int call_main(lua_State *L, const char *fn, int nargs, int nresults)
{
    lua_getglobal(L, "require");
    lua_pushliteral(L, "autopgo.main");
    if (report(L, ap_call(L, 1, 1, 0) < 0 ? LUA_ERRRUN : LUA_OK) != LUA_OK) return -1;
    lua_getfield(L, -1, fn);
    lua_remove(L, -2);
    lua_insert(L, -(nargs + 1));
    return ap_call(L, nargs, nresults, 0);
}

/* Kept in a static so that LeakSanitizer sees everything Lua owns as reachable at exit. */
static lua_State *volatile main_state;

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    /* libuv's thread pool (4 threads by default) runs both CPU work (validation, merges: bounded
     * by the API's budgets) and every file operation; 8 leaves file I/O threads while the CPU
     * work runs. Read once, at the pool's first use; an operator's value wins. */
    setenv("UV_THREADPOOL_SIZE", "8", 0);
    uv_loop_t *loop = uv_default_loop();

    lua_State *L = main_state = luaL_newstate();
    if (L == NULL) {
        fprintf(stderr, "autopgo: cannot create Lua state\n");
        return 1;
    }
    luaL_openlibs(L);
    luv_set_loop(L, loop);
    luv_set_callback(L, ap_call);
    luaL_requiref(L, "luv", luaopen_luv, 0);
    luaL_requiref(L, "cjson", luaopen_cjson, 0);
    luaL_requiref(L, "cjson.safe", luaopen_cjson_safe, 0);
    lua_pop(L, 3);
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
    lua_pushcfunction(L, luaopen_autopgo_core);
    lua_setfield(L, -2, "autopgo.core");
    lua_pop(L, 1);

    char exe[4096];
    size_t exe_len = sizeof exe;
    if (uv_exepath(exe, &exe_len) != 0) snprintf(exe, sizeof exe, "%s", argv[0]);
    ap_preload_install(L, exe);

    lua_createtable(L, argc, 0);
    for (int i = 1; i < argc; i++) {
        lua_pushstring(L, argv[i]);
        lua_rawseti(L, -2, i);
    }
    int status = 1;
    if (call_main(L, "start", 1, 0) >= 0) {
        uv_run(loop, UV_RUN_DEFAULT);
        if (call_main(L, "status", 0, 1) >= 0) {
            status = (int)lua_tointeger(L, -1);
            lua_pop(L, 1);
        }
    }
    fflush(stdout);
    /* No lua_close: open handles would need another loop turn; the OS reclaims everything. */
    return status;
}
