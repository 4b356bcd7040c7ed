/* Tests core/pprof/merge.c: sample identity (stack + labels), zero samples, values that cancel
 * out, header combination, compatibility, mapping address normalization and compaction. */
#include <stdlib.h>
#include <string.h>

#include "helpers.h"

static ap_pprof_profile *make(const t_sample *s, int n, int64_t period, int64_t time_nanos)
{
    pb b = t_profile(s, n, period, time_nanos);
    ap_pprof_profile *p = t_decode(b.b, b.n);
    pb_free(&b);
    return p;
}

static ap_pprof_profile *merge2(ap_pprof_profile *a, ap_pprof_profile *b)
{
    const ap_pprof_profile *in[] = {a, b};
    ap_pprof_error err;
    ap_pprof_profile *m = ap_pprof_merge(in, b ? 2 : 1, &err);
    if (!m) fprintf(stderr, "merge: %s\n", err.msg);
    return m;
}

static int64_t value(const ap_pprof_profile *p, uint32_t s, uint32_t k)
{
    return p->values[(size_t)s * p->nsample_type + k];
}

static void test_sum_and_identity(void)
{
    t_sample a[] = {{{1, 2}, {1, 10}}, {{1, 2}, {2, 20}, "k", "v"}, {{3}, {4, 40}}};
    t_sample b[] = {{{1, 2}, {5, 50}}, {{1, 2}, {7, 70}, "k", "v"}, {{1, 2}, {1, 1}, "k", "w"}};
    ap_pprof_profile *pa = make(a, 3, 10, 0), *pb_ = make(b, 3, 10, 0);
    ap_pprof_profile *m = merge2(pa, pb_);
    if (m) {
        /* {1,2} unlabelled, {1,2} k=v, {3}, {1,2} k=w */
        CHECK_INT(m->nsamples, 4);
        CHECK_INT(value(m, 0, 0), 6);
        CHECK_INT(value(m, 0, 1), 60);
        CHECK_INT(value(m, 1, 0), 9);
        CHECK_INT(value(m, 2, 1), 40);
        CHECK_INT(value(m, 3, 0), 1);
        CHECK_INT(m->nlocations, 3);
        CHECK_INT(m->nfunctions, 3);
        CHECK_INT(m->nmappings, 1);
        /* Output ids are index + 1 in order of first use. */
        for (uint32_t i = 0; i < m->nlocations; i++) CHECK_INT(m->locations[i].id, i + 1);
        CHECK(m->labels_sorted && m->strings_unique);
        CHECK_INT(m->duration_nanos, 2000);
    }
    ap_pprof_profile_free(m);
    ap_pprof_profile_free(pa);
    ap_pprof_profile_free(pb_);
}

static void test_zero_samples(void)
{
    /* All-zero samples are skipped before their locations are mapped. */
    t_sample a[] = {{{3}, {0, 0}}, {{1}, {1, 1}}};
    ap_pprof_profile *pa = make(a, 2, 10, 0);
    ap_pprof_profile *m = merge2(pa, NULL);
    if (m) {
        CHECK_INT(m->nsamples, 1);
        CHECK_INT(m->nlocations, 1);
        CHECK_INT(m->nfunctions, 1);
    }
    ap_pprof_profile_free(m);

    /* Values that cancel out: Go re-merges the result, which drops the sample and compacts. */
    t_sample b[] = {{{1}, {-1, -1}}, {{2}, {1, 1}}};
    ap_pprof_profile *pb_ = make(b, 2, 10, 0);
    m = merge2(pa, pb_);
    if (m) {
        CHECK_INT(m->nsamples, 1);
        CHECK_INT(m->nlocations, 1);
        CHECK_INT(m->locations[0].id, 1);
        CHECK_INT(m->locations[0].address, 0x1020); /* location 2 of the input */
        CHECK_INT(m->nmappings, 1);
    }
    ap_pprof_profile_free(m);
    t_sample c[] = {{{1}, {-1, 0}}};
    ap_pprof_profile *pc = make(c, 1, 10, 0);
    m = merge2(pa, pc);
    if (m) {
        /* {1}: (0, 1) is not all zero: kept. */
        CHECK_INT(m->nsamples, 1);
        CHECK_INT(value(m, 0, 0), 0);
        CHECK_INT(value(m, 0, 1), 1);
    }
    ap_pprof_profile_free(m);
    ap_pprof_profile_free(pa);
    ap_pprof_profile_free(pb_);
    ap_pprof_profile_free(pc);
}

static void test_headers(void)
{
    t_sample s[] = {{{1}, {1, 1}}};
    ap_pprof_profile *a = make(s, 1, 10, 5), *b = make(s, 1, 30, 0), *c = make(s, 1, 20, 3);
    const ap_pprof_profile *in[] = {a, b, c};
    ap_pprof_error err;
    ap_pprof_profile *m = ap_pprof_merge(in, 3, &err);
    if (m) {
        /* combineHeaders: a zero time after a non-zero one resets it, then the next wins. */
        CHECK_INT(m->time_nanos, 3);
        CHECK_INT(m->period, 30);
        CHECK_INT(m->duration_nanos, 3000);
        CHECK_INT(m->nsamples, 1);
        CHECK_INT(value(m, 0, 0), 3);
    }
    ap_pprof_profile_free(m);
    ap_pprof_profile_free(a);
    ap_pprof_profile_free(b);
    ap_pprof_profile_free(c);
}

static void test_incompatible(void)
{
    size_t l1, l2, l3;
    uint8_t *b1 = t_data("edge/minimal.pb.gz", &l1),
            *b2 = t_data("edge/cpu-only-nanoseconds.pb.gz", &l2),
            *b3 = t_data("edge/heap-sample-types.pb.gz", &l3);
    ap_pprof_profile *a = t_decode(b1, l1), *b = t_decode(b2, l2), *c = t_decode(b3, l3);
    if (a && b && c) {
        const ap_pprof_profile *in[] = {a, a, b};
        ap_pprof_error err;
        CHECK(ap_pprof_merge(in, 3, &err) == NULL);
        CHECK_ERR(err, AP_PPROF_EINCOMPATIBLE, "incompatible sample types");
        CHECK_INT(err.input, 2);
        CHECK_INT(err.other, 0);
        const ap_pprof_profile *in2[] = {a, c};
        CHECK(ap_pprof_merge(in2, 2, &err) == NULL);
        CHECK_ERR(err, AP_PPROF_EINCOMPATIBLE, "incompatible period types");
        CHECK_INT(err.input, 1);
        CHECK(ap_pprof_merge(in2, 0, &err) == NULL);
        CHECK_INT(err.code, AP_PPROF_EINVAL);
    }
    ap_pprof_profile_free(a);
    ap_pprof_profile_free(b);
    ap_pprof_profile_free(c);
    free(b1);
    free(b2);
    free(b3);
}

/* One mapping at `start`, one location at start + 0x10, one sample. */
static ap_pprof_profile *mapped(uint64_t start, const char *file, const char *build_id)
{
    pb p = {0}, m = {0}, l = {0};
    pb_u64(&m, 1, 1);
    pb_u64(&m, 2, 2);
    pb_msg(&p, 1, &m);
    pb_u64(&m, 1, 7);
    pb_u64(&m, 2, start);
    pb_u64(&m, 3, start + 0x1800);
    pb_u64(&m, 5, 3);
    pb_u64(&m, 6, 4);
    pb_msg(&p, 3, &m);
    pb_u64(&m, 1, 9);
    pb_u64(&m, 2, 5);
    pb_msg(&p, 5, &m);
    pb_u64(&m, 1, 3);
    pb_u64(&m, 2, 7);
    pb_u64(&m, 3, start + 0x10);
    pb_u64(&l, 1, 9);
    pb_msg(&m, 4, &l);
    pb_msg(&p, 4, &m);
    pb_u64(&m, 1, 3);
    pb_u64(&m, 2, 1);
    pb_msg(&p, 2, &m);
    const char *strs[] = {"", "samples", "count", file, build_id, "f"};
    for (int i = 0; i < 6; i++) pb_str(&p, 6, strs[i]);
    ap_pprof_profile *r = t_decode(p.b, p.n);
    pb_free(&p);
    return r;
}

static void test_mappings(void)
{
    /* Same binary loaded at another address: one mapping, addresses shifted into the first
     * one's space, one location. */
    ap_pprof_profile *a = mapped(0x400000, "/bin/x", ""), *b = mapped(0x7000000, "/bin/x", "");
    ap_pprof_profile *m = merge2(a, b);
    if (m) {
        CHECK_INT(m->nmappings, 1);
        CHECK_INT(m->nlocations, 1);
        CHECK_INT(m->locations[0].address, 0x400010);
        CHECK_INT(m->nsamples, 1);
        CHECK_INT(value(m, 0, 0), 2);
        /* Size is rounded up to 4 KiB: 0x1800 -> 0x2000 for both. */
    }
    ap_pprof_profile_free(m);
    ap_pprof_profile_free(b);
    /* A build id wins over the file name; different ids are different mappings. */
    ap_pprof_profile *c = mapped(0x400000, "/bin/x", "abc"), *d = mapped(0x400000, "/bin/x", "def");
    m = merge2(c, d);
    if (m) {
        CHECK_INT(m->nmappings, 2);
        CHECK_INT(m->nlocations, 2);
        CHECK_INT(m->nsamples, 2);
    }
    ap_pprof_profile_free(m);
    /* Go's key is "build id, else file": a build id equal to another mapping's file name
     * makes them the same mapping. */
    ap_pprof_profile *e = mapped(0x400000, "/bin/y", "/bin/x");
    m = merge2(a, e);
    if (m) CHECK_INT(m->nmappings, 1);
    ap_pprof_profile_free(m);
    ap_pprof_profile_free(a);
    ap_pprof_profile_free(c);
    ap_pprof_profile_free(d);
    ap_pprof_profile_free(e);
}

/* Numeric label units as Go's %x prints them: for one value, no unit and a "" unit are the
 * same key; for two values they are not. */
static ap_pprof_profile *numeric(int nvalues, int with_unit)
{
    pb p = {0}, m = {0}, lab = {0};
    pb_u64(&m, 1, 1);
    pb_u64(&m, 2, 2);
    pb_msg(&p, 1, &m);
    for (int s = 0; s < 2; s++) {
        pb_u64(&m, 2, 1);
        for (int v = 0; v < nvalues; v++) {
            pb_u64(&lab, 1, 3);
            pb_u64(&lab, 3, 8);
            if (s == 1 && with_unit) pb_u64(&lab, 4, 4); /* string 4 is another "" */
            pb_msg(&m, 3, &lab);
        }
        pb_msg(&p, 2, &m);
    }
    const char *strs[] = {"", "samples", "count", "bytes", ""};
    for (int i = 0; i < 5; i++) pb_str(&p, 6, strs[i]);
    ap_pprof_profile *r = t_decode(p.b, p.n);
    pb_free(&p);
    return r;
}

static void test_numeric_units(void)
{
    ap_pprof_profile *one = numeric(1, 1), *two = numeric(2, 1);
    ap_pprof_profile *m1 = merge2(one, NULL), *m2 = merge2(two, NULL);
    if (m1) CHECK_INT(m1->nsamples, 1);
    if (m2) CHECK_INT(m2->nsamples, 2);
    ap_pprof_profile_free(m1);
    ap_pprof_profile_free(m2);
    ap_pprof_profile_free(one);
    ap_pprof_profile_free(two);
}

static void test_corpus(void)
{
    size_t len;
    uint8_t *b = t_data("goapp-cpu-1.pb.gz", &len);
    ap_pprof_profile *p = t_decode(b, len);
    free(b);
    if (!p) return;
    ap_pprof_profile *m = merge2(p, p);
    ap_pprof_profile *once = merge2(p, NULL);
    if (m && once) {
        CHECK_INT(m->nsamples, once->nsamples);
        CHECK_INT(m->nlocations, once->nlocations);
        int64_t t1[2], t2[2];
        ap_pprof_totals(m, t1);
        ap_pprof_totals(once, t2);
        CHECK_INT(t1[0], 2 * t2[0]);
        CHECK_INT(t1[1], 2 * t2[1]);
        /* The incremental API gives the same as ap_pprof_merge. */
        ap_pprof_merger *mg = ap_pprof_merger_new();
        ap_pprof_error err;
        CHECK_INT(ap_pprof_merger_add(mg, p, &err), 0);
        CHECK_INT(ap_pprof_merger_add(mg, p, &err), 0);
        ap_pprof_profile *m3 = ap_pprof_merger_finish(mg, &err);
        if (m3) {
            CHECK_INT(m3->nsamples, m->nsamples);
            CHECK(memcmp(m3->values, m->values, m->nsamples * 2 * sizeof(int64_t)) == 0);
        }
        /* The merger is reusable after finish. */
        CHECK_INT(ap_pprof_merger_add(mg, once, &err), 0);
        ap_pprof_profile *m4 = ap_pprof_merger_finish(mg, &err);
        if (m4) CHECK_INT(m4->nsamples, once->nsamples);
        ap_pprof_profile_free(m3);
        ap_pprof_profile_free(m4);
        ap_pprof_merger_free(mg);
    }
    ap_pprof_profile_free(m);
    ap_pprof_profile_free(once);
    ap_pprof_profile_free(p);

    /* Compaction: the original's default.pgo was pruned after its last merge, so it holds
     * unused locations; Compact drops them but keeps every sample. */
    b = t_data("autopgo/default.pgo", &len);
    p = t_decode(b, len);
    free(b);
    if (!p) return;
    ap_pprof_error err;
    ap_pprof_profile *c = ap_pprof_compact(p, &err);
    if (c) {
        CHECK(c->nlocations <= p->nlocations);
        CHECK(c->nsamples <= p->nsamples);
        CHECK_INT(c->mappings[0].id, 1);
        int64_t t1[2], t2[2];
        ap_pprof_totals(c, t1);
        ap_pprof_totals(p, t2);
        CHECK_INT(t1[1], t2[1]);
    }
    ap_pprof_profile_free(c);
    ap_pprof_profile_free(p);
}

/* A profile of t_profile's tables with samples of long stacks (n frames over locations 1-3,
 * the last one `last`) and up to two labels: the sample table confirms a match from its slot
 * when the label set is interned and the stack is shorter than 255 frames, and from the sample
 * itself otherwise; both must give the same identity. */
typedef struct {
    int n;
    uint64_t last;
    int64_t v;
    const char *k1, *v1, *k2, *v2;
} deep_sample;

static ap_pprof_profile *deep(const deep_sample *s, int n)
{
    pb p = t_profile(NULL, 0, 10, 0); /* strings 0-9 */
    const char *strs[] = {"k", "v", "w", "t", "x"};
    for (int i = 0; i < 5; i++) pb_str(&p, 6, strs[i]);
    uint64_t locs[400];
    for (int i = 0; i < n; i++) {
        pb m = {0};
        for (int k = 0; k < s[i].n; k++) locs[k] = (uint64_t)(k % 3) + 1;
        locs[s[i].n - 1] = s[i].last;
        pb_packed(&m, 1, locs, (size_t)s[i].n);
        pb_u64(&m, 2, (uint64_t)s[i].v);
        pb_u64(&m, 2, (uint64_t)s[i].v);
        const char *kv[2][2] = {{s[i].k1, s[i].v1}, {s[i].k2, s[i].v2}};
        for (int l = 0; l < 2; l++) {
            if (!kv[l][0]) continue;
            pb lab = {0};
            for (uint64_t j = 0; j < 5; j++) {
                if (!strcmp(strs[j], kv[l][0])) pb_u64(&lab, 1, 10 + j);
                if (!strcmp(strs[j], kv[l][1])) pb_u64(&lab, 2, 10 + j);
            }
            pb_msg(&m, 3, &lab);
        }
        pb_msg(&p, 2, &m);
    }
    ap_pprof_profile *r = t_decode(p.b, p.n);
    pb_free(&p);
    return r;
}

static void test_long_stacks_and_label_sets(void)
{
    deep_sample a[] = {
        {300, 3, 1, "k", "v", NULL, NULL},    {300, 2, 2, "k", "v", NULL, NULL},
        {300, 3, 4, "t", "x", "k", "v"},      {254, 1, 8, NULL, NULL, NULL, NULL},
        {255, 1, 16, NULL, NULL, NULL, NULL}, {256, 1, 32, NULL, NULL, NULL, NULL},
        {254, 1, 64, "k", "w", NULL, NULL},   {254, 2, 128, NULL, NULL, NULL, NULL},
    };
    /* The same samples, labels in the other order, and the first one twice. */
    deep_sample b[] = {
        {256, 1, 3200, NULL, NULL, NULL, NULL},  {255, 1, 1600, NULL, NULL, NULL, NULL},
        {254, 1, 800, NULL, NULL, NULL, NULL},   {300, 3, 400, "k", "v", "t", "x"},
        {300, 2, 200, "k", "v", NULL, NULL},     {300, 3, 100, "k", "v", NULL, NULL},
        {300, 3, 100000, "k", "v", NULL, NULL},  {254, 1, 6400, "k", "w", NULL, NULL},
        {254, 2, 12800, NULL, NULL, NULL, NULL},
    };
    ap_pprof_profile *pa = deep(a, 8), *pb_ = deep(b, 9);
    ap_pprof_profile *m = pa && pb_ ? merge2(pa, pb_) : NULL;
    CHECK(m != NULL);
    if (m) {
        CHECK_INT(m->nsamples, 8);
        int64_t want[] = {100101, 202, 404, 808, 1616, 3232, 6464, 12928};
        int nloc[] = {300, 300, 300, 254, 255, 256, 254, 254};
        for (uint32_t i = 0; i < m->nsamples && i < 8; i++) {
            CHECK_INT(value(m, i, 0), want[i]);
            CHECK_INT(m->samples[i].nloc, nloc[i]);
        }
    }
    ap_pprof_profile_free(m);
    /* Merged again with input 0 repeated, the same samples in the same order. */
    if (pa && pb_) {
        ap_pprof_profile *c = NULL;
        const ap_pprof_profile *in[] = {pa, pb_, pa};
        ap_pprof_error err;
        c = ap_pprof_merge(in, 3, &err);
        CHECK(c != NULL);
        if (c) {
            CHECK_INT(c->nsamples, 8);
            CHECK_INT(value(c, 0, 0), 100102);
            CHECK_INT(value(c, 6, 1), 6528);
        }
        ap_pprof_profile_free(c);
    }
    ap_pprof_profile_free(pa);
    ap_pprof_profile_free(pb_);
}

/* n locations (address 0x1000 + 16 i, one line of function i % 7, both with ids given by
 * `rev`: i + 1, or n - i) and one sample per location (value i + 1), in location order. */
static ap_pprof_profile *numbered(int n, int rev)
{
    pb p = {0}, m = {0};
    const char *strs[] = {"",   "samples", "count", "/bin/app", "f0", "f1",
                          "f2", "f3",      "f4",    "f5",       "f6", "main.go"};
    pb_u64(&m, 1, 1);
    pb_u64(&m, 2, 2);
    pb_msg(&p, 1, &m);
    pb_u64(&m, 1, 1);
    pb_u64(&m, 2, 0x1000);
    pb_u64(&m, 3, 0x100000);
    pb_u64(&m, 5, 3);
    pb_msg(&p, 3, &m);
    for (int f = 0; f < 7; f++) {
        pb_u64(&m, 1, (uint64_t)(rev ? 7 - f : f + 1));
        pb_u64(&m, 2, (uint64_t)(4 + f));
        pb_u64(&m, 4, 11);
        pb_msg(&p, 5, &m);
    }
    for (int i = 0; i < n; i++) {
        pb line = {0};
        pb_u64(&m, 1, (uint64_t)(rev ? n - i : i + 1));
        pb_u64(&m, 2, 1);
        pb_u64(&m, 3, (uint64_t)(0x1000 + 16 * i));
        pb_u64(&line, 1, (uint64_t)(rev ? 7 - i % 7 : i % 7 + 1));
        pb_u64(&line, 2, (uint64_t)(i + 1));
        pb_msg(&m, 4, &line);
        pb_msg(&p, 4, &m);
    }
    for (int i = 0; i < n; i++) {
        uint64_t loc = (uint64_t)(rev ? n - i : i + 1);
        pb_packed(&m, 1, &loc, 1);
        pb_u64(&m, 2, (uint64_t)(i + 1));
        pb_msg(&p, 2, &m);
    }
    for (int i = 0; i < 12; i++) pb_str(&p, 6, strs[i]);
    ap_pprof_profile *r = t_decode(p.b, p.n);
    pb_free(&p);
    return r;
}

static void test_ids_numbered_otherwise(void)
{
    /* Inputs that give the same functions and locations other ids: the id an earlier input
     * gave an entry names another entry here, which must never be taken for it (200 locations:
     * past the misses after which an input stops guessing). */
    ap_pprof_profile *a = numbered(200, 0), *b = numbered(200, 1);
    const ap_pprof_profile *in[] = {a, b, a, b, b};
    ap_pprof_error err;
    ap_pprof_profile *m = a && b ? ap_pprof_merge(in, 5, &err) : NULL;
    CHECK(m != NULL);
    if (m) {
        CHECK_INT(m->nsamples, 200);
        CHECK_INT(m->nlocations, 200);
        CHECK_INT(m->nfunctions, 7);
        for (uint32_t i = 0; i < m->nsamples && i < 200; i++) {
            const ap_pprof_location *l = &m->locations[m->sample_locs[m->samples[i].loc_off]];
            CHECK_INT(value(m, i, 0), 5 * (int64_t)(i + 1));
            CHECK_INT(l->address, 0x1000 + 16 * i);
            CHECK_INT(m->lines[l->line_off].line, i + 1);
            CHECK_INT(m->functions[m->lines[l->line_off].function].name, m->functions[i % 7].name);
        }
    }
    ap_pprof_profile_free(m);
    ap_pprof_profile_free(a);
    ap_pprof_profile_free(b);
}

int main(void)
{
    test_sum_and_identity();
    test_zero_samples();
    test_headers();
    test_incompatible();
    test_mappings();
    test_numeric_units();
    test_long_stacks_and_label_sets();
    test_ids_numbered_otherwise();
    test_corpus();
    return t_done();
}
