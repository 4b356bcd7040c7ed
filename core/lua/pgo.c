/* autopgo.core.pgo: the thin binding over core/pprof/edges.c (the compiler's view of a profile).
 * One call does the whole job on the libuv thread pool: read, build the edge map, apply the
 * no-inline list, write the asked format and compute the decisions. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "binding.h"
#include "crypto.h"
#include "edges.h"

typedef struct {
    /* input */
    const char *data;
    size_t len;
    char *path; /* read on the pool when set */
    ap_pprof_limits limits;
    char **no_inline;
    size_t *no_inline_len;
    size_t nno_inline;
    int format; /* 0 none, 1 minimal pprof, 2 preprofile */
    ap_pprof_encode_opts enc;
    int decide;
    double threshold;
    int list;            /* push the edge list */
    int also_preprofile; /* write GO PREPROFILE V1 too, into pre */
    int bounded;         /* push the decisions' lists cut to dlimit entries, with their summary */
    size_t dlimit;       /* 0: all */
    int json;            /* write the decisions as JSON (cut to jlimit), not as tables */
    size_t jlimit;
    char *json_extra;
    size_t json_extra_len;
    /* output */
    uint8_t *pre;
    size_t pre_len;
    uint8_t *jout;
    size_t jout_len;
    char signature[65];
    ap_pgo_edges *e;
    long renamed;
    uint8_t *out;
    size_t out_len;
    ap_pgo_decisions d;
    ap_pprof_error err;
    int rc;
} shape_job;

enum { FMT_NONE, FMT_PGO, FMT_PREPROFILE };

static int io_fail(ap_pprof_error *err, ap_pprof_status code, const char *path, const char *why)
{
    err->code = code;
    snprintf(err->msg, sizeof err->msg, "%s: %s", path, why);
    return -1;
}

static int read_file(const char *path, uint8_t **out, size_t *len, ap_pprof_error *err)
{
    FILE *f = fopen(path, "rb");
    if (!f) return io_fail(err, AP_PPROF_EIO, path, strerror(errno));
    uint8_t *b = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (n == cap) {
            cap = cap ? cap * 2 : 1 << 16;
            uint8_t *nb = realloc(b, cap);
            if (!nb) {
                free(b);
                fclose(f);
                return io_fail(err, AP_PPROF_ENOMEM, path, "out of memory");
            }
            b = nb;
        }
        size_t r = fread(b + n, 1, cap - n, f);
        n += r;
        if (r == 0) break;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(b);
        return io_fail(err, AP_PPROF_EIO, path, "read error");
    }
    *out = b;
    *len = n;
    return 0;
}

/* ---- the signature (autopgo.pgo.signature, computed here on the pool) ---- */

/* One line of the signature: "S\t" caller \0 offset, "C\t" callee or
 * "T\t" caller \0 offset \0 callee \0 ties. */
typedef struct {
    char *s;
    size_t len;
} sig_line;

static int sig_cmp(const void *a, const void *b)
{
    const sig_line *x = a, *y = b;
    size_t n = x->len < y->len ? x->len : y->len;
    int c = memcmp(x->s, y->s, n);
    if (c) return c;
    return x->len < y->len ? -1 : x->len > y->len;
}

static char *sig_site(const ap_pgo_edges *e, const ap_pgo_edge *x, const char *tag, int target,
                      uint32_t ties, size_t *len)
{
    char num[48], tie[24] = "";
    int nl = snprintf(num, sizeof num, "%lld", (long long)x->offset);
    int tl = target ? snprintf(tie, sizeof tie, "%u", (unsigned)ties) : 0;
    size_t n = 2 + x->caller_len + 1 + (size_t)nl;
    if (target) n += 1 + x->callee_len + 1 + (size_t)tl;
    char *s = malloc(n), *p = s;
    if (!s) return NULL;
    memcpy(p, tag, 2), p += 2;
    memcpy(p, ap_pgo_caller(e, x), x->caller_len), p += x->caller_len;
    *p++ = 0;
    memcpy(p, num, (size_t)nl), p += nl;
    if (target) {
        *p++ = 0;
        memcpy(p, ap_pgo_callee(e, x), x->callee_len), p += x->callee_len;
        *p++ = 0;
        memcpy(p, tie, (size_t)tl), p += tl;
    }
    *len = n;
    return s;
}

/* The hex sha256 of the sorted, distinct lines of the decisions, as pgo.signature. */
static int signature(const ap_pgo_edges *e, const ap_pgo_decisions *d, char hex[65])
{
    size_t n = d->nhot + d->nhot_callees + d->nsites, k = 0;
    sig_line *l = calloc(n ? n : 1, sizeof *l);
    int rc = -1;
    if (!l) return -1;
    for (size_t i = 0; i < d->nhot; i++, k++)
        if (!(l[k].s = sig_site(e, &e->edges[i], "S\t", 0, 0, &l[k].len))) goto out;
    for (size_t i = 0; i < d->nhot_callees; i++, k++) {
        const ap_pgo_edge *x = &e->edges[d->hot_callees[i]];
        if (!(l[k].s = malloc(2 + x->callee_len))) goto out;
        memcpy(l[k].s, "C\t", 2);
        memcpy(l[k].s + 2, ap_pgo_callee(e, x), x->callee_len);
        l[k].len = 2 + x->callee_len;
    }
    for (size_t i = 0; i < d->nsites; i++, k++)
        if (!(l[k].s =
                  sig_site(e, &e->edges[d->sites[i].edge], "T\t", 1, d->sites[i].ties, &l[k].len)))
            goto out;
    qsort(l, n, sizeof *l, sig_cmp);
    ap_hash *h = ap_hash_new("sha256");
    if (!h) goto out;
    for (size_t i = 0; i < n; i++) {
        if (i > 0 && sig_cmp(&l[i - 1], &l[i]) == 0) continue;
        ap_hash_update(h, l[i].s, l[i].len);
        ap_hash_update(h, "\n", 1);
    }
    uint8_t dig[32];
    ap_hash_final(h, dig);
    ap_hash_free(h);
    for (int i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", dig[i]);
    rc = 0;
out:
    for (size_t i = 0; i < k && i < n; i++) free(l[i].s);
    free(l);
    return rc;
}

static void shape_work(void *v)
{
    shape_job *j = v;
    uint8_t *file = NULL;
    j->rc = -1;
    const void *data = j->data;
    size_t len = j->len;
    if (j->path) {
        if (read_file(j->path, &file, &len, &j->err)) return;
        data = file;
    }
    int rc = ap_pgo_edges_load(data, len, &j->limits, &j->e, &j->err);
    free(file);
    if (rc) return;
    if (j->nno_inline) {
        j->renamed = ap_pgo_edges_no_inline(j->e, (const char *const *)j->no_inline,
                                            j->no_inline_len, j->nno_inline, &j->err);
        if (j->renamed < 0) return;
    }
    if (j->format == FMT_PREPROFILE) {
        if (ap_pgo_write_preprofile(j->e, &j->out, &j->out_len, &j->err)) return;
    } else if (j->format == FMT_PGO) {
        ap_pprof_profile *m;
        if (ap_pgo_minimal_profile(j->e, &m, &j->err)) return;
        rc = ap_pprof_encode(m, &j->enc, &j->out, &j->out_len, &j->err);
        ap_pprof_profile_free(m);
        if (rc) return;
    }
    if (j->also_preprofile && ap_pgo_write_preprofile(j->e, &j->pre, &j->pre_len, &j->err)) return;
    if (j->decide && j->e->usable) {
        if (ap_pgo_decide(j->e, j->threshold, &j->d, &j->err)) return;
        if ((j->bounded || j->json) && signature(j->e, &j->d, j->signature)) {
            j->err.code = AP_PPROF_ENOMEM;
            snprintf(j->err.msg, sizeof j->err.msg, "out of memory");
            return;
        }
        if (j->json && ap_pgo_decisions_json(j->e, &j->d, j->jlimit, j->signature, j->json_extra,
                                             j->json_extra_len, &j->jout, &j->jout_len, &j->err))
            return;
    }
    j->rc = 0;
}

static void shape_cleanup(void *v)
{
    shape_job *j = v;
    ap_pgo_edges_free(j->e);
    free(j->out);
    free(j->pre);
    ap_pgo_decisions_free(&j->d);
    free(j->jout);
    free(j->json_extra);
    for (size_t i = 0; i < j->nno_inline; i++) free(j->no_inline[i]);
    free(j->no_inline);
    free(j->no_inline_len);
    free(j->path);
    free(j);
}

/* ---- pushing results ---- */

static void set_lstr(lua_State *L, const char *s, size_t len, const char *field)
{
    lua_pushlstring(L, s, len);
    lua_setfield(L, -2, field);
}

static void set_int(lua_State *L, lua_Integer v, const char *field)
{
    lua_pushinteger(L, v);
    lua_setfield(L, -2, field);
}

static void set_num(lua_State *L, double v, const char *field)
{
    lua_pushnumber(L, v);
    lua_setfield(L, -2, field);
}

/* {caller, callee, offset, weight [, cum]} for edge i */
static void push_edge(lua_State *L, const ap_pgo_edges *e, size_t i, const double *cum)
{
    const ap_pgo_edge *x = &e->edges[i];
    lua_createtable(L, 0, 5);
    set_lstr(L, ap_pgo_caller(e, x), x->caller_len, "caller");
    set_lstr(L, ap_pgo_callee(e, x), x->callee_len, "callee");
    set_int(L, x->offset, "offset");
    set_int(L, x->weight, "weight");
    if (cum) set_num(L, cum[i], "cum");
}

/* The summary of bounded decisions: counts of the full lists and the signature. */
static void push_summary(lua_State *L, const ap_pgo_decisions *d, const char *sig)
{
    lua_createtable(L, 0, 3);
    set_int(L, (lua_Integer)d->nhot, "hot");
    set_int(L, (lua_Integer)d->nhot_callees, "hot_functions");
    set_int(L, (lua_Integer)d->nsites, "sites");
    lua_setfield(L, -2, "counts");
    set_lstr(L, sig, 64, "signature");
}

static size_t upto(size_t n, size_t limit)
{
    return limit && limit < n ? limit : n;
}

/* limit: 0 all, else each list cut to its first limit entries (bounded: with the summary). */
static void push_decisions(lua_State *L, const ap_pgo_edges *e, const ap_pgo_decisions *d,
                           size_t limit, const char *sig)
{
    lua_createtable(L, 0, 12);
    if (sig) push_summary(L, d, sig);
    set_num(L, d->threshold, "threshold");
    set_num(L, d->thres_from_cdf, "threshold_from_cdf");
    set_int(L, e->total_weight, "total_weight");
    set_int(L, (lua_Integer)(e->empty ? 0 : e->n), "edges");
    lua_createtable(L, (int)upto(d->nhot, limit), 0);
    for (size_t i = 0; i < upto(d->nhot, limit); i++) {
        push_edge(L, e, i, d->cum);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    lua_setfield(L, -2, "hot");
    lua_createtable(L, (int)upto(d->nhot_callees, limit), 0);
    for (size_t i = 0; i < upto(d->nhot_callees, limit); i++) {
        const ap_pgo_edge *x = &e->edges[d->hot_callees[i]];
        lua_pushlstring(L, ap_pgo_callee(e, x), x->callee_len);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    lua_setfield(L, -2, "hot_functions");
    lua_createtable(L, (int)upto(d->nsites, limit), 0);
    for (size_t i = 0; i < upto(d->nsites, limit); i++) {
        const ap_pgo_site *s = &d->sites[i];
        push_edge(L, e, s->edge, NULL);
        set_int(L, s->weight, "site_weight");
        set_int(L, s->callees, "callees");
        set_int(L, s->ties, "ties");
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    lua_setfield(L, -2, "sites");
    /* The boundary: the last hot edge (cumulative share before and after it) and the first cold
     * one, so a reader sees how much weight would have to move for the hot set to change. */
    size_t n = e->empty ? 0 : e->n;
    lua_createtable(L, 0, 2);
    if (d->nhot > 0) {
        push_edge(L, e, d->nhot - 1, d->cum);
        set_int(L, (lua_Integer)d->nhot, "index");
        set_num(L, d->nhot > 1 ? d->cum[d->nhot - 2] : 0, "cum_before");
        lua_setfield(L, -2, "last_hot");
    }
    if (d->nhot < n) {
        push_edge(L, e, d->nhot, d->cum);
        set_int(L, (lua_Integer)d->nhot + 1, "index");
        lua_setfield(L, -2, "first_cold");
    }
    lua_setfield(L, -2, "boundary");
}

static int shape_push(lua_State *L, shape_job *j, int callback)
{
    if (j->rc) {
        if (callback) {
            ap_push_error(L, ap_pprof_code_name(j->err.code), "%s", j->err.msg);
            return 1;
        }
        return ap_fail(L, ap_pprof_code_name(j->err.code), "%s", j->err.msg);
    }
    if (callback) lua_pushnil(L);
    const ap_pgo_edges *e = j->e;
    lua_createtable(L, 0, 5);
    lua_createtable(L, 0, 8);
    lua_pushboolean(L, e->usable);
    lua_setfield(L, -2, "usable");
    lua_pushboolean(L, e->empty);
    lua_setfield(L, -2, "empty");
    if (e->reason[0]) set_lstr(L, e->reason, strlen(e->reason), "reason");
    set_int(L, (lua_Integer)(e->empty ? 0 : e->n), "edges");
    set_int(L, e->total_weight, "total_weight");
    lua_pushstring(L, e->kind == AP_PGO_CPU_NANOSECONDS ? "cpu/nanoseconds" : "samples/count");
    lua_setfield(L, -2, "sample_type");
    lua_pushstring(L, e->preprofile ? "preprofile" : "pprof");
    lua_setfield(L, -2, "source");
    lua_setfield(L, -2, "info");
    if (j->nno_inline) set_int(L, j->renamed, "renamed");
    if (j->format != FMT_NONE) set_lstr(L, (const char *)j->out, j->out_len, "bytes");
    if (j->also_preprofile) set_lstr(L, (const char *)j->pre, j->pre_len, "preprofile");
    if (j->json && e->usable) set_lstr(L, (const char *)j->jout, j->jout_len, "decisions_json");
    if (j->decide && e->usable && !j->json) {
        push_decisions(L, e, &j->d, j->bounded ? j->dlimit : 0, j->bounded ? j->signature : NULL);
        lua_setfield(L, -2, "decisions");
    }
    if (j->list) {
        size_t n = e->empty ? 0 : e->n;
        lua_createtable(L, (int)n, 0);
        for (size_t i = 0; i < n; i++) {
            push_edge(L, e, i, NULL);
            lua_rawseti(L, -2, (lua_Integer)i + 1);
        }
        lua_setfield(L, -2, "edges");
    }
    return callback ? 2 : 1;
}

static int shape_after(lua_State *L, void *v)
{
    return shape_push(L, v, 1);
}

/* ---- arguments ---- */

static uint64_t opt_size(lua_State *L, int t, const char *name)
{
    uint64_t v = 0;
    if (lua_getfield(L, t, name) != LUA_TNIL) {
        lua_Integer n = lua_tointeger(L, -1);
        if (!lua_isinteger(L, -1) || n < 0) luaL_error(L, "limits.%s must be a size", name);
        v = (uint64_t)n;
    }
    lua_pop(L, 1);
    return v;
}

/* Checks opts (may be nil) into j before anything is allocated that a raise would leak. */
static void check_opts(lua_State *L, int arg, shape_job *j)
{
    j->enc.level = -1;
    j->threshold = 99;
    if (lua_isnoneornil(L, arg)) return;
    luaL_checktype(L, arg, LUA_TTABLE);
    if (lua_getfield(L, arg, "limits") != LUA_TNIL) {
        luaL_checktype(L, -1, LUA_TTABLE);
        int t = lua_gettop(L);
        j->limits.max_decompressed = opt_size(L, t, "max_decompressed");
        j->limits.max_memory = opt_size(L, t, "max_memory");
    }
    lua_pop(L, 1);
    if (lua_getfield(L, arg, "format") != LUA_TNIL) {
        const char *f = luaL_checkstring(L, -1);
        if (strcmp(f, "pgo") == 0)
            j->format = FMT_PGO;
        else if (strcmp(f, "preprofile") == 0)
            j->format = FMT_PREPROFILE;
        else
            luaL_argerror(L, arg, "format must be \"pgo\" or \"preprofile\"");
    }
    lua_pop(L, 1);
    if (lua_getfield(L, arg, "level") != LUA_TNIL) {
        lua_Integer lv = lua_tointeger(L, -1);
        if (!lua_isinteger(L, -1) || lv < -1 || lv > 9) luaL_argerror(L, arg, "level is -1..9");
        j->enc.level = (int)lv;
    }
    lua_pop(L, 1);
    if (lua_getfield(L, arg, "raw") != LUA_TNIL) j->enc.raw = lua_toboolean(L, -1);
    lua_pop(L, 1);
    int t = lua_getfield(L, arg, "decisions");
    if (t == LUA_TNUMBER) {
        j->threshold = lua_tonumber(L, -1);
        if (!(j->threshold >= 0 && j->threshold <= 100))
            luaL_argerror(L, arg, "decisions threshold must be between 0 and 100");
        j->decide = 1;
    } else if (t != LUA_TNIL) {
        j->decide = lua_toboolean(L, -1);
    }
    lua_pop(L, 1);
    if (lua_getfield(L, arg, "edges") != LUA_TNIL) j->list = lua_toboolean(L, -1);
    lua_pop(L, 1);
    if (lua_getfield(L, arg, "preprofile") != LUA_TNIL) j->also_preprofile = lua_toboolean(L, -1);
    lua_pop(L, 1);
    if (lua_getfield(L, arg, "decisions_limit") != LUA_TNIL) {
        lua_Integer n = lua_tointeger(L, -1);
        if (!lua_isinteger(L, -1) || n < 0)
            luaL_argerror(L, arg, "decisions_limit is a count (0: all)");
        j->bounded = 1;
        j->dlimit = (size_t)n;
    }
    lua_pop(L, 1);
    if (lua_getfield(L, arg, "decisions_json") != LUA_TNIL) {
        lua_Integer n = lua_tointeger(L, -1);
        if (!lua_isinteger(L, -1) || n < 0)
            luaL_argerror(L, arg, "decisions_json is a count (0: all)");
        j->json = j->decide = 1;
        j->jlimit = (size_t)n;
    }
    lua_pop(L, 1);
    if (lua_getfield(L, arg, "json_extra") != LUA_TNIL) luaL_checktype(L, -1, LUA_TSTRING);
    lua_pop(L, 1);
    if (lua_getfield(L, arg, "no_inline") != LUA_TNIL) {
        luaL_checktype(L, -1, LUA_TTABLE);
        lua_Integer n = luaL_len(L, -1);
        for (lua_Integer i = 1; i <= n; i++) {
            if (lua_rawgeti(L, -1, i) != LUA_TSTRING)
                luaL_argerror(L, arg, "no_inline must be a list of function names");
            lua_pop(L, 1);
        }
    }
    lua_pop(L, 1);
}

/* Copies the no_inline names (already checked) into j; -1 when out of memory. */
static int copy_no_inline(lua_State *L, int arg, shape_job *j)
{
    if (lua_isnoneornil(L, arg) || lua_getfield(L, arg, "no_inline") == LUA_TNIL) {
        if (!lua_isnoneornil(L, arg)) lua_pop(L, 1);
        return 0;
    }
    size_t n = (size_t)luaL_len(L, -1);
    j->no_inline = calloc(n ? n : 1, sizeof *j->no_inline);
    j->no_inline_len = calloc(n ? n : 1, sizeof *j->no_inline_len);
    if (!j->no_inline || !j->no_inline_len) {
        lua_pop(L, 1);
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        lua_rawgeti(L, -1, (lua_Integer)i + 1);
        size_t len;
        const char *s = lua_tolstring(L, -1, &len);
        j->no_inline[i] = malloc(len + 1);
        if (!j->no_inline[i]) {
            lua_pop(L, 2);
            return -1;
        }
        memcpy(j->no_inline[i], s, len + 1);
        j->no_inline_len[i] = len;
        j->nno_inline = i + 1;
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    return 0;
}

static int do_shape(lua_State *L, int async)
{
    shape_job tmp;
    memset(&tmp, 0, sizeof tmp);
    const char *path = NULL;
    if (lua_type(L, 1) == LUA_TTABLE) {
        lua_getfield(L, 1, "file");
        path = lua_tostring(L, -1);
        if (!path) luaL_argerror(L, 1, "want profile bytes or {file = path}");
        lua_pop(L, 1);
    } else {
        tmp.data = luaL_checklstring(L, 1, &tmp.len);
    }
    check_opts(L, 2, &tmp);
    if (async) luaL_checktype(L, 3, LUA_TFUNCTION);
    shape_job *j = calloc(1, sizeof *j);
    if (!j) return luaL_error(L, "out of memory");
    *j = tmp;
    const char *extra = NULL;
    size_t extra_len = 0;
    if (!lua_isnoneornil(L, 2)) {
        lua_getfield(L, 2, "json_extra");
        extra = lua_tolstring(L, -1, &extra_len);
        if (extra && (j->json_extra = malloc(extra_len + 1)))
            memcpy(j->json_extra, extra, extra_len + 1);
        j->json_extra_len = extra_len;
        lua_pop(L, 1);
    }
    if ((path && !(j->path = strdup(path))) || (extra && !j->json_extra) ||
        copy_no_inline(L, 2, j)) {
        shape_cleanup(j);
        return luaL_error(L, "out of memory");
    }
    if (async) {
        int pins[] = {1};
        ap_work_queue(L, 3, pins, 1, j, shape_work, shape_after, shape_cleanup);
        lua_pushboolean(L, 1);
        return 1;
    }
    shape_work(j);
    int n = shape_push(L, j, 0);
    shape_cleanup(j);
    return n;
}

/* pgo.shape(bytes | {file = path} [, opts]) -> result
 * opts: {format = "pgo"|"preprofile", level, raw, no_inline = {names}, decisions = true|percent,
 *        edges = true, limits = {max_decompressed, max_memory}, preprofile = true,
 *        decisions_limit = N, decisions_json = N, json_extra = ",\"k\":v..."}
 * preprofile = true also writes GO PREPROFILE V1 (result.preprofile) from the same edge map.
 * decisions_limit = N (0: all) cuts the decisions' lists (hot, hot_functions, sites) to their
 * first N entries and adds what the full lists give: counts and signature (as
 * autopgo.pgo.signature), computed on the pool: the loop only gets N tables.
 * decisions_json = N (0: all) gives result.decisions_json instead of result.decisions: the JSON
 * document of GET /api/profile/{app}/decisions, lists cut to N, json_extra's members appended,
 * written on the pool (core/pprof/decisions_json.c). result: {info = {usable, empty, reason, edges,
 * total_weight, sample_type, source}, bytes, preprofile, decisions | decisions_json, edges,
 * renamed} */
static int l_shape(lua_State *L)
{
    return do_shape(L, 0);
}

/* pgo.shape_async(input, opts|nil, cb(err, result)) -> true */
static int l_shape_async(lua_State *L)
{
    return do_shape(L, 1);
}

/* ---- the diff of two profiles' decisions ---- */

/* A call site (caller, offset) or a function name, with the edge it came from; ordered as Lua
 * orders the strings caller .. "\0" .. tostring(offset) (bytes, shorter first). */
typedef struct {
    const char *name;
    uint32_t len;
    uint8_t offlen;
    char off[23];
    size_t edge;
} dkey;

static int bytes_cmp(const char *a, size_t al, const char *b, size_t bl)
{
    int c = memcmp(a, b, al < bl ? al : bl);
    if (c) return c;
    return al < bl ? -1 : al > bl;
}

static int dkey_cmp(const void *x, const void *y)
{
    const dkey *a = x, *b = y;
    int c = bytes_cmp(a->name, a->len, b->name, b->len);
    if (!c) c = bytes_cmp(a->off, a->offlen, b->off, b->offlen);
    if (!c) c = a->edge < b->edge ? -1 : a->edge > b->edge;
    return c;
}

static int dkey_same(const dkey *a, const dkey *b)
{
    return bytes_cmp(a->name, a->len, b->name, b->len) == 0 &&
           bytes_cmp(a->off, a->offlen, b->off, b->offlen) == 0;
}

static void dkey_site(dkey *k, const ap_pgo_edges *e, size_t edge)
{
    const ap_pgo_edge *x = &e->edges[edge];
    k->name = ap_pgo_caller(e, x);
    k->len = x->caller_len;
    k->offlen = (uint8_t)snprintf(k->off, sizeof k->off, "%lld", (long long)x->offset);
    k->edge = edge;
}

/* The keys of n edges (site keys, or callee names when names is set), sorted, the first of each
 * key kept (*n updated); NULL when out of memory. */
static dkey *dkeys(const ap_pgo_edges *e, const size_t *edges, size_t *n, int names)
{
    dkey *k = calloc(*n ? *n : 1, sizeof *k);
    if (!k) return NULL;
    for (size_t i = 0; i < *n; i++) {
        size_t edge = edges ? edges[i] : i;
        if (names) {
            const ap_pgo_edge *x = &e->edges[edge];
            k[i].name = ap_pgo_callee(e, x);
            k[i].len = x->callee_len;
            k[i].edge = edge;
        } else {
            dkey_site(&k[i], e, edge);
        }
    }
    qsort(k, *n, sizeof *k, dkey_cmp);
    size_t m = 0;
    for (size_t i = 0; i < *n; i++)
        if (m == 0 || !dkey_same(&k[m - 1], &k[i])) k[m++] = k[i];
    *n = m;
    return k;
}

/* One list of the diff: edge indexes (into side a's or b's edges; changed: pairs). */
typedef struct {
    size_t *v;
    size_t n, cap;
} dlist;

static int dlist_add(dlist *l, size_t x)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        size_t *nv = realloc(l->v, cap * sizeof *nv);
        if (!nv) return -1;
        l->v = nv;
        l->cap = cap;
    }
    l->v[l->n++] = x;
    return 0;
}

typedef struct {
    shape_job side[2];
    size_t limit;
    int failed_side; /* 0 a, 1 b, -1 neither */
    /* output: edge indexes of b (hot_added, functions_added), of a (hot_removed,
     * functions_removed), (a site's edge, b site's edge) pairs (changed) */
    dlist hot_added, hot_removed, funcs_added, funcs_removed, changed;
    size_t sites_added, sites_removed;
    ap_pprof_error err;
    int rc;
} diff_job;

/* In b, not in a (added), in a, not in b (removed), in both (both(a, b), may be NULL). */
static int walk(const dkey *a, size_t na, const dkey *b, size_t nb, dlist *added, dlist *removed,
                size_t *nadded, size_t *nremoved, dlist *both)
{
    size_t i = 0, j = 0;
    while (i < na || j < nb) {
        int c = i == na ? 1 : j == nb ? -1 : dkey_cmp(&a[i], &b[j]);
        if (i < na && j < nb && dkey_same(&a[i], &b[j])) c = 0;
        if (c > 0) {
            if (added ? dlist_add(added, b[j].edge) : (++*nadded, 0)) return -1;
            j++;
        } else if (c < 0) {
            if (removed ? dlist_add(removed, a[i].edge) : (++*nremoved, 0)) return -1;
            i++;
        } else {
            if (both && (dlist_add(both, a[i].edge) || dlist_add(both, b[j].edge))) return -1;
            i++, j++;
        }
    }
    return 0;
}

static int diff_compute(diff_job *j)
{
    const ap_pgo_edges *ea = j->side[0].e, *eb = j->side[1].e;
    const ap_pgo_decisions *da = &j->side[0].d, *db = &j->side[1].d;
    int rc = -1;
    size_t nha = da->nhot, nhb = db->nhot, nfa = da->nhot_callees, nfb = db->nhot_callees;
    size_t nsa = da->nsites, nsb = db->nsites;
    size_t *sa_edges = malloc((nsa ? nsa : 1) * sizeof *sa_edges);
    size_t *sb_edges = malloc((nsb ? nsb : 1) * sizeof *sb_edges);
    dkey *ha = dkeys(ea, NULL, &nha, 0), *hb = dkeys(eb, NULL, &nhb, 0);
    dkey *fa = dkeys(ea, da->hot_callees, &nfa, 1), *fb = dkeys(eb, db->hot_callees, &nfb, 1);
    dkey *ta = NULL, *tb = NULL;
    dlist both = {0};
    if (!sa_edges || !sb_edges || !ha || !hb || !fa || !fb) goto out;
    for (size_t i = 0; i < nsa; i++) sa_edges[i] = da->sites[i].edge;
    for (size_t i = 0; i < nsb; i++) sb_edges[i] = db->sites[i].edge;
    ta = dkeys(ea, sa_edges, &nsa, 0);
    tb = dkeys(eb, sb_edges, &nsb, 0);
    if (!ta || !tb) goto out;
    if (walk(ha, nha, hb, nhb, &j->hot_added, &j->hot_removed, NULL, NULL, NULL) ||
        walk(fa, nfa, fb, nfb, &j->funcs_added, &j->funcs_removed, NULL, NULL, NULL) ||
        walk(ta, nsa, tb, nsb, NULL, NULL, &j->sites_added, &j->sites_removed, &both))
        goto out;
    for (size_t i = 0; i < both.n; i += 2) {
        const ap_pgo_edge *x = &ea->edges[both.v[i]], *y = &eb->edges[both.v[i + 1]];
        if (bytes_cmp(ap_pgo_callee(ea, x), x->callee_len, ap_pgo_callee(eb, y), y->callee_len) &&
            (dlist_add(&j->changed, both.v[i]) || dlist_add(&j->changed, both.v[i + 1])))
            goto out;
    }
    rc = 0;
out:
    free(sa_edges);
    free(sb_edges);
    free(ha);
    free(hb);
    free(fa);
    free(fb);
    free(ta);
    free(tb);
    free(both.v);
    return rc;
}

static void diff_work(void *v)
{
    diff_job *j = v;
    j->rc = -1;
    j->failed_side = -1;
    for (int s = 0; s < 2; s++) {
        shape_job *x = &j->side[s];
        shape_work(x);
        if (x->rc == 0 && !x->e->usable) {
            x->rc = -1;
            x->err.code = AP_PPROF_EMALFORMED;
            snprintf(x->err.msg, sizeof x->err.msg, "not usable by go build -pgo: %s",
                     x->e->reason);
        }
        if (x->rc) {
            j->failed_side = s;
            j->err = x->err;
            return;
        }
    }
    if (diff_compute(j)) {
        j->err.code = AP_PPROF_ENOMEM;
        snprintf(j->err.msg, sizeof j->err.msg, "out of memory");
        return;
    }
    j->rc = 0;
}

static void side_free(shape_job *j)
{
    ap_pgo_edges_free(j->e);
    free(j->out);
    free(j->pre);
    ap_pgo_decisions_free(&j->d);
    free(j->path);
}

static void diff_cleanup(void *v)
{
    diff_job *j = v;
    side_free(&j->side[0]);
    side_free(&j->side[1]);
    free(j->hot_added.v);
    free(j->hot_removed.v);
    free(j->funcs_added.v);
    free(j->funcs_removed.v);
    free(j->changed.v);
    free(j);
}

/* {caller, offset, callee} of each listed edge (the first limit ones), as field of the table */
static void push_sites(lua_State *L, const ap_pgo_edges *e, const dlist *l, size_t limit,
                       const char *field)
{
    size_t n = upto(l->n, limit);
    lua_createtable(L, (int)n, 0);
    for (size_t i = 0; i < n; i++) {
        push_edge(L, e, l->v[i], NULL);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    lua_setfield(L, -2, field);
}

static void push_names(lua_State *L, const ap_pgo_edges *e, const dlist *l, size_t limit,
                       const char *field)
{
    size_t n = upto(l->n, limit);
    lua_createtable(L, (int)n, 0);
    for (size_t i = 0; i < n; i++) {
        const ap_pgo_edge *x = &e->edges[l->v[i]];
        lua_pushlstring(L, ap_pgo_callee(e, x), x->callee_len);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    lua_setfield(L, -2, field);
}

static int diff_push(lua_State *L, diff_job *j, int callback)
{
    if (j->rc) {
        const char *side = j->failed_side == 0 ? "a: " : j->failed_side == 1 ? "b: " : "";
        if (callback) {
            ap_push_error(L, ap_pprof_code_name(j->err.code), "%s%s", side, j->err.msg);
            return 1;
        }
        return ap_fail(L, ap_pprof_code_name(j->err.code), "%s%s", side, j->err.msg);
    }
    if (callback) lua_pushnil(L);
    const ap_pgo_edges *ea = j->side[0].e, *eb = j->side[1].e;
    lua_createtable(L, 0, 12);
    push_sites(L, eb, &j->hot_added, j->limit, "hot_added");
    push_sites(L, ea, &j->hot_removed, j->limit, "hot_removed");
    push_names(L, eb, &j->funcs_added, j->limit, "functions_added");
    push_names(L, ea, &j->funcs_removed, j->limit, "functions_removed");
    size_t nc = upto(j->changed.n / 2, j->limit);
    lua_createtable(L, (int)nc, 0);
    for (size_t i = 0; i < nc; i++) {
        const ap_pgo_edge *x = &ea->edges[j->changed.v[2 * i]];
        const ap_pgo_edge *y = &eb->edges[j->changed.v[2 * i + 1]];
        lua_createtable(L, 0, 6);
        set_lstr(L, ap_pgo_caller(eb, y), y->caller_len, "caller");
        set_int(L, y->offset, "offset");
        set_lstr(L, ap_pgo_callee(ea, x), x->callee_len, "from");
        set_lstr(L, ap_pgo_callee(eb, y), y->callee_len, "to");
        set_int(L, x->weight, "from_weight");
        set_int(L, y->weight, "to_weight");
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    lua_setfield(L, -2, "targets_changed");
    set_int(L, (lua_Integer)j->sites_added, "sites_added");
    set_int(L, (lua_Integer)j->sites_removed, "sites_removed");
    lua_createtable(L, 2, 0);
    lua_pushinteger(L, ea->total_weight);
    lua_rawseti(L, -2, 1);
    lua_pushinteger(L, eb->total_weight);
    lua_rawseti(L, -2, 2);
    lua_setfield(L, -2, "total_weight");
    lua_createtable(L, 2, 0);
    lua_pushlstring(L, j->side[0].signature, 64);
    lua_rawseti(L, -2, 1);
    lua_pushlstring(L, j->side[1].signature, 64);
    lua_rawseti(L, -2, 2);
    lua_setfield(L, -2, "signatures");
    lua_pushboolean(L, strcmp(j->side[0].signature, j->side[1].signature) == 0);
    lua_setfield(L, -2, "same");
    lua_createtable(L, 0, 5);
    set_int(L, (lua_Integer)j->hot_added.n, "hot_added");
    set_int(L, (lua_Integer)j->hot_removed.n, "hot_removed");
    set_int(L, (lua_Integer)j->funcs_added.n, "functions_added");
    set_int(L, (lua_Integer)j->funcs_removed.n, "functions_removed");
    set_int(L, (lua_Integer)(j->changed.n / 2), "targets_changed");
    lua_setfield(L, -2, "counts");
    return callback ? 2 : 1;
}

static int diff_after(lua_State *L, void *v)
{
    return diff_push(L, v, 1);
}

/* A side's input at stack index arg: its bytes into x, or the path of {file = path} returned
 * (raises on a wrong argument, before anything is allocated). */
static const char *side_input(lua_State *L, int arg, shape_job *x)
{
    if (lua_type(L, arg) == LUA_TTABLE) {
        lua_getfield(L, arg, "file");
        const char *path = lua_tostring(L, -1);
        if (!path) luaL_argerror(L, arg, "want profile bytes or {file = path}");
        lua_pop(L, 1);
        return path;
    }
    x->data = luaL_checklstring(L, arg, &x->len);
    return NULL;
}

static int do_diff(lua_State *L, int async)
{
    diff_job tmp;
    memset(&tmp, 0, sizeof tmp);
    const char *paths[2];
    for (int s = 0; s < 2; s++) paths[s] = side_input(L, s + 1, &tmp.side[s]);
    if (!lua_isnoneornil(L, 3)) {
        luaL_checktype(L, 3, LUA_TTABLE);
        if (lua_getfield(L, 3, "limit") != LUA_TNIL) {
            lua_Integer n = lua_tointeger(L, -1);
            if (!lua_isinteger(L, -1) || n < 0) luaL_argerror(L, 3, "limit is a count (0: all)");
            tmp.limit = (size_t)n;
        }
        lua_pop(L, 1);
        if (lua_getfield(L, 3, "limits") != LUA_TNIL) {
            luaL_checktype(L, -1, LUA_TTABLE);
            int t = lua_gettop(L);
            tmp.side[0].limits.max_decompressed = opt_size(L, t, "max_decompressed");
            tmp.side[0].limits.max_memory = opt_size(L, t, "max_memory");
        }
        lua_pop(L, 1);
    }
    for (int s = 0; s < 2; s++) {
        shape_job *x = &tmp.side[s];
        x->limits = tmp.side[0].limits;
        x->enc.level = -1;
        x->threshold = 99;
        x->decide = 1;
        x->bounded = 1; /* for the signature */
    }
    if (async) luaL_checktype(L, 4, LUA_TFUNCTION);
    diff_job *j = calloc(1, sizeof *j);
    if (!j) return luaL_error(L, "out of memory");
    *j = tmp;
    for (int s = 0; s < 2; s++) {
        if (paths[s] && !(j->side[s].path = strdup(paths[s]))) {
            diff_cleanup(j);
            return luaL_error(L, "out of memory");
        }
    }
    if (async) {
        int pins[] = {1, 2};
        ap_work_queue(L, 4, pins, 2, j, diff_work, diff_after, diff_cleanup);
        lua_pushboolean(L, 1);
        return 1;
    }
    diff_work(j);
    int n = diff_push(L, j, 0);
    diff_cleanup(j);
    return n;
}

/* pgo.diff(a, b [, opts]) -> result: what the compiler decides differently with profile b than
 * with a (a, b: bytes or {file = path}, as shape's input; opts: {limit = N (0: all), limits}).
 * result: {hot_added, hot_removed ({caller, callee, offset, weight}: the first hot edge of each
 * call site hot in one only, by site), functions_added, functions_removed (names),
 * targets_changed ({caller, offset, from, to, from_weight, to_weight}, sites in both), each cut
 * to its first N; counts (their full lengths), sites_added, sites_removed, total_weight = {a, b},
 * signatures = {a, b}, same}. Fails (message "a: ..." or "b: ...") when a side is unusable. */
static int l_diff(lua_State *L)
{
    return do_diff(L, 0);
}

/* pgo.diff_async(a, b, opts|nil, cb(err, result)) -> true */
static int l_diff_async(lua_State *L)
{
    return do_diff(L, 1);
}

int ap_open_pgo(lua_State *L)
{
    static const luaL_Reg funcs[] = {
        {"shape", l_shape}, {"shape_async", l_shape_async},
        {"diff", l_diff},   {"diff_async", l_diff_async},
        {NULL, NULL},
    };
    luaL_newlib(L, funcs);
    lua_pushstring(L, AP_PGO_NO_INLINE_SUFFIX);
    lua_setfield(L, -2, "no_inline_suffix");
    return 1;
}
