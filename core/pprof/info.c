/* Read-only views of a profile for `autopgo inspect` and the Lua binding: totals per sample
 * type, the default sample type, and the top functions by flat and cumulative weight. */
#include <stdlib.h>

#include "internal.h"

int ap_pprof_default_index(const ap_pprof_profile *p)
{
    if (p->nsample_type == 0) return -1;
    const ap_pprof_str *d = &p->strings[p->default_sample_type];
    if (d->len) {
        for (uint32_t i = 0; i < p->nsample_type; i++)
            if (ap_str_eq(&p->strings[p->sample_type[2 * i]], d->ptr, d->len)) return (int)i;
    }
    return (int)p->nsample_type - 1;
}

void ap_pprof_totals(const ap_pprof_profile *p, int64_t *totals)
{
    uint32_t nv = p->nsample_type;
    for (uint32_t k = 0; k < nv; k++) totals[k] = 0;
    for (uint32_t i = 0; i < p->nsamples; i++)
        for (uint32_t k = 0; k < nv; k++)
            totals[k] = ap_add_wrap(totals[k], p->values[(size_t)i * nv + k]);
}

int64_t ap_pprof_total_of(const ap_pprof_profile *p, uint32_t k)
{
    uint32_t nv = p->nsample_type;
    int64_t total = 0;
    if (k < nv)
        for (uint32_t i = 0; i < p->nsamples; i++)
            total = ap_add_wrap(total, p->values[(size_t)i * nv + k]);
    return total;
}

/* Whether entry x ranks before y: by the chosen weight, then the other, then by name. */
static int ranks_before(const ap_pprof_profile *p, int by_cum, const ap_pprof_top_entry *x,
                        const ap_pprof_top_entry *y)
{
    int64_t vx = by_cum ? x->cum : x->flat, vy = by_cum ? y->cum : y->flat;
    if (vx != vy) return vx > vy;
    int64_t wx = by_cum ? x->flat : x->cum, wy = by_cum ? y->flat : y->cum;
    if (wx != wy) return wx > wy;
    int c = ap_str_cmp(&p->strings[p->functions[x->function].name],
                       &p->strings[p->functions[y->function].name]);
    if (c) return c < 0;
    return x->function < y->function;
}

int ap_pprof_top(const ap_pprof_profile *p, int index, int by_cum, ap_pprof_top_entry *out,
                 size_t n)
{
    if (index < 0 || (uint32_t)index >= p->nsample_type || n == 0) return 0;
    /* Functions are aggregated by name (pprof's default granularity), so the entry for a name
     * is its first function. */
    uint32_t *canon = NULL;
    if (ap_pprof_string_canon(p, &canon)) return -1;
    uint32_t nf = p->nfunctions;
    ap_pprof_top_entry *all = calloc(nf ? nf : 1, sizeof *all);
    uint32_t *byname = malloc((size_t)p->nstrings * sizeof *byname);
    uint32_t *stamp = calloc(nf ? nf : 1, sizeof *stamp);
    int rc = -1;
    if (!all || !byname || !stamp) goto done;
    memset(byname, 0xff, (size_t)p->nstrings * sizeof *byname);
    uint32_t *fn_entry = malloc((nf ? nf : 1) * sizeof *fn_entry);
    if (!fn_entry) goto done;
    uint32_t nent = 0;
    for (uint32_t f = 0; f < nf; f++) {
        uint32_t name = p->functions[f].name;
        if (canon) name = canon[name];
        if (byname[name] == AP_PPROF_NONE) {
            byname[name] = nent;
            all[nent].function = f;
            nent++;
        }
        fn_entry[f] = byname[name];
    }
    uint32_t nv = p->nsample_type;
    for (uint32_t si = 0; si < p->nsamples; si++) {
        const ap_pprof_sample *s = &p->samples[si];
        int64_t v = p->values[(size_t)si * nv + (uint32_t)index];
        if (v == 0 || s->nloc == 0) continue;
        const uint32_t *locs = ap_pprof_sample_locs(p, s);
        int leaf = 1;
        for (uint32_t j = 0; j < s->nloc; j++) {
            const ap_pprof_location *l = &p->locations[locs[j]];
            for (uint32_t k = 0; k < l->nline; k++) {
                uint32_t e = fn_entry[p->lines[l->line_off + k].function];
                if (leaf) {
                    all[e].flat = ap_add_wrap(all[e].flat, v);
                    leaf = 0;
                }
                if (stamp[e] != si + 1) { /* once per sample */
                    stamp[e] = si + 1;
                    all[e].cum = ap_add_wrap(all[e].cum, v);
                }
            }
            if (l->nline == 0) leaf = 0;
        }
    }
    /* Keep the best n by insertion: n is small (a screenful). */
    size_t k = 0;
    for (uint32_t i = 0; i < nent; i++) {
        if (all[i].flat == 0 && all[i].cum == 0) continue;
        if (k == n && !ranks_before(p, by_cum, &all[i], &out[n - 1])) continue;
        size_t j = k < n ? k++ : n - 1;
        while (j > 0 && ranks_before(p, by_cum, &all[i], &out[j - 1])) {
            out[j] = out[j - 1];
            j--;
        }
        out[j] = all[i];
    }
    rc = (int)k;
    free(fn_entry);
done:
    free(canon);
    free(all);
    free(byname);
    free(stamp);
    return rc;
}
