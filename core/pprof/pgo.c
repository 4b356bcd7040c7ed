/* Would `go build -pgo` use this profile? A replay of Go 1.23's loader (cmd/internal/pgo
 * FromPProf over internal/profile.NewGraph): the sample type it weighs by, the call edges it
 * builds from the two innermost frames of each sample, and the Function.start_line check. */
#include <stdio.h>
#include <stdlib.h>

#include "internal.h"

/* A set of fixed-size keys with an int64 counter each. */
typedef struct {
    uint8_t *keys;
    int64_t *vals;
    uint8_t *used;
    size_t ksize, cap, n;
} kvmap;

static int kv_init(kvmap *m, size_t ksize, size_t expect)
{
    m->ksize = ksize;
    m->cap = (size_t)ap_pow2(expect * 2 + 16);
    m->n = 0;
    m->keys = malloc(m->cap * ksize);
    m->vals = calloc(m->cap, sizeof *m->vals);
    m->used = calloc(m->cap, 1);
    return m->keys && m->vals && m->used ? 0 : -1;
}

static void kv_free(kvmap *m)
{
    free(m->keys);
    free(m->vals);
    free(m->used);
}

/* Returns the slot of key, inserting it (value 0) when absent; SIZE_MAX when out of memory. */
static size_t kv_slot(kvmap *m, const void *key)
{
    if ((m->n + 1) * 2 > m->cap) {
        kvmap g;
        if (kv_init(&g, m->ksize, m->cap)) {
            kv_free(&g);
            return SIZE_MAX;
        }
        for (size_t i = 0; i < m->cap; i++) {
            if (!m->used[i]) continue;
            size_t s = kv_slot(&g, m->keys + i * m->ksize);
            g.vals[s] = m->vals[i];
        }
        kv_free(m);
        *m = g;
    }
    size_t mask = m->cap - 1;
    for (size_t j = ap_hash_bytes(key, m->ksize, 7) & mask;; j = (j + 1) & mask) {
        if (!m->used[j]) {
            m->used[j] = 1;
            memcpy(m->keys + j * m->ksize, key, m->ksize);
            m->vals[j] = 0;
            m->n++;
            return j;
        }
        if (memcmp(m->keys + j * m->ksize, key, m->ksize) == 0) return j;
    }
}

typedef struct {
    uint64_t address;
    int64_t lineno, start_line;
    uint32_t name; /* canonical string index, AP_PPROF_NONE without a function */
    uint32_t pad;
} node_key;

typedef struct {
    uint32_t src, dst;
} edge_key;

typedef struct {
    int64_t offset;
    uint32_t caller, callee;
} named_key;

static int is_type(const ap_pprof_profile *p, uint32_t i, const char *type, const char *unit)
{
    return ap_str_eq(&p->strings[p->sample_type[2 * i]], type, strlen(type)) &&
           ap_str_eq(&p->strings[p->sample_type[2 * i + 1]], unit, strlen(unit));
}

int ap_pprof_pgo_graph(const ap_pprof_profile *p, ap_pprof_pgo *out, ap_pprof_named_edge **list,
                       ap_pprof_error *err)
{
    if (list) *list = NULL;
    memset(out, 0, sizeof *out);
    out->value_index = -1;
    if (p->nsamples == 0) {
        out->usable = out->empty = 1;
        snprintf(out->reason, sizeof out->reason,
                 "profile has no samples: accepted, but there is nothing to optimise");
        return 0;
    }
    for (uint32_t i = 0; i < p->nsample_type; i++) {
        if (is_type(p, i, "samples", "count") || is_type(p, i, "cpu", "nanoseconds")) {
            out->value_index = (int)i;
            break;
        }
    }
    if (out->value_index < 0) {
        snprintf(out->reason, sizeof out->reason,
                 "profile has no samples/count or cpu/nanoseconds sample type (not a CPU "
                 "profile)");
        return 0;
    }

    int rc = -1;
    uint32_t *canon = NULL, *locnode = NULL, *nodes = NULL;
    size_t nnodes = 0, capnodes = 0;
    kvmap nodemap = {0}, edges = {0}, named = {0};
    int64_t *cum = NULL, *flat = NULL;
    uint8_t *keep = NULL;
    if (ap_pprof_string_canon(p, &canon)) goto nomem;
    /* locnode[l]: offset+1 into `nodes` of location l's node list (outermost last). */
    locnode = calloc(p->nlocations ? p->nlocations : 1, sizeof *locnode);
    if (!locnode || kv_init(&nodemap, sizeof(node_key), 1024) ||
        kv_init(&edges, sizeof(edge_key), 1024))
        goto nomem;

    uint32_t vi = (uint32_t)out->value_index, nv = p->nsample_type;
    size_t capw = 0, capseen = 0;
    uint32_t *seen = NULL;
    edge_key *seen_edge = NULL;
    for (uint32_t si = 0; si < p->nsamples; si++) {
        const ap_pprof_sample *s = &p->samples[si];
        int64_t w = p->values[(size_t)si * nv + vi];
        if (w == 0 || s->nloc == 0) continue;
        /* Only the leaf and its caller count (Go: "Count only the last two frames"). */
        size_t nseen = 0, nseen_edge = 0;
        uint32_t parent = AP_PPROF_NONE;
        for (int64_t i = s->nloc > 1 ? 1 : 0; i >= 0; i--) {
            uint32_t li = p->sample_locs[s->loc_off + (uint32_t)i];
            const ap_pprof_location *l = &p->locations[li];
            uint32_t nl = l->nline ? l->nline : 1;
            if (!locnode[li]) {
                if (nnodes + nl > capnodes) {
                    capnodes = (nnodes + nl) * 2 + 64;
                    uint32_t *nb = realloc(nodes, capnodes * sizeof *nodes);
                    if (!nb) goto nomem_loop;
                    nodes = nb;
                }
                for (uint32_t j = 0; j < nl; j++) {
                    node_key k;
                    memset(&k, 0, sizeof k);
                    k.address = l->address;
                    k.name = AP_PPROF_NONE;
                    if (l->nline) {
                        const ap_pprof_line *ln = &p->lines[l->line_off + j];
                        const ap_pprof_function *f = &p->functions[ln->function];
                        k.lineno = ln->line;
                        k.start_line = f->start_line;
                        k.name = canon ? canon[f->name] : f->name;
                    }
                    size_t slot = kv_slot(&nodemap, &k);
                    if (slot == SIZE_MAX) goto nomem_loop;
                    /* A node's id is its insertion order, kept in its value. */
                    if (nodemap.vals[slot] == 0) nodemap.vals[slot] = (int64_t)nodemap.n;
                    nodes[nnodes + j] = (uint32_t)nodemap.vals[slot] - 1;
                }
                locnode[li] = (uint32_t)nnodes + 1;
                nnodes += nl;
                if (nodemap.n > capw) {
                    size_t nc = nodemap.n * 2 + 64;
                    int64_t *c2 = realloc(cum, nc * sizeof *cum);
                    if (c2) cum = c2;
                    int64_t *f2 = realloc(flat, nc * sizeof *flat);
                    if (f2) flat = f2;
                    if (!c2 || !f2) goto nomem_loop;
                    memset(cum + capw, 0, (nc - capw) * sizeof *cum);
                    memset(flat + capw, 0, (nc - capw) * sizeof *flat);
                    capw = nc;
                }
            }
            if (nseen + nl > capseen) {
                capseen = (nseen + nl) * 2 + 16;
                uint32_t *s2 = realloc(seen, capseen * sizeof *seen);
                if (s2) seen = s2;
                edge_key *e2 = realloc(seen_edge, capseen * sizeof *seen_edge);
                if (e2) seen_edge = e2;
                if (!s2 || !e2) goto nomem_loop;
            }
            const uint32_t *ln = &nodes[locnode[li] - 1];
            for (int64_t ni = (int64_t)nl - 1; ni >= 0; ni--) {
                uint32_t n = ln[ni];
                int saw = 0;
                for (size_t k = 0; k < nseen && !saw; k++) saw = seen[k] == n;
                if (!saw) {
                    seen[nseen++] = n;
                    cum[n] = ap_add_wrap(cum[n], w);
                }
                int saw_edge = 0;
                for (size_t k = 0; k < nseen_edge && !saw_edge; k++)
                    saw_edge = seen_edge[k].src == parent && seen_edge[k].dst == n;
                if ((!saw || !saw_edge) && parent != AP_PPROF_NONE && n != parent) {
                    edge_key ek = {parent, n};
                    seen_edge[nseen_edge++] = ek;
                    size_t slot = kv_slot(&edges, &ek);
                    if (slot == SIZE_MAX) goto nomem_loop;
                    edges.vals[slot] = ap_add_wrap(edges.vals[slot], w);
                }
                parent = n;
            }
        }
        if (parent != AP_PPROF_NONE) flat[parent] = ap_add_wrap(flat[parent], w);
    }
    free(seen);
    free(seen_edge);
    seen = NULL;
    seen_edge = NULL;

    size_t nn = nodemap.n;
    keep = calloc(nn ? nn : 1, 1);
    if (!keep) goto nomem;

    /* Node info by id, for the start_line check and the named edges. */
    node_key *info = malloc((nn ? nn : 1) * sizeof *info);
    if (!info) goto nomem;
    for (size_t i = 0; i < nodemap.cap; i++)
        if (nodemap.used[i])
            memcpy(&info[nodemap.vals[i] - 1], nodemap.keys + i * sizeof(node_key),
                   sizeof(node_key));
    int seen_start_line = 0;
    for (size_t i = 0; i < nn; i++) {
        keep[i] = cum[i] != 0 || flat[i] != 0;
        if (keep[i] && info[i].start_line != 0) seen_start_line = 1;
    }
    if (!seen_start_line) {
        free(info);
        snprintf(out->reason, sizeof out->reason,
                 "profile has no Function.start_line (written by Go older than 1.20?)");
        rc = 0;
        goto done;
    }
    if (kv_init(&named, sizeof(named_key), edges.n + 1)) {
        free(info);
        goto nomem;
    }
    int64_t total = 0;
    for (size_t i = 0; i < edges.cap; i++) {
        if (!edges.used[i]) continue;
        edge_key ek;
        memcpy(&ek, edges.keys + i * sizeof ek, sizeof ek);
        if (!keep[ek.src]) continue;
        int64_t w = edges.vals[i];
        total = ap_add_wrap(total, w);
        named_key k;
        memset(&k, 0, sizeof k);
        k.caller = info[ek.src].name;
        k.offset = (int64_t)((uint64_t)info[ek.src].lineno - (uint64_t)info[ek.src].start_line);
        k.callee = info[ek.dst].name;
        size_t slot = kv_slot(&named, &k);
        if (slot == SIZE_MAX) {
            free(info);
            goto nomem;
        }
        named.vals[slot] = ap_add_wrap(named.vals[slot], w);
    }
    free(info);
    if (list && total != 0) {
        /* Go drops the whole map when the weights sum to zero ("accept but ignore"). */
        ap_pprof_named_edge *l = malloc((named.n ? named.n : 1) * sizeof *l);
        if (!l) goto nomem;
        size_t j = 0;
        for (size_t i = 0; i < named.cap; i++) {
            if (!named.used[i]) continue;
            named_key k;
            memcpy(&k, named.keys + i * sizeof k, sizeof k);
            l[j].caller = k.caller;
            l[j].callee = k.callee;
            l[j].offset = k.offset;
            l[j].weight = named.vals[i];
            j++;
        }
        *list = l;
    }
    out->usable = 1;
    out->total_weight = total;
    if (total == 0) {
        out->empty = 1;
        snprintf(out->reason, sizeof out->reason,
                 "no weighted call edges: accepted, but there is nothing to optimise");
    } else {
        out->edges = named.n;
    }
    rc = 0;
    goto done;
nomem_loop:
    free(seen);
    free(seen_edge);
nomem:
    ap_pprof_fail(err, AP_PPROF_ENOMEM, "out of memory in the PGO check");
done:
    free(canon);
    free(locnode);
    free(nodes);
    kv_free(&nodemap);
    kv_free(&edges);
    kv_free(&named);
    free(cum);
    free(flat);
    free(keep);
    return rc;
}

int ap_pprof_pgo_check(const ap_pprof_profile *p, ap_pprof_pgo *out, ap_pprof_error *err)
{
    return ap_pprof_pgo_graph(p, out, NULL, err);
}
