/* The flame graph and top table of a profile as JSON for the web view (see flame.h): the call
 * tree by function name is built from the distinct stacks sorted by their frames, then the
 * heaviest nodes are kept up to a node budget and the rest folded into "(other)". */
#include "flame.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* ---- a growable output buffer ---- */

typedef struct {
    char *buf;
    size_t len, cap;
    int failed;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n)
{
    if (b->failed) return;
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n) cap *= 2;
        char *nb = realloc(b->buf, cap);
        if (!nb) {
            b->failed = 1;
            return;
        }
        b->buf = nb;
        b->cap = cap;
    }
    memcpy(b->buf + b->len, s, n);
    b->len += n;
}

static void sb_str(sbuf *b, const char *s)
{
    sb_put(b, s, strlen(s));
}

static void sb_int(sbuf *b, int64_t v)
{
    char tmp[32];
    int n = snprintf(tmp, sizeof tmp, "%" PRId64, v);
    sb_put(b, tmp, (size_t)n);
}

/* A JSON string of at most `max` bytes of s (0: whole), cut on a UTF-8 boundary. Control
 * characters and invalid bytes become '?', so an escaped byte is at most two. */
static void sb_json_str(sbuf *b, const char *s, size_t n, size_t max)
{
    if (max && n > max) {
        n = max;
        while (n > 0 && ((unsigned char)s[n] & 0xc0) == 0x80) n--;
    }
    sb_put(b, "\"", 1);
    size_t start = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        const char *rep = NULL;
        if (c == '"')
            rep = "\\\"";
        else if (c == '\\')
            rep = "\\\\";
        else if (c < 0x20 || c == 0x7f)
            rep = "?";
        if (rep) {
            sb_put(b, s + start, i - start);
            sb_str(b, rep);
            start = i + 1;
        }
    }
    sb_put(b, s + start, n - start);
    sb_put(b, "\"", 1);
}

/* ---- names ---- */

/* Frames are named by function name (pprof's default granularity): the canonical index of the
 * name string; a location without lines is nstrings ("<unknown>") or nstrings + 1 + its mapping's
 * file name string ("[file]"), as pprof names them. Ids fit 2 * nstrings + 1. */
typedef struct {
    const ap_pprof_profile *p;
    uint32_t *canon;   /* NULL when the strings are unique */
    uint32_t *loc_off; /* the frames of location l are ids[loc_off[l] .. loc_off[l + 1]), */
    uint32_t *ids;     /* outermost first: one sequential read per frame on the hot walk */
} names;

static uint32_t fn_name(const names *nm, uint32_t function)
{
    uint32_t s = nm->p->functions[function].name;
    return nm->canon ? nm->canon[s] : s;
}

static void sb_name(sbuf *b, const names *nm, uint32_t id, size_t max)
{
    const ap_pprof_profile *p = nm->p;
    if (id < p->nstrings) {
        const ap_pprof_str *s = &p->strings[id];
        sb_json_str(b, s->ptr, s->len, max);
        return;
    }
    if (id == p->nstrings) {
        sb_json_str(b, "<unknown>", 9, max);
        return;
    }
    /* "[" + base name of the mapping's file + "]", as pprof's NodeInfo.PrintableName */
    const ap_pprof_str *f = &p->strings[id - p->nstrings - 1];
    size_t start = f->len;
    while (start > 0 && f->ptr[start - 1] != '/') start--;
    char tmp[256];
    size_t n = f->len - start;
    if (n > sizeof tmp - 2) n = sizeof tmp - 2;
    tmp[0] = '[';
    memcpy(tmp + 1, f->ptr + start, n);
    tmp[n + 1] = ']';
    sb_json_str(b, tmp, n + 2, max);
}

/* The frame of a location without lines: its mapping's file, or <unknown>. */
static uint32_t loc_name(const names *nm, uint32_t loc)
{
    const ap_pprof_profile *p = nm->p;
    uint32_t m = p->locations[loc].mapping;
    if (m == AP_PPROF_NONE) return p->nstrings;
    uint32_t file = p->mappings[m].file;
    if (nm->canon) file = nm->canon[file];
    if (p->strings[file].len == 0) return p->nstrings;
    return p->nstrings + 1 + file;
}

static int names_build(names *nm, const ap_pprof_profile *p)
{
    nm->p = p;
    if (ap_pprof_string_canon(p, &nm->canon)) return -1;
    uint64_t nframes = 0;
    for (uint32_t l = 0; l < p->nlocations; l++)
        nframes += p->locations[l].nline ? p->locations[l].nline : 1;
    if (nframes >= UINT32_MAX) return -1;
    nm->loc_off = malloc(((size_t)p->nlocations + 1) * sizeof *nm->loc_off);
    nm->ids = malloc((size_t)(nframes ? nframes : 1) * sizeof *nm->ids);
    if (!nm->loc_off || !nm->ids) return -1;
    uint32_t q = 0;
    for (uint32_t l = 0; l < p->nlocations; l++) {
        const ap_pprof_location *loc = &p->locations[l];
        nm->loc_off[l] = q;
        if (loc->nline == 0) nm->ids[q++] = loc_name(nm, l);
        for (uint32_t k = loc->nline; k-- > 0;)
            nm->ids[q++] = fn_name(nm, p->lines[loc->line_off + k].function);
    }
    nm->loc_off[p->nlocations] = q;
    return 0;
}

static void names_free(names *nm)
{
    free(nm->canon);
    free(nm->loc_off);
    free(nm->ids);
}

static int name_cmp(const names *nm, uint32_t a, uint32_t b)
{
    const ap_pprof_profile *p = nm->p;
    if (a < p->nstrings && b < p->nstrings) return ap_str_cmp(&p->strings[a], &p->strings[b]);
    /* names of lines-less frames: "<unknown>" and "[file]" sort after '<' and '[' */
    sbuf x = {0}, y = {0};
    sb_name(&x, nm, a, 0);
    sb_name(&y, nm, b, 0);
    int c = 0;
    if (!x.failed && !y.failed) {
        size_t n = x.len < y.len ? x.len : y.len;
        c = memcmp(x.buf, y.buf, n);
        if (!c) c = x.len < y.len ? -1 : x.len > y.len;
    }
    free(x.buf);
    free(y.buf);
    return c;
}

static void sb_header(sbuf *b, const ap_pprof_profile *p, int index, int64_t total)
{
    sb_str(b, "{\"sampleType\":");
    const ap_pprof_str *t = &p->strings[p->sample_type[2 * index]];
    const ap_pprof_str *u = &p->strings[p->sample_type[2 * index + 1]];
    sb_json_str(b, t->ptr, t->len, 0);
    sb_str(b, ",\"unit\":");
    sb_json_str(b, u->ptr, u->len, 0);
    sb_str(b, ",\"total\":");
    sb_int(b, total);
}

static int resolve_index(const ap_pprof_profile *p, int index, ap_pprof_error *err)
{
    if (index < 0) index = ap_pprof_default_index(p);
    if (index < 0 || (uint32_t)index >= p->nsample_type)
        return ap_pprof_fail(err, AP_PPROF_EINVAL, "the profile has no sample type %d", index);
    return index;
}

/* ---- distinct stacks ---- */

/* Samples that differ only in labels share a stack: both views are sums over stacks, so each
 * distinct location sequence is walked once with the sum of its samples' values. */
typedef struct {
    uint32_t *sample; /* a sample holding the stack */
    int64_t *value;   /* the sum of the values of its samples */
    uint32_t n;
} stacks;

static int stacks_build(stacks *st, const ap_pprof_profile *p, int index)
{
    uint32_t nv = p->nsample_type, ns = 16;
    while (ns < 2u * p->nsamples && ns < (1u << 31)) ns *= 2;
    uint32_t *slots = calloc(ns, sizeof *slots); /* stack index + 1 */
    uint64_t *hashes = malloc((size_t)(p->nsamples ? p->nsamples : 1) * sizeof *hashes);
    st->sample = malloc((size_t)(p->nsamples ? p->nsamples : 1) * sizeof *st->sample);
    st->value = malloc((size_t)(p->nsamples ? p->nsamples : 1) * sizeof *st->value);
    st->n = 0;
    if (!slots || !hashes || !st->sample || !st->value) {
        free(slots);
        free(hashes);
        return -1;
    }
    for (uint32_t si = 0; si < p->nsamples; si++) {
        int64_t v = p->values[(size_t)si * nv + (uint32_t)index];
        if (v == 0) continue;
        const ap_pprof_sample *s = &p->samples[si];
        const uint32_t *locs = ap_pprof_sample_locs(p, s);
        uint64_t h = locs ? ap_hash_bytes(locs, (size_t)s->nloc * sizeof *locs, AP_H3) : AP_H3;
        uint32_t slot = (uint32_t)h & (ns - 1);
        for (;;) {
            uint32_t k = slots[slot];
            if (!k) {
                slots[slot] = st->n + 1;
                hashes[st->n] = h;
                st->sample[st->n] = si;
                st->value[st->n] = v;
                st->n++;
                break;
            }
            const ap_pprof_sample *o = &p->samples[st->sample[k - 1]];
            if (hashes[k - 1] == h && o->nloc == s->nloc &&
                (s->nloc == 0 ||
                 memcmp(ap_pprof_sample_locs(p, o), locs, (size_t)s->nloc * sizeof *locs) == 0)) {
                st->value[k - 1] = ap_add_wrap(st->value[k - 1], v);
                break;
            }
            slot = (slot + 1) & (ns - 1);
        }
    }
    free(slots);
    free(hashes);
    return 0;
}

static void stacks_free(stacks *st)
{
    free(st->sample);
    free(st->value);
}

/* ---- the call tree ---- */

/* The call tree is never built node by node. The distinct stacks' frames (root first) are sorted,
 * so the stacks through any node of the tree are a run of them: a node is (its run [lo, hi) of
 * sorted stacks, its depth). Its total is a difference of prefix sums; its children are the runs
 * of equal frames at its depth, found by binary search (the stacks ending at the node come first:
 * its self). Only the nodes the flame graph may show are ever looked at: the children of kept
 * ones. The number of frames (distinct prefixes) is one pass over neighbouring stacks. */

/* The frames of every distinct stack, root first: f[off[u] .. off[u + 1]), as name id + 1. */
typedef struct {
    uint32_t *f, *off;
} seqs;

static uint32_t seq_key(const seqs *s, uint32_t u, uint32_t d)
{
    return s->off[u] + d < s->off[u + 1] ? s->f[s->off[u] + d] : 0;
}

/* Frames u and w share from depth d on (both are equal before d). */
static uint32_t seq_common(const seqs *s, uint32_t u, uint32_t w, uint32_t d)
{
    uint32_t lu = s->off[u + 1] - s->off[u], lw = s->off[w + 1] - s->off[w];
    uint32_t n = lu < lw ? lu : lw;
    const uint32_t *a = s->f + s->off[u], *b = s->f + s->off[w];
    while (d < n && a[d] == b[d]) d++;
    return d;
}

static int seq_less(const seqs *s, uint32_t u, uint32_t w, uint32_t d)
{
    d = seq_common(s, u, w, d);
    return seq_key(s, u, d) < seq_key(s, w, d);
}

/* Multikey quicksort (Bentley and Sedgewick) of the stacks a[0 .. n), equal before depth d;
 * k[i] holds a[i]'s frame at depth d when `have`. */
static void seq_sort(const seqs *s, uint32_t *a, uint32_t *k, size_t n, uint32_t d, int have)
{
    while (n > 1) {
        if (n < 12) {
            for (size_t i = 1; i < n; i++)
                for (size_t j = i; j > 0 && seq_less(s, a[j], a[j - 1], d); j--) {
                    uint32_t t = a[j];
                    a[j] = a[j - 1];
                    a[j - 1] = t;
                }
            return;
        }
        if (!have)
            for (size_t i = 0; i < n; i++) k[i] = seq_key(s, a[i], d);
        uint32_t x = k[0], y = k[n / 2], z = k[n - 1];
        uint32_t p = x < y ? (y < z ? y : x < z ? z : x) : (x < z ? x : y < z ? z : y);
        size_t lt = 0, i = 0, gt = n;
        while (i < gt) {
            uint32_t ta, tk;
            if (k[i] < p) {
                ta = a[lt], a[lt] = a[i], a[i] = ta;
                tk = k[lt], k[lt] = k[i], k[i] = tk;
                lt++, i++;
            } else if (k[i] > p) {
                gt--;
                ta = a[gt], a[gt] = a[i], a[i] = ta;
                tk = k[gt], k[gt] = k[i], k[i] = tk;
            } else {
                i++;
            }
        }
        seq_sort(s, a, k, lt, d, 1);
        seq_sort(s, a + gt, k + gt, n - gt, d, 1);
        if (p == 0) return; /* the equal ones end here: the same frames */
        a += lt, k += lt, n = gt - lt, d++, have = 0;
    }
}

/* A node of the call tree: its stacks are ranks [lo, hi) of the sorted ones, its depth the frames
 * they share; parent is the kept index of its parent. */
typedef struct {
    uint32_t lo, hi, depth, parent;
    int64_t total;
} cand;

/* A kept node, with its self value and its kept children (first/next: kept indices, 0 none) and
 * how many of its children are not kept (the "(other)" child). */
typedef struct {
    cand c;
    int64_t self;
    uint32_t name, first, next, last, unkept, haskids;
} knode;

typedef struct {
    seqs s;
    uint32_t *rank; /* stack at each sorted rank */
    int64_t *cum;   /* cum[i]: the sum of the values of ranks [0, i) (wrapping) */
    uint32_t n;
} ctree;

static uint32_t key_at(const ctree *t, uint32_t i, uint32_t d)
{
    return seq_key(&t->s, t->rank[i], d);
}

static int64_t range_sum(const ctree *t, uint32_t lo, uint32_t hi)
{
    return (int64_t)((uint64_t)t->cum[hi] - (uint64_t)t->cum[lo]);
}

/* The end of the run of key k that starts at rank i (keys ascend within [i, hi)). */
static uint32_t run_end(const ctree *t, uint32_t i, uint32_t hi, uint32_t d, uint32_t k)
{
    uint32_t lo = i + 1, step = 1; /* lo: a rank known to hold k or be the end */
    while (lo < hi && key_at(t, lo, d) == k) {
        i = lo;
        step *= 2;
        lo = hi - i > step ? i + step : hi;
    }
    /* key(i) == k, and lo == hi or key(lo) != k: the boundary is in (i, lo] */
    while (lo - i > 1) {
        uint32_t mid = i + (lo - i) / 2;
        if (key_at(t, mid, d) == k)
            i = mid;
        else
            lo = mid;
    }
    return lo;
}

/* The first rank of [lo, hi) with a frame at depth d (the ones before end there). */
static uint32_t first_deeper(const ctree *t, uint32_t lo, uint32_t hi, uint32_t d)
{
    if (lo == hi || key_at(t, lo, d) != 0) return lo;
    return run_end(t, lo, hi, d, 0);
}

static int ctree_build(ctree *t, const ap_pprof_profile *p, const names *nm, const stacks *st,
                       uint64_t *frames, ap_pprof_error *err)
{
    uint64_t nframes = 0;
    for (uint32_t u = 0; u < st->n; u++) {
        const ap_pprof_sample *sm = &p->samples[st->sample[u]];
        const uint32_t *locs = ap_pprof_sample_locs(p, sm);
        for (uint32_t j = 0; j < sm->nloc; j++)
            nframes += nm->loc_off[locs[j] + 1] - nm->loc_off[locs[j]];
    }
    if (nframes >= UINT32_MAX / 2)
        return ap_pprof_fail(err, AP_PPROF_ETOOLARGE,
                             "the profile has too many frames for a call tree");
    size_t n1 = st->n ? st->n : 1;
    t->n = st->n;
    t->s.off = malloc((n1 + 1) * sizeof *t->s.off);
    t->s.f = malloc((size_t)(nframes ? nframes : 1) * sizeof *t->s.f);
    t->rank = malloc(n1 * sizeof *t->rank);
    t->cum = malloc((n1 + 1) * sizeof *t->cum);
    uint32_t *k = malloc(n1 * sizeof *k);
    if (!t->s.off || !t->s.f || !t->rank || !t->cum || !k) {
        free(k);
        return ap_pprof_fail(err, AP_PPROF_ENOMEM, "out of memory building the call tree");
    }
    uint32_t q = 0;
    for (uint32_t u = 0; u < st->n; u++) {
        const ap_pprof_sample *sm = &p->samples[st->sample[u]];
        const uint32_t *locs = ap_pprof_sample_locs(p, sm);
        t->s.off[u] = q;
        /* root first: the last location, and in each location its outermost line first */
        for (uint32_t j = sm->nloc; j-- > 0;)
            for (uint32_t r = nm->loc_off[locs[j]]; r < nm->loc_off[locs[j] + 1]; r++)
                t->s.f[q++] = nm->ids[r] + 1;
        t->rank[u] = u;
    }
    t->s.off[st->n] = q;
    seq_sort(&t->s, t->rank, k, st->n, 0, 0);
    free(k);
    t->cum[0] = 0;
    *frames = 0;
    for (uint32_t i = 0; i < st->n; i++) {
        uint32_t u = t->rank[i];
        t->cum[i + 1] = ap_add_wrap(t->cum[i], st->value[u]);
        uint32_t common = i ? seq_common(&t->s, t->rank[i - 1], u, 0) : 0;
        *frames += t->s.off[u + 1] - t->s.off[u] - common;
    }
    return 0;
}

static void ctree_free(ctree *t)
{
    free(t->s.f);
    free(t->s.off);
    free(t->rank);
    free(t->cum);
}

/* Heaviest first; among equals the first in depth-first order (lower run, then shallower), so a
 * parent precedes its children. */
static int heavier(const cand *x, const cand *y)
{
    if (x->total != y->total) return x->total > y->total;
    if (x->lo != y->lo) return x->lo < y->lo;
    return x->depth < y->depth;
}

typedef struct {
    cand *h;
    size_t n, cap;
} cheap;

static int heap_push(cheap *hp, cand x)
{
    if (hp->n == hp->cap) {
        size_t cap = hp->cap ? hp->cap * 2 : 1024;
        cand *nh = realloc(hp->h, cap * sizeof *nh);
        if (!nh) return -1;
        hp->h = nh;
        hp->cap = cap;
    }
    size_t i = hp->n++;
    while (i > 0 && heavier(&x, &hp->h[(i - 1) / 2])) {
        hp->h[i] = hp->h[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    hp->h[i] = x;
    return 0;
}

static cand heap_pop(cheap *hp)
{
    cand top = hp->h[0], x = hp->h[--hp->n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= hp->n) break;
        if (c + 1 < hp->n && heavier(&hp->h[c + 1], &hp->h[c])) c++;
        if (!heavier(&hp->h[c], &x)) break;
        hp->h[i] = hp->h[c];
        i = c;
    }
    hp->h[i] = x;
    return top;
}

/* Admits c as kept node kx: its self, and its children onto the heap (with its kept index). */
static int admit(const ctree *t, knode *kn, uint32_t kx, cand c, cheap *hp)
{
    knode *x = &kn[kx];
    *x = (knode){.c = c};
    uint32_t deeper = first_deeper(t, c.lo, c.hi, c.depth);
    x->self = range_sum(t, c.lo, deeper);
    x->haskids = deeper < c.hi;
    for (uint32_t i = deeper; i < c.hi;) {
        uint32_t key = key_at(t, i, c.depth);
        uint32_t j = run_end(t, i, c.hi, c.depth, key);
        cand ch = {
            .lo = i, .hi = j, .depth = c.depth + 1, .parent = kx, .total = range_sum(t, i, j)};
        if (heap_push(hp, ch)) return -1;
        x->unkept++;
        i = j;
    }
    return 0;
}

/* Whether the node c has children: its last stack goes deeper (those ending at it sort first). */
static int has_kids(const ctree *t, const cand *c)
{
    uint32_t u = t->rank[c->hi - 1];
    return t->s.off[u + 1] - t->s.off[u] > c->depth;
}

/* The flame graph from the names and distinct stacks of sample type `index`. */
static int flame_write(const ap_pprof_profile *p, const names *nmp, const stacks *st, int index,
                       uint32_t max_nodes, char **out, size_t *out_len, ap_pprof_error *err)
{
    const names nm = *nmp;
    ctree t = {0};
    cheap hp = {0};
    knode *kn = NULL;
    uint32_t *stack = NULL;
    uint8_t *open = NULL;
    sbuf b = {0};
    int rc = -1;
    uint64_t frames = 0;
    if (ctree_build(&t, p, &nm, st, &frames, err)) goto done;

    /* Keep nodes heaviest first while the kept ones and their "(other)" children fit: a
     * best-first walk from the root (a max-heap of the children of kept nodes) admits nodes in
     * the order of a sort of all of them by weight, without looking at the others. */
    kn = malloc((size_t)(max_nodes + 1) * sizeof *kn);
    if (!kn) goto nomem;
    cand root = {
        .lo = 0, .hi = t.n, .depth = 0, .parent = UINT32_MAX, .total = range_sum(&t, 0, t.n)};
    if (admit(&t, kn, 0, root, &hp)) goto nomem;
    kn[0].name = UINT32_MAX;
    uint32_t nkept = 1, nother = kn[0].haskids;
    while (hp.n > 0) {
        cand x = heap_pop(&hp);
        uint32_t par = x.parent;
        int kids = has_kids(&t, &x);
        uint32_t others = nother + (uint32_t)kids - (kn[par].unkept == 1);
        if (nkept + 1 + others > max_nodes) break;
        uint32_t kx = nkept++;
        kn[par].unkept--;
        nother = others;
        if (admit(&t, kn, kx, x, &hp)) goto nomem;
        kn[kx].name = key_at(&t, x.lo, x.depth - 1) - 1;
        /* kept children lists, heaviest first: the order of admission */
        if (!kn[par].first)
            kn[par].first = kx;
        else
            kn[kn[par].last].next = kx;
        kn[par].last = kx;
    }

    sb_header(&b, p, index, kn[0].c.total);
    sb_str(&b, ",\"frames\":");
    sb_int(&b, (int64_t)frames);
    sb_str(&b, ",\"nodes\":");
    sb_int(&b, (int64_t)nkept + nother);
    sb_str(&b, ",\"maxNodes\":");
    sb_int(&b, max_nodes);
    sb_str(&b, ",\"root\":");

    /* Depth-first without recursion: a node is opened (name, values, "children":[), then its
     * kept children, then its "(other)" and the closing brackets. */
    stack = malloc((size_t)nkept * sizeof *stack);
    open = calloc(nkept, 1);
    if (!stack || !open) goto nomem;
    uint32_t sp = 0;
    stack[sp++] = 0;
    while (sp > 0) {
        uint32_t x = stack[sp - 1];
        const knode *nd = &kn[x];
        if (!open[x]) {
            open[x] = 1;
            sb_str(&b, "{\"name\":");
            if (x == 0)
                sb_str(&b, "\"root\"");
            else
                sb_name(&b, &nm, nd->name, AP_PPROF_FLAME_MAX_NAME);
            sb_str(&b, ",\"value\":");
            sb_int(&b, nd->c.total);
            sb_str(&b, ",\"self\":");
            sb_int(&b, nd->self);
            sb_str(&b, ",\"children\":[");
            /* push children in reverse so the heaviest is written first */
            uint32_t mark = sp;
            for (uint32_t c = nd->first; c != 0; c = kn[c].next) stack[sp++] = c;
            for (uint32_t lo = mark, hi = sp - 1; sp > mark && lo < hi; lo++, hi--) {
                uint32_t tmp = stack[lo];
                stack[lo] = stack[hi];
                stack[hi] = tmp;
            }
            continue;
        }
        /* every kept child is written: the folded rest, then close */
        sp--;
        if (nd->unkept > 0) {
            int64_t rest = ap_add_wrap(nd->c.total, -nd->self);
            for (uint32_t c = nd->first; c != 0; c = kn[c].next)
                rest = ap_add_wrap(rest, -kn[c].c.total);
            if (nd->first != 0) sb_str(&b, ",");
            sb_str(&b, "{\"name\":\"(other)\",\"value\":");
            sb_int(&b, rest);
            sb_str(&b, ",\"self\":");
            sb_int(&b, rest);
            sb_str(&b, ",\"other\":");
            sb_int(&b, nd->unkept);
            sb_str(&b, ",\"children\":[]}");
        }
        sb_str(&b, "]}");
        /* a sibling follows when the next entry on the stack shares this node's parent */
        if (sp > 0 && x != 0 && !open[stack[sp - 1]]) sb_str(&b, ",");
    }
    sb_str(&b, "}");
    if (b.failed) goto nomem;
    *out = b.buf;
    *out_len = b.len;
    b.buf = NULL;
    rc = 0;
    goto done;
nomem:
    ap_pprof_fail(err, AP_PPROF_ENOMEM, "out of memory writing the flame graph");
done:
    free(b.buf);
    ctree_free(&t);
    free(hp.h);
    free(kn);
    free(stack);
    free(open);
    return rc;
}

/* ---- top ---- */

typedef struct {
    uint32_t name;
    uint32_t inl; /* 1: some edge into it is inline, 2: some is not */
    int64_t flat, cum;
} top_row;

/* Caller-callee edges by function, open addressing (key 0: an empty slot). */
typedef struct {
    uint64_t key;     /* (caller << 32 | callee) + 1 */
    int64_t weight;   /* sum of the values of the stacks with the edge, once per stack */
    uint32_t stamp;   /* the last stack (+1) that counted the edge */
    uint32_t inline_; /* 1 while every occurrence is an inlined call (pprof's Edge.Inline) */
} edge;

typedef struct {
    edge *slots;
    uint32_t n, nslots;
} edges;

static uint32_t key_slot(uint64_t key, uint32_t nslots)
{
    return (uint32_t)ap_mix64(key ^ AP_H1, AP_H2) & (nslots - 1);
}

/* Notes the edge caller -> callee of stack `stack` (+1): pprof counts an edge once per sample,
 * and only its first (root-most) occurrence there decides whether it was inlined. */
static int edge_note(edges *e, uint32_t caller, uint32_t callee, int inl, int64_t v, uint32_t stack)
{
    if ((uint64_t)(e->n + 1) * 4 > (uint64_t)e->nslots * 3) {
        uint32_t ns = e->nslots ? e->nslots * 2 : 1024;
        edge *slots = calloc(ns, sizeof *slots);
        if (!slots) return -1;
        for (uint32_t i = 0; i < e->nslots; i++) {
            if (!e->slots[i].key) continue;
            uint32_t s = key_slot(e->slots[i].key, ns);
            while (slots[s].key) s = (s + 1) & (ns - 1);
            slots[s] = e->slots[i];
        }
        free(e->slots);
        e->slots = slots;
        e->nslots = ns;
    }
    uint64_t key = ((uint64_t)caller << 32 | callee) + 1;
    uint32_t s = key_slot(key, e->nslots);
    while (e->slots[s].key && e->slots[s].key != key) s = (s + 1) & (e->nslots - 1);
    edge *x = &e->slots[s];
    if (!x->key) {
        x->key = key;
        x->inline_ = inl != 0;
        e->n++;
    } else if (x->stamp == stack) {
        return 0;
    } else if (!inl) {
        x->inline_ = 0;
    }
    x->stamp = stack;
    x->weight = ap_add_wrap(x->weight, v);
    return 0;
}

static _Thread_local const names *sort_names;

/* pprof's FlatNameOrder: |flat| descending, then name, then |cum| descending. */
static int by_flat(const void *a, const void *b)
{
    const top_row *x = a, *y = b;
    uint64_t fx = (uint64_t)(x->flat < 0 ? -x->flat : x->flat);
    uint64_t fy = (uint64_t)(y->flat < 0 ? -y->flat : y->flat);
    if (fx != fy) return fx > fy ? -1 : 1;
    int c = name_cmp(sort_names, x->name, y->name);
    if (c) return c;
    uint64_t cx = (uint64_t)(x->cum < 0 ? -x->cum : x->cum);
    uint64_t cy = (uint64_t)(y->cum < 0 ? -y->cum : y->cum);
    if (cx != cy) return cx > cy ? -1 : 1;
    return 0;
}

/* The top table from the names and distinct stacks of sample type `index`; row_end (NULL, or
 * room for `limit` entries) gets the offset just past each row written. */
static int top_write(const ap_pprof_profile *p, const names *nmp, const stacks *stp, int index,
                     uint32_t limit, char **out, size_t *out_len, size_t *row_end,
                     uint32_t *written, ap_pprof_error *err)
{
    const names nm = *nmp;
    const stacks st = *stp;
    uint64_t nids = 2 * (uint64_t)p->nstrings + 1;
    uint32_t *row_of = NULL, *stamp = NULL;
    top_row *rows = NULL;
    edges ed = {0};
    sbuf b = {0};
    int rc = -1;
    row_of = malloc((size_t)(nids ? nids : 1) * sizeof *row_of);
    rows = malloc((size_t)(nids ? nids : 1) * sizeof *rows);
    stamp = calloc(nids ? nids : 1, sizeof *stamp);
    if (!row_of || !rows || !stamp) goto nomem;
    memset(row_of, 0xff, (size_t)nids * sizeof *row_of);
    uint32_t nrows = 0;
    int64_t total = 0;
    int negative = 0;
    for (uint32_t si = 0; si < st.n; si++) {
        const ap_pprof_sample *s = &p->samples[st.sample[si]];
        int64_t v = st.value[si];
        total = ap_add_wrap(total, v);
        negative |= v < 0;
        const uint32_t *locs = ap_pprof_sample_locs(p, s);
        uint32_t leaf = UINT32_MAX;
        for (uint32_t j = s->nloc; j-- > 0;) {
            for (uint32_t q = nm.loc_off[locs[j]]; q < nm.loc_off[locs[j] + 1]; q++) {
                uint32_t id = nm.ids[q];
                if (row_of[id] == UINT32_MAX) {
                    row_of[id] = nrows;
                    rows[nrows++] = (top_row){.name = id};
                }
                top_row *r = &rows[row_of[id]];
                if (stamp[id] != si + 1) { /* cum once per sample, as pprof */
                    stamp[id] = si + 1;
                    r->cum = ap_add_wrap(r->cum, v);
                }
                leaf = id;
            }
        }
        if (leaf != UINT32_MAX) rows[row_of[leaf]].flat = ap_add_wrap(rows[row_of[leaf]].flat, v);
    }
    /* pprof's "(inline)" / "(partial-inline)": whether the edges into a function are inline,
     * among the edges its text report keeps (weight at least EdgeFraction 0.001 of the total).
     * With no negative value an edge weighs at most its ends' cum, so only edges between
     * functions over the cutoff are counted: a second walk with a small edge table. */
    int64_t abs_total = 0;
    for (uint32_t i = 0; i < nrows; i++)
        abs_total += rows[i].flat < 0 ? -rows[i].flat : rows[i].flat;
    int64_t cutoff = (int64_t)((double)abs_total * 0.001);
    /* the order first (it does not depend on the annotation): only the edges into the rows
     * written need noting */
    sort_names = &nm;
    qsort(rows, nrows, sizeof *rows, by_flat);
    for (uint32_t i = 0; i < nrows; i++) row_of[rows[i].name] = i;
    for (uint32_t si = 0; si < st.n; si++) {
        const ap_pprof_sample *s = &p->samples[st.sample[si]];
        int64_t v = st.value[si];
        const uint32_t *locs = ap_pprof_sample_locs(p, s);
        /* root to leaf as pprof's graph.New walks it: the edge into a frame is inline when the
         * frame is not its location's outermost line */
        uint32_t prev = UINT32_MAX;
        for (uint32_t j = s->nloc; j-- > 0;) {
            uint32_t q0 = nm.loc_off[locs[j]];
            for (uint32_t q = q0; q < nm.loc_off[locs[j] + 1]; q++) {
                uint32_t id = nm.ids[q];
                if (prev != UINT32_MAX && prev != id && row_of[id] < limit &&
                    (negative ||
                     (rows[row_of[prev]].cum >= cutoff && rows[row_of[id]].cum >= cutoff)) &&
                    edge_note(&ed, prev, id, q != q0, v, si + 1))
                    goto nomem;
                prev = id;
            }
        }
    }
    for (uint32_t i = 0; i < ed.nslots; i++) {
        const edge *x = &ed.slots[i];
        if (!x->key) continue;
        if ((x->weight < 0 ? -x->weight : x->weight) < cutoff) continue;
        top_row *r = &rows[row_of[(uint32_t)(x->key - 1)]];
        r->inl |= x->inline_ ? 1 : 2;
    }
    sb_header(&b, p, index, total);
    sb_str(&b, ",\"functions\":");
    sb_int(&b, nrows);
    sb_str(&b, ",\"rows\":[");
    for (uint32_t i = 0; i < nrows && i < limit; i++) {
        if (i) sb_str(&b, ",");
        sb_str(&b, "{\"name\":");
        sb_name(&b, &nm, rows[i].name, 0);
        sb_str(&b, ",\"flat\":");
        sb_int(&b, rows[i].flat);
        sb_str(&b, ",\"cum\":");
        sb_int(&b, rows[i].cum);
        if (rows[i].inl)
            sb_str(&b, rows[i].inl == 1   ? ",\"inline\":\"inline\""
                       : rows[i].inl == 3 ? ",\"inline\":\"partial-inline\""
                                          : "");
        sb_str(&b, "}");
        if (row_end) row_end[i] = b.len;
        if (written) *written = i + 1;
    }
    sb_str(&b, "]}");
    if (b.failed) goto nomem;
    *out = b.buf;
    *out_len = b.len;
    b.buf = NULL;
    rc = 0;
    goto done;
nomem:
    ap_pprof_fail(err, AP_PPROF_ENOMEM, "out of memory writing the top table");
done:
    free(b.buf);
    free(row_of);
    free(rows);
    free(stamp);
    free(ed.slots);
    return rc;
}

/* ---- the public entry points: names and stacks built once per call ---- */

static int check_nodes(const ap_pprof_flame_opts *opts, uint32_t *max_nodes, ap_pprof_error *err)
{
    *max_nodes = opts && opts->max_nodes ? opts->max_nodes : AP_PPROF_FLAME_DEFAULT_NODES;
    if (*max_nodes > AP_PPROF_FLAME_LIMIT_NODES || *max_nodes < 2)
        return ap_pprof_fail(err, AP_PPROF_EINVAL, "max_nodes must be 2 to %u",
                             AP_PPROF_FLAME_LIMIT_NODES);
    return 0;
}

static int check_limit(uint32_t *limit, ap_pprof_error *err)
{
    if (*limit == 0) *limit = AP_PPROF_TOP_DEFAULT_ROWS;
    if (*limit > AP_PPROF_TOP_LIMIT_ROWS)
        return ap_pprof_fail(err, AP_PPROF_EINVAL, "limit must be 1 to %u",
                             AP_PPROF_TOP_LIMIT_ROWS);
    return 0;
}

/* Names and distinct stacks of sample type index: 0, or -1 with err set (both freed). */
static int prepare(const ap_pprof_profile *p, int index, names *nm, stacks *st, ap_pprof_error *err)
{
    if (names_build(nm, p) == 0 && stacks_build(st, p, index) == 0) return 0;
    names_free(nm);
    stacks_free(st);
    return ap_pprof_fail(err, AP_PPROF_ENOMEM, "out of memory");
}

int ap_pprof_flame_json(const ap_pprof_profile *p, const ap_pprof_flame_opts *opts, char **out,
                        size_t *out_len, ap_pprof_error *err)
{
    ap_pprof_error_clear(err);
    *out = NULL;
    *out_len = 0;
    int index = resolve_index(p, opts ? opts->index : -1, err);
    uint32_t max_nodes;
    if (index < 0 || check_nodes(opts, &max_nodes, err)) return -1;
    names nm = {0};
    stacks st = {0};
    if (prepare(p, index, &nm, &st, err)) return -1;
    int rc = flame_write(p, &nm, &st, index, max_nodes, out, out_len, err);
    names_free(&nm);
    stacks_free(&st);
    return rc;
}

int ap_pprof_top_json(const ap_pprof_profile *p, int index, uint32_t limit, char **out,
                      size_t *out_len, ap_pprof_error *err)
{
    ap_pprof_error_clear(err);
    *out = NULL;
    *out_len = 0;
    index = resolve_index(p, index, err);
    if (index < 0 || check_limit(&limit, err)) return -1;
    names nm = {0};
    stacks st = {0};
    if (prepare(p, index, &nm, &st, err)) return -1;
    int rc = top_write(p, &nm, &st, index, limit, out, out_len, NULL, NULL, err);
    names_free(&nm);
    stacks_free(&st);
    return rc;
}

/* The top table of ap_pprof_views_json, on a helper thread while the flame graph is written
 * (both only read the profile, the names and the stacks). */
typedef struct {
    const ap_pprof_profile *p;
    const names *nm;
    const stacks *st;
    int index, rc;
    uint32_t limit;
    ap_pprof_views *v;
    ap_pprof_error err;
} top_task;

static void *top_run(void *arg)
{
    top_task *t = arg;
    ap_pprof_error_clear(&t->err);
    t->rc = top_write(t->p, t->nm, t->st, t->index, t->limit, &t->v->top, &t->v->top_len,
                      t->v->row_end, &t->v->nrows, &t->err);
    return NULL;
}

int ap_pprof_views_json(const ap_pprof_profile *p, const ap_pprof_flame_opts *opts, uint32_t limit,
                        ap_pprof_views *v, ap_pprof_error *err)
{
    ap_pprof_error_clear(err);
    memset(v, 0, sizeof *v);
    int index = resolve_index(p, opts ? opts->index : -1, err);
    uint32_t max_nodes;
    if (index < 0 || check_nodes(opts, &max_nodes, err) || check_limit(&limit, err)) return -1;
    names nm = {0};
    stacks st = {0};
    if (prepare(p, index, &nm, &st, err)) return -1;
    v->row_end = malloc((size_t)limit * sizeof *v->row_end);
    if (!v->row_end) {
        names_free(&nm);
        stacks_free(&st);
        return ap_pprof_fail(err, AP_PPROF_ENOMEM, "out of memory");
    }
    top_task t = {.p = p, .nm = &nm, .st = &st, .index = index, .limit = limit, .v = v};
    pthread_t helper;
    int threaded = pthread_create(&helper, NULL, top_run, &t) == 0;
    int rc = flame_write(p, &nm, &st, index, max_nodes, &v->flame, &v->flame_len, err);
    if (threaded)
        pthread_join(helper, NULL);
    else
        top_run(&t);
    if (rc == 0 && t.rc != 0) {
        *err = t.err;
        rc = -1;
    }
    names_free(&nm);
    stacks_free(&st);
    if (rc) {
        ap_pprof_views_free(v);
        return -1;
    }
    return 0;
}

void ap_pprof_views_free(ap_pprof_views *v)
{
    free(v->flame);
    free(v->top);
    free(v->row_end);
    memset(v, 0, sizeof *v);
}
