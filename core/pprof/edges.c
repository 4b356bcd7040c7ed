/* The compiler's view of a profile: Go 1.23's named edge map (FromPProf / FromSerialized), its
 * two serialized forms (a minimal pprof and GO PREPROFILE V1) and the decisions derived from it
 * (inline/inl.go hotNodesFromCDF, devirtualize/pgo.go's hottest callee). */
#include "edges.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "internal.h"

static const char header[] = "GO PREPROFILE V1\n";
#define HEADER_LEN (sizeof header - 1)

static int nomem(ap_pprof_error *err)
{
    return ap_pprof_fail(err, AP_PPROF_ENOMEM, "out of memory building the PGO edge map");
}

void ap_pgo_edges_free(ap_pgo_edges *e)
{
    if (!e) return;
    free(e->edges);
    free(e->names);
    free(e);
}

/* Appends a NUL-terminated copy of s; returns its offset or SIZE_MAX when out of memory. */
static size_t add_name(ap_pgo_edges *e, const char *s, size_t len)
{
    if (e->names_len + len + 1 > e->names_cap) {
        size_t nc = (e->names_len + len + 1) * 2 + 256;
        char *nb = realloc(e->names, nc);
        if (!nb) return SIZE_MAX;
        e->names = nb;
        e->names_cap = nc;
    }
    size_t off = e->names_len;
    if (len) memcpy(e->names + off, s, len);
    e->names[off + len] = 0;
    e->names_len += len + 1;
    return off;
}

static int push_edge(ap_pgo_edges *e, const ap_pgo_edge *x)
{
    if (e->n == e->cap) {
        size_t nc = e->cap * 2 + 64;
        ap_pgo_edge *nb = realloc(e->edges, nc * sizeof *nb);
        if (!nb) return -1;
        e->edges = nb;
        e->cap = nc;
    }
    e->edges[e->n++] = *x;
    return 0;
}

static int cmp_bytes(const char *a, size_t la, const char *b, size_t lb)
{
    size_t m = la < lb ? la : lb;
    int c = m ? memcmp(a, b, m) : 0;
    if (c) return c;
    return la < lb ? -1 : la > lb;
}

/* qsort has no context argument; the names buffer of the map being sorted. */
static _Thread_local const char *sort_names;

static int cmp_key(const ap_pgo_edge *a, const ap_pgo_edge *b)
{
    int c = cmp_bytes(sort_names + a->caller, a->caller_len, sort_names + b->caller, b->caller_len);
    if (c) return c;
    c = cmp_bytes(sort_names + a->callee, a->callee_len, sort_names + b->callee, b->callee_len);
    if (c) return c;
    return a->offset < b->offset ? -1 : a->offset > b->offset;
}

/* cmd/internal/pgo sortByWeight: heavier first, then caller, callee, offset. */
static int by_weight(const void *x, const void *y)
{
    const ap_pgo_edge *a = x, *b = y;
    if (a->weight != b->weight) return a->weight > b->weight ? -1 : 1;
    return cmp_key(a, b);
}

static int by_key(const void *x, const void *y)
{
    return cmp_key(x, y);
}

static void sort_edges(ap_pgo_edges *e, int (*cmp)(const void *, const void *))
{
    sort_names = e->names;
    if (e->n > 1) qsort(e->edges, e->n, sizeof *e->edges, cmp);
    sort_names = NULL;
}

static ap_pgo_edges *edges_new(void)
{
    ap_pgo_edges *e = calloc(1, sizeof *e);
    if (e && add_name(e, "", 0) == SIZE_MAX) { /* offset 0 is the empty name */
        free(e);
        return NULL;
    }
    return e;
}

int ap_pgo_edges_from_profile(const ap_pprof_profile *p, ap_pgo_edges **out, ap_pprof_error *err)
{
    *out = NULL;
    ap_pgo_edges *e = edges_new();
    if (!e) return nomem(err);
    ap_pprof_pgo chk;
    ap_pprof_named_edge *list = NULL;
    size_t *name_off = NULL;
    if (ap_pprof_pgo_graph(p, &chk, &list, err)) goto fail;
    e->usable = chk.usable;
    e->empty = chk.empty;
    e->total_weight = chk.empty ? 0 : chk.total_weight;
    memcpy(e->reason, chk.reason, sizeof e->reason);
    e->kind = AP_PGO_SAMPLES_COUNT;
    if (chk.value_index >= 0) {
        const ap_pprof_str *t = &p->strings[p->sample_type[2 * chk.value_index]];
        if (ap_str_eq(t, "cpu", 3)) e->kind = AP_PGO_CPU_NANOSECONDS;
    }
    if (list) {
        name_off = malloc(((size_t)p->nstrings + 1) * sizeof *name_off);
        if (!name_off) goto oom;
        memset(name_off, 0xff, ((size_t)p->nstrings + 1) * sizeof *name_off);
        for (uint64_t i = 0; i < chk.edges; i++) {
            ap_pgo_edge x;
            memset(&x, 0, sizeof x);
            uint32_t ids[2] = {list[i].caller, list[i].callee};
            size_t *offs[2] = {&x.caller, &x.callee};
            uint32_t *lens[2] = {&x.caller_len, &x.callee_len};
            for (int k = 0; k < 2; k++) {
                if (ids[k] == AP_PPROF_NONE) { /* a location without lines: Go's "" */
                    *offs[k] = 0;
                    *lens[k] = 0;
                    continue;
                }
                const ap_pprof_str *s = &p->strings[ids[k]];
                if (name_off[ids[k]] == SIZE_MAX) {
                    name_off[ids[k]] = add_name(e, s->ptr, s->len);
                    if (name_off[ids[k]] == SIZE_MAX) goto oom;
                }
                *offs[k] = name_off[ids[k]];
                *lens[k] = s->len;
            }
            x.offset = list[i].offset;
            x.weight = list[i].weight;
            if (push_edge(e, &x)) goto oom;
        }
        sort_edges(e, by_weight);
    }
    free(list);
    free(name_off);
    *out = e;
    return 0;
oom:
    nomem(err);
fail:
    free(list);
    free(name_off);
    ap_pgo_edges_free(e);
    return -1;
}

/* strconv.ParseInt(s, 10, 64): optional sign, decimal digits, in range. */
static int parse_int(const char *s, size_t len, int64_t *out)
{
    size_t i = 0;
    int neg = 0;
    if (i < len && (s[i] == '+' || s[i] == '-')) neg = s[i++] == '-';
    if (i == len) return -1;
    uint64_t v = 0, lim = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
    for (; i < len; i++) {
        if (s[i] < '0' || s[i] > '9') return -1;
        unsigned d = (unsigned)(s[i] - '0');
        if (v > (lim - d) / 10) return -1;
        v = v * 10 + d;
    }
    *out = neg ? (int64_t)(0 - v) : (int64_t)v;
    return 0;
}

/* bufio.ScanLines: the next line without its "\n" and a "\r" before it; 0 at the end. */
static int next_line(const char **p, const char *end, const char **line, size_t *len)
{
    if (*p >= end) return 0;
    const char *nl = memchr(*p, '\n', (size_t)(end - *p));
    const char *stop = nl ? nl : end;
    *line = *p;
    *len = (size_t)(stop - *p);
    if (*len && (*line)[*len - 1] == '\r') (*len)--;
    *p = nl ? nl + 1 : end;
    return 1;
}

int ap_pgo_edges_from_preprofile(const void *data, size_t len, ap_pgo_edges **out,
                                 ap_pprof_error *err)
{
    *out = NULL;
    const char *p = data, *end = p + len, *line;
    size_t ll;
    if (!next_line(&p, end, &line, &ll))
        return ap_pprof_fail(err, AP_PPROF_EMALFORMED, "preprocessed profile missing header");
    if (ll != HEADER_LEN - 1 || memcmp(line, header, ll) != 0)
        return ap_pprof_fail(err, AP_PPROF_EMALFORMED,
                             "preprocessed profile malformed header (want GO PREPROFILE V1)");
    ap_pgo_edges *e = edges_new();
    if (!e) return nomem(err);
    e->usable = 1;
    e->preprofile = 1;
    e->kind = AP_PGO_SAMPLES_COUNT;
    size_t entry = 0;
    while (next_line(&p, end, &line, &ll)) {
        ap_pgo_edge x;
        memset(&x, 0, sizeof x);
        entry++;
        if ((x.caller = add_name(e, line, ll)) == SIZE_MAX) goto oom;
        x.caller_len = (uint32_t)ll;
        if (!next_line(&p, end, &line, &ll)) {
            ap_pprof_fail(err, AP_PPROF_EMALFORMED, "preprocessed profile entry %zu missing callee",
                          entry);
            goto fail;
        }
        if ((x.callee = add_name(e, line, ll)) == SIZE_MAX) goto oom;
        x.callee_len = (uint32_t)ll;
        if (!next_line(&p, end, &line, &ll)) {
            ap_pprof_fail(err, AP_PPROF_EMALFORMED, "preprocessed profile entry %zu missing weight",
                          entry);
            goto fail;
        }
        const char *sp = memchr(line, ' ', ll);
        if (!sp || memchr(sp + 1, ' ', ll - (size_t)(sp - line) - 1)) {
            ap_pprof_fail(err, AP_PPROF_EMALFORMED,
                          "preprocessed profile entry %zu: want \"offset weight\"", entry);
            goto fail;
        }
        if (parse_int(line, (size_t)(sp - line), &x.offset) ||
            parse_int(sp + 1, ll - (size_t)(sp - line) - 1, &x.weight)) {
            ap_pprof_fail(err, AP_PPROF_EMALFORMED,
                          "preprocessed profile entry %zu: bad offset or weight", entry);
            goto fail;
        }
        if (push_edge(e, &x)) goto oom;
        e->total_weight = ap_add_wrap(e->total_weight, x.weight);
    }
    /* Duplicates are an error for the compiler; find them on a sorted copy. */
    if (e->n > 1) {
        ap_pgo_edge *copy = malloc(e->n * sizeof *copy);
        if (!copy) goto oom;
        memcpy(copy, e->edges, e->n * sizeof *copy);
        sort_names = e->names;
        qsort(copy, e->n, sizeof *copy, by_key);
        sort_names = e->names;
        int dup = 0;
        for (size_t i = 1; i < e->n && !dup; i++) dup = cmp_key(&copy[i - 1], &copy[i]) == 0;
        sort_names = NULL;
        free(copy);
        if (dup) {
            ap_pprof_fail(err, AP_PPROF_EMALFORMED,
                          "preprocessed profile contains a duplicate edge");
            goto fail;
        }
    }
    if (e->total_weight == 0) {
        e->empty = 1;
        snprintf(e->reason, sizeof e->reason,
                 "no weighted call edges: accepted, but there is nothing to optimise");
    }
    *out = e;
    return 0;
oom:
    nomem(err);
fail:
    ap_pgo_edges_free(e);
    return -1;
}

int ap_pgo_edges_load(const void *data, size_t len, const ap_pprof_limits *limits,
                      ap_pgo_edges **out, ap_pprof_error *err)
{
    *out = NULL;
    if (len >= HEADER_LEN && memcmp(data, header, HEADER_LEN) == 0)
        return ap_pgo_edges_from_preprofile(data, len, out, err);
    ap_pprof_profile *p = len ? ap_pprof_decode(data, len, limits, err) : NULL;
    if (!p) {
        /* No bytes, or a gzip stream of none: Go's ErrNoData, an empty profile to the loader. */
        if (len &&
            !(err->code == AP_PPROF_EMALFORMED && (strcmp(err->msg, AP_PPROF_EMPTY_INPUT) == 0 ||
                                                   strcmp(err->msg, AP_PPROF_EMPTY_GZIP) == 0)))
            return -1;
        ap_pgo_edges *e = edges_new();
        if (!e) return nomem(err);
        e->usable = e->empty = 1;
        snprintf(e->reason, sizeof e->reason,
                 "empty file: accepted, but there is nothing to optimise");
        *out = e;
        return 0;
    }
    int rc = ap_pgo_edges_from_profile(p, out, err);
    ap_pprof_profile_free(p);
    return rc;
}

long ap_pgo_edges_no_inline(ap_pgo_edges *e, const char *const *names, const size_t *lens, size_t n,
                            ap_pprof_error *err)
{
    static const char suffix[] = AP_PGO_NO_INLINE_SUFFIX;
    const size_t slen = sizeof suffix - 1;
    long renamed = 0;
    size_t *done = calloc(n ? n : 1, sizeof *done); /* renamed offset + 1 per listed name */
    char *buf = NULL;
    if (!done) return nomem(err);
    for (size_t i = 0; i < e->n; i++) {
        ap_pgo_edge *x = &e->edges[i];
        for (size_t k = 0; k < n; k++) {
            if (cmp_bytes(e->names + x->callee, x->callee_len, names[k], lens[k]) != 0) continue;
            if (!done[k]) {
                free(buf);
                buf = malloc(lens[k] + slen);
                if (!buf) goto oom;
                memcpy(buf, names[k], lens[k]);
                memcpy(buf + lens[k], suffix, slen);
                size_t off = add_name(e, buf, lens[k] + slen);
                if (off == SIZE_MAX) goto oom;
                done[k] = off + 1;
            }
            x->callee = done[k] - 1;
            x->callee_len = (uint32_t)(lens[k] + slen);
            renamed++;
            break;
        }
    }
    free(buf);
    free(done);
    if (renamed) {
        /* Sum edges the renaming made equal, then restore Go's order. */
        sort_edges(e, by_key);
        size_t w = 0;
        for (size_t i = 0; i < e->n; i++) {
            sort_names = e->names;
            int same = w > 0 && cmp_key(&e->edges[w - 1], &e->edges[i]) == 0;
            sort_names = NULL;
            if (same)
                e->edges[w - 1].weight = ap_add_wrap(e->edges[w - 1].weight, e->edges[i].weight);
            else
                e->edges[w++] = e->edges[i];
        }
        e->n = w;
        sort_edges(e, by_weight);
    }
    return renamed;
oom:
    free(buf);
    free(done);
    nomem(err);
    return -1;
}

int ap_pgo_write_preprofile(const ap_pgo_edges *e, uint8_t **out, size_t *len, ap_pprof_error *err)
{
    *out = NULL;
    *len = 0;
    if (!e->usable)
        return ap_pprof_fail(err, AP_PPROF_EINVAL, "profile cannot be used by go build -pgo: %s",
                             e->reason);
    size_t n = e->empty ? 0 : e->n, cap = HEADER_LEN + 1;
    for (size_t i = 0; i < n; i++) cap += e->edges[i].caller_len + e->edges[i].callee_len + 44;
    uint8_t *b = malloc(cap), *w = b;
    if (!b) return nomem(err);
    memcpy(w, header, HEADER_LEN);
    w += HEADER_LEN;
    for (size_t i = 0; i < n; i++) {
        const ap_pgo_edge *x = &e->edges[i];
        memcpy(w, e->names + x->caller, x->caller_len);
        w += x->caller_len;
        *w++ = '\n';
        memcpy(w, e->names + x->callee, x->callee_len);
        w += x->callee_len;
        *w++ = '\n';
        w += snprintf((char *)w, 44, "%" PRId64 " %" PRId64 "\n", x->offset, x->weight);
    }
    *out = b;
    *len = (size_t)(w - b);
    return 0;
}

/* ---- the minimal profile ---- */

/* A (function, line) location, found through an open-addressing table. */
typedef struct {
    uint32_t fn;
    int64_t line;
} loc_key;

typedef struct {
    loc_key *keys;
    uint32_t *ids; /* location index + 1, 0 = free */
    size_t cap;
} loc_table;

static uint32_t loc_find(loc_table *t, ap_pprof_profile *p, uint32_t fn, int64_t line,
                         ap_pprof_status *st)
{
    loc_key k;
    memset(&k, 0, sizeof k);
    k.fn = fn;
    k.line = line;
    size_t mask = t->cap - 1;
    size_t j = ap_hash_bytes(&k, sizeof k, 3) & mask;
    for (; t->ids[j]; j = (j + 1) & mask)
        if (t->keys[j].fn == fn && t->keys[j].line == line) return t->ids[j] - 1;
    uint32_t li = p->nlocations, ni = p->nlines;
    if (ap_pprof_grow(p, (void **)&p->locations, &p->cap_locations, sizeof *p->locations,
                      (uint64_t)li + 1, st) ||
        ap_pprof_grow(p, (void **)&p->lines, &p->cap_lines, sizeof *p->lines, (uint64_t)ni + 1, st))
        return AP_PPROF_NONE;
    ap_pprof_location *l = &p->locations[li];
    memset(l, 0, sizeof *l);
    l->id = li + 1;
    l->mapping = AP_PPROF_NONE;
    l->line_off = ni;
    l->nline = 1;
    ap_pprof_line *ln = &p->lines[ni];
    memset(ln, 0, sizeof *ln);
    ln->function = fn;
    ln->line = line;
    p->nlocations++;
    p->nlines++;
    t->keys[j] = k;
    t->ids[j] = li + 1;
    return li;
}

static int add_sample(ap_pprof_profile *p, const uint32_t *locs, uint32_t nloc, int64_t v,
                      ap_pprof_status *st)
{
    if (ap_pprof_grow(p, (void **)&p->samples, &p->cap_samples, sizeof *p->samples,
                      (uint64_t)p->nsamples + 1, st) ||
        ap_pprof_grow_sz(p, (void **)&p->sample_locs, &p->cap_sample_locs, sizeof *p->sample_locs,
                         (uint64_t)p->nsample_locs + nloc, st) ||
        ap_pprof_grow_sz(p, (void **)&p->values, &p->cap_values, sizeof *p->values,
                         (uint64_t)p->nsamples + 1, st))
        return -1;
    ap_pprof_sample *s = &p->samples[p->nsamples];
    memset(s, 0, sizeof *s);
    s->loc_off = p->nsample_locs;
    s->nloc = nloc;
    memcpy(p->sample_locs + p->nsample_locs, locs, nloc * sizeof *locs);
    p->nsample_locs += nloc;
    p->values[p->nsamples++] = v;
    return 0;
}

typedef struct {
    loc_key at[2];    /* caller, callee frames */
    uint32_t locs[2]; /* their locations: callee (leaf) first */
    int64_t weight;
} sample_plan;

static int loc_order(const void *x, const void *y)
{
    const loc_key *a = x, *b = y;
    if (a->fn != b->fn) return a->fn < b->fn ? -1 : 1;
    return a->line < b->line ? -1 : a->line > b->line;
}

static int sample_order(const void *x, const void *y)
{
    const sample_plan *a = x, *b = y;
    if (a->locs[1] != b->locs[1]) return a->locs[1] < b->locs[1] ? -1 : 1;
    return a->locs[0] < b->locs[0] ? -1 : a->locs[0] > b->locs[0];
}

/* Name reference r of the map: edge r / 2, its caller (even) or callee (odd). */
static void ref_name(const ap_pgo_edges *e, size_t r, const char **name, uint32_t *len)
{
    const ap_pgo_edge *x = &e->edges[r >> 1];
    *name = e->names + ((r & 1) ? x->callee : x->caller);
    *len = (r & 1) ? x->callee_len : x->caller_len;
}

static _Thread_local const ap_pgo_edges *sort_map;

static int name_order(const void *a, const void *b)
{
    const char *na, *nb;
    uint32_t la, lb;
    ref_name(sort_map, *(const size_t *)a, &na, &la);
    ref_name(sort_map, *(const size_t *)b, &nb, &lb);
    int c = cmp_bytes(na, la, nb, lb);
    if (c) return c;
    /* a total order, so qsort's result does not depend on its algorithm */
    return *(const size_t *)a < *(const size_t *)b ? -1 : 1;
}

/* Every function starts at this line: only line - start reaches the compiler. */
#define MIN_START_LINE 1

int ap_pgo_minimal_profile(const ap_pgo_edges *e, ap_pprof_profile **out, ap_pprof_error *err)
{
    *out = NULL;
    if (!e->usable)
        return ap_pprof_fail(err, AP_PPROF_EINVAL, "profile cannot be used by go build -pgo: %s",
                             e->reason);
    ap_pprof_status st = AP_PPROF_ENOMEM;
    ap_pprof_profile *p = ap_pprof_profile_new();
    int64_t *cum = NULL, *flat = NULL;
    uint8_t *caller_side = NULL;
    loc_table t = {0};
    sample_plan *plan = NULL;
    loc_key *keys = NULL;
    int64_t *min_line = NULL; /* per function: its lowest caller frame line */
    uint8_t *has_min = NULL;
    if (!p) return nomem(err);
    static const char *const types[2][2] = {{"samples", "count"}, {"cpu", "nanoseconds"}};
    const char *const *ty = types[e->kind == AP_PGO_CPU_NANOSECONDS];
    uint32_t s0 = ap_pprof_intern(p, ty[0], strlen(ty[0]));
    uint32_t s1 = ap_pprof_intern(p, ty[1], strlen(ty[1]));
    if (s0 == AP_PPROF_NONE || s1 == AP_PPROF_NONE ||
        ap_pprof_grow(p, (void **)&p->sample_type, &p->cap_sample_type, 2 * sizeof(uint32_t), 1,
                      &st))
        goto fail;
    p->sample_type[0] = s0;
    p->sample_type[1] = s1;
    p->nsample_type = 1;
    size_t n = e->empty ? 0 : e->n;
    if (n == 0) goto done;

    /* Functions are keyed by name through the profile's intern table. */
    t.cap = (size_t)ap_pow2((uint64_t)n * 4 + 16);
    t.keys = malloc(t.cap * sizeof *t.keys);
    t.ids = calloc(t.cap, sizeof *t.ids);
    if (!t.keys || !t.ids) goto fail;
    /* One function per name, created in name order (so the string table comes out sorted,
     * which gzip likes). str_fn: string index -> function index + 1. */
    uint32_t *str_fn = NULL;
    size_t *order = malloc(2 * n * sizeof *order);
    uint32_t *uniq = malloc(2 * n * sizeof *uniq);
    size_t nuniq = 0;
    if (!order || !uniq) goto fail_order;
    for (size_t i = 0; i < 2 * n; i++) order[i] = i;
    sort_map = e;
    qsort(order, 2 * n, sizeof *order, name_order);
    sort_map = NULL;
    for (size_t i = 0; i < 2 * n; i++) {
        const char *nm;
        uint32_t len;
        ref_name(e, order[i], &nm, &len);
        if (i > 0) {
            const char *pn;
            uint32_t pl;
            ref_name(e, order[i - 1], &pn, &pl);
            if (cmp_bytes(nm, len, pn, pl) == 0) continue;
        }
        uint32_t si = len ? ap_pprof_intern(p, nm, len) : 0;
        if (si == AP_PPROF_NONE) goto fail_order;
        uniq[nuniq++] = si;
    }
    str_fn = calloc(p->nstrings, sizeof *str_fn);
    if (!str_fn) goto fail_order;
    for (size_t i = 0; i < nuniq; i++) {
        uint32_t fi = p->nfunctions;
        if (ap_pprof_grow(p, (void **)&p->functions, &p->cap_functions, sizeof *p->functions,
                          (uint64_t)fi + 1, &st))
            goto fail_order;
        ap_pprof_function *f = &p->functions[fi];
        memset(f, 0, sizeof *f);
        f->id = fi + 1;
        f->name = uniq[i];
        f->start_line = MIN_START_LINE;
        p->nfunctions++;
        str_fn[uniq[i]] = fi + 1;
    }
    free(order);
    free(uniq);
    order = NULL;
    uniq = NULL;
    /* Locations are created in (function, line) order and samples in (caller, callee) location
     * order: neither order reaches the compiler, and regular ids compress better. */
    plan = malloc(n * sizeof *plan);
    keys = malloc(2 * n * sizeof *keys);
    min_line = malloc((p->nfunctions ? p->nfunctions : 1) * sizeof *min_line);
    has_min = calloc(p->nfunctions ? p->nfunctions : 1, 1);
    if (!plan || !keys || !min_line || !has_min) goto fail_fn;
    for (size_t i = 0; i < n; i++) {
        const ap_pgo_edge *x = &e->edges[i];
        uint32_t fns[2];
        for (int k = 0; k < 2; k++) {
            const char *nm;
            uint32_t len;
            ref_name(e, 2 * i + (size_t)k, &nm, &len);
            uint32_t si = len ? ap_pprof_intern(p, nm, len) : 0;
            if (si == AP_PPROF_NONE) goto fail_fn;
            fns[k] = str_fn[si] - 1;
        }
        /* The caller frame sits at start + offset. */
        int64_t cline = (int64_t)((uint64_t)MIN_START_LINE + (uint64_t)x->offset);
        memset(&plan[i], 0, sizeof plan[i]);
        plan[i].at[0].fn = fns[0];
        plan[i].at[0].line = cline;
        plan[i].at[1].fn = fns[1];
        plan[i].weight = x->weight;
        if (!has_min[fns[0]] || cline < min_line[fns[0]]) min_line[fns[0]] = cline;
        has_min[fns[0]] = 1;
    }
    /* The callee frame's line does not matter: reuse one of the callee's caller frames (its
     * lowest), so most callees need no location of their own; but it must be another graph node
     * than this sample's caller frame (a recursive call). */
    for (size_t i = 0; i < n; i++) {
        uint32_t g = plan[i].at[1].fn;
        int64_t eline = has_min[g] ? min_line[g] : MIN_START_LINE;
        if (g == plan[i].at[0].fn && eline == plan[i].at[0].line)
            eline = eline == MIN_START_LINE ? MIN_START_LINE + 1 : MIN_START_LINE;
        plan[i].at[1].line = eline;
        keys[2 * i] = plan[i].at[0];
        keys[2 * i + 1] = plan[i].at[1];
    }
    qsort(keys, 2 * n, sizeof *keys, loc_order);
    for (size_t i = 0; i < 2 * n; i++)
        if (loc_find(&t, p, keys[i].fn, keys[i].line, &st) == AP_PPROF_NONE) goto fail_fn;
    for (size_t i = 0; i < n; i++) { /* all found: no allocation */
        plan[i].locs[1] = loc_find(&t, p, plan[i].at[0].fn, plan[i].at[0].line, &st);
        plan[i].locs[0] = loc_find(&t, p, plan[i].at[1].fn, plan[i].at[1].line, &st);
    }
    qsort(plan, n, sizeof *plan, sample_order);
    for (size_t i = 0; i < n; i++) {
        if (plan[i].weight != 0) {
            if (add_sample(p, plan[i].locs, 2, plan[i].weight, &st)) goto fail_fn;
        } else {
            /* An edge of weight zero still exists in Go's map: two samples that cancel. */
            if (add_sample(p, plan[i].locs, 2, 1, &st) || add_sample(p, plan[i].locs, 2, -1, &st))
                goto fail_fn;
        }
    }
    free(plan);
    free(keys);
    free(min_line);
    free(has_min);
    plan = NULL;
    keys = NULL;
    min_line = NULL;
    has_min = NULL;
    free(str_fn);
    str_fn = NULL;

    /* NewGraph drops nodes whose flat and cumulative weights are both zero, and their edges with
     * them; weights that cancel (negative samples) could do that to a caller here. A one-frame
     * sample of weight 1 keeps such a node without adding an edge. Each location is one node. */
    cum = calloc(p->nlocations, sizeof *cum);
    flat = calloc(p->nlocations, sizeof *flat);
    caller_side = calloc(p->nlocations, 1);
    if (!cum || !flat || !caller_side) goto fail;
    uint32_t nsamp = p->nsamples;
    for (uint32_t i = 0; i < nsamp; i++) {
        const ap_pprof_sample *s = &p->samples[i];
        const uint32_t *l = p->sample_locs + s->loc_off;
        int64_t v = p->values[i];
        cum[l[0]] = ap_add_wrap(cum[l[0]], v);
        cum[l[1]] = ap_add_wrap(cum[l[1]], v);
        flat[l[0]] = ap_add_wrap(flat[l[0]], v);
        caller_side[l[1]] = 1;
    }
    for (uint32_t li = 0; li < p->nlocations; li++)
        if (caller_side[li] && cum[li] == 0 && flat[li] == 0 && add_sample(p, &li, 1, 1, &st))
            goto fail;
done:
    free(t.keys);
    free(t.ids);
    free(cum);
    free(flat);
    free(caller_side);
    *out = p;
    return 0;
fail_order:
    free(order);
    free(uniq);
fail_fn:
    free(str_fn);
    free(plan);
    free(keys);
    free(min_line);
    free(has_min);
fail:
    free(t.keys);
    free(t.ids);
    free(cum);
    free(flat);
    free(caller_side);
    ap_pprof_profile_free(p);
    if (st == AP_PPROF_ETOOLARGE) return ap_pprof_fail(err, st, "the minimal profile is too large");
    return nomem(err);
}

/* ---- decisions ---- */

void ap_pgo_decisions_free(ap_pgo_decisions *d)
{
    free(d->cum);
    free(d->hot_callees);
    free(d->sites);
    memset(d, 0, sizeof *d);
}

static _Thread_local const ap_pgo_edges *site_map;

/* Call sites: by caller, then offset (to group), used before the weight order. */
static int site_key(const void *x, const void *y)
{
    const ap_pgo_edge *a = &site_map->edges[*(const size_t *)x];
    const ap_pgo_edge *b = &site_map->edges[*(const size_t *)y];
    const char *nm = site_map->names;
    int c = cmp_bytes(nm + a->caller, a->caller_len, nm + b->caller, b->caller_len);
    if (c) return c;
    if (a->offset != b->offset) return a->offset < b->offset ? -1 : 1;
    /* within a site: heaviest first, then the lexicographically first callee */
    if (a->weight != b->weight) return a->weight > b->weight ? -1 : 1;
    return cmp_bytes(nm + a->callee, a->callee_len, nm + b->callee, b->callee_len);
}

static int callee_order(const void *x, const void *y)
{
    size_t i = *(const size_t *)x, j = *(const size_t *)y;
    const ap_pgo_edge *a = &site_map->edges[i], *b = &site_map->edges[j];
    int c = cmp_bytes(site_map->names + a->callee, a->callee_len, site_map->names + b->callee,
                      b->callee_len);
    if (c) return c;
    return i < j ? -1 : i > j;
}

static int size_order(const void *x, const void *y)
{
    size_t i = *(const size_t *)x, j = *(const size_t *)y;
    return i < j ? -1 : i > j;
}

static int site_order(const void *x, const void *y)
{
    const ap_pgo_site *a = x, *b = y;
    if (a->weight != b->weight) return a->weight > b->weight ? -1 : 1;
    const ap_pgo_edge *ea = &site_map->edges[a->edge], *eb = &site_map->edges[b->edge];
    const char *nm = site_map->names;
    int c = cmp_bytes(nm + ea->caller, ea->caller_len, nm + eb->caller, eb->caller_len);
    if (c) return c;
    return ea->offset < eb->offset ? -1 : ea->offset > eb->offset;
}

int ap_pgo_decide(const ap_pgo_edges *e, double threshold, ap_pgo_decisions *d, ap_pprof_error *err)
{
    memset(d, 0, sizeof *d);
    d->threshold = threshold;
    size_t n = e->empty ? 0 : e->n;
    size_t *idx = NULL;
    d->cum = malloc((n ? n : 1) * sizeof *d->cum);
    d->hot_callees = malloc((n ? n : 1) * sizeof *d->hot_callees);
    d->sites = malloc((n ? n : 1) * sizeof *d->sites);
    idx = malloc((n ? n : 1) * sizeof *idx);
    if (!d->cum || !d->hot_callees || !d->sites || !idx) goto oom;

    /* hotNodesFromCDF, with Go's float64 arithmetic: the edge that crosses is included. */
    int64_t cum = 0;
    d->nhot = n;
    int crossed = 0;
    for (size_t i = 0; i < n; i++) {
        cum = ap_add_wrap(cum, e->edges[i].weight);
        double pct = ((double)cum / (double)e->total_weight) * 100;
        d->cum[i] = pct;
        if (!crossed && pct > threshold) {
            crossed = 1;
            d->nhot = i + 1;
            d->thres_from_cdf = ((double)e->edges[i].weight / (double)e->total_weight) * 100;
        }
    }

    /* Hot callees, distinct by name, in order of first appearance: sort the hot edges by
     * (callee, position), keep the first of each name, then put those back in position order. */
    for (size_t i = 0; i < d->nhot; i++) idx[i] = i;
    site_map = e;
    if (d->nhot > 1) qsort(idx, d->nhot, sizeof *idx, callee_order);
    site_map = NULL;
    for (size_t i = 0; i < d->nhot; i++) {
        const ap_pgo_edge *x = &e->edges[idx[i]];
        if (i > 0) {
            const ap_pgo_edge *y = &e->edges[idx[i - 1]];
            if (cmp_bytes(e->names + x->callee, x->callee_len, e->names + y->callee,
                          y->callee_len) == 0)
                continue;
        }
        d->hot_callees[d->nhot_callees++] = idx[i];
    }
    if (d->nhot_callees > 1) qsort(d->hot_callees, d->nhot_callees, sizeof(size_t), size_order);

    /* Call sites and their hottest callee. */
    for (size_t i = 0; i < n; i++) idx[i] = i;
    site_map = e;
    if (n > 1) qsort(idx, n, sizeof *idx, site_key);
    for (size_t i = 0; i < n;) {
        const ap_pgo_edge *first = &e->edges[idx[i]];
        ap_pgo_site s = {idx[i], 0, 0, 0};
        size_t j = i;
        for (; j < n; j++) {
            const ap_pgo_edge *y = &e->edges[idx[j]];
            if (y->offset != first->offset ||
                cmp_bytes(e->names + y->caller, y->caller_len, e->names + first->caller,
                          first->caller_len) != 0)
                break;
            s.callees++;
            if (y->weight == first->weight) s.ties++;
            s.weight = ap_add_wrap(s.weight, y->weight);
        }
        d->sites[d->nsites++] = s;
        i = j;
    }
    if (d->nsites > 1) qsort(d->sites, d->nsites, sizeof *d->sites, site_order);
    site_map = NULL;
    free(idx);
    return 0;
oom:
    free(idx);
    ap_pgo_decisions_free(d);
    return nomem(err);
}
