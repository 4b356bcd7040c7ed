/* libFuzzer target for the pprof decoder. Whatever the bytes, decode must either fail with a
 * message or give a profile that the rest of the core handles: PGO check, top, re-encode and
 * re-decode, merge with itself, prune, gzip'd encode. Broken invariants abort. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pprof.h"

#define REQUIRE(c)                                                                                 \
    do {                                                                                           \
        if (!(c)) {                                                                                \
            fprintf(stderr, "invariant failed: %s (%s:%d)\n", #c, __FILE__, __LINE__);             \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static ap_pprof_pruner *pruner;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* Small limits keep each run fast and make the limit paths reachable. */
    ap_pprof_limits lim = {.max_decompressed = 8u << 20, .max_memory = 256u << 20};
    ap_pprof_error err;
    ap_pprof_profile *p = ap_pprof_decode(data, size, &lim, &err);
    if (!p) {
        REQUIRE(err.code != AP_PPROF_OK && err.msg[0] != 0);
        return 0;
    }
    ap_pprof_pgo g;
    REQUIRE(ap_pprof_pgo_check(p, &g, &err) == 0);
    int64_t totals[64];
    if (p->nsample_type <= 64) ap_pprof_totals(p, totals);
    ap_pprof_top_entry top[5];
    REQUIRE(ap_pprof_top(p, ap_pprof_default_index(p), 1, top, 5) >= 0);

    /* What we accept, we can write, and read back with the same tables. */
    ap_pprof_encode_opts raw = {.level = -1, .raw = 1};
    uint8_t *out;
    size_t len;
    REQUIRE(ap_pprof_encode(p, &raw, &out, &len, &err) == 0);
    ap_pprof_profile *q = ap_pprof_decode(out, len, NULL, &err);
    if (!q) fprintf(stderr, "re-decode: %s\n", err.msg);
    REQUIRE(q != NULL);
    REQUIRE(q->nsamples == p->nsamples && q->nlocations == p->nlocations &&
            q->nfunctions == p->nfunctions && q->nmappings == p->nmappings);
    free(out);

    const ap_pprof_profile *in[] = {p, q};
    ap_pprof_profile *m = ap_pprof_merge(in, 2, &err);
    REQUIRE(m != NULL);
    REQUIRE(m->nsamples <= p->nsamples);
    REQUIRE(ap_pprof_prune(m, pruner, &err) == 0);
    ap_pprof_encode_opts gz = {.level = 1, .raw = 0};
    REQUIRE(ap_pprof_encode(m, &gz, &out, &len, &err) == 0);
    free(out);
    ap_pprof_profile_free(m);
    ap_pprof_profile_free(q);
    ap_pprof_profile_free(p);
    return 0;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    ap_pprof_prune_rule rules[] = {{"main|runtime", "runtime\\.main"}, {"^[a-f]", NULL}};
    ap_pprof_error err;
    pruner = ap_pprof_pruner_new(rules, 2, &err);
    return pruner ? 0 : 1;
}
