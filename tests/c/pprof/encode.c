/* Tests core/pprof/encode.c: round trips, deterministic bytes, the gzip header, Go's label
 * order and packing rule, and options. */
#include <stdlib.h>

#include "helpers.h"
#include "zpar.h"

static uint8_t *enc(const ap_pprof_profile *p, int raw, int level, size_t *len)
{
    ap_pprof_encode_opts o = {.level = level, .raw = raw};
    uint8_t *out;
    ap_pprof_error err;
    if (ap_pprof_encode(p, &o, &out, len, &err)) {
        fprintf(stderr, "encode: %s\n", err.msg);
        t_fail++;
        return NULL;
    }
    return out;
}

static void test_round_trip(const char *file)
{
    size_t len;
    uint8_t *b = t_data(file, &len);
    ap_pprof_profile *p = t_decode(b, len);
    free(b);
    if (!p) return;
    size_t l1, l2, l3, lz;
    uint8_t *r1 = enc(p, 1, -1, &l1), *gz = enc(p, 0, -1, &lz);
    ap_pprof_profile *q = t_decode(r1, l1);
    if (q) {
        CHECK_INT(q->nsamples, p->nsamples);
        CHECK_INT(q->nlocations, p->nlocations);
        CHECK_INT(q->nfunctions, p->nfunctions);
        CHECK_INT(q->nmappings, p->nmappings);
        CHECK_INT(q->time_nanos, p->time_nanos);
        CHECK(q->nstrings <= p->nstrings);
        /* Encoding what we decoded from our encoding gives the same bytes. */
        uint8_t *r2 = enc(q, 1, -1, &l2);
        CHECK(r2 && l2 == l1 && memcmp(r1, r2, l1) == 0);
        free(r2);
    }
    /* gzip of the same bytes; mtime zero; deterministic. */
    size_t ul;
    uint8_t *un = gz ? t_gunzip(gz, lz, &ul) : NULL;
    CHECK(un && ul == l1 && memcmp(un, r1, l1) == 0);
    CHECK(gz && gz[0] == 0x1f && gz[1] == 0x8b && !gz[4] && !gz[5] && !gz[6] && !gz[7]);
    uint8_t *gz2 = enc(p, 0, -1, &l3);
    CHECK(gz2 && l3 == lz && memcmp(gz, gz2, lz) == 0);
    free(un);
    free(gz2);
    free(gz);
    free(r1);
    ap_pprof_profile_free(q);
    ap_pprof_profile_free(p);
}

static void test_label_order_and_packing(void)
{
    /* Wire order b=x, a=5 (numeric), a=y, b=z: Go writes string labels by key (a=y, b=x, b=z)
     * then numeric ones (a=5). */
    pb p = {0}, m = {0}, lab = {0};
    pb_u64(&m, 1, 1);
    pb_u64(&m, 2, 2);
    pb_msg(&p, 1, &m);
    pb_u64(&m, 2, 1);
    uint64_t order[4][3] = {{3, 5, 0}, {4, 0, 5}, {4, 6, 0}, {3, 7, 0}};
    for (int i = 0; i < 4; i++) {
        pb_u64(&lab, 1, order[i][0]);
        if (order[i][1]) pb_u64(&lab, 2, order[i][1]);
        if (order[i][2]) pb_u64(&lab, 3, order[i][2]);
        pb_msg(&m, 3, &lab);
    }
    pb_msg(&p, 2, &m);
    const char *strs[] = {"", "samples", "count", "b", "a", "x", "y", "z"};
    for (int i = 0; i < 8; i++) pb_str(&p, 6, strs[i]);
    ap_pprof_profile *pr = t_decode(p.b, p.n);
    pb_free(&p);
    if (!pr) return;
    size_t l;
    uint8_t *r = enc(pr, 1, -1, &l);
    ap_pprof_profile *q = r ? t_decode(r, l) : NULL;
    if (q) {
        const ap_pprof_label *L = q->labels;
#define LS(i) (&q->strings[L[i].key])
        CHECK_INT(q->samples[0].nlabel, 4);
        CHECK(LS(0)->ptr[0] == 'a' && q->strings[L[0].str].ptr[0] == 'y');
        CHECK(LS(1)->ptr[0] == 'b' && q->strings[L[1].str].ptr[0] == 'x');
        CHECK(LS(2)->ptr[0] == 'b' && q->strings[L[2].str].ptr[0] == 'z');
        CHECK(LS(3)->ptr[0] == 'a' && (L[3].flags & AP_PPROF_LABEL_NUM) && L[3].num == 5);
#undef LS
        /* preEncode's string order: "", sample type, then label strings as visited. */
        CHECK(q->strings[3].len == 1 && q->strings[3].ptr[0] == 'a');
        CHECK(q->strings[4].len == 1 && q->strings[4].ptr[0] == 'y');
    }
    free(r);
    ap_pprof_profile_free(q);
    ap_pprof_profile_free(pr);

    /* Packed only past two elements: one value is "0x10 v", three are "0x12 len ...". */
    t_sample two[] = {{{1, 2}, {1, 2}}};
    pb b2 = t_profile(two, 1, 10, 0);
    pr = t_decode(b2.b, b2.n);
    pb_free(&b2);
    if (!pr) return;
    r = enc(pr, 1, -1, &l);
    /* The first sample message starts after the two sample types (4 bytes each + 2). */
    const uint8_t *s = r + 12;
    CHECK(s[0] == 0x12);
    CHECK(s[2] == 0x08 && s[4] == 0x08 && s[6] == 0x10 && s[8] == 0x10);
    free(r);
    ap_pprof_profile_free(pr);
}

static void test_options(void)
{
    size_t len;
    uint8_t *b = t_data("goapp-cpu-2.pb.gz", &len);
    ap_pprof_profile *p = t_decode(b, len);
    free(b);
    if (!p) return;
    size_t l0, l9;
    uint8_t *z0 = enc(p, 0, 0, &l0), *z9 = enc(p, 0, 9, &l9);
    CHECK(z0 && z9 && l9 < l0);
    free(z0);
    free(z9);
    ap_pprof_encode_opts bad = {.level = 12};
    uint8_t *out;
    ap_pprof_error err;
    CHECK_INT(ap_pprof_encode(p, &bad, &out, &len, &err), -1);
    CHECK_INT(err.code, AP_PPROF_EINVAL);
    ap_pprof_profile_free(p);
}

/* The parallel gzip writer: several blocks (the caller compresses queued blocks too when it
 * would wait) give the same bytes for every thread count, and gunzip to the input. */
static void test_zpar_threads(void)
{
    size_t n = 5 * AP_ZPAR_BLOCK + 12345;
    uint8_t *data = malloc(n);
    uint32_t x = 1;
    for (size_t i = 0; i < n; i++) {
        x = x * 1103515245u + 12345u;
        data[i] = (uint8_t) "abcdefgh"[(x >> 16) % 8] ^ (uint8_t)(i / 4096 % 3);
    }
    uint8_t *first = NULL;
    size_t first_len = 0;
    for (int threads = 1; threads <= 4; threads++) {
        ap_zpar *z = ap_zpar_new(1, threads);
        CHECK(z != NULL);
        if (!z) break;
        /* Uneven writes, so blocks fill across calls. */
        for (size_t off = 0; off < n;) {
            size_t k = n - off < 70001 ? n - off : 70001;
            CHECK_INT(ap_zpar_write(z, data + off, k), 0);
            off += k;
        }
        uint8_t *out;
        size_t len;
        CHECK_INT(ap_zpar_finish(z, &out, &len), 0);
        ap_zpar_free(z);
        size_t back_len;
        uint8_t *back = t_gunzip(out, len, &back_len);
        CHECK(back && back_len == n && memcmp(back, data, n) == 0);
        free(back);
        if (!first) {
            first = out;
            first_len = len;
            CHECK(len < n);
        } else {
            CHECK(len == first_len && memcmp(out, first, len) == 0);
            free(out);
        }
    }
    free(first);
    free(data);
}

int main(void)
{
    test_zpar_threads();
    test_round_trip("goapp-cpu-1.pb.gz");
    test_round_trip("autopgo/default.pgo");
    test_round_trip("edge/labels-multi-and-numeric.pb.gz");
    test_round_trip("edge/no-samples.pb.gz");
    test_round_trip("google-pprof/proftest--large.cpu");
    test_label_order_and_packing();
    test_options();
    return t_done();
}
