/* autopgo.core.pprof: the thin binding over core/pprof. Argument checks, calls into the
 * library, results pushed as Lua values; big work (decode, validate, merge, encode, prune) has
 * an _async form that runs on the libuv thread pool via ap_work_queue. */
#include <stdlib.h>
#include <string.h>

#include "binding.h"
#include "crypto.h"
#include "fold.h"
#include "pprof.h"

#define PROFILE_MT "autopgo.profile"
#define FOLDER_MT  "autopgo.folder"

/* A folder (core/pprof/fold.h): one job at a time uses it; a fold that fails spends it. */
typedef struct {
    ap_pprof_folder *f;
    int busy;
} lfolder;

typedef struct {
    ap_pprof_profile *p;
    int busy;   /* thread-pool jobs using the profile */
    int writer; /* one of them changes it (prune_async) */
    int closed; /* close() was called; p is freed when the last job ends */
} lprofile;

static int fail_err(lua_State *L, const ap_pprof_error *err)
{
    return ap_fail(L, ap_pprof_code_name(err->code), "%s", err->msg);
}

static void push_err(lua_State *L, const ap_pprof_error *err)
{
    ap_push_error(L, ap_pprof_code_name(err->code), "%s", err->msg);
}

/* ---- argument helpers ---- */

static lprofile *ap_check_profile(lua_State *L, int idx)
{
    return luaL_checkudata(L, idx, PROFILE_MT);
}

/* The profile of a live wrapper that may be read (or written), or NULL with a failure tuple
 * pushed (3 values). Readers share; a writer needs the profile to itself. */
static ap_pprof_profile *usable(lua_State *L, lprofile *w, int writing)
{
    if (w->closed || !w->p) {
        ap_fail(L, "CLOSED", "the profile is closed");
        return NULL;
    }
    if (w->writer || (writing && w->busy)) {
        ap_fail(L, "BUSY", "the profile is in use by an async operation");
        return NULL;
    }
    return w->p;
}

/* A job is done with w: the last one frees a profile that was closed meanwhile. */
static void release(lprofile *w, int writer)
{
    w->busy--;
    if (writer) w->writer = 0;
    if (w->closed && !w->busy) {
        ap_pprof_profile_free(w->p);
        w->p = NULL;
    }
}

static uint64_t opt_size_field(lua_State *L, int t, const char *name, int arg)
{
    lua_getfield(L, t, name);
    uint64_t v = 0;
    if (!lua_isnil(L, -1)) {
        int isnum;
        lua_Integer n = lua_tointegerx(L, -1, &isnum);
        if (!isnum || n < 0) {
            lua_pop(L, 1);
            luaL_argerror(L, arg, lua_pushfstring(L, "%s must be a non-negative integer", name));
        }
        v = (uint64_t)n;
    }
    lua_pop(L, 1);
    return v;
}

/* limits table (or nil) at `arg`: { max_decompressed = n, max_memory = n } */
static void check_limits(lua_State *L, int arg, ap_pprof_limits *lim)
{
    memset(lim, 0, sizeof *lim);
    if (lua_isnoneornil(L, arg)) return;
    luaL_checktype(L, arg, LUA_TTABLE);
    lim->max_decompressed = opt_size_field(L, arg, "max_decompressed", arg);
    lim->max_memory = opt_size_field(L, arg, "max_memory", arg);
}

static void check_encode_opts(lua_State *L, int arg, ap_pprof_encode_opts *o)
{
    o->level = -1;
    o->raw = 0;
    o->threads = 0;
    if (lua_isnoneornil(L, arg)) return;
    luaL_checktype(L, arg, LUA_TTABLE);
    lua_getfield(L, arg, "level");
    if (!lua_isnil(L, -1)) {
        int isnum;
        lua_Integer v = lua_tointegerx(L, -1, &isnum);
        if (!isnum || v < -1 || v > 9) luaL_argerror(L, arg, "level must be an integer in -1..9");
        o->level = (int)v;
    }
    lua_pop(L, 1);
    lua_getfield(L, arg, "raw");
    o->raw = lua_toboolean(L, -1);
    lua_pop(L, 1);
    lua_getfield(L, arg, "threads");
    if (!lua_isnil(L, -1)) {
        int isnum;
        lua_Integer v = lua_tointegerx(L, -1, &isnum);
        if (!isnum || v < 0 || v > 64) luaL_argerror(L, arg, "threads must be an integer in 0..64");
        o->threads = (int)v;
    }
    lua_pop(L, 1);
}

/* Compiles a rule list { {drop = "re", keep = "re"}, ... } at `arg` (nil for none). Returns
 * 0 with *out set (NULL when there are no rules) or pushes a failure tuple and returns 3. */
static int compile_rules(lua_State *L, int arg, ap_pprof_pruner **out)
{
    *out = NULL;
    if (lua_isnoneornil(L, arg)) return 0;
    luaL_checktype(L, arg, LUA_TTABLE);
    lua_Integer n = luaL_len(L, arg);
    if (n == 0) return 0;
    if (n > 100000) luaL_argerror(L, arg, "too many rules");
    /* Userdata scratch: freed by the GC even if a check below raises. */
    ap_pprof_prune_rule *rules = lua_newuserdatauv(L, (size_t)n * sizeof *rules, 0);
    for (lua_Integer i = 1; i <= n; i++) {
        lua_geti(L, arg, i);
        if (!lua_istable(L, -1))
            luaL_argerror(L, arg, lua_pushfstring(L, "rule %d is not a table", (int)i));
        lua_getfield(L, -1, "drop");
        lua_getfield(L, -2, "keep");
        if (lua_type(L, -2) != LUA_TSTRING)
            luaL_argerror(L, arg, lua_pushfstring(L, "rule %d: drop must be a string", (int)i));
        if (!lua_isnil(L, -1) && lua_type(L, -1) != LUA_TSTRING)
            luaL_argerror(L, arg, lua_pushfstring(L, "rule %d: keep must be a string", (int)i));
        /* The strings stay reachable from the rule table while we compile. */
        rules[i - 1].drop = lua_tostring(L, -2);
        rules[i - 1].keep = lua_isnil(L, -1) ? NULL : lua_tostring(L, -1);
        lua_pop(L, 3);
    }
    ap_pprof_error err;
    *out = ap_pprof_pruner_new(rules, (size_t)n, &err);
    lua_pop(L, 1);
    if (!*out) return fail_err(L, &err);
    return 0;
}

/* ---- pushing results ---- */

static void set_str(lua_State *L, const ap_pprof_profile *p, uint32_t i, const char *field)
{
    const ap_pprof_str *s = &p->strings[i];
    lua_pushlstring(L, s->ptr, s->len);
    lua_setfield(L, -2, field);
}

static void set_int(lua_State *L, lua_Integer v, const char *field)
{
    lua_pushinteger(L, v);
    lua_setfield(L, -2, field);
}

static void push_pgo(lua_State *L, const ap_pprof_pgo *g)
{
    lua_createtable(L, 0, 6);
    lua_pushboolean(L, g->usable);
    lua_setfield(L, -2, "usable");
    lua_pushboolean(L, g->empty);
    lua_setfield(L, -2, "empty");
    lua_pushstring(L, g->reason);
    lua_setfield(L, -2, "reason");
    set_int(L, (lua_Integer)g->edges, "edges");
    set_int(L, g->total_weight, "total_weight");
    if (g->value_index >= 0) set_int(L, g->value_index + 1, "sample_type");
}

/* The info table of a profile (plus totals, which the caller computed). */
static void push_info(lua_State *L, const ap_pprof_profile *p, const int64_t *totals)
{
    lua_createtable(L, 0, 24);
    lua_createtable(L, (int)p->nsample_type, 0);
    for (uint32_t i = 0; i < p->nsample_type; i++) {
        lua_createtable(L, 0, 3);
        set_str(L, p, p->sample_type[2 * i], "type");
        set_str(L, p, p->sample_type[2 * i + 1], "unit");
        if (totals) set_int(L, totals[i], "total");
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    lua_setfield(L, -2, "sample_types");
    int di = ap_pprof_default_index(p);
    if (di >= 0) set_int(L, di + 1, "default_index");
    set_str(L, p, p->default_sample_type, "default_sample_type");
    lua_createtable(L, 0, 2);
    set_str(L, p, p->period_type[0], "type");
    set_str(L, p, p->period_type[1], "unit");
    lua_setfield(L, -2, "period_type");
    set_int(L, p->period, "period");
    set_int(L, p->time_nanos, "time_nanos");
    set_int(L, p->duration_nanos, "duration_nanos");
    set_int(L, p->nsamples, "samples");
    set_int(L, p->nlocations, "locations");
    set_int(L, p->nfunctions, "functions");
    set_int(L, p->nmappings, "mappings");
    set_int(L, p->nstrings, "strings");
    set_int(L, (lua_Integer)p->wire_size, "size");
    set_int(L, (lua_Integer)p->decompressed_size, "decompressed_size");
    lua_pushboolean(L, p->gzipped);
    lua_setfield(L, -2, "gzipped");
    set_int(L, (lua_Integer)ap_pprof_profile_memory(p), "memory");
    set_str(L, p, p->drop_frames, "drop_frames");
    set_str(L, p, p->keep_frames, "keep_frames");
    set_str(L, p, p->doc_url, "doc_url");
    lua_createtable(L, (int)p->ncomments, 0);
    for (uint32_t i = 0; i < p->ncomments; i++) {
        const ap_pprof_str *s = &p->strings[p->comments[i]];
        lua_pushlstring(L, s->ptr, s->len);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    lua_setfield(L, -2, "comments");
}

static lprofile *push_profile(lua_State *L, ap_pprof_profile *p)
{
    lprofile *w = ap_new_udata(L, sizeof *w, PROFILE_MT);
    w->p = p;
    return w;
}

/* ---- decode ---- */

typedef struct {
    const char *data;
    size_t len;
    ap_pprof_limits limits;
    int validate;
    ap_pprof_profile *p;
    ap_pprof_pgo pgo;
    int64_t *totals;
    ap_pprof_error err;
    int rc;
} decode_job;

static void decode_work(void *d)
{
    decode_job *j = d;
    j->p = ap_pprof_decode(j->data, j->len, &j->limits, &j->err);
    if (!j->p) {
        j->rc = -1;
        return;
    }
    j->rc = 0;
    if (j->validate) {
        j->totals = calloc(j->p->nsample_type ? j->p->nsample_type : 1, sizeof *j->totals);
        if (!j->totals) {
            j->err.code = AP_PPROF_ENOMEM;
            strcpy(j->err.msg, "out of memory");
            j->rc = -1;
            return;
        }
        if (ap_pprof_pgo_check(j->p, &j->pgo, &j->err)) {
            j->rc = -1;
            return;
        }
        ap_pprof_totals(j->p, j->totals);
    }
}

/* Pushes the result of a decode job: a profile (ownership moves to Lua) or a validate info
 * table with `pgo` and `ok`. Returns the count pushed, error first for callbacks. */
static int decode_push(lua_State *L, decode_job *j, int callback)
{
    if (j->rc) {
        if (callback) {
            push_err(L, &j->err);
            return 1;
        }
        return fail_err(L, &j->err);
    }
    if (callback) lua_pushnil(L);
    if (j->validate) {
        push_info(L, j->p, j->totals);
        push_pgo(L, &j->pgo);
        lua_setfield(L, -2, "pgo");
    } else {
        push_profile(L, j->p);
        j->p = NULL;
    }
    return callback ? 2 : 1;
}

static void decode_cleanup(void *d)
{
    decode_job *j = d;
    ap_pprof_profile_free(j->p);
    free(j->totals);
    free(j);
}

static int decode_after(lua_State *L, void *d)
{
    return decode_push(L, d, 1);
}

static int do_decode(lua_State *L, int validate, int async)
{
    size_t len;
    const char *data = ap_check_bytes(L, 1, &len);
    ap_pprof_limits lim;
    check_limits(L, 2, &lim);
    if (async) luaL_checktype(L, 3, LUA_TFUNCTION);
    decode_job *j = calloc(1, sizeof *j);
    if (!j) return luaL_error(L, "out of memory");
    j->data = data;
    j->len = len;
    j->limits = lim;
    j->validate = validate;
    if (async) {
        int pins[] = {1};
        ap_work_queue(L, 3, pins, 1, j, decode_work, decode_after, decode_cleanup);
        lua_pushboolean(L, 1);
        return 1;
    }
    decode_work(j);
    /* Only a Lua out-of-memory error can escape decode_push; j would then leak with it. */
    int n = decode_push(L, j, 0);
    decode_cleanup(j);
    return n;
}

/* pprof.decode(bytes [, limits]) -> profile */
static int l_decode(lua_State *L)
{
    return do_decode(L, 0, 0);
}

/* pprof.decode_async(bytes, limits|nil, cb(err, profile)) -> true */
static int l_decode_async(lua_State *L)
{
    return do_decode(L, 0, 1);
}

/* pprof.validate(bytes [, limits]) -> info (with info.pgo) */
static int l_validate(lua_State *L)
{
    return do_decode(L, 1, 0);
}

/* pprof.validate_async(bytes, limits|nil, cb(err, info)) -> true */
static int l_validate_async(lua_State *L)
{
    return do_decode(L, 1, 1);
}

/* ---- merge ---- */

typedef struct {
    ap_pprof_input *inputs;
    size_t n;
    lprofile **busy; /* wrappers marked busy for the job */
    size_t nbusy;
    ap_pprof_limits limits;
    ap_pprof_pruner *pruner;
    ap_pprof_encode_opts opts;
    int want_profile;
    uint8_t *out;
    size_t out_len;
    ap_pprof_profile *result;
    ap_pprof_merge_summary sum;
    ap_pprof_input_facts *facts; /* one per input when opts.facts */
    lfolder *folder; /* fold into it instead of merging (opts.folder): the output is out too */
    ap_pprof_fold_stats fold;
    char sha256[65]; /* hex digest of out, "" for a profile */
    ap_pprof_error err;
    int rc;
} merge_job;

static void merge_work(void *d)
{
    merge_job *j = d;
    if (j->folder) {
        j->rc = ap_pprof_folder_fold(j->folder->f, j->inputs, j->n, &j->limits, j->pruner, &j->out,
                                     &j->out_len, &j->fold, &j->err);
        if (j->rc == 1) j->rc = -1; /* err says why: the caller merges in full */
        j->sum.inputs = (uint32_t)j->n;
        j->sum.bytes_out = j->out_len;
    } else {
        j->rc = ap_pprof_merge_encoded(j->inputs, j->n, &j->limits, j->pruner, &j->opts,
                                       j->want_profile ? NULL : &j->out, &j->out_len,
                                       j->want_profile ? &j->result : NULL, &j->sum, &j->err);
    }
    j->sha256[0] = 0;
    if (j->rc == 0 && !j->want_profile) {
        /* The digest names the base's ledger: computed here, on the pool, from the bytes. */
        uint8_t md[32];
        static const char hex[] = "0123456789abcdef";
        if (ap_digest("sha256", j->out, j->out_len, md) == 32) {
            for (int i = 0; i < 32; i++) {
                j->sha256[2 * i] = hex[md[i] >> 4];
                j->sha256[2 * i + 1] = hex[md[i] & 15];
            }
            j->sha256[64] = 0;
        }
    }
}

static void push_summary(lua_State *L, const merge_job *j)
{
    const ap_pprof_merge_summary *s = &j->sum;
    lua_createtable(L, 0, 10);
    if (j->sha256[0]) {
        lua_pushstring(L, j->sha256);
        lua_setfield(L, -2, "sha256");
    }
    set_int(L, s->inputs, "inputs");
    set_int(L, s->samples_in, "samples_in");
    set_int(L, s->samples, "samples");
    set_int(L, s->locations, "locations");
    set_int(L, s->functions, "functions");
    set_int(L, s->mappings, "mappings");
    set_int(L, (lua_Integer)s->bytes_in, "bytes_in");
    set_int(L, (lua_Integer)s->decompressed_in, "decompressed_in");
    set_int(L, (lua_Integer)s->bytes_out, "bytes_out");
    if (j->folder) {
        const ap_pprof_fold_stats *f = &j->fold;
        lua_createtable(L, 0, 7);
        set_int(L, f->segments, "segments");
        set_int(L, f->rewritten, "rewritten");
        set_int(L, f->touched, "touched");
        set_int(L, f->added, "added");
        set_int(L, (lua_Integer)f->raw_deflated, "raw_deflated");
        set_int(L, (lua_Integer)f->raw_total, "raw_total");
        lua_pushboolean(L, f->compacted);
        lua_setfield(L, -2, "compacted");
        lua_setfield(L, -2, "fold");
    }
    if (j->facts) {
        /* per input, what profile:info() would say of these fields (absent: not decoded) */
        lua_createtable(L, (int)j->n, 0);
        for (size_t i = 0; i < j->n; i++) {
            const ap_pprof_input_facts *f = &j->facts[i];
            if (!f->filled) continue;
            lua_createtable(L, 0, 4);
            set_int(L, f->time_nanos, "time_nanos");
            set_int(L, f->duration_nanos, "duration_nanos");
            set_int(L, f->samples, "samples");
            set_int(L, f->first_total, "first_total");
            lua_rawseti(L, -2, (lua_Integer)i + 1);
        }
        lua_setfield(L, -2, "facts");
    }
}

/* "input 2: ..." with 1-based indices, as Lua users count. */
static void push_merge_error(lua_State *L, const merge_job *j)
{
    const ap_pprof_error *e = &j->err;
    const char *code = ap_pprof_code_name(e->code);
    if (e->code == AP_PPROF_EINCOMPATIBLE && e->input >= 0)
        ap_push_error(L, code, "input %d is incompatible with input %d: %s", e->input + 1,
                      e->other + 1, e->msg);
    else if (e->input >= 0)
        ap_push_error(L, code, "input %d: %s", e->input + 1, e->msg);
    else
        ap_push_error(L, code, "%s", e->msg);
}

/* The structured failure: { code = "...", message = "..." (no code, no input prefix),
 * input = n, other = n } with 1-based input indices (absent when no input is to blame). */
static void push_failure(lua_State *L, const merge_job *j)
{
    const ap_pprof_error *e = &j->err;
    lua_createtable(L, 0, 4);
    lua_pushstring(L, ap_pprof_code_name(e->code));
    lua_setfield(L, -2, "code");
    lua_pushstring(L, e->msg);
    lua_setfield(L, -2, "message");
    if (e->input >= 0) set_int(L, e->input + 1, "input");
    if (e->code == AP_PPROF_EINCOMPATIBLE && e->input >= 0 && e->other >= 0)
        set_int(L, e->other + 1, "other");
}

/* merge: out, summary | nil, err, code, failure
 * merge_async's callback: nil, out, summary | err, nil, nil, failure
 * (each position means one thing whichever way the merge went). */
static int merge_push(lua_State *L, merge_job *j, int callback)
{
    if (j->rc) {
        if (callback) {
            push_merge_error(L, j);
            lua_pushnil(L);
            lua_pushnil(L);
        } else {
            lua_pushnil(L);
            push_merge_error(L, j);
            lua_pushstring(L, ap_pprof_code_name(j->err.code));
        }
        push_failure(L, j);
        return 4;
    }
    if (callback) lua_pushnil(L);
    if (j->want_profile) {
        push_profile(L, j->result);
        j->result = NULL;
    } else {
        lua_pushlstring(L, (const char *)j->out, j->out_len);
    }
    push_summary(L, j);
    return callback ? 3 : 2;
}

static void merge_cleanup(void *d)
{
    merge_job *j = d;
    for (size_t i = 0; i < j->nbusy; i++) release(j->busy[i], 0);
    if (j->folder) {
        j->folder->busy = 0;
        if (j->rc) {
            /* A failed fold may hold part of the uploads: the folder is spent. */
            ap_pprof_folder_free(j->folder->f);
            j->folder->f = NULL;
        }
    }
    ap_pprof_pruner_free(j->pruner);
    ap_pprof_profile_free(j->result);
    free(j->out);
    free(j->inputs);
    free(j->busy);
    free(j->facts);
    free(j);
}

static int merge_after(lua_State *L, void *d)
{
    return merge_push(L, d, 1);
}

static int do_merge(lua_State *L, int async)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    int has_opts = !lua_isnoneornil(L, 2);
    if (has_opts) luaL_checktype(L, 2, LUA_TTABLE);
    if (async) luaL_checktype(L, 3, LUA_TFUNCTION);
    lua_Integer n = luaL_len(L, 1);
    if (n < 1) return ap_fail(L, "INVALID_ARGUMENT", "no profiles to merge");
    if (n > 1000000) luaL_argerror(L, 1, "too many inputs");

    /* Check everything that can raise before allocating. */
    ap_pprof_limits lim = {0};
    ap_pprof_encode_opts eo = {.level = -1, .raw = 0, .threads = 0};
    int want_profile = 0;
    if (has_opts) {
        lua_getfield(L, 2, "limits");
        int t = lua_gettop(L);
        check_limits(L, t, &lim);
        lua_pop(L, 1);
        check_encode_opts(L, 2, &eo);
        lua_getfield(L, 2, "output");
        if (!lua_isnil(L, -1)) {
            const char *o = lua_tostring(L, -1);
            if (!o || (strcmp(o, "bytes") && strcmp(o, "profile")))
                luaL_argerror(L, 2, "output must be \"bytes\" or \"profile\"");
            want_profile = strcmp(o, "profile") == 0;
        }
        lua_pop(L, 1);
    }
    int want_facts = 0;
    if (has_opts) {
        lua_getfield(L, 2, "facts");
        want_facts = lua_toboolean(L, -1);
        lua_pop(L, 1);
    }
    lfolder *folder = NULL;
    if (has_opts) {
        lua_getfield(L, 2, "folder");
        if (!lua_isnil(L, -1)) {
            folder = luaL_testudata(L, -1, FOLDER_MT);
            if (!folder) luaL_argerror(L, 2, "folder must be a folder");
            if (want_profile) luaL_argerror(L, 2, "a fold gives bytes");
            if (!folder->f) return ap_fail(L, "CLOSED", "the folder is closed or spent");
            if (folder->busy) return ap_fail(L, "BUSY", "the folder is folding already");
        }
        lua_pop(L, 1);
    }
    /* Per-input scale (opts.scales[i], Go's Profile.Scale before merging; 1 when absent). */
    double *scales = lua_newuserdatauv(L, (size_t)n * sizeof *scales, 0);
    for (lua_Integer i = 0; i < n; i++) scales[i] = 1;
    if (has_opts) {
        lua_getfield(L, 2, "scales");
        if (!lua_isnil(L, -1)) {
            if (!lua_istable(L, -1)) luaL_argerror(L, 2, "scales must be a list of numbers");
            for (lua_Integer i = 1; i <= n; i++) {
                lua_geti(L, -1, i);
                if (!lua_isnil(L, -1)) {
                    int isnum = 0;
                    double v = lua_tonumberx(L, -1, &isnum);
                    if (!isnum || !(v >= 0) || v > 1e15)
                        luaL_argerror(L, 2, "scales[i] must be a number in 0..1e15");
                    scales[i - 1] = v;
                }
                lua_pop(L, 1);
            }
        }
        lua_pop(L, 1);
    }
    /* Input kinds: 0 bytes, 1 profile, 2 file path (the path string replaces its table). */
    unsigned char *kinds = lua_newuserdatauv(L, (size_t)n, 0);
    int base = lua_gettop(L);
    luaL_checkstack(L, (int)n + 8, "too many inputs");
    for (lua_Integer i = 1; i <= n; i++) {
        lua_geti(L, 1, i);
        kinds[i - 1] = 0;
        if (lua_type(L, -1) == LUA_TSTRING) continue;
        if (lua_type(L, -1) == LUA_TTABLE) {
            lua_getfield(L, -1, "file");
            if (lua_type(L, -1) != LUA_TSTRING)
                luaL_argerror(L, 1, lua_pushfstring(L, "input %d: file must be a string", (int)i));
            lua_remove(L, -2);
            kinds[i - 1] = 2;
            continue;
        }
        kinds[i - 1] = 1;
        lprofile *w = luaL_testudata(L, -1, PROFILE_MT);
        if (!w)
            luaL_argerror(
                L, 1, lua_pushfstring(L, "input %d is not a string, {file=} or profile", (int)i));
        if (w->closed || !w->p)
            return ap_fail(L, "CLOSED", "input %d: the profile is closed", (int)i);
        if (w->writer) return ap_fail(L, "BUSY", "input %d: the profile is being pruned", (int)i);
    }
    ap_pprof_pruner *pruner = NULL;
    if (has_opts) {
        lua_getfield(L, 2, "prune");
        int rc = compile_rules(L, lua_gettop(L), &pruner);
        if (rc) return rc;
        lua_pop(L, 1);
    }
    merge_job *j = calloc(1, sizeof *j);
    if (j) j->inputs = calloc((size_t)n, sizeof *j->inputs);
    if (j) j->busy = calloc((size_t)n, sizeof *j->busy);
    if (j && want_facts) j->facts = calloc((size_t)n, sizeof *j->facts);
    if (!j || !j->inputs || !j->busy || (want_facts && !j->facts)) {
        if (j) {
            free(j->inputs);
            free(j->busy);
            free(j->facts);
            free(j);
        }
        ap_pprof_pruner_free(pruner);
        return luaL_error(L, "out of memory");
    }
    j->n = (size_t)n;
    j->limits = lim;
    j->opts = eo;
    j->pruner = pruner;
    j->want_profile = want_profile;
    j->folder = folder;
    if (folder) folder->busy = 1;
    for (lua_Integer i = 1; i <= n; i++) {
        int idx = base + (int)i;
        /* 0 would mean "none" in ap_pprof_input: a zero scale is kept as the smallest one. */
        j->inputs[i - 1].scale = scales[i - 1] == 0 ? 1e-300 : scales[i - 1];
        if (j->facts) j->inputs[i - 1].facts = &j->facts[i - 1];
        if (kinds[i - 1] == 2) {
            /* Paths are read on the pool thread: the file's bytes never reach Lua. */
            j->inputs[i - 1].path = lua_tostring(L, idx);
        } else if (kinds[i - 1] == 0) {
            size_t len;
            j->inputs[i - 1].data = lua_tolstring(L, idx, &len);
            j->inputs[i - 1].len = len;
        } else {
            lprofile *w = lua_touserdata(L, idx);
            j->inputs[i - 1].profile = w->p;
            w->busy++;
            j->busy[j->nbusy++] = w;
        }
    }
    if (async) {
        /* Pin every input (the caller may drop or change its table meanwhile). */
        int *pins = malloc(((size_t)n + 1) * sizeof *pins);
        if (!pins) {
            merge_cleanup(j);
            return luaL_error(L, "out of memory");
        }
        for (lua_Integer i = 0; i < n; i++) pins[i] = base + 1 + (int)i;
        int npins = (int)n;
        if (folder) {
            lua_getfield(L, 2, "folder");
            pins[npins++] = lua_gettop(L);
        }
        ap_work_queue(L, 3, pins, npins, j, merge_work, merge_after, merge_cleanup);
        free(pins);
        lua_pushboolean(L, 1);
        return 1;
    }
    merge_work(j);
    int r = merge_push(L, j, 0);
    merge_cleanup(j);
    return r;
}

/* pprof.merge(inputs [, opts]) -> bytes|profile, summary | nil, err, code, failure
 * The one merge (ap_pprof_merge_encoded): CompatibilizeSampleTypes, Merge, Prune, Compact when
 * pruned, encode. summary.sha256 is the hex digest of the bytes; failure is
 * { code, message, input, other } (1-based input indices).
 * inputs: list of encoded profiles (strings), files ({file = path}, read on the thread pool)
 * and/or profile objects, merged in order.
 * opts: { prune = {{drop=, keep=}...}, limits = {...}, level = -1..9, raw = bool,
 *         scales = {number per input: Go's Profile.Scale of that input before merging},
 *         threads = n (0: automatic), output = "bytes" | "profile",
 *         facts = true: summary.facts[i] = { time_nanos, duration_nanos, samples, first_total }
 *         of each input as decoded (first_total: its first sample type's sum),
 *         folder = a folder (pprof.folder_async): the inputs are uploads folded into it (with
 *         the prune rules it was made with), summary.fold tells what was deflated again; a
 *         failure (INVALID_ARGUMENT when the uploads need a full merge) spends the folder } */
static int l_merge(lua_State *L)
{
    return do_merge(L, 0);
}

/* pprof.merge_async(inputs, opts|nil, cb(err, bytes|profile, summary, failure)) -> true */
static int l_merge_async(lua_State *L)
{
    return do_merge(L, 1);
}

/* pprof.check_rules(rules) -> true | nil, err, code */
static int l_check_rules(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    ap_pprof_pruner *pr;
    int rc = compile_rules(L, 1, &pr);
    if (rc) return rc;
    ap_pprof_pruner_free(pr);
    lua_pushboolean(L, 1);
    return 1;
}

/* pprof.simplify_func(name) -> string (pprof's simplifyFunc, as Prune matches names) */
static int l_simplify_func(lua_State *L)
{
    size_t len, st;
    const char *s = luaL_checklstring(L, 1, &len);
    size_t n = ap_pprof_simplify_func(s, len, &st);
    lua_pushlstring(L, s + st, n);
    return 1;
}

/* ---- profile methods ---- */

/* profile:info() -> table */
static int m_info(lua_State *L)
{
    ap_pprof_profile *p = usable(L, ap_check_profile(L, 1), 0);
    if (!p) return 3;
    int64_t *totals = lua_newuserdatauv(L, (p->nsample_type + 1) * sizeof *totals, 0);
    ap_pprof_totals(p, totals);
    push_info(L, p, totals);
    return 1;
}

/* profile:pgo() -> { usable, empty, reason, edges, total_weight, sample_type } */
static int m_pgo(lua_State *L)
{
    ap_pprof_profile *p = usable(L, ap_check_profile(L, 1), 0);
    if (!p) return 3;
    ap_pprof_pgo g;
    ap_pprof_error err;
    if (ap_pprof_pgo_check(p, &g, &err)) return fail_err(L, &err);
    push_pgo(L, &g);
    return 1;
}

/* profile:top([n [, {by = "flat"|"cum", sample_type = index|"type"}]]) -> list of
 * { name, filename, flat, cum } */
static int m_top(lua_State *L)
{
    ap_pprof_profile *p = usable(L, ap_check_profile(L, 1), 0);
    if (!p) return 3;
    lua_Integer n = luaL_optinteger(L, 2, 10);
    if (n < 0 || n > 100000) luaL_argerror(L, 2, "n must be in 0..100000");
    int by_cum = 0, index = ap_pprof_default_index(p);
    if (!lua_isnoneornil(L, 3)) {
        luaL_checktype(L, 3, LUA_TTABLE);
        lua_getfield(L, 3, "by");
        if (!lua_isnil(L, -1)) {
            const char *by = lua_tostring(L, -1);
            if (!by || (strcmp(by, "flat") && strcmp(by, "cum")))
                luaL_argerror(L, 3, "by must be \"flat\" or \"cum\"");
            by_cum = strcmp(by, "cum") == 0;
        }
        lua_pop(L, 1);
        lua_getfield(L, 3, "sample_type");
        if (lua_type(L, -1) == LUA_TNUMBER) {
            lua_Integer i = lua_tointeger(L, -1);
            if (i < 1 || i > p->nsample_type) luaL_argerror(L, 3, "no such sample_type index");
            index = (int)i - 1;
        } else if (lua_type(L, -1) == LUA_TSTRING) {
            size_t len;
            const char *t = lua_tolstring(L, -1, &len);
            index = -1;
            for (uint32_t i = 0; i < p->nsample_type && index < 0; i++) {
                const ap_pprof_str *s = &p->strings[p->sample_type[2 * i]];
                if (s->len == len && memcmp(s->ptr, t, len) == 0) index = (int)i;
            }
            if (index < 0) luaL_argerror(L, 3, "no such sample_type");
        }
        lua_pop(L, 1);
    }
    ap_pprof_top_entry *e = lua_newuserdatauv(L, ((size_t)n + 1) * sizeof *e, 0);
    int got = ap_pprof_top(p, index, by_cum, e, (size_t)n);
    if (got < 0) return ap_fail(L, "NOMEM", "out of memory");
    lua_createtable(L, got, 0);
    for (int i = 0; i < got; i++) {
        const ap_pprof_function *f = &p->functions[e[i].function];
        lua_createtable(L, 0, 4);
        set_str(L, p, f->name, "name");
        set_str(L, p, f->filename, "filename");
        set_int(L, e[i].flat, "flat");
        set_int(L, e[i].cum, "cum");
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}

typedef struct {
    lprofile *w;
    int writer;
    ap_pprof_encode_opts opts;
    ap_pprof_pruner *pruner;
    uint8_t *out;
    size_t len;
    ap_pprof_error err;
    int rc;
} profile_job;

static void encode_work(void *d)
{
    profile_job *j = d;
    j->rc = ap_pprof_encode(j->w->p, &j->opts, &j->out, &j->len, &j->err);
}

static int encode_after(lua_State *L, void *d)
{
    profile_job *j = d;
    if (j->rc) {
        push_err(L, &j->err);
        return 1;
    }
    lua_pushnil(L);
    lua_pushlstring(L, (const char *)j->out, j->len);
    return 2;
}

static void job_cleanup(void *d)
{
    profile_job *j = d;
    release(j->w, j->writer);
    free(j->out);
    ap_pprof_pruner_free(j->pruner);
    free(j);
}

/* profile:encode([{level = -1..9, raw = bool, threads = n}]) -> bytes */
static int m_encode(lua_State *L)
{
    lprofile *w = ap_check_profile(L, 1);
    ap_pprof_encode_opts o;
    check_encode_opts(L, 2, &o);
    ap_pprof_profile *p = usable(L, w, 0);
    if (!p) return 3;
    uint8_t *out;
    size_t len;
    ap_pprof_error err;
    if (ap_pprof_encode(p, &o, &out, &len, &err)) return fail_err(L, &err);
    /* Copy into a Lua string; free the buffer even if that raises. */
    luaL_Buffer b;
    char *dst = luaL_buffinitsize(L, &b, len);
    memcpy(dst, out, len);
    free(out);
    luaL_pushresultsize(&b, len);
    return 1;
}

/* profile:encode_async(opts|nil, cb(err, bytes)) -> true */
static int m_encode_async(lua_State *L)
{
    lprofile *w = ap_check_profile(L, 1);
    ap_pprof_encode_opts o;
    check_encode_opts(L, 2, &o);
    luaL_checktype(L, 3, LUA_TFUNCTION);
    if (!usable(L, w, 0)) return 3;
    profile_job *j = calloc(1, sizeof *j);
    if (!j) return luaL_error(L, "out of memory");
    j->w = w;
    j->opts = o;
    w->busy++;
    int pins[] = {1};
    ap_work_queue(L, 3, pins, 1, j, encode_work, encode_after, job_cleanup);
    lua_pushboolean(L, 1);
    return 1;
}

static void prune_work(void *d)
{
    profile_job *j = d;
    j->rc = ap_pprof_prune(j->w->p, j->pruner, &j->err);
}

static int prune_after(lua_State *L, void *d)
{
    profile_job *j = d;
    if (j->rc) {
        push_err(L, &j->err);
        return 1;
    }
    lua_pushnil(L);
    lua_pushboolean(L, 1);
    return 2;
}

/* profile:prune(rules) -> true (Profile.Prune for each {drop=, keep=} in order) */
static int m_prune(lua_State *L)
{
    lprofile *w = ap_check_profile(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    ap_pprof_profile *p = usable(L, w, 1);
    if (!p) return 3;
    ap_pprof_pruner *pr;
    int rc = compile_rules(L, 2, &pr);
    if (rc) return rc;
    ap_pprof_error err;
    rc = ap_pprof_prune(p, pr, &err);
    ap_pprof_pruner_free(pr);
    if (rc) return fail_err(L, &err);
    lua_pushboolean(L, 1);
    return 1;
}

/* profile:prune_async(rules, cb(err, true)) -> true */
static int m_prune_async(lua_State *L)
{
    lprofile *w = ap_check_profile(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    luaL_checktype(L, 3, LUA_TFUNCTION);
    if (!usable(L, w, 1)) return 3;
    ap_pprof_pruner *pr;
    int rc = compile_rules(L, 2, &pr);
    if (rc) return rc;
    profile_job *j = calloc(1, sizeof *j);
    if (!j) {
        ap_pprof_pruner_free(pr);
        return luaL_error(L, "out of memory");
    }
    j->w = w;
    j->pruner = pr;
    /* A prune writes the profile: nothing else may use it meanwhile. */
    j->writer = 1;
    w->writer = 1;
    w->busy++;
    int pins[] = {1};
    ap_work_queue(L, 3, pins, 1, j, prune_work, prune_after, job_cleanup);
    lua_pushboolean(L, 1);
    return 1;
}

/* profile:rename_functions(fn(name) -> new_name|nil) -> count
 * Calls fn once per distinct function name; a returned string renames every function of that
 * name (ap_pprof_rename_function: its system name too when it was the same). */
static int m_rename_functions(lua_State *L)
{
    lprofile *w = ap_check_profile(L, 1);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    ap_pprof_profile *p = usable(L, w, 1);
    if (!p) return 3;
    /* New name per name string index (0 = not asked yet, 1 = keep, else index + 2). */
    uint32_t n0 = p->nstrings;
    uint32_t *memo = lua_newuserdatauv(L, (size_t)(n0 ? n0 : 1) * sizeof *memo, 0);
    memset(memo, 0, (size_t)(n0 ? n0 : 1) * sizeof *memo);
    lua_Integer count = 0;
    ap_pprof_error err;
    ap_pprof_error_clear(&err);
    /* While Lua code runs, the profile counts as written: other methods and jobs wait. */
    w->busy++;
    w->writer = 1;
    int status = 0; /* 0 ok, 1 Lua error (on the stack), 2 closed, 3 rename failed, 4 bad result */
    for (uint32_t f = 0; f < p->nfunctions && !status; f++) {
        uint32_t name = p->functions[f].name;
        if (name >= n0) continue; /* a name added by this call */
        if (memo[name] == 0) {
            lua_pushvalue(L, 2);
            const ap_pprof_str *s = &p->strings[name];
            lua_pushlstring(L, s->ptr, s->len);
            if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
                status = 1;
                break;
            }
            if (w->closed) {
                status = 2;
                break;
            }
            memo[name] = 1;
            if (lua_type(L, -1) == LUA_TSTRING) {
                size_t len;
                const char *nn = lua_tolstring(L, -1, &len);
                s = &p->strings[name];
                if (len != s->len || memcmp(nn, s->ptr, len)) {
                    if (ap_pprof_rename_function(p, f, nn, len, &err)) {
                        status = 3;
                        break;
                    }
                    memo[name] = p->functions[f].name + 2;
                    count++;
                    lua_pop(L, 1);
                    continue;
                }
            } else if (!lua_isnil(L, -1)) {
                status = 4;
                break;
            }
            lua_pop(L, 1);
        } else if (memo[name] >= 2) {
            const ap_pprof_str *ns = &p->strings[memo[name] - 2];
            if (ap_pprof_rename_function(p, f, ns->ptr, ns->len, &err)) {
                status = 3;
                break;
            }
            count++;
        }
    }
    release(w, 1);
    switch (status) {
    case 1:
        return lua_error(L);
    case 2:
        return ap_fail(L, "CLOSED", "the profile was closed by the rename function");
    case 3:
        return fail_err(L, &err);
    case 4:
        return luaL_error(L, "rename_functions: the function returned a %s, not a string",
                          luaL_typename(L, -1));
    }
    lua_pushinteger(L, count);
    return 1;
}

/* profile:drop_labels(key, ...) -> count of label values removed */
static int m_drop_labels(lua_State *L)
{
    lprofile *w = ap_check_profile(L, 1);
    int top = lua_gettop(L);
    for (int i = 2; i <= top; i++) luaL_checkstring(L, i);
    ap_pprof_profile *p = usable(L, w, 1);
    if (!p) return 3;
    uint64_t total = 0;
    for (int i = 2; i <= top; i++) {
        size_t len;
        const char *k = lua_tolstring(L, i, &len);
        total += ap_pprof_drop_label(p, k, len);
    }
    lua_pushinteger(L, (lua_Integer)total);
    return 1;
}

/* profile:close() -> true: frees it now, or when a running async job ends; later calls fail
 * with CLOSED. Also the profile's __close. */
static int m_close(lua_State *L)
{
    lprofile *w = ap_check_profile(L, 1);
    w->closed = 1;
    if (!w->busy) {
        ap_pprof_profile_free(w->p);
        w->p = NULL;
    }
    lua_pushboolean(L, 1);
    return 1;
}

static int mm_gc(lua_State *L)
{
    lprofile *w = ap_check_profile(L, 1);
    /* Jobs pin the userdata, so a collected profile is never busy. */
    ap_pprof_profile_free(w->p);
    w->p = NULL;
    return 0;
}

static int mm_tostring(lua_State *L)
{
    lprofile *w = ap_check_profile(L, 1);
    if (w->closed || !w->p)
        lua_pushstring(L, "autopgo.profile (closed)");
    else
        lua_pushfstring(L, "autopgo.profile (%d samples, %d locations, %d functions)",
                        (int)w->p->nsamples, (int)w->p->nlocations, (int)w->p->nfunctions);
    return 1;
}

/* ---- folders ---- */

typedef struct {
    const char *data;
    size_t len;
    ap_pprof_limits limits;
    ap_pprof_pruner *pruner;
    int level;
    ap_pprof_folder *f;
    ap_pprof_error err;
} folder_job;

static void folder_work(void *d)
{
    folder_job *j = d;
    j->f = ap_pprof_folder_new(j->data, j->len, &j->limits, j->pruner, j->level, &j->err);
}

static int folder_after(lua_State *L, void *d)
{
    folder_job *j = d;
    if (!j->f) {
        push_err(L, &j->err);
        return 1;
    }
    lua_pushnil(L);
    lfolder *w = ap_new_udata(L, sizeof *w, FOLDER_MT);
    w->f = j->f;
    j->f = NULL;
    return 2;
}

static void folder_cleanup(void *d)
{
    folder_job *j = d;
    ap_pprof_folder_free(j->f);
    ap_pprof_pruner_free(j->pruner);
    free(j);
}

/* pprof.folder_async(base, opts|nil, cb(err, folder)) -> true
 * A folder over base (encoded bytes) for merge_async's opts.folder: base pruned with opts.prune
 * (the rules every fold into it uses) and laid out in segments written at opts.level. */
static int l_folder_async(lua_State *L)
{
    size_t len;
    const char *data = luaL_checklstring(L, 1, &len);
    int has_opts = !lua_isnoneornil(L, 2);
    if (has_opts) luaL_checktype(L, 2, LUA_TTABLE);
    luaL_checktype(L, 3, LUA_TFUNCTION);
    ap_pprof_limits lim = {0};
    ap_pprof_encode_opts eo = {.level = -1};
    ap_pprof_pruner *pruner = NULL;
    if (has_opts) {
        lua_getfield(L, 2, "limits");
        check_limits(L, lua_gettop(L), &lim);
        lua_pop(L, 1);
        check_encode_opts(L, 2, &eo);
        lua_getfield(L, 2, "prune");
        int rc = compile_rules(L, lua_gettop(L), &pruner);
        if (rc) return rc;
        lua_pop(L, 1);
    }
    folder_job *j = calloc(1, sizeof *j);
    if (!j) {
        ap_pprof_pruner_free(pruner);
        return luaL_error(L, "out of memory");
    }
    j->data = data;
    j->len = len;
    j->limits = lim;
    j->pruner = pruner;
    j->level = eo.level;
    int pin = 1;
    ap_work_queue(L, 3, &pin, 1, j, folder_work, folder_after, folder_cleanup);
    lua_pushboolean(L, 1);
    return 1;
}

static lfolder *ap_check_folder(lua_State *L, int idx)
{
    return luaL_checkudata(L, idx, FOLDER_MT);
}

/* folder:close() -> true (a folder folding now is freed when its job ends) */
static int f_close(lua_State *L)
{
    lfolder *w = ap_check_folder(L, 1);
    if (w->busy) return ap_fail(L, "BUSY", "the folder is folding");
    ap_pprof_folder_free(w->f);
    w->f = NULL;
    lua_pushboolean(L, 1);
    return 1;
}

static int f_gc(lua_State *L)
{
    lfolder *w = ap_check_folder(L, 1);
    ap_pprof_folder_free(w->f); /* jobs pin the userdata: a collected folder is idle */
    w->f = NULL;
    return 0;
}

static int f_tostring(lua_State *L)
{
    lfolder *w = ap_check_folder(L, 1);
    lua_pushstring(L, w->f ? "autopgo.folder" : "autopgo.folder (closed)");
    return 1;
}

int ap_open_pprof(lua_State *L)
{
    static const luaL_Reg methods[] = {
        {"info", m_info},
        {"pgo", m_pgo},
        {"top", m_top},
        {"encode", m_encode},
        {"encode_async", m_encode_async},
        {"prune", m_prune},
        {"prune_async", m_prune_async},
        {"rename_functions", m_rename_functions},
        {"drop_labels", m_drop_labels},
        {"close", m_close},
        {NULL, NULL},
    };
    static const luaL_Reg meta[] = {
        {"__gc", mm_gc},
        {"__close", m_close},
        {"__tostring", mm_tostring},
        {NULL, NULL},
    };
    static const luaL_Reg funcs[] = {
        {"decode", l_decode},
        {"decode_async", l_decode_async},
        {"validate", l_validate},
        {"validate_async", l_validate_async},
        {"merge", l_merge},
        {"merge_async", l_merge_async},
        {"folder_async", l_folder_async},
        {"check_rules", l_check_rules},
        {"simplify_func", l_simplify_func},
        {NULL, NULL},
    };
    ap_register_type(L, PROFILE_MT, methods, meta);
    static const luaL_Reg folder_methods[] = {{"close", f_close}, {NULL, NULL}};
    static const luaL_Reg folder_meta[] = {
        {"__gc", f_gc},
        {"__close", f_close},
        {"__tostring", f_tostring},
        {NULL, NULL},
    };
    ap_register_type(L, FOLDER_MT, folder_methods, folder_meta);
    luaL_newlib(L, funcs);
    lua_createtable(L, 0, 2);
    set_int(L, (lua_Integer)AP_PPROF_DEFAULT_MAX_DECOMPRESSED, "max_decompressed");
    set_int(L, (lua_Integer)AP_PPROF_DEFAULT_MAX_MEMORY, "max_memory");
    lua_setfield(L, -2, "default_limits");
    return 1;
}
