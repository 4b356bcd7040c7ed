/* Go's postDecode + CheckValid over a freshly decoded profile: every string index in range,
 * ids non-zero and unique, every reference found (a location's mapping may dangle, as in Go),
 * values per sample equal to the sample types. Ids become indices. Messages start with the words
 * of Go's Parse: a bad string index fails postDecode, so Parse tries its legacy parsers and says
 * "parsing profile: unrecognized profile format"; the rest is CheckValid's "malformed profile". */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

#include "decode.h"

/* id -> index + 1: a dense array for ids up to n (what Go does) and a hash map above. Inserts
 * overwrite, like Go's postDecode, so lookups see the last entry with an id. A table numbered
 * 1..n in order (what runtimes and Go's encoder write) needs neither: the id is the answer. */
typedef struct {
    int seq;
    uint32_t *dense;
    uint64_t ndense;
    uint64_t *keys;
    uint32_t *vals;
    uint64_t cap;
} idmap;

static int idmap_init(idmap *m, uint64_t n)
{
    memset(m, 0, sizeof *m);
    m->ndense = n + 1;
    m->dense = calloc(m->ndense, sizeof *m->dense);
    return m->dense ? 0 : -1;
}

/* For a table whose ids are 1..n in order: no zero, no repeat, nothing to store. */
static void idmap_seq(idmap *m, uint64_t n)
{
    memset(m, 0, sizeof *m);
    m->seq = 1;
    m->ndense = n + 1;
}

static void idmap_free(idmap *m)
{
    free(m->dense);
    free(m->keys);
    free(m->vals);
}

static inline uint32_t idmap_get(const idmap *m, uint64_t id)
{
    if (m->seq) return id - 1 < m->ndense - 1 ? (uint32_t)id : 0;
    if (id < m->ndense) return m->dense[id];
    if (!m->cap) return 0;
    uint64_t mask = m->cap - 1;
    for (uint64_t j = ap_hash_u64(id) & mask;; j = (j + 1) & mask) {
        if (!m->vals[j]) return 0;
        if (m->keys[j] == id) return m->vals[j];
    }
}

/* Returns the previous value for id (0 if none), or UINT32_MAX on allocation failure. */
static uint32_t idmap_put(idmap *m, uint64_t id, uint32_t val, uint64_t expected)
{
    if (id < m->ndense) {
        uint32_t old = m->dense[id];
        m->dense[id] = val;
        return old;
    }
    if (!m->cap) {
        m->cap = ap_pow2(expected * 2 + 16);
        m->keys = malloc(m->cap * sizeof *m->keys);
        m->vals = calloc(m->cap, sizeof *m->vals);
        if (!m->keys || !m->vals) return UINT32_MAX;
    }
    uint64_t mask = m->cap - 1;
    for (uint64_t j = ap_hash_u64(id) & mask;; j = (j + 1) & mask) {
        if (!m->vals[j]) {
            m->keys[j] = id;
            m->vals[j] = val;
            return 0;
        }
        if (m->keys[j] == id) {
            uint32_t old = m->vals[j];
            m->vals[j] = val;
            return old;
        }
    }
}

/* The map of a table of n entries of `stride` bytes with their id at `off`, and in *bad
 * the first entry with id 0 or an id seen before (unchanged if none). -1 when out of memory
 * (the map is then freed). */
static int idmap_build(idmap *m, const void *table, size_t stride, size_t off, uint32_t n,
                       int64_t *bad)
{
#define AP_ID(i) (*(const uint64_t *)((const char *)table + (size_t)(i)*stride + off))
    uint32_t i = 0;
    while (i < n && AP_ID(i) == (uint64_t)i + 1) i++;
    if (i == n) {
        idmap_seq(m, n);
        return 0;
    }
    if (idmap_init(m, n)) return -1;
    for (i = 0; i < n; i++) {
        uint64_t id = AP_ID(i);
        uint32_t old = idmap_put(m, id, i + 1, n);
        if (old == UINT32_MAX) {
            idmap_free(m);
            return -1;
        }
        if (*bad < 0 && (id == 0 || old)) *bad = i;
    }
    return 0;
#undef AP_ID
}

typedef struct {
    const ap_pprof_profile *p;
    ap_pprof_error *err;
    int failed;
} strcheck;

/* Go's getString: the index must be within the string table. */
static int check_str(strcheck *c, uint32_t idx, const char *fmt, uint64_t n, const char *field)
{
    if (c->failed || idx < c->p->nstrings) return 0;
    char where[96];
    snprintf(where, sizeof where, fmt, (unsigned long long)n);
    c->failed = 1;
    if (idx == AP_DEC_BADSTR)
        return ap_pprof_fail(c->err, AP_PPROF_EMALFORMED,
                             "parsing profile: unrecognized profile format (%s: %s: string "
                             "index is negative or too large)",
                             where, field);
    return ap_pprof_fail(c->err, AP_PPROF_EMALFORMED,
                         "parsing profile: unrecognized profile format (%s: %s: string index "
                         "%u out of range: the string table has %u entries)",
                         where, field, idx, c->p->nstrings);
}

/* The largest string index the profile refers to (doc_url aside): when it is in range, every
 * check below passes and their order does not matter. A label's unused fields are 0. */
static uint32_t max_string_index(const ap_dec *d)
{
    const ap_pprof_profile *p = d->p;
    uint32_t mx = 0;
#define AP_MAX(v) mx = (v) > mx ? (v) : mx
    for (uint32_t i = 0; i < p->nmappings; i++) {
        AP_MAX(p->mappings[i].file);
        AP_MAX(p->mappings[i].build_id);
    }
    for (uint32_t i = 0; i < p->nfunctions; i++) {
        AP_MAX(p->functions[i].name);
        AP_MAX(p->functions[i].system_name);
        AP_MAX(p->functions[i].filename);
    }
    for (uint32_t i = 0; i < 2 * p->nsample_type; i++) AP_MAX(p->sample_type[i]);
    for (uint32_t i = 0; i < p->nlabels; i++) {
        AP_MAX(p->labels[i].key);
        AP_MAX(p->labels[i].str);
        AP_MAX(p->labels[i].unit);
    }
    for (size_t i = 0; i < d->ndropped_keys; i++) AP_MAX(d->dropped_keys[i]);
    for (size_t i = 0; i < d->ncomments; i++) {
        uint64_t v = d->comments[i];
        AP_MAX(v >= AP_DEC_BADSTR ? AP_DEC_BADSTR : (uint32_t)v);
    }
    AP_MAX(p->drop_frames);
    AP_MAX(p->keep_frames);
    AP_MAX(p->period_type[0]);
    AP_MAX(p->period_type[1]);
    AP_MAX(p->default_sample_type);
#undef AP_MAX
    return mx;
}

static int check_strings(ap_dec *d, ap_pprof_error *err)
{
    ap_pprof_profile *p = d->p;
    strcheck c = {p, err, 0};
    /* doc_url is unknown to Debian's pprof: a bad index there is ignored, not rejected. */
    if (max_string_index(d) < p->nstrings) {
        if (p->doc_url >= p->nstrings) p->doc_url = 0;
        return 0;
    }
    /* Something is out of range: find the first, in Go's order, for the message. */
    for (uint32_t i = 0; i < p->nmappings && !c.failed; i++) {
        check_str(&c, p->mappings[i].file, "mapping #%llu", i, "filename");
        check_str(&c, p->mappings[i].build_id, "mapping #%llu", i, "build_id");
    }
    for (uint32_t i = 0; i < p->nfunctions && !c.failed; i++) {
        check_str(&c, p->functions[i].name, "function #%llu", i, "name");
        check_str(&c, p->functions[i].system_name, "function #%llu", i, "system_name");
        check_str(&c, p->functions[i].filename, "function #%llu", i, "filename");
    }
    for (uint32_t i = 0; i < p->nsample_type && !c.failed; i++) {
        check_str(&c, p->sample_type[2 * i], "sample_type #%llu", i, "type");
        check_str(&c, p->sample_type[2 * i + 1], "sample_type #%llu", i, "unit");
    }
    for (uint32_t i = 0; i < p->nsamples && !c.failed; i++) {
        const ap_pprof_sample *s = &p->samples[i];
        for (uint32_t j = 0; j < s->nlabel && !c.failed; j++) {
            const ap_pprof_label *l = &p->labels[s->label_off + j];
            check_str(&c, l->key, "sample #%llu: label", i, "key");
            if (!(l->flags & AP_PPROF_LABEL_NUM))
                check_str(&c, l->str, "sample #%llu: label", i, "str");
            else if (l->flags & AP_PPROF_LABEL_UNIT_SET)
                check_str(&c, l->unit, "sample #%llu: label", i, "num_unit");
        }
    }
    for (size_t i = 0; i < d->ndropped_keys && !c.failed; i++)
        check_str(&c, d->dropped_keys[i], "label #%llu without a value", i, "key");
    check_str(&c, p->drop_frames, "profile%.0llu", 0, "drop_frames");
    check_str(&c, p->keep_frames, "profile%.0llu", 0, "keep_frames");
    check_str(&c, p->period_type[0], "period_type%.0llu", 0, "type");
    check_str(&c, p->period_type[1], "period_type%.0llu", 0, "unit");
    for (size_t i = 0; i < d->ncomments && !c.failed; i++) {
        uint64_t v = d->comments[i];
        check_str(&c, v >= AP_DEC_BADSTR ? AP_DEC_BADSTR : (uint32_t)v, "comment #%llu", i, "text");
    }
    check_str(&c, p->default_sample_type, "profile%.0llu", 0, "default_sample_type");
    /* doc_url is unknown to Debian's pprof: a bad index there is ignored, not rejected. */
    if (p->doc_url >= p->nstrings) p->doc_url = 0;
    return c.failed ? -1 : 0;
}

static int oom(ap_pprof_error *err)
{
    return ap_pprof_fail(err, AP_PPROF_ENOMEM, "out of memory while resolving references");
}

int ap_dec_resolve(ap_dec *d, ap_pprof_error *err)
{
    ap_pprof_profile *p = d->p;
    int rc = -1;
    idmap maps, funcs, locs;
    int have_maps = 0, have_funcs = 0, have_locs = 0;

    if (p->nstrings == 0)
        return ap_pprof_fail(err, AP_PPROF_EMALFORMED,
                             "parsing profile: unrecognized profile format (no string table: "
                             "every profile has at least the empty string)");
    if (check_strings(d, err)) return -1;

    /* Comments become string indices. */
    if (d->ncomments) {
        ap_pprof_status st;
        if (ap_pprof_grow(p, (void **)&p->comments, &p->cap_comments, sizeof *p->comments,
                          d->ncomments, &st))
            return ap_pprof_fail(err, st, "too many comments");
        for (size_t i = 0; i < d->ncomments; i++) p->comments[i] = (uint32_t)d->comments[i];
        p->ncomments = (uint32_t)d->ncomments;
    }

    /* Build the maps (last id wins, as in Go) and note the first zero or repeated id of each
     * table; they are reported in CheckValid's order below. */
    int64_t bad_map = -1, bad_func = -1, bad_loc = -1;
    if (idmap_build(&maps, p->mappings, sizeof *p->mappings, offsetof(ap_pprof_mapping, id),
                    p->nmappings, &bad_map))
        goto nomem;
    have_maps = 1;
    if (idmap_build(&funcs, p->functions, sizeof *p->functions, offsetof(ap_pprof_function, id),
                    p->nfunctions, &bad_func))
        goto nomem;
    have_funcs = 1;
    if (idmap_build(&locs, p->locations, sizeof *p->locations, offsetof(ap_pprof_location, id),
                    p->nlocations, &bad_loc))
        goto nomem;
    have_locs = 1;

    /* Samples: value counts and locations (ids resolved to indices in place). */
    if (p->nsample_type == 0 && p->nsamples != 0) {
        ap_pprof_fail(err, AP_PPROF_EMALFORMED,
                      "malformed profile: missing sample type information (%u samples, no "
                      "sample types)",
                      p->nsamples);
        goto out;
    }
    {
        /* Runtimes and Go's encoder number locations 1..n in order: then an id is its index
         * plus one and needs no lookup. */
        uint32_t nl = p->nlocations;
        int seq = locs.seq;
        if (d->wide) {
            ap_pprof_status st;
            if (ap_pprof_grow_sz(p, (void **)&d->locs32, &d->cap_locs32, sizeof *d->locs32,
                                 d->nlocids, &st)) {
                ap_pprof_fail(err, st, "too many sample locations");
                goto out;
            }
        }
        uint32_t *a = d->locs32;
        /* The common case needs no pass over the ids: the decoder stored each id minus one,
         * which is its index when locations are numbered 1..n, and every id was found when the
         * largest is in range; then only the value counts are left to check (flat). Anything
         * else is found, in Go's order, by the loop below. */
        int fast = seq && !d->wide && (d->nlocids == 0 || d->locmax < nl);
        if (fast) {
            uint32_t nst = p->nsample_type, bad = 0;
            for (uint32_t i = 0; i < p->nsamples; i++) bad |= d->nval[i] ^ nst;
            fast = bad == 0;
        }
        for (uint32_t i = 0; i < p->nsamples && !fast; i++) {
            const ap_pprof_sample *s = &p->samples[i];
            if (d->nval[i] != p->nsample_type) {
                ap_pprof_fail(
                    err, AP_PPROF_EMALFORMED,
                    "malformed profile: sample #%u: has %u values but there are %u sample "
                    "types",
                    i, d->nval[i], p->nsample_type);
                goto out;
            }
            for (uint32_t j = 0; j < s->nloc; j++) {
                size_t k = (size_t)s->loc_off + j;
                uint64_t id = d->wide ? d->locs64[k] : (uint32_t)(a[k] + 1);
                uint32_t x;
                if (seq && id - 1 < nl)
                    x = (uint32_t)id;
                else
                    x = id ? idmap_get(&locs, id) : 0;
                if (!x) {
                    ap_pprof_fail(err, AP_PPROF_EMALFORMED,
                                  "malformed profile: sample #%u: location id %llu not found", i,
                                  (unsigned long long)id);
                    goto out;
                }
                a[k] = x - 1;
            }
        }
        p->nsample_locs = (uint32_t)d->nlocids;
    }

    if (bad_map >= 0) {
        const ap_pprof_mapping *m = &p->mappings[bad_map];
        if (m->id == 0)
            ap_pprof_fail(err, AP_PPROF_EMALFORMED,
                          "malformed profile: mapping #%lld: id 0 is reserved", (long long)bad_map);
        else
            ap_pprof_fail(err, AP_PPROF_EMALFORMED,
                          "malformed profile: mapping #%lld: duplicate id %llu", (long long)bad_map,
                          (unsigned long long)m->id);
        goto out;
    }
    if (bad_func >= 0) {
        const ap_pprof_function *f = &p->functions[bad_func];
        if (f->id == 0)
            ap_pprof_fail(err, AP_PPROF_EMALFORMED,
                          "malformed profile: function #%lld: id 0 is reserved",
                          (long long)bad_func);
        else
            ap_pprof_fail(err, AP_PPROF_EMALFORMED,
                          "malformed profile: function #%lld: duplicate id %llu",
                          (long long)bad_func, (unsigned long long)f->id);
        goto out;
    }
    for (uint32_t i = 0; i < p->nlocations; i++) {
        ap_pprof_location *l = &p->locations[i];
        if ((int64_t)i == bad_loc) {
            if (l->id == 0)
                ap_pprof_fail(err, AP_PPROF_EMALFORMED,
                              "malformed profile: location #%u: id 0 is reserved", i);
            else
                ap_pprof_fail(err, AP_PPROF_EMALFORMED,
                              "malformed profile: location #%u: duplicate id %llu", i,
                              (unsigned long long)l->id);
            goto out;
        }
        /* A mapping id that is 0 or not found leaves the location without a mapping. */
        uint64_t mid = d->mapids[i];
        uint32_t m = mid ? idmap_get(&maps, mid) : 0;
        l->mapping = m ? m - 1 : AP_PPROF_NONE;
        for (uint32_t j = 0; j < l->nline; j++) {
            uint64_t fid = d->fnids[l->line_off + j];
            uint32_t f = fid ? idmap_get(&funcs, fid) : 0;
            if (!f) {
                if (fid == 0)
                    ap_pprof_fail(err, AP_PPROF_EMALFORMED,
                                  "malformed profile: location id %llu: line %u: no function id",
                                  (unsigned long long)l->id, j);
                else
                    ap_pprof_fail(err, AP_PPROF_EMALFORMED,
                                  "malformed profile: location id %llu: line %u: function id %llu "
                                  "not found",
                                  (unsigned long long)l->id, j, (unsigned long long)fid);
                goto out;
            }
            p->lines[l->line_off + j].function = f - 1;
        }
    }
    rc = 0;
    goto out;

nomem:
    oom(err);
out:
    if (have_maps) idmap_free(&maps);
    if (have_funcs) idmap_free(&funcs);
    if (have_locs) idmap_free(&locs);
    return rc;
}

ap_pprof_profile *ap_pprof_decode(const void *data, size_t len, const ap_pprof_limits *limits,
                                  ap_pprof_error *err)
{
    ap_pprof_profile *p = ap_pprof_profile_new();
    if (!p) {
        ap_pprof_fail(err, AP_PPROF_ENOMEM, "out of memory");
        return NULL;
    }
    if (ap_pprof_decode_into(p, data, len, limits, err)) {
        ap_pprof_profile_free(p);
        return NULL;
    }
    ap_pprof_profile_shrink(p);
    return p;
}

int ap_pprof_decode_into(ap_pprof_profile *p, const void *data, size_t len,
                         const ap_pprof_limits *limits, ap_pprof_error *err)
{
    uint64_t max_dec = limits && limits->max_decompressed ? limits->max_decompressed
                                                          : AP_PPROF_DEFAULT_MAX_DECOMPRESSED;
    uint64_t max_mem =
        limits && limits->max_memory ? limits->max_memory : AP_PPROF_DEFAULT_MAX_MEMORY;
    ap_pprof_error_clear(err);
    ap_pprof_profile_clear(p);
    p->mem_limit = p->mem_used + max_mem;
    ap_dec d;
    memset(&d, 0, sizeof d);
    d.p = p;
    d.locs32 = p->sample_locs;
    d.cap_locs32 = p->cap_sample_locs;
    p->sample_locs = NULL;
    p->cap_sample_locs = 0;
    int rc = ap_dec_wire(&d, data, len, max_dec, err);
    if (rc == 0) rc = ap_dec_resolve(&d, err);
    ap_dec_free(&d);
    p->mem_limit = 0;
    if (rc) {
        ap_pprof_profile_clear(p);
        return -1;
    }
    return 0;
}
