/* autopgo.core.flame: the web view's JSON of a profile (core/pprof/flame.c). One thread-pool job
 * decodes the bytes and writes the JSON, so the loop never holds a decoded profile. */
#include <stdlib.h>
#include <string.h>

#include "binding.h"
#include "flame.h"
#include "pprof.h"

typedef struct {
    const char *data; /* pinned Lua string */
    size_t len;
    ap_pprof_limits limits;
    int top;        /* 1: the top table, 0: the flame graph, 2: both (views_async) */
    int index;      /* sample type, -1 for the default */
    uint32_t max;   /* max_nodes or limit, 0 for the default */
    uint32_t limit; /* both: the top table's rows */
    char *out;
    size_t out_len;
    ap_pprof_views views;
    ap_pprof_error err;
} flame_job;

static lua_Integer opt_int(lua_State *L, int arg, const char *key, lua_Integer lo, lua_Integer hi,
                           lua_Integer def)
{
    lua_getfield(L, arg, key);
    lua_Integer v = def;
    if (!lua_isnil(L, -1)) {
        int isnum;
        v = lua_tointegerx(L, -1, &isnum);
        if (!isnum || v < lo || v > hi)
            luaL_argerror(L, arg,
                          lua_pushfstring(L, "%s must be an integer in %I..%I", key, lo, hi));
    }
    lua_pop(L, 1);
    return v;
}

static void flame_work(void *d)
{
    flame_job *j = d;
    ap_pprof_profile *p = ap_pprof_decode(j->data, j->len, &j->limits, &j->err);
    if (!p) return;
    ap_pprof_flame_opts o = {.index = j->index, .max_nodes = j->max};
    if (j->top == 2)
        ap_pprof_views_json(p, &o, j->limit, &j->views, &j->err);
    else if (j->top)
        ap_pprof_top_json(p, j->index, j->max, &j->out, &j->out_len, &j->err);
    else
        ap_pprof_flame_json(p, &o, &j->out, &j->out_len, &j->err);
    ap_pprof_profile_free(p);
}

static int flame_after(lua_State *L, void *d)
{
    flame_job *j = d;
    if (j->top == 2) {
        if (!j->views.flame) {
            ap_push_error(L, ap_pprof_code_name(j->err.code), "%s", j->err.msg);
            return 1;
        }
        lua_pushnil(L);
        lua_pushlstring(L, j->views.flame, j->views.flame_len);
        lua_pushlstring(L, j->views.top, j->views.top_len);
        lua_createtable(L, (int)j->views.nrows, 0);
        for (uint32_t i = 0; i < j->views.nrows; i++) {
            lua_pushinteger(L, (lua_Integer)j->views.row_end[i]);
            lua_rawseti(L, -2, (lua_Integer)i + 1);
        }
        return 4;
    }
    if (!j->out) {
        ap_push_error(L, ap_pprof_code_name(j->err.code), "%s", j->err.msg);
        return 1;
    }
    lua_pushnil(L);
    lua_pushlstring(L, j->out, j->out_len);
    return 2;
}

static void flame_cleanup(void *d)
{
    flame_job *j = d;
    free(j->out);
    ap_pprof_views_free(&j->views);
    free(j);
}

static int queue(lua_State *L, int top)
{
    size_t len;
    const char *data = luaL_checklstring(L, 1, &len);
    luaL_checktype(L, 2, LUA_TTABLE);
    luaL_checktype(L, 3, LUA_TFUNCTION);
    lua_Integer index = opt_int(L, 2, "index", 1, 1000000, 0) - 1;
    lua_Integer max = top == 1 ? opt_int(L, 2, "limit", 1, AP_PPROF_TOP_LIMIT_ROWS, 0)
                               : opt_int(L, 2, "max_nodes", 2, AP_PPROF_FLAME_LIMIT_NODES, 0);
    lua_Integer limit = top == 2 ? opt_int(L, 2, "limit", 1, AP_PPROF_TOP_LIMIT_ROWS, 0) : 0;
    lua_Integer max_dec = opt_int(L, 2, "max_decompressed", 0, LUA_MAXINTEGER, 0);
    lua_Integer max_mem = opt_int(L, 2, "max_memory", 0, LUA_MAXINTEGER, 0);
    flame_job *j = calloc(1, sizeof *j);
    if (!j) return luaL_error(L, "out of memory");
    j->data = data;
    j->len = len;
    j->top = top;
    j->index = (int)index;
    j->max = (uint32_t)max;
    j->limit = (uint32_t)limit;
    j->limits.max_decompressed = (uint64_t)max_dec;
    j->limits.max_memory = (uint64_t)max_mem;
    int pins[] = {1};
    ap_work_queue(L, 3, pins, 1, j, flame_work, flame_after, flame_cleanup);
    lua_pushboolean(L, 1);
    return 1;
}

/* flame.graph_async(bytes, {max_nodes=, index=, max_decompressed=, max_memory=}, cb(err, json))
 * -> true. index is 1-based (nil: pprof's default sample type). */
static int l_graph_async(lua_State *L)
{
    return queue(L, 0);
}

/* flame.top_async(bytes, {limit=, index=, max_decompressed=, max_memory=}, cb(err, json)) -> true
 */
static int l_top_async(lua_State *L)
{
    return queue(L, 1);
}

/* flame.views_async(bytes, {max_nodes=, limit=, index=, max_decompressed=, max_memory=},
 * cb(err, flame_json, top_json, row_ends)) -> true: both views from one decode (see
 * ap_pprof_views_json); row_ends[i] is the byte (0-based offset + 1 in Lua's sub) ending row i. */
static int l_views_async(lua_State *L)
{
    return queue(L, 2);
}

int ap_open_flame(lua_State *L)
{
    static const luaL_Reg fns[] = {
        {"graph_async", l_graph_async},
        {"top_async", l_top_async},
        {"views_async", l_views_async},
        {NULL, NULL},
    };
    luaL_newlib(L, fns);
    lua_pushinteger(L, AP_PPROF_FLAME_DEFAULT_NODES);
    lua_setfield(L, -2, "default_nodes");
    lua_pushinteger(L, AP_PPROF_FLAME_LIMIT_NODES);
    lua_setfield(L, -2, "limit_nodes");
    lua_pushinteger(L, AP_PPROF_TOP_DEFAULT_ROWS);
    lua_setfield(L, -2, "default_rows");
    lua_pushinteger(L, AP_PPROF_TOP_LIMIT_ROWS);
    lua_setfield(L, -2, "limit_rows");
    return 1;
}
