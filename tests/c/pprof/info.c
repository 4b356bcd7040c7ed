/* Tests core/pprof/info.c and edit.c: default sample type, totals, top functions, renaming
 * functions and dropping labels. */
#include <stdlib.h>

#include "helpers.h"

static void test_info(void)
{
    size_t len;
    uint8_t *b = t_data("goapp-go123-cpu-1.pb.gz", &len);
    ap_pprof_profile *p = t_decode(b, len);
    free(b);
    if (!p) return;
    CHECK_INT(ap_pprof_default_index(p), 1); /* the last type: cpu/nanoseconds */
    int64_t tot[2];
    ap_pprof_totals(p, tot);
    CHECK(tot[0] > 0 && tot[1] == tot[0] * p->period);
    ap_pprof_top_entry flat[10], cum[10];
    int nf = ap_pprof_top(p, 1, 0, flat, 10), nc = ap_pprof_top(p, 1, 1, cum, 10);
    CHECK_INT(nf, 10);
    CHECK_INT(nc, 10);
    for (int i = 1; i < nf; i++) CHECK(flat[i - 1].flat >= flat[i].flat);
    for (int i = 1; i < nc; i++) CHECK(cum[i - 1].cum >= cum[i].cum);
    CHECK(cum[0].cum <= tot[1] && cum[0].cum >= flat[0].flat);
    /* The sum of all flat weights is the total (every sample here has a leaf function). */
    ap_pprof_top_entry *all = calloc(p->nfunctions, sizeof *all);
    int n = ap_pprof_top(p, 1, 0, all, p->nfunctions);
    int64_t sum = 0;
    for (int i = 0; i < n; i++) sum += all[i].flat;
    CHECK_INT(sum, tot[1]);
    free(all);
    CHECK_INT(ap_pprof_top(p, 7, 0, flat, 10), 0);
    ap_pprof_profile_free(p);
}

static void test_edit(void)
{
    size_t len;
    uint8_t *b = t_data("edge/labels-multi-and-numeric.pb.gz", &len);
    ap_pprof_profile *p = t_decode(b, len);
    free(b);
    if (!p) return;
    uint32_t before = 0;
    for (uint32_t i = 0; i < p->nsamples; i++) before += p->samples[i].nlabel;
    /* Find a label key present in the profile and drop it. */
    const ap_pprof_str *k = &p->strings[p->labels[0].key];
    char key[64];
    snprintf(key, sizeof key, "%.*s", (int)k->len, k->ptr);
    uint64_t removed = ap_pprof_drop_label(p, key, strlen(key));
    uint32_t after = 0;
    for (uint32_t i = 0; i < p->nsamples; i++) after += p->samples[i].nlabel;
    CHECK(removed > 0);
    CHECK_INT(after + removed, before);
    CHECK_INT(ap_pprof_drop_label(p, "no such key", 11), 0);

    ap_pprof_error err;
    CHECK_INT(ap_pprof_rename_function(p, 0, "renamed.fn", 10, &err), 0);
    const ap_pprof_str *n = &p->strings[p->functions[0].name];
    CHECK(n->len == 10 && memcmp(n->ptr, "renamed.fn", 10) == 0);
    CHECK_INT(p->functions[0].system_name, p->functions[0].name);
    CHECK_INT(ap_pprof_rename_function(p, 9999, "x", 1, &err), -1);
    /* The edited profile encodes and decodes. */
    uint8_t *out;
    size_t olen;
    CHECK_INT(ap_pprof_encode(p, NULL, &out, &olen, &err), 0);
    ap_pprof_profile *q = t_decode(out, olen);
    if (q) {
        uint32_t cnt = 0;
        for (uint32_t i = 0; i < q->nsamples; i++) cnt += q->samples[i].nlabel;
        CHECK_INT(cnt, after);
        CHECK(q->strings[q->functions[0].name].len == 10);
    }
    ap_pprof_profile_free(q);
    free(out);
    ap_pprof_profile_free(p);
}

int main(void)
{
    test_info();
    test_edit();
    return t_done();
}
