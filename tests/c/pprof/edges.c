/* Tests core/pprof/edges.c: the named edge map, GO PREPROFILE V1 in and out, the minimal
 * profile (read back to the same map, byte-deterministic) and the decisions. The comparison with
 * the real `go tool preprofile` and `go build -pgo` is tests/pgo/run.sh. */
#include <stdlib.h>

#include "edges.h"
#include "helpers.h"

/* ---- crafted profiles: one sample type (samples/count), functions and locations by hand ---- */

typedef struct {
    const char *name;
    int64_t start;
} t_fn;
typedef struct {
    int fn; /* 1-based; 0 = a location without lines */
    int64_t line;
} t_loc;
typedef struct {
    uint64_t locs[4]; /* location ids, leaf first, 0-terminated */
    int64_t v;
} t_smp;

static pb craft(const t_fn *fns, int nf, const t_loc *locs, int nl, const t_smp *s, int ns)
{
    pb p = {0}, m = {0};
    pb_u64(&m, 1, 1);
    pb_u64(&m, 2, 2);
    pb_msg(&p, 1, &m);
    for (int i = 0; i < ns; i++) {
        int k = 0;
        while (k < 4 && s[i].locs[k]) k++;
        pb_packed(&m, 1, s[i].locs, (size_t)k);
        pb_u64(&m, 2, (uint64_t)s[i].v);
        pb_msg(&p, 2, &m);
    }
    for (int i = 0; i < nf; i++) {
        pb_u64(&m, 1, (uint64_t)i + 1);
        pb_u64(&m, 2, (uint64_t)i + 3);
        pb_u64(&m, 5, (uint64_t)fns[i].start);
        pb_msg(&p, 5, &m);
    }
    for (int i = 0; i < nl; i++) {
        pb_u64(&m, 1, (uint64_t)i + 1);
        pb_u64(&m, 3, 0x1000 + 16 * (uint64_t)i);
        if (locs[i].fn) {
            pb line = {0};
            pb_u64(&line, 1, (uint64_t)locs[i].fn);
            pb_u64(&line, 2, (uint64_t)locs[i].line);
            pb_msg(&m, 4, &line);
        }
        pb_msg(&p, 4, &m);
    }
    pb_str(&p, 6, "");
    pb_str(&p, 6, "samples");
    pb_str(&p, 6, "count");
    for (int i = 0; i < nf; i++) pb_str(&p, 6, fns[i].name);
    return p;
}

static char *preprofile(const ap_pgo_edges *e)
{
    uint8_t *b;
    size_t n;
    ap_pprof_error err;
    if (ap_pgo_write_preprofile(e, &b, &n, &err)) return NULL;
    char *s = malloc(n + 1);
    memcpy(s, b, n);
    s[n] = 0;
    free(b);
    return s;
}

/* The minimal profile of e, encoded; and read back, it must give the same preprofile. */
static uint8_t *minimal_roundtrip(const ap_pgo_edges *e, size_t *len, const char *what)
{
    ap_pprof_error err;
    ap_pprof_profile *m = NULL;
    CHECK_INT(ap_pgo_minimal_profile(e, &m, &err), 0);
    if (!m) return NULL;
    uint8_t *bytes = NULL;
    ap_pprof_encode_opts o = {-1, 0, 1};
    CHECK_INT(ap_pprof_encode(m, &o, &bytes, len, &err), 0);
    ap_pprof_profile_free(m);
    ap_pgo_edges *back = NULL;
    CHECK_INT(ap_pgo_edges_load(bytes, *len, NULL, &back, &err), 0);
    if (!back) return bytes;
    char *a = preprofile(e), *b = preprofile(back);
    int same = a && b && strcmp(a, b) == 0;
    if (!same) fprintf(stderr, "%s: minimal profile reads back differently\n", what);
    CHECK(same);
    CHECK_INT(back->total_weight, e->total_weight);
    free(a);
    free(b);
    ap_pgo_edges_free(back);
    return bytes;
}

static ap_pgo_edges *load_raw(const pb *p)
{
    ap_pgo_edges *e = NULL;
    ap_pprof_error err;
    CHECK_INT(ap_pgo_edges_load(p->b, p->n, NULL, &e, &err), 0);
    if (!e) fprintf(stderr, "load: %s\n", err.msg);
    return e;
}

static void test_corpus(void)
{
    const char *files[] = {"autopgo/default.pgo",
                           "goapp-go123-cpu-1.pb.gz",
                           "goapp-go123-cpu-2.pb.gz",
                           "goapp-go123-cpu-3.pb.gz",
                           "edge/cpu-only-nanoseconds.pb.gz",
                           "edge/duplicate-samples.pb.gz",
                           "edge/empty-stack-sample.pb.gz",
                           "edge/labels-multi-and-numeric.pb.gz",
                           "edge/minimal.pb.gz",
                           "edge/zero-value-samples.pb.gz",
                           "edge/no-samples.pb.gz",
                           "goapp-cpu-1.pb.gz",
                           "edge/heap-sample-types.pb.gz"};
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
        size_t len, mlen;
        uint8_t *b = t_data(files[i], &len);
        if (!b) {
            CHECK(0);
            continue;
        }
        ap_pgo_edges *e = NULL;
        ap_pprof_error err;
        CHECK_INT(ap_pgo_edges_load(b, len, NULL, &e, &err), 0);
        ap_pprof_profile *p = t_decode(b, len);
        ap_pprof_pgo g;
        CHECK_INT(ap_pprof_pgo_check(p, &g, &err), 0);
        ap_pprof_profile_free(p);
        if (!e) {
            free(b);
            continue;
        }
        CHECK_INT(e->usable, g.usable);
        CHECK_INT(e->empty, g.empty);
        if (!e->usable) {
            uint8_t *o;
            size_t ol;
            CHECK_INT(ap_pgo_write_preprofile(e, &o, &ol, &err), -1);
            CHECK_INT(err.code, AP_PPROF_EINVAL);
            ap_pprof_profile *m;
            CHECK_INT(ap_pgo_minimal_profile(e, &m, &err), -1);
            ap_pgo_edges_free(e);
            free(b);
            continue;
        }
        CHECK_INT(e->n, g.edges);
        if (!e->empty) CHECK_INT(e->total_weight, g.total_weight);
        uint8_t *m1 = minimal_roundtrip(e, &mlen, files[i]);
        /* Deterministic: a second build gives the same bytes. */
        size_t mlen2;
        uint8_t *m2 = minimal_roundtrip(e, &mlen2, files[i]);
        CHECK(m1 && m2 && mlen == mlen2 && memcmp(m1, m2, mlen) == 0);
        if (e->n > 100) CHECK(mlen * 3 < len);
        /* preprofile text parses back to the same map and the same text */
        char *pp = preprofile(e);
        ap_pgo_edges *back = NULL;
        CHECK_INT(ap_pgo_edges_load(pp, strlen(pp), NULL, &back, &err), 0);
        if (back) {
            CHECK(back->preprofile);
            CHECK_INT(back->total_weight, e->total_weight);
            char *pp2 = preprofile(back);
            CHECK(pp2 && strcmp(pp, pp2) == 0);
            /* and its minimal profile is the same bytes as the pprof's (kind aside) */
            free(pp2);
            ap_pgo_edges_free(back);
        }
        free(pp);
        free(m1);
        free(m2);
        free(b);
        ap_pgo_edges_free(e);
    }
}

/* A hand-checked map: offsets from start lines, sums over addresses and callee lines, order. */
static void test_named_map(void)
{
    t_fn f[] = {{"main.main", 10}, {"main.work", 20}, {"main.leaf", 30}};
    /* 1: main.main:12  2: main.main:12 (another address)  3: main.work:25  4: main.leaf:31
     * 5: main.leaf:35  6: main.work:27 */
    t_loc l[] = {{1, 12}, {1, 12}, {2, 25}, {3, 31}, {3, 35}, {2, 27}};
    t_smp s[] = {
        {{3, 1}, 5},    /* main.main +2 -> main.work: 5 */
        {{3, 2}, 7},    /* same named edge through another address: 12 */
        {{4, 3, 1}, 4}, /* only the two leaf-most frames: main.work +5 -> main.leaf */
        {{5, 3, 1}, 8}, /* another callee line, same edge: 12 */
        {{4, 6}, 12},   /* main.work +7 -> main.leaf: 12 */
        {{1}, 100},     /* a leaf alone: no edge */
        {{3, 1}, 0},    /* zero: skipped */
    };
    pb p = craft(f, 3, l, 6, s, 7);
    ap_pgo_edges *e = load_raw(&p);
    pb_free(&p);
    if (!e) return;
    char *pp = preprofile(e);
    const char *want = "GO PREPROFILE V1\n"
                       "main.main\nmain.work\n2 12\n"
                       "main.work\nmain.leaf\n5 12\n"
                       "main.work\nmain.leaf\n7 12\n";
    CHECK(pp && strcmp(pp, want) == 0);
    if (pp && strcmp(pp, want)) fprintf(stderr, "got:\n%s", pp);
    CHECK_INT(e->total_weight, 36);
    free(pp);
    size_t len;
    free(minimal_roundtrip(e, &len, "named map"));
    ap_pgo_edges_free(e);
}

/* Recursion at offset 0, negative weights, an edge summing to zero, frames without lines. */
static void test_odd_maps(void)
{
    t_fn f[] = {{"r", 5}, {"s", 7}, {"t", 9}};
    t_loc l[] = {{1, 5}, {1, 6}, {2, 7}, {3, 9}, {0, 0}, {2, 8}};
    t_smp s[] = {
        {{1, 1}, 3},               /* same node twice: no edge */
        {{2, 1}, 3},               /* r +0 -> r (another line): 3 */
        {{3, 1}, 4},               /* r +0 -> s: 4 */
        {{3, 2}, -9},              /* r +1 -> s: -9 */
        {{4, 3}, 6},               /* s +0 -> t: 6 and -6 below: the edge stays, weight 0 */
        {{4, 3}, -6}, {{5, 6}, 2}, /* s +1 -> "" (no lines): 2 */
        {{4, 5}, 1},               /* "" +0 -> t: 1 */
    };
    pb p = craft(f, 3, l, 6, s, 8);
    ap_pgo_edges *e = load_raw(&p);
    pb_free(&p);
    if (!e) return;
    CHECK_INT(e->n, 6);
    CHECK_INT(e->total_weight, 3 + 4 - 9 + 0 + 2 + 1);
    char *pp = preprofile(e);
    const char *want = "GO PREPROFILE V1\n"
                       "r\ns\n0 4\n"
                       "r\nr\n0 3\n"
                       "s\n\n1 2\n"
                       "\nt\n0 1\n"
                       "s\nt\n0 0\n"
                       "r\ns\n1 -9\n";
    CHECK(pp && strcmp(pp, want) == 0);
    if (pp && strcmp(pp, want)) fprintf(stderr, "got:\n%s", pp);
    free(pp);
    size_t len;
    free(minimal_roundtrip(e, &len, "odd map"));
    ap_pgo_edges_free(e);

    /* weights that sum to zero: accepted, ignored */
    t_smp z[] = {{{3, 1}, 4}, {{4, 3}, -4}};
    p = craft(f, 3, l, 6, z, 2);
    e = load_raw(&p);
    pb_free(&p);
    if (!e) return;
    CHECK(e->usable && e->empty);
    CHECK_INT(e->n, 0);
    pp = preprofile(e);
    CHECK(pp && strcmp(pp, "GO PREPROFILE V1\n") == 0);
    free(pp);
    free(minimal_roundtrip(e, &len, "zero-sum map"));
    ap_pgo_edges_free(e);
}

static void test_preprofile_parse(void)
{
    ap_pgo_edges *e = NULL;
    ap_pprof_error err;
    /* Lines may end in \r\n after the header, which the compiler peeks at byte for byte. */
    const char *crlf = "GO PREPROFILE V1\na\r\nb\r\n+3 10\r\nc\nd\n-2 5";
    CHECK_INT(ap_pgo_edges_load(crlf, strlen(crlf), NULL, &e, &err), 0);
    if (e) {
        CHECK_INT(e->n, 2);
        CHECK_INT(e->total_weight, 15);
        CHECK_INT(e->edges[0].offset, 3);
        CHECK_INT(e->edges[1].offset, -2);
        CHECK(strcmp(ap_pgo_callee(e, &e->edges[1]), "d") == 0);
        ap_pgo_edges_free(e);
    }
    struct {
        const char *text, *why;
    } bad[] = {
        {"GO PREPROFILE V2\n", "header"},
        {"GO PREPROFILE V1\na\n", "missing callee"},
        {"GO PREPROFILE V1\na\nb\n", "missing weight"},
        {"GO PREPROFILE V1\na\nb\n1 2 3\n", "offset weight"},
        {"GO PREPROFILE V1\na\nb\n1 x\n", "bad offset or weight"},
        {"GO PREPROFILE V1\na\nb\n1 99999999999999999999\n", "bad offset or weight"},
        {"GO PREPROFILE V1\na\nb\n1 2\na\nb\n1 3\n", "duplicate"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        e = NULL;
        if (strncmp(bad[i].text, "GO PREPROFILE V1", 16) == 0) {
            CHECK_INT(ap_pgo_edges_load(bad[i].text, strlen(bad[i].text), NULL, &e, &err), -1);
        } else {
            CHECK_INT(ap_pgo_edges_from_preprofile(bad[i].text, strlen(bad[i].text), &e, &err), -1);
        }
        CHECK_ERR(err, AP_PPROF_EMALFORMED, bad[i].why);
        CHECK(e == NULL);
    }
    const char *crlf_header = "GO PREPROFILE V1\r\na\nb\n1 2\n";
    CHECK_INT(ap_pgo_edges_load(crlf_header, strlen(crlf_header), NULL, &e, &err), -1);
    CHECK_INT(err.code, AP_PPROF_EMALFORMED); /* read as pprof, as Go does */
    /* an empty file is an empty profile, as for the compiler */
    CHECK_INT(ap_pgo_edges_load("", 0, NULL, &e, &err), 0);
    CHECK(e && e->usable && e->empty);
    ap_pgo_edges_free(e);
    /* and so is a gzip stream of nothing (Go's ErrNoData after gunzip) */
    size_t gzlen;
    uint8_t *gz = t_gzip("", 0, &gzlen);
    e = NULL;
    CHECK_INT(ap_pgo_edges_load(gz, gzlen, NULL, &e, &err), 0);
    CHECK(e && e->usable && e->empty);
    ap_pgo_edges_free(e);
    free(gz);
}

static void test_decisions(void)
{
    /* 600 + 300 + 95 + 5 = 1000: 60 %, 90 %, 99.5 % crosses 99: three hot edges. */
    const char *t = "GO PREPROFILE V1\n"
                    "m.a\nm.b\n3 600\n"
                    "m.a\nm.c\n3 300\n"
                    "m.d\nm.b\n1 95\n"
                    "m.d\nm.e\n1 5\n";
    ap_pgo_edges *e = NULL;
    ap_pprof_error err;
    CHECK_INT(ap_pgo_edges_load(t, strlen(t), NULL, &e, &err), 0);
    if (!e) return;
    ap_pgo_decisions d;
    CHECK_INT(ap_pgo_decide(e, 99, &d, &err), 0);
    CHECK_INT(d.nhot, 3);
    CHECK(d.thres_from_cdf == 9.5);
    CHECK(d.cum[0] == 60 && d.cum[3] == 100);
    CHECK_INT(d.nhot_callees, 2); /* m.b, m.c */
    CHECK_INT(d.nsites, 2);
    CHECK_INT(d.sites[0].weight, 900);
    CHECK_INT(d.sites[0].callees, 2);
    CHECK_INT(d.sites[0].edge, 0);
    CHECK_INT(d.sites[1].edge, 2);
    ap_pgo_decisions_free(&d);
    /* a 50 % threshold: the edge that crosses is included */
    CHECK_INT(ap_pgo_decide(e, 50, &d, &err), 0);
    CHECK_INT(d.nhot, 1);
    ap_pgo_decisions_free(&d);
    /* 100 %: nothing crosses, everything is hot and the printed threshold is 0 */
    CHECK_INT(ap_pgo_decide(e, 100, &d, &err), 0);
    CHECK_INT(d.nhot, 4);
    CHECK(d.thres_from_cdf == 0);
    ap_pgo_decisions_free(&d);

    /* no_inline: m.b leaves the hot callees, the total and the order stay */
    const char *names[] = {"m.b", "m.zzz"};
    size_t lens[] = {3, 5};
    CHECK_INT(ap_pgo_edges_no_inline(e, names, lens, 2, &err), 2);
    CHECK_INT(e->total_weight, 1000);
    CHECK(strcmp(ap_pgo_callee(e, &e->edges[0]), "m.b" AP_PGO_NO_INLINE_SUFFIX) == 0);
    CHECK(strcmp(ap_pgo_callee(e, &e->edges[2]), "m.b" AP_PGO_NO_INLINE_SUFFIX) == 0);
    CHECK_INT(ap_pgo_decide(e, 99, &d, &err), 0);
    CHECK_INT(d.nhot, 3);
    ap_pgo_decisions_free(&d);
    ap_pgo_edges_free(e);

    /* devirtualization ties: the lexicographically first callee */
    t = "GO PREPROFILE V1\nm.f\nm.(*B).M\n4 10\nm.f\nm.(*A).M\n4 10\n";
    CHECK_INT(ap_pgo_edges_load(t, strlen(t), NULL, &e, &err), 0);
    if (!e) return;
    CHECK_INT(ap_pgo_decide(e, 99, &d, &err), 0);
    CHECK_INT(d.nsites, 1);
    CHECK(strcmp(ap_pgo_callee(e, &e->edges[d.sites[0].edge]), "m.(*A).M") == 0);
    CHECK_INT(d.sites[0].ties, 2);
    ap_pgo_decisions_free(&d);
    ap_pgo_edges_free(e);
}

int main(void)
{
    test_corpus();
    test_named_map();
    test_odd_maps();
    test_preprofile_parse();
    test_decisions();
    return t_done();
}
