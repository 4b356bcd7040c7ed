/* Small edits for Lua policy hooks: rename a function, drop labels by key. Edits may leave
 * equal entries behind; a later merge (or compact) folds them, as it would in Go. */
#include <stdlib.h>

#include "internal.h"

int ap_pprof_rename_function(ap_pprof_profile *p, uint32_t f, const char *name, size_t len,
                             ap_pprof_error *err)
{
    if (f >= p->nfunctions) return ap_pprof_fail(err, AP_PPROF_EINVAL, "no function #%u", f);
    ap_pprof_function *fn = &p->functions[f];
    uint32_t s = ap_pprof_intern(p, name, len);
    if (s == AP_PPROF_NONE) return ap_pprof_fail(err, AP_PPROF_ENOMEM, "out of memory");
    const ap_pprof_str *old = &p->strings[fn->name], *sys = &p->strings[fn->system_name];
    /* Go profiles carry the same text in both; keep them in step. */
    if (fn->system_name == fn->name || ap_str_eq(sys, old->ptr, old->len)) fn->system_name = s;
    fn->name = s;
    return 0;
}

uint64_t ap_pprof_drop_label(ap_pprof_profile *p, const char *key, size_t len)
{
    uint8_t *match = calloc(p->nstrings ? p->nstrings : 1, 1);
    if (!match) return 0;
    int any = 0;
    for (uint32_t i = 0; i < p->nstrings; i++)
        if (ap_str_eq(&p->strings[i], key, len)) match[i] = any = 1;
    uint64_t removed = 0;
    for (uint32_t si = 0; any && si < p->nsamples; si++) {
        ap_pprof_sample *s = &p->samples[si];
        ap_pprof_label *l = &p->labels[s->label_off];
        uint32_t w = 0;
        for (uint32_t j = 0; j < s->nlabel; j++) {
            if (match[l[j].key]) {
                removed++;
                continue;
            }
            l[w++] = l[j];
        }
        s->nlabel = w;
    }
    free(match);
    return removed;
}
