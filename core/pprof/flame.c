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

/* Built without a hash table: the distinct stacks' frame sequences (root first) are sorted, so
 * stacks sharing a prefix are neighbours and each new stack only adds the frames past its common
 * prefix with the previous one. The nodes come out in depth-first order, written sequentially,
 * and a node's total is added into its parent's when its subtree is complete. */

/* Nodes are in depth-first order: a node's children are x + 1 (when it has any), then each one's
 * end, up to the node's own end. */
typedef struct {
    uint32_t parent, name, nchild, end; /* end: the index just past its subtree */
    int64_t total, self;
} node;

typedef struct {
    node *nodes;
    uint32_t n;
} tree;

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

static int tree_build(tree *t, const ap_pprof_profile *p, const names *nm, const stacks *st,
                      ap_pprof_error *err)
{
    seqs s = {0};
    uint32_t *a = NULL, *k = NULL, *path = NULL;
    uint64_t nframes = 0;
    uint32_t maxlen = 0;
    for (uint32_t u = 0; u < st->n; u++) {
        const ap_pprof_sample *sm = &p->samples[st->sample[u]];
        const uint32_t *locs = ap_pprof_sample_locs(p, sm);
        uint32_t len = 0;
        for (uint32_t j = 0; j < sm->nloc; j++)
            len += nm->loc_off[locs[j] + 1] - nm->loc_off[locs[j]];
        nframes += len;
        if (len > maxlen) maxlen = len;
    }
    if (nframes >= UINT32_MAX / 2)
        return ap_pprof_fail(err, AP_PPROF_ETOOLARGE,
                             "the profile has too many frames for a call tree");
    s.off = malloc(((size_t)st->n + 1) * sizeof *s.off);
    s.f = malloc((size_t)(nframes ? nframes : 1) * sizeof *s.f);
    a = malloc((size_t)(st->n ? st->n : 1) * sizeof *a);
    k = malloc((size_t)(st->n ? st->n : 1) * sizeof *k);
    path = malloc(((size_t)maxlen + 1) * sizeof *path);
    /* at most one node per frame: pages past the ones written are never touched */
    t->nodes = malloc(((size_t)nframes + 1) * sizeof *t->nodes);
    if (!s.off || !s.f || !a || !k || !path || !t->nodes) goto nomem;
    uint32_t q = 0;
    for (uint32_t u = 0; u < st->n; u++) {
        const ap_pprof_sample *sm = &p->samples[st->sample[u]];
        const uint32_t *locs = ap_pprof_sample_locs(p, sm);
        s.off[u] = q;
        /* root first: the last location, and in each location its outermost line first */
        for (uint32_t j = sm->nloc; j-- > 0;)
            for (uint32_t r = nm->loc_off[locs[j]]; r < nm->loc_off[locs[j] + 1]; r++)
                s.f[q++] = nm->ids[r] + 1;
        a[u] = u;
    }
    s.off[st->n] = q;
    seq_sort(&s, a, k, st->n, 0, 0);
    free(k);
    k = NULL;

    t->nodes[0] = (node){.parent = UINT32_MAX, .name = UINT32_MAX};
    t->n = 1;
    path[0] = 0;
    uint32_t depth = 0; /* of the last stack's leaf: path[0 .. depth] is its path */
    for (uint32_t i = 0; i < st->n; i++) {
        uint32_t u = a[i], len = s.off[u + 1] - s.off[u];
        uint32_t common = i ? seq_common(&s, a[i - 1], u, 0) : 0;
        for (; depth > common; depth--) { /* the subtree of path[depth] is complete */
            node *x = &t->nodes[path[depth]];
            x->end = t->n;
            t->nodes[x->parent].total = ap_add_wrap(t->nodes[x->parent].total, x->total);
        }
        for (; depth < len; depth++) {
            uint32_t par = path[depth], id = t->n++;
            t->nodes[id] = (node){.parent = par, .name = s.f[s.off[u] + depth] - 1};
            t->nodes[par].nchild++;
            path[depth + 1] = id;
        }
        node *leaf = &t->nodes[path[len]];
        leaf->self = ap_add_wrap(leaf->self, st->value[u]);
        leaf->total = ap_add_wrap(leaf->total, st->value[u]);
    }
    for (; depth > 0; depth--) {
        node *x = &t->nodes[path[depth]];
        x->end = t->n;
        t->nodes[x->parent].total = ap_add_wrap(t->nodes[x->parent].total, x->total);
    }
    t->nodes[0].end = t->n;
    free(s.f);
    free(s.off);
    free(a);
    free(path);
    return 0;
nomem:
    free(s.f);
    free(s.off);
    free(a);
    free(k);
    free(path);
    return ap_pprof_fail(err, AP_PPROF_ENOMEM, "out of memory building the call tree");
}

static void tree_free(tree *t)
{
    free(t->nodes);
}

/* Heaviest first; among equals the first in depth-first order, so a parent precedes its children.
 */
static int heavier(const tree *t, uint32_t a, uint32_t b)
{
    const node *x = &t->nodes[a], *y = &t->nodes[b];
    if (x->total != y->total) return x->total > y->total;
    return a < b;
}

static void heap_push(const tree *t, uint32_t *h, uint32_t *n, uint32_t x)
{
    uint32_t i = (*n)++;
    while (i > 0 && heavier(t, x, h[(i - 1) / 2])) {
        h[i] = h[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    h[i] = x;
}

static uint32_t heap_pop(const tree *t, uint32_t *h, uint32_t *n)
{
    uint32_t top = h[0], x = h[--(*n)], i = 0;
    for (;;) {
        uint32_t c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && heavier(t, h[c + 1], h[c])) c++;
        if (!heavier(t, h[c], x)) break;
        h[i] = h[c];
        i = c;
    }
    h[i] = x;
    return top;
}

/* The flame graph from the names and distinct stacks of sample type `index`. */
static int flame_write(const ap_pprof_profile *p, const names *nmp, const stacks *st, int index,
                       uint32_t max_nodes, char **out, size_t *out_len, ap_pprof_error *err)
{
    const names nm = *nmp;
    tree t = {0};
    uint32_t *first = NULL, *next = NULL, *unkept = NULL, *stack = NULL;
    uint8_t *kept = NULL, *open = NULL;
    sbuf b = {0};
    int rc = -1;
    if (tree_build(&t, p, &nm, st, err)) goto done;

    /* Keep nodes heaviest first while the kept ones and their "(other)" children fit: a
     * best-first walk from the root (a max-heap of the children of kept nodes) admits nodes in
     * the order of a sort of all of them by weight, without sorting millions of nodes. */
    /* Arrays by node, zeroed lazily by calloc: only the pages of kept nodes are ever touched.
     * first/next: the kept children lists (0: none, the root being no one's child); unkept: the
     * children of a kept node not kept (yet). */
    uint32_t n = t.n;
    kept = calloc(n, 1);
    unkept = calloc(n, sizeof *unkept);
    uint32_t *heap = malloc((size_t)n * sizeof *heap);
    first = calloc(n, sizeof *first);
    next = calloc(n, sizeof *next);
    uint32_t *last = calloc(n, sizeof *last);
    if (!kept || !unkept || !heap || !first || !next || !last) {
        free(heap);
        free(last);
        goto nomem;
    }
    uint32_t nheap = 0;
    kept[0] = 1;
    unkept[0] = t.nodes[0].nchild;
    uint32_t nkept = 1, nother = t.nodes[0].nchild > 0;
    for (uint32_t c = 1; c < t.nodes[0].end; c = t.nodes[c].end) heap_push(&t, heap, &nheap, c);
    while (nheap > 0) {
        uint32_t x = heap_pop(&t, heap, &nheap), par = t.nodes[x].parent;
        uint32_t others = nother + (t.nodes[x].nchild > 0) - (unkept[par] == 1);
        if (nkept + 1 + others > max_nodes) break;
        kept[x] = 1;
        nkept++;
        unkept[par]--;
        unkept[x] = t.nodes[x].nchild;
        nother = others;
        /* kept children lists, heaviest first: the order of admission */
        if (!first[par])
            first[par] = x;
        else
            next[last[par]] = x;
        last[par] = x;
        for (uint32_t c = x + 1; c < t.nodes[x].end; c = t.nodes[c].end)
            heap_push(&t, heap, &nheap, c);
    }
    free(heap);
    free(last);
    uint32_t *dropped = unkept;

    sb_header(&b, p, index, t.nodes[0].total);
    sb_str(&b, ",\"frames\":");
    sb_int(&b, (int64_t)n - 1);
    sb_str(&b, ",\"nodes\":");
    sb_int(&b, (int64_t)nkept + nother);
    sb_str(&b, ",\"maxNodes\":");
    sb_int(&b, max_nodes);
    sb_str(&b, ",\"root\":");

    /* Depth-first without recursion: a node is opened (name, values, "children":[), then its
     * kept children, then its "(other)" and the closing brackets. */
    stack = malloc((size_t)n * sizeof *stack);
    open = calloc(n, 1);
    if (!stack || !open) goto nomem;
    uint32_t sp = 0;
    stack[sp++] = 0;
    while (sp > 0) {
        uint32_t x = stack[sp - 1];
        const node *nd = &t.nodes[x];
        if (!open[x]) {
            open[x] = 1;
            sb_str(&b, "{\"name\":");
            if (x == 0)
                sb_str(&b, "\"root\"");
            else
                sb_name(&b, &nm, nd->name, AP_PPROF_FLAME_MAX_NAME);
            sb_str(&b, ",\"value\":");
            sb_int(&b, nd->total);
            sb_str(&b, ",\"self\":");
            sb_int(&b, nd->self);
            sb_str(&b, ",\"children\":[");
            /* push children in reverse so the heaviest is written first */
            uint32_t mark = sp;
            for (uint32_t c = first[x]; c != 0; c = next[c]) stack[sp++] = c;
            for (uint32_t lo = mark, hi = sp - 1; sp > mark && lo < hi; lo++, hi--) {
                uint32_t tmp = stack[lo];
                stack[lo] = stack[hi];
                stack[hi] = tmp;
            }
            continue;
        }
        /* every kept child is written: the folded rest, then close */
        sp--;
        if (dropped[x] > 0) {
            int64_t rest = ap_add_wrap(nd->total, -nd->self);
            for (uint32_t c = first[x]; c != 0; c = next[c])
                rest = ap_add_wrap(rest, -t.nodes[c].total);
            if (first[x] != 0) sb_str(&b, ",");
            sb_str(&b, "{\"name\":\"(other)\",\"value\":");
            sb_int(&b, rest);
            sb_str(&b, ",\"self\":");
            sb_int(&b, rest);
            sb_str(&b, ",\"other\":");
            sb_int(&b, dropped[x]);
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
    tree_free(&t);
    free(kept);
    free(unkept);
    free(first);
    free(next);
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
