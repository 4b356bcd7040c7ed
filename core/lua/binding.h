/* Conventions shared by every Lua binding in core/lua: failure tuples, userdata types, callbacks
 * into Lua that never kill the process, and work on the libuv thread pool. */
#ifndef AP_BINDING_H
#define AP_BINDING_H

#include <lauxlib.h>
#include <lua.h>
#include <uv.h>

#include "bytes.h"

/* Bumped whenever a binding changes incompatibly; lua/autopgo/init.lua checks it at load. */
#define AP_ABI 2

/* Runtime failure: pushes nil, "CODE: message", "CODE" and returns 3 (luv's fail tuple). */
int ap_fail(lua_State *L, const char *code, const char *fmt, ...);
/* Pushes only the "CODE: message" string, for error-first callbacks. */
void ap_push_error(lua_State *L, const char *code, const char *fmt, ...);

/* Registers a userdata type: metatable "autopgo.<name>" with __index = methods, plus the given
 * metamethods (__gc, __tostring, __close are expected). Leaves nothing on the stack. Raises if
 * another binding already registered the same name. */
void ap_register_type(lua_State *L, const char *tname, const luaL_Reg *methods,
                      const luaL_Reg *meta);
/* Allocates a zeroed userdata of `size` bytes and sets its metatable. */
void *ap_new_udata(lua_State *L, size_t size, const char *tname);

/* The process's one loop (luv's). */
uv_loop_t *ap_loop(lua_State *L);
/* The main Lua thread, the only state callbacks may run on. */
lua_State *ap_main_state(lua_State *L);

/* Calls the function below its `nargs` arguments in protected mode with a traceback. A failure is
 * logged and counted, never fatal. Same signature as luv's callback runner (luv_CFpcall). */
int ap_call(lua_State *L, int nargs, int nresults, int flags);
/* Number of callback failures so far (exposed to Lua as core.callback_errors()). */
unsigned long ap_callback_errors(void);

/* Work on the libuv thread pool. `work` runs off the loop and must not touch Lua; `after` runs on
 * the loop, pushes the callback's arguments (error first) and returns how many it pushed; then the
 * callback is called with ap_call. `pins` are stack indices of values (e.g. userdata the work
 * reads) kept alive until `after` has run. `cleanup` (may be NULL) runs last and frees `data`. */
typedef void (*ap_work_fn)(void *data);
typedef int (*ap_after_fn)(lua_State *L, void *data);
typedef void (*ap_cleanup_fn)(void *data);
void ap_work_queue(lua_State *L, int cb_idx, const int *pins, int npins, void *data,
                   ap_work_fn work, ap_after_fn after, ap_cleanup_fn cleanup);

/* Bytes an operation reads: a string, or an autopgo.bytes view (a request body held once in C,
 * core/lua/bytes.c), so a large upload is validated and stored without a copy in Lua. Raises on
 * anything else. Pin the value for work on the thread pool: ap_work_queue counts a pinned
 * autopgo.bytes as a reader until its `after` ran (see ap_bytes_read_begin). */
const char *ap_check_bytes(lua_State *L, int idx, size_t *len);
/* The C bytes behind the autopgo.bytes view at idx (with its data and length), else NULL (not a
 * view, or released). */
ap_bytes *ap_test_bytes(lua_State *L, int idx, const char **data, size_t *len);
/* Pushes a view of len bytes at off in b; takes over one reference the caller holds. */
void ap_push_bytes(lua_State *L, ap_bytes *b, size_t off, size_t len);

/* Loop handles with callbacks in flight (kafka clients, nats connections). The handle's userdata
 * keeps them in its user value 1, a table: integer keys for pending callbacks (the id travels to C
 * as the operation's opaque), "close" for the list of close(cb) callbacks. `self_ref` is the
 * registry ref that pins the userdata while the handle is open. */
typedef struct {
    int self_ref;
    lua_Integer next_id;
} ap_pending;

/* Stores the function at fn_idx as a pending callback of the userdata at ud_idx; returns its id. */
lua_Integer ap_pending_add(lua_State *L, ap_pending *p, int ud_idx, int fn_idx);
/* Pushes and forgets pending callback `id`; returns 0 (pushing nothing) when it is unknown. */
int ap_pending_take(lua_State *L, const ap_pending *p, lua_Integer id);
/* For handle:close([cb]) with the handle at 1 and cb at 2: a closed handle calls cb now and
 * returns 0; otherwise cb (if any) waits for ap_pending_closed and it returns 1: the caller starts
 * closing unless it already is. */
int ap_pending_close_begin(lua_State *L, int closed);
/* Once the handle is gone: every pending callback fails with "CLOSED: <what> was closed", the
 * close callbacks run, and the userdata is unpinned (p->self_ref becomes LUA_NOREF). Other
 * string keys of the user value must have been cleared by the caller. */
void ap_pending_closed(lua_State *L, ap_pending *p, const char *what);
/* Pushes the handle's user value table (the handle must still be pinned). */
void ap_pending_push_table(lua_State *L, const ap_pending *p);

/* Each binding file exports one opener that pushes its table. */
int ap_open_log(lua_State *L);
int ap_open_bytes(lua_State *L);
int ap_open_crypto(lua_State *L);
int ap_open_http_server(lua_State *L);
int ap_open_fs(lua_State *L);
int ap_open_http_client(lua_State *L);
int ap_open_pprof(lua_State *L);
int ap_open_pgo(lua_State *L);
int ap_open_flame(lua_State *L);
int ap_open_kafka(lua_State *L);
int ap_open_nats(lua_State *L);
int ap_open_redis(lua_State *L);

#endif
