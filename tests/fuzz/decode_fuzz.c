/* libFuzzer target for the pprof decoder. Whatever the bytes, decode must either fail with a
 * message or give a profile that the rest of the core handles: PGO check, top, re-encode and
 * re-decode, merge with itself, prune, gzip'd encode, and the compiler's view (the minimal
 * profile and the preprofile text read back to the same edge map); a gzip input gunzips the
 * same through libdeflate's whole-buffer path and zlib's streaming one (source.c). Broken
 * invariants abort. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edges.h"
#include "pprof.h"
#include "source.h"

#define REQUIRE(c)                                                                                 \
    do {                                                                                           \
        if (!(c)) {                                                                                \
            fprintf(stderr, "invariant failed: %s (%s:%d)\n", #c, __FILE__, __LINE__);             \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static ap_pprof_pruner *pruner;

static char *preprofile(const ap_pgo_edges *e, size_t *len)
{
    uint8_t *b;
    ap_pprof_error err;
    REQUIRE(ap_pgo_write_preprofile(e, &b, len, &err) == 0);
    return (char *)b;
}

/* The compiler's view of p survives both of its serialized forms unchanged. */
static void check_edges(const ap_pprof_profile *p)
{
    ap_pprof_error err;
    ap_pgo_edges *e = NULL;
    REQUIRE(ap_pgo_edges_from_profile(p, &e, &err) == 0);
    if (e->usable) {
        size_t n1, n2, n3, len;
        char *t1 = preprofile(e, &n1);
        ap_pprof_profile *m;
        REQUIRE(ap_pgo_minimal_profile(e, &m, &err) == 0);
        ap_pprof_encode_opts raw = {.level = -1, .raw = 1};
        uint8_t *out;
        REQUIRE(ap_pprof_encode(m, &raw, &out, &len, &err) == 0);
        ap_pprof_profile_free(m);
        ap_pgo_edges *back = NULL;
        REQUIRE(ap_pgo_edges_load(out, len, NULL, &back, &err) == 0);
        free(out);
        char *t2 = preprofile(back, &n2);
        REQUIRE(n1 == n2 && memcmp(t1, t2, n1) == 0);
        REQUIRE(back->total_weight == e->total_weight);
        ap_pgo_edges_free(back);
        /* names with a newline cannot round-trip through the text (nor can they in Go) */
        if (!memchr(e->names, '\n', e->names_len) && !memchr(e->names, '\r', e->names_len)) {
            REQUIRE(ap_pgo_edges_load(t1, n1, NULL, &back, &err) == 0);
            char *t3 = preprofile(back, &n3);
            REQUIRE(n1 == n3 && memcmp(t1, t3, n1) == 0);
            free(t3);
            ap_pgo_edges_free(back);
        }
        ap_pgo_decisions d;
        REQUIRE(ap_pgo_decide(e, 99, &d, &err) == 0);
        REQUIRE(d.nhot <= e->n);
        ap_pgo_decisions_free(&d);
        free(t1);
        free(t2);
    }
    ap_pgo_edges_free(e);
}

/* Reads all of `data` through the source, the whole-buffer path first or zlib's alone: the
 * output's length and CRC-32, or the error. */
typedef struct {
    int rc;
    uint64_t n;
    uint32_t crc;
    ap_pprof_error err;
} gunzipped;

static gunzipped gunzip(const uint8_t *data, size_t size, uint64_t limit, int zlib_only)
{
    gunzipped g = {0};
    ap_src s;
    ap_src_init(&s, data, size, limit, NULL);
    s.tried_whole = zlib_only;
    for (;;) {
        if (ap_src_fill(&s, 1 << 16, &g.err)) {
            g.rc = -1;
            break;
        }
        size_t n = ap_src_avail(&s);
        if (n == 0) break;
        g.crc = (uint32_t)crc32_z(g.crc, s.buf + s.lo, n);
        g.n += n;
        s.lo = s.hi;
    }
    ap_src_free(&s);
    return g;
}

static void check_gunzip(const uint8_t *data, size_t size, uint64_t limit)
{
    if (size < 2 || data[0] != 0x1f || data[1] != 0x8b) return;
    gunzipped w = gunzip(data, size, limit, 0), z = gunzip(data, size, limit, 1);
    REQUIRE(w.rc == z.rc);
    if (w.rc)
        REQUIRE(w.err.code == z.err.code && strcmp(w.err.msg, z.err.msg) == 0);
    else
        REQUIRE(w.n == z.n && w.crc == z.crc);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* Small limits keep each run fast and make the limit paths reachable. */
    ap_pprof_limits lim = {.max_decompressed = 8u << 20, .max_memory = 256u << 20};
    ap_pprof_error err;
    check_gunzip(data, size, lim.max_decompressed);
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
    check_edges(p);

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
