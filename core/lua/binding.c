/* Shared binding helpers: failure tuples, userdata registration, the callback runner, the
 * thread-pool bridge and the pending callbacks of loop handles, used by every binding in core/lua.
 */
#include "binding.h"

#include <luv/luv.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

static void push_vfmt(lua_State *L, const char *code, const char *fmt, va_list ap)
{
    char msg[1024];
    vsnprintf(msg, sizeof msg, fmt, ap);
    lua_pushfstring(L, "%s: %s", code, msg);
}

int ap_fail(lua_State *L, const char *code, const char *fmt, ...)
{
    va_list ap;
    lua_pushnil(L);
    va_start(ap, fmt);
    push_vfmt(L, code, fmt, ap);
    va_end(ap);
    lua_pushstring(L, code);
    return 3;
}

void ap_push_error(lua_State *L, const char *code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    push_vfmt(L, code, fmt, ap);
    va_end(ap);
}

void ap_register_type(lua_State *L, const char *tname, const luaL_Reg *methods,
                      const luaL_Reg *meta)
{
    /* The method table's address identifies the binding that owns the name: registering again
     * from the same binding (autopgo.core loaded twice) is fine, a second binding is a bug. */
    const void *owner = methods ? (const void *)methods : (const void *)meta;
    if (!luaL_newmetatable(L, tname)) {
        lua_getfield(L, -1, "__ap_owner");
        const void *had = lua_touserdata(L, -1);
        lua_pop(L, 2);
        if (had != owner) luaL_error(L, "userdata type '%s' is registered by two bindings", tname);
        return;
    }
    lua_pushlightuserdata(L, (void *)owner);
    lua_setfield(L, -2, "__ap_owner");
    if (meta) luaL_setfuncs(L, meta, 0);
    if (methods) {
        lua_newtable(L);
        luaL_setfuncs(L, methods, 0);
        lua_setfield(L, -2, "__index");
    }
    lua_pushstring(L, tname);
    lua_setfield(L, -2, "__name");
    lua_pop(L, 1);
}

void *ap_new_udata(lua_State *L, size_t size, const char *tname)
{
    void *p = lua_newuserdatauv(L, size, 1);
    memset(p, 0, size);
    luaL_setmetatable(L, tname);
    return p;
}

uv_loop_t *ap_loop(lua_State *L)
{
    return luv_loop(L);
}

lua_State *ap_main_state(lua_State *L)
{
    lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
    lua_State *main = lua_tothread(L, -1);
    lua_pop(L, 1);
    return main;
}

static unsigned long callback_errors;

unsigned long ap_callback_errors(void)
{
    return callback_errors;
}

static int traceback(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    if (msg == NULL) {
        if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING) return 1;
        msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    }
    luaL_traceback(L, L, msg, 1);
    return 1;
}

int ap_call(lua_State *L, int nargs, int nresults, int flags)
{
    (void)flags; /* never exit: a daemon keeps running whatever a script does */
    int base = lua_gettop(L) - nargs;
    lua_pushcfunction(L, traceback);
    lua_insert(L, base);
    int status = lua_pcall(L, nargs, nresults, base);
    lua_remove(L, base);
    if (status != LUA_OK) {
        callback_errors++;
        size_t len = 0;
        const char *err = lua_tolstring(L, -1, &len);
        ap_log_field f = {"error", err ? err : "?", err ? len : 1, 0};
        ap_log_fields(AP_LOG_ERROR, "lua callback failed", &f, 1);
        lua_pop(L, 1);
        return -status;
    }
    return nresults == LUA_MULTRET ? lua_gettop(L) - base + 1 : nresults;
}

typedef struct {
    uv_work_t req;
    lua_State *L;
    int cb_ref;
    int pins_ref;
    void *data;
    ap_work_fn work;
    ap_after_fn after;
    ap_cleanup_fn cleanup;
    int nreaders;
    ap_bytes *readers[]; /* pinned autopgo.bytes: read by the work until `after` ran */
} work_req;

static void on_work(uv_work_t *req)
{
    work_req *w = req->data;
    w->work(w->data);
}

static void on_after_work(uv_work_t *req, int status)
{
    work_req *w = req->data;
    lua_State *L = w->L;
    int top = lua_gettop(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, w->cb_ref);
    int n;
    if (status == UV_ECANCELED) {
        ap_push_error(L, "CANCELED", "work was canceled");
        n = 1;
    } else {
        n = w->after(L, w->data);
    }
    /* Unpin only after `after` ran: it may still read the pinned userdata. */
    luaL_unref(L, LUA_REGISTRYINDEX, w->cb_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, w->pins_ref);
    if (w->cleanup) w->cleanup(w->data);
    for (int i = 0; i < w->nreaders; i++) ap_bytes_read_end(w->readers[i]);
    free(w);
    ap_call(L, n, 0, 0);
    lua_settop(L, top);
}

void ap_work_queue(lua_State *L, int cb_idx, const int *pins, int npins, void *data,
                   ap_work_fn work, ap_after_fn after, ap_cleanup_fn cleanup)
{
    cb_idx = lua_absindex(L, cb_idx);
    luaL_checktype(L, cb_idx, LUA_TFUNCTION);
    work_req *w = calloc(1, sizeof *w + (size_t)npins * sizeof(ap_bytes *));
    if (w == NULL) {
        if (cleanup) cleanup(data);
        luaL_error(L, "out of memory");
        return;
    }
    lua_createtable(L, npins, 0);
    for (int i = 0; i < npins; i++) {
        lua_pushvalue(L, pins[i]);
        lua_rawseti(L, -2, i + 1);
    }
    w->pins_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pushvalue(L, cb_idx);
    w->cb_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    w->L = ap_main_state(L);
    w->data = data;
    w->work = work;
    w->after = after;
    w->cleanup = cleanup;
    w->req.data = w;
    for (int i = 0; i < npins; i++) {
        const char *p;
        size_t len;
        ap_bytes *b = ap_test_bytes(L, pins[i], &p, &len);
        if (b != NULL) {
            ap_bytes_read_begin(b);
            w->readers[w->nreaders++] = b;
        }
    }
    int rc = uv_queue_work(ap_loop(L), &w->req, on_work, on_after_work);
    if (rc != 0) {
        luaL_unref(L, LUA_REGISTRYINDEX, w->cb_ref);
        luaL_unref(L, LUA_REGISTRYINDEX, w->pins_ref);
        if (cleanup) cleanup(data);
        for (int i = 0; i < w->nreaders; i++) ap_bytes_read_end(w->readers[i]);
        free(w);
        luaL_error(L, "uv_queue_work: %s", uv_strerror(rc));
    }
}

/* ---- pending callbacks of loop handles ---- */

void ap_pending_push_table(lua_State *L, const ap_pending *p)
{
    lua_rawgeti(L, LUA_REGISTRYINDEX, p->self_ref);
    lua_getiuservalue(L, -1, 1);
    lua_remove(L, -2);
}

lua_Integer ap_pending_add(lua_State *L, ap_pending *p, int ud_idx, int fn_idx)
{
    fn_idx = lua_absindex(L, fn_idx);
    lua_Integer id = ++p->next_id;
    lua_getiuservalue(L, ud_idx, 1);
    lua_pushvalue(L, fn_idx);
    lua_rawseti(L, -2, id);
    lua_pop(L, 1);
    return id;
}

int ap_pending_take(lua_State *L, const ap_pending *p, lua_Integer id)
{
    ap_pending_push_table(L, p);
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

int ap_pending_close_begin(lua_State *L, int closed)
{
    int has_cb = !lua_isnoneornil(L, 2);
    if (has_cb) luaL_checktype(L, 2, LUA_TFUNCTION);
    if (closed) {
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
    return 1;
}

void ap_pending_closed(lua_State *L, ap_pending *p, const char *what)
{
    int top = lua_gettop(L);
    ap_pending_push_table(L, p);
    int pending = lua_gettop(L);
    lua_getfield(L, pending, "close");
    int close_cbs = lua_gettop(L);
    lua_pushnil(L);
    lua_setfield(L, pending, "close");
    /* Whatever never got an answer (deliveries purged by the close, ...) fails now. */
    lua_pushnil(L);
    while (lua_next(L, pending)) {
        lua_pushvalue(L, -2);
        lua_pushnil(L);
        lua_rawset(L, pending);
        if (lua_isfunction(L, -1)) {
            ap_push_error(L, "CLOSED", "%s was closed", what);
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
    luaL_unref(L, LUA_REGISTRYINDEX, p->self_ref);
    p->self_ref = LUA_NOREF;
}

const char *ap_check_bytes(lua_State *L, int idx, size_t *len)
{
    if (lua_type(L, idx) == LUA_TSTRING) return lua_tolstring(L, idx, len);
    const char *p;
    if (ap_test_bytes(L, idx, &p, len) == NULL)
        luaL_typeerror(L, idx, "string or autopgo.bytes (not released)");
    return p;
}
