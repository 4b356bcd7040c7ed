/* Tests core/pprof/pipeline.c: the one-call merge of encoded inputs, which input an error names,
 * the malformed-before-incompatible rule, sample types made compatible, mixed inputs, pruning
 * and compaction after it, the decode pool under every thread count. */
#include <stdlib.h>

#include "helpers.h"

typedef struct {
    uint8_t *d;
    size_t n;
} blob;

static blob load(const char *f)
{
    blob b;
    b.d = t_data(f, &b.n);
    return b;
}

static int run(const blob *bs, size_t n, const ap_pprof_pruner *pr, ap_pprof_error *err,
               ap_pprof_merge_summary *sum, uint8_t **out, size_t *len)
{
    ap_pprof_input in[8];
    for (size_t i = 0; i < n; i++) in[i] = (ap_pprof_input){bs[i].d, bs[i].n, NULL, NULL};
    return ap_pprof_merge_encoded(in, n, NULL, pr, NULL, out, len, NULL, sum, err);
}

/* Inputs are decoded by a pool (the caller too) in any interleaving: for every thread count the
 * bytes are the same, a profile object among them is used as it is, and of two malformed
 * inputs the first is named. */
static void test_decode_pool(blob g1, blob g2, blob bad)
{
    ap_pprof_profile *obj = t_decode(g2.d, g2.n);
    ap_pprof_input in[9];
    for (size_t i = 0; i < 9; i++)
        in[i] = (ap_pprof_input){i % 2 ? g2.d : g1.d, i % 2 ? g2.n : g1.n, NULL, NULL};
    in[4] = (ap_pprof_input){NULL, 0, obj, NULL};
    uint8_t *first = NULL, *out;
    size_t first_len = 0, len;
    ap_pprof_error err;
    ap_pprof_merge_summary sum;
    for (int threads = 1; threads <= 6; threads++) {
        ap_pprof_encode_opts o = {.level = 1, .threads = threads};
        CHECK_INT(ap_pprof_merge_encoded(in, 9, NULL, NULL, &o, &out, &len, NULL, &sum, &err), 0);
        CHECK_INT(sum.inputs, 9);
        CHECK_INT(sum.samples_in, 4 * 945 + 5 * 935);
        CHECK_INT(sum.bytes_in, 4 * g1.n + 4 * g2.n);
        if (!first) {
            first = out;
            first_len = len;
        } else {
            CHECK(len == first_len && memcmp(out, first, len) == 0);
            free(out);
        }
    }
    free(first);
    in[7] = (ap_pprof_input){bad.d, bad.n, NULL, NULL};
    for (int threads = 1; threads <= 6; threads++) {
        ap_pprof_encode_opts o = {.threads = threads};
        CHECK_INT(ap_pprof_merge_encoded(in, 9, NULL, NULL, &o, &out, &len, NULL, NULL, &err), -1);
        CHECK_INT(err.code, AP_PPROF_EMALFORMED);
        CHECK_INT(err.input, 7);
        in[2] = in[7];
        CHECK_INT(ap_pprof_merge_encoded(in, 9, NULL, NULL, &o, &out, &len, NULL, NULL, &err), -1);
        CHECK_INT(err.input, 2);
        in[2] = (ap_pprof_input){g1.d, g1.n, NULL, NULL};
    }
    ap_pprof_profile_free(obj);

    /* Files of different sizes through the slots' reused read buffers: the same bytes as the
     * same inputs in memory, and a missing file among them named. */
    ap_pprof_input files[7], mem[7];
    char *path1 = strdup(t_data_path("goapp-cpu-1.pb.gz")),
         *path2 = strdup(t_data_path("goapp-cpu-2.pb.gz"));
    for (size_t i = 0; i < 7; i++) {
        int two = i % 3 == 1;
        files[i] = (ap_pprof_input){NULL, 0, NULL, two ? path2 : path1};
        mem[i] = (ap_pprof_input){two ? g2.d : g1.d, two ? g2.n : g1.n, NULL, NULL};
    }
    uint8_t *want;
    size_t want_len;
    CHECK_INT(ap_pprof_merge_encoded(mem, 7, NULL, NULL, NULL, &want, &want_len, NULL, NULL, &err),
              0);
    for (int threads = 1; threads <= 4; threads += 3) {
        ap_pprof_encode_opts o = {.level = -1, .threads = threads};
        CHECK_INT(ap_pprof_merge_encoded(files, 7, NULL, NULL, &o, &out, &len, NULL, &sum, &err),
                  0);
        CHECK(len == want_len && memcmp(out, want, len) == 0);
        CHECK_INT(sum.bytes_in, 5 * g1.n + 2 * g2.n);
        free(out);
    }
    free(want);
    files[5].path = "/nonexistent/p.pb.gz";
    ap_pprof_encode_opts o3 = {.threads = 3};
    CHECK_INT(ap_pprof_merge_encoded(files, 7, NULL, NULL, &o3, &out, &len, NULL, NULL, &err), -1);
    CHECK_ERR(err, AP_PPROF_EIO, "cannot open /nonexistent/p.pb.gz");
    CHECK_INT(err.input, 5);
    free(path1);
    free(path2);
}

int main(void)
{
    blob g1 = load("goapp-cpu-1.pb.gz"), g2 = load("goapp-cpu-2.pb.gz"),
         bad = load("bad/truncated.pb.gz"), nano = load("edge/cpu-only-nanoseconds.pb.gz"),
         heap = load("edge/heap-sample-types.pb.gz");
    ap_pprof_error err;
    ap_pprof_merge_summary sum;
    uint8_t *out;
    size_t len;

    blob ok[] = {g1, g2};
    CHECK_INT(run(ok, 2, NULL, &err, &sum, &out, &len), 0);
    CHECK_INT(sum.inputs, 2);
    CHECK_INT(sum.samples_in, 945 + 935);
    CHECK(sum.samples > 0 && sum.samples < sum.samples_in);
    CHECK_INT(sum.bytes_out, len);
    CHECK_INT(sum.bytes_in, g1.n + g2.n);
    ap_pprof_profile *m = t_decode(out, len);
    if (m) CHECK_INT(m->nsamples, sum.samples);
    ap_pprof_profile_free(m);
    free(out);

    /* A malformed input is named by index. */
    blob b1[] = {g1, bad, g2};
    CHECK_INT(run(b1, 3, NULL, &err, &sum, &out, &len), -1);
    CHECK_ERR(err, AP_PPROF_EMALFORMED, "decompressing profile: unexpected EOF");
    CHECK_INT(err.input, 1);
    CHECK(out == NULL);

    /* Different sample types: merged on the types common to all (CompatibilizeSampleTypes),
     * in input 0's order, whichever input lacks the others. */
    blob b2[] = {g1, nano, g2};
    CHECK_INT(run(b2, 3, NULL, &err, &sum, &out, &len), 0);
    CHECK_INT(sum.inputs, 3);
    m = t_decode(out, len);
    if (m) {
        CHECK_INT(m->nsample_type, 1);
        const ap_pprof_str *t = &m->strings[m->sample_type[0]];
        CHECK(t->len == 3 && memcmp(t->ptr, "cpu", 3) == 0);
        const ap_pprof_str *d = &m->strings[m->default_sample_type];
        CHECK(d->len == 3 && memcmp(d->ptr, "cpu", 3) == 0);
    }
    ap_pprof_profile_free(m);
    free(out);
    blob b2r[] = {nano, g1, g2};
    CHECK_INT(run(b2r, 3, NULL, &err, &sum, &out, &len), 0);
    free(out);
    /* No type in common: INCOMPATIBLE, naming the input that left none. */
    blob b4[] = {g1, g2, heap};
    CHECK_INT(run(b4, 3, NULL, &err, &sum, &out, &len), -1);
    CHECK_ERR(err, AP_PPROF_EINCOMPATIBLE, "no sample type is common");
    CHECK_INT(err.input, 2);
    CHECK_INT(err.other, 0);
    /* ... unless a later input is malformed. */
    blob b3[] = {g1, heap, bad};
    CHECK_INT(run(b3, 3, NULL, &err, &sum, &out, &len), -1);
    CHECK_INT(err.code, AP_PPROF_EMALFORMED);
    CHECK_INT(err.input, 2);

    /* Profiles and bytes mixed; prune applied; the result as a profile. */
    ap_pprof_profile *p1 = t_decode(g1.d, g1.n);
    ap_pprof_prune_rule rule = {"runtime\\.", NULL};
    ap_pprof_pruner *pr = ap_pprof_pruner_new(&rule, 1, &err);
    ap_pprof_input in[] = {{NULL, 0, p1, NULL}, {g2.d, g2.n, NULL, NULL}};
    ap_pprof_profile *res = NULL;
    CHECK_INT(ap_pprof_merge_encoded(in, 2, NULL, pr, NULL, NULL, NULL, &res, &sum, &err), 0);
    CHECK(res != NULL);
    if (res) {
        /* No sample keeps a runtime frame below a user frame. */
        uint32_t total = 0;
        for (uint32_t i = 0; i < res->nsamples; i++) total += res->samples[i].nloc;
        CHECK(total > 0);
    }
    /* Compacted after the prune: stacks the prune made identical are one sample again, so
     * compacting once more changes nothing, while prune alone leaves them apart. */
    if (res) {
        ap_pprof_profile *again = ap_pprof_compact(res, &err);
        CHECK(again != NULL);
        if (again) CHECK_INT(again->nsamples, res->nsamples);
        ap_pprof_profile_free(again);
        ap_pprof_profile *p2 = t_decode(g2.d, g2.n);
        const ap_pprof_profile *both[] = {p1, p2};
        ap_pprof_profile *plain = ap_pprof_merge(both, 2, &err);
        CHECK(plain != NULL && ap_pprof_prune(plain, pr, &err) == 0);
        if (plain) CHECK(plain->nsamples > res->nsamples);
        ap_pprof_profile_free(plain);
        ap_pprof_profile_free(p2);
    }
    ap_pprof_profile_free(res);
    ap_pprof_pruner_free(pr);
    ap_pprof_profile_free(p1);

    /* Files are read by the pipeline itself. */
    ap_pprof_input files[] = {{NULL, 0, NULL, t_data_path("goapp-cpu-1.pb.gz")}};
    uint8_t *from_file;
    size_t flen;
    CHECK_INT(
        ap_pprof_merge_encoded(files, 1, NULL, NULL, NULL, &from_file, &flen, NULL, &sum, &err), 0);
    blob one[] = {g1};
    CHECK_INT(run(one, 1, NULL, &err, &sum, &out, &len), 0);
    CHECK(flen == len && memcmp(from_file, out, len) == 0);
    free(from_file);
    free(out);
    ap_pprof_input missing[] = {{g1.d, g1.n, NULL, NULL}, {NULL, 0, NULL, "/nonexistent/p.pb.gz"}};
    CHECK_INT(ap_pprof_merge_encoded(missing, 2, NULL, NULL, NULL, &out, &len, NULL, NULL, &err),
              -1);
    CHECK_ERR(err, AP_PPROF_EIO, "cannot open /nonexistent/p.pb.gz");
    CHECK_INT(err.input, 1);
    ap_pprof_limits tiny = {.max_decompressed = 100};
    files[0].path = t_data_path("goapp-cpu-1.pb.gz");
    CHECK_INT(ap_pprof_merge_encoded(files, 1, &tiny, NULL, NULL, &out, &len, NULL, NULL, &err),
              -1);
    CHECK_INT(err.code, AP_PPROF_ETOOLARGE);

    CHECK_INT(ap_pprof_merge_encoded(in, 0, NULL, NULL, NULL, &out, &len, NULL, NULL, &err), -1);
    CHECK_INT(err.code, AP_PPROF_EINVAL);

    test_decode_pool(g1, g2, bad);

    free(g1.d);
    free(g2.d);
    free(bad.d);
    free(nano.d);
    free(heap.d);
    return t_done();
}
