/* Tests core/pprof/decode.c, resolve.c and source.c: the corpus, Go's acceptance rules on
 * crafted wire bytes, gzip behaviour and the size and memory limits. */
#include <stdlib.h>

#include "helpers.h"

static ap_pprof_error decode_err(const void *d, size_t n, const ap_pprof_limits *lim)
{
    ap_pprof_error err;
    ap_pprof_profile *p = ap_pprof_decode(d, n, lim, &err);
    if (p) {
        ap_pprof_profile_free(p);
        err.code = AP_PPROF_OK;
        strcpy(err.msg, "(decoded)");
    }
    return err;
}

static ap_pprof_error decode_pb_err(pb *b)
{
    ap_pprof_error e = decode_err(b->b, b->n, NULL);
    pb_free(b);
    return e;
}

static void test_corpus_good(void)
{
    static char names[256][256];
    const char *dirs[] = {".", "edge", "autopgo", "google-pprof/derived"};
    int total = 0;
    for (size_t d = 0; d < sizeof dirs / sizeof *dirs; d++) {
        int n = t_list(dirs[d], names, 256);
        for (int i = 0; i < n; i++) {
            if (strstr(names[i], "README")) continue;
            size_t len;
            uint8_t *b = t_data(names[i], &len);
            if (!b) continue;
            ap_pprof_error err = decode_err(b, len, NULL);
            if (err.code != AP_PPROF_OK) fprintf(stderr, "%s: %s\n", names[i], err.msg);
            CHECK_INT(err.code, AP_PPROF_OK);
            free(b);
            total++;
        }
    }
    CHECK(total >= 30);
}

static void test_corpus_legacy(void)
{
    /* google-pprof/ holds legacy text/binary formats (rejected: protobuf only) and four
     * gzip'd protobuf files (accepted). */
    static char names[64][256];
    int n = t_list("google-pprof", names, 64), accepted = 0;
    for (int i = 0; i < n; i++) {
        size_t len;
        uint8_t *b = t_data(names[i], &len);
        ap_pprof_error err = decode_err(b, len, NULL);
        int is_proto = strstr(names[i], "cpu_no_samples_type") || strstr(names[i], "nomappings") ||
                       strstr(names[i], "proftest--large") || strstr(names[i], "report--sample");
        CHECK_INT(err.code, is_proto ? AP_PPROF_OK : AP_PPROF_EMALFORMED);
        accepted += err.code == AP_PPROF_OK;
        free(b);
    }
    CHECK_INT(accepted, 4);
}

#define UNRECOGNIZED "parsing profile: unrecognized profile format ("
#define MALFORMED    "malformed profile: "
#define EOF_         "decompressing profile: unexpected EOF "

static void test_corpus_bad(void)
{
    /* prefix: what Go's profile.Parse says of the file (testdata/pprof/README.md), which every
     * message starts with; needle: our detail after it. */
    static const struct {
        const char *file, *prefix, *needle;
    } cases[] = {
        {"bad/bad-wire-type.pb.gz", UNRECOGNIZED, "unknown wire type 7"},
        {"bad/concatenated.pb", "parsing profile: concatenated profiles detected (", "time_nanos"},
        {"bad/dangling-function-id.pb.gz", MALFORMED,
         "location id 6: line 0: function id 77 not found"},
        {"bad/dangling-location-id.pb.gz", MALFORMED, "location id 42 not found"},
        {"bad/duplicate-function-id.pb.gz", MALFORMED, "duplicate id 2"},
        {"bad/empty", "parsing profile: empty input file", "(0 bytes)"},
        {"bad/empty-gzip.pb.gz", "parsing profile: empty input file", "gzip stream holds no data"},
        {"bad/gzip-garbage.pb.gz", UNRECOGNIZED, "unknown wire type"},
        {"bad/gzip-text.pb.gz", UNRECOGNIZED, "unknown wire type"},
        {"bad/location-id-zero.pb.gz", MALFORMED, "id 0 is reserved"},
        {"bad/overlong-field.pb.gz", UNRECOGNIZED, "too much data"},
        {"bad/random.bin", UNRECOGNIZED, "wire type"},
        {"bad/string-index-out-of-range.pb.gz", UNRECOGNIZED, "string index 999 out of range"},
        {"bad/string0-not-empty.pb.gz", UNRECOGNIZED, "string_table[0] must be ''"},
        {"bad/truncated-goapp.pb.gz", EOF_, "(after 43444 decompressed bytes)"},
        {"bad/truncated-header.pb.gz", EOF_, "(after 0 decompressed bytes)"},
        {"bad/truncated.pb.gz", EOF_, "(after 208 decompressed bytes)"},
        {"bad/value-count-mismatch.pb.gz", MALFORMED, "has 1 values but there are 2 sample types"},
    };
    static char names[64][256];
    int n = t_list("bad", names, 64);
    CHECK_INT(n, (int)(sizeof cases / sizeof *cases));
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        size_t len;
        uint8_t *b = t_data(cases[i].file, &len);
        ap_pprof_error err = decode_err(b ? b : (uint8_t *)"", b ? len : 0, NULL);
        CHECK_ERR(err, AP_PPROF_EMALFORMED, cases[i].needle);
        if (strncmp(err.msg, cases[i].prefix, strlen(cases[i].prefix)) != 0) {
            t_fail++;
            fprintf(stderr, "%s: expected a message starting \"%s\", got \"%s\"\n", cases[i].file,
                    cases[i].prefix, err.msg);
        } else {
            t_pass++;
        }
        free(b);
    }
    /* Every file of bad/ is rejected, whether or not it is listed above. */
    for (int i = 0; i < n; i++) {
        size_t len;
        uint8_t *b = t_data(names[i], &len);
        CHECK(decode_err(b, len, NULL).code != AP_PPROF_OK);
        free(b);
    }
}

static void test_fields(void)
{
    size_t len;
    uint8_t *b = t_data("edge/labels-multi-and-numeric.pb.gz", &len);
    ap_pprof_profile *p = t_decode(b, len);
    free(b);
    if (!p) return;
    int nnum = 0, nstr = 0, units = 0;
    for (uint32_t i = 0; i < p->nlabels; i++) {
        if (p->labels[i].flags & AP_PPROF_LABEL_NUM) {
            nnum++;
            units += (p->labels[i].flags & AP_PPROF_LABEL_UNIT_SET) != 0;
        } else {
            nstr++;
        }
    }
    CHECK(nnum > 0 && nstr > 0 && units > 0);
    CHECK(p->gzipped);
    ap_pprof_profile_free(p);

    b = t_data("goapp-go123-cpu-1.pb.gz", &len);
    p = t_decode(b, len);
    free(b);
    if (!p) return;
    CHECK_INT(p->nsample_type, 2);
    const ap_pprof_str *t0 = &p->strings[p->sample_type[0]];
    CHECK(t0->len == 7 && memcmp(t0->ptr, "samples", 7) == 0);
    CHECK_INT(p->period, 10000000);
    CHECK(p->duration_nanos > 0 && p->time_nanos > 0);
    int with_start = 0;
    for (uint32_t i = 0; i < p->nfunctions; i++) with_start += p->functions[i].start_line != 0;
    CHECK(with_start > 0);
    /* Every sample's locations are valid indices. */
    int ok = 1;
    for (uint32_t i = 0; i < p->nsample_locs; i++) ok &= p->sample_locs[i] < p->nlocations;
    CHECK(ok);
    ap_pprof_profile_free(p);
}

/* A profile whose string table and sample types are in place, for crafting the rest. */
static void base(pb *p)
{
    pb m = {0};
    pb_u64(&m, 1, 1);
    pb_u64(&m, 2, 2);
    pb_msg(p, 1, &m);
    pb_str(p, 6, "");
    pb_str(p, 6, "samples");
    pb_str(p, 6, "count");
    pb_str(p, 6, "f");
}

static void add_function(pb *p, uint64_t id)
{
    pb m = {0};
    pb_u64(&m, 1, id);
    pb_u64(&m, 2, 3);
    pb_msg(p, 5, &m);
}

static void add_location(pb *p, uint64_t id, uint64_t fn)
{
    pb m = {0}, l = {0};
    pb_u64(&m, 1, id);
    if (fn) {
        pb_u64(&l, 1, fn);
        pb_u64(&l, 2, 7);
        pb_msg(&m, 4, &l);
    }
    pb_msg(p, 4, &m);
}

static void test_wire_rules(void)
{
    pb p = {0}, m = {0};

    /* Packed and unpacked repeated fields mean the same. */
    base(&p);
    add_function(&p, 1);
    add_location(&p, 1, 1);
    add_location(&p, 2, 1);
    uint64_t ids[] = {1, 2, 1};
    pb_packed(&m, 1, ids, 3);
    pb_u64(&m, 2, 5);
    pb_msg(&p, 2, &m);
    pb_u64(&m, 1, 1);
    pb_u64(&m, 1, 2);
    pb_u64(&m, 1, 1);
    uint64_t v = 6;
    pb_packed(&m, 2, &v, 1);
    pb_msg(&p, 2, &m);
    ap_pprof_profile *pr = t_decode(p.b, p.n);
    if (pr) {
        CHECK_INT(pr->nsamples, 2);
        CHECK_INT(pr->samples[0].nloc, 3);
        CHECK_INT(pr->samples[1].nloc, 3);
        CHECK(memcmp(&pr->sample_locs[0], &pr->sample_locs[3], 3 * 4) == 0);
        CHECK_INT(pr->values[1], 6);
        ap_pprof_profile_free(pr);
    }
    pb_free(&p);

    /* An empty packed field is no elements (found by the fuzzer: no array yet). */
    base(&p);
    pb_len(&m, 1, "", 0);
    pb_len(&m, 2, "", 0);
    pb_msg(&p, 2, &m);
    CHECK_ERR(decode_pb_err(&p), AP_PPROF_EMALFORMED, "has 0 values but there are 1");
    base(&p);
    pb_len(&m, 1, "", 0);
    pb_u64(&m, 2, 4);
    pb_msg(&p, 2, &m);
    pr = t_decode(p.b, p.n);
    if (pr) CHECK_INT(pr->samples[0].nloc, 0);
    ap_pprof_profile_free(pr);
    pb_free(&p);

    /* Unknown fields of wire types 0, 1, 2, 5 are skipped at every level; field 0 too. */
    base(&p);
    pb_u64(&p, 100, 1);
    pb_key(&p, 101, 1);
    pb_bytes(&p, "12345678", 8);
    pb_str(&p, 102, "x");
    pb_key(&p, 103, 5);
    pb_bytes(&p, "1234", 4);
    pb_u64(&p, 0, 9);
    pb_u64(&m, 1, 1);
    pb_u64(&m, 2, 3);
    pb_u64(&m, 77, 3);
    pb_msg(&p, 5, &m);
    CHECK_INT(decode_pb_err(&p).code, AP_PPROF_OK);

    /* Groups (wire types 3 and 4) are not skipped: Go's "unknown wire type". */
    base(&p);
    pb_key(&p, 100, 3);
    CHECK_ERR(decode_pb_err(&p), AP_PPROF_EMALFORMED, "unknown wire type 3");

    /* A known field with the wrong wire type is "type mismatch". */
    base(&p);
    pb_u64(&p, 2, 1);
    CHECK_ERR(decode_pb_err(&p), AP_PPROF_EMALFORMED, "type mismatch");
    base(&p);
    pb_str(&p, 12, "x");
    CHECK_ERR(decode_pb_err(&p), AP_PPROF_EMALFORMED, "type mismatch");

    /* Varints: non-minimal forms are fine, ten bytes is the most. */
    base(&p);
    uint8_t period[] = {0x60, 0x85, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00};
    pb_bytes(&p, period, sizeof period);
    pr = t_decode(p.b, p.n);
    if (pr) CHECK_INT(pr->period, 5);
    ap_pprof_profile_free(pr);
    pb_free(&p);
    base(&p);
    uint8_t longer[] = {0x60, 0x85, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00};
    pb_bytes(&p, longer, sizeof longer);
    CHECK_ERR(decode_pb_err(&p), AP_PPROF_EMALFORMED, "bad varint");
    base(&p);
    uint8_t truncated[] = {0x60, 0x85};
    pb_bytes(&p, truncated, sizeof truncated);
    CHECK_ERR(decode_pb_err(&p), AP_PPROF_EMALFORMED, "bad varint");
    base(&p);
    pb_key(&p, 100, 1); /* an unknown fixed64, truncated */
    pb_bytes(&p, "123", 3);
    CHECK_ERR(decode_pb_err(&p), AP_PPROF_EMALFORMED, "not enough data");

    /* Strings: index 0 must be "", and there must be a table at all. */
    pb_str(&p, 6, "nope");
    CHECK_ERR(decode_pb_err(&p), AP_PPROF_EMALFORMED, "string_table[0]");
    pb_u64(&p, 12, 1);
    CHECK_ERR(decode_pb_err(&p), AP_PPROF_EMALFORMED, "no string table");
    base(&p);
    pb_u64(&p, 7, 99);
    CHECK_ERR(decode_pb_err(&p), AP_PPROF_EMALFORMED, "drop_frames: string index 99");
    base(&p);
    pb_u64(&p, 13, (uint64_t)-1);
    CHECK_ERR(decode_pb_err(&p), AP_PPROF_EMALFORMED, "negative or too large");
    /* doc_url is not Debian's: a bad index is ignored, a good one kept. */
    base(&p);
    pb_u64(&p, 15, 99);
    CHECK_INT(decode_pb_err(&p).code, AP_PPROF_OK);
    base(&p);
    pb_u64(&p, 15, 3);
    pr = t_decode(p.b, p.n);
    if (pr) CHECK_INT(pr->doc_url, 3);
    ap_pprof_profile_free(pr);
    pb_free(&p);

    /* Concatenation: a second non-zero time_nanos. */
    base(&p);
    pb_u64(&p, 9, 0);
    pb_u64(&p, 9, 5); /* after a zero: fine, as in Go */
    CHECK_INT(decode_pb_err(&p).code, AP_PPROF_OK);
    base(&p);
    pb_u64(&p, 9, 5);
    pb_u64(&p, 9, 5);
    CHECK_ERR(decode_pb_err(&p), AP_PPROF_EMALFORMED, "concatenated");

    /* Ids: zero, duplicate, dangling. */
    base(&p);
    pb_u64(&m, 1, 0);
    pb_msg(&p, 3, &m);
    CHECK_ERR(decode_pb_err(&p), AP_PPROF_EMALFORMED, "mapping #0: id 0 is reserved");
    base(&p);
    pb_u64(&m, 1, 4);
    pb_msg(&p, 3, &m);
    pb_u64(&m, 1, 4);
    pb_msg(&p, 3, &m);
    CHECK_ERR(decode_pb_err(&p), AP_PPROF_EMALFORMED, "mapping #1: duplicate id 4");
    base(&p);
    add_function(&p, 1);
    add_function(&p, 1);
    CHECK_ERR(decode_pb_err(&p), AP_PPROF_EMALFORMED, "function #1: duplicate id 1");
    base(&p);
    add_location(&p, 1, 0);
    add_location(&p, 1, 0);
    CHECK_ERR(decode_pb_err(&p), AP_PPROF_EMALFORMED, "duplicate id 1");
    /* A line needs a function; a location without lines is fine. */
    base(&p);
    add_location(&p, 1, 0);
    CHECK_INT(decode_pb_err(&p).code, AP_PPROF_OK);
    base(&p);
    pb line = {0};
    pb_u64(&line, 2, 3);
    pb_u64(&m, 1, 1);
    pb_msg(&m, 4, &line);
    pb_msg(&p, 4, &m);
    CHECK_ERR(decode_pb_err(&p), AP_PPROF_EMALFORMED, "location id 1: line 0: no function id");
    /* A dangling mapping id leaves the location without a mapping, as in Go. */
    base(&p);
    pb_u64(&m, 1, 1);
    pb_u64(&m, 2, 42);
    pb_msg(&p, 4, &m);
    pr = t_decode(p.b, p.n);
    if (pr) CHECK_INT(pr->locations[0].mapping, AP_PPROF_NONE);
    ap_pprof_profile_free(pr);
    pb_free(&p);
    /* Large sparse ids go through the hash map. */
    base(&p);
    add_function(&p, 1ull << 60);
    add_location(&p, 1ull << 61, 1ull << 60);
    uint64_t sparse = 1ull << 61;
    pb_packed(&m, 1, &sparse, 1);
    pb_u64(&m, 2, 1);
    pb_msg(&p, 2, &m);
    pr = t_decode(p.b, p.n);
    if (pr) CHECK_INT(pr->sample_locs[0], 0);
    ap_pprof_profile_free(pr);
    pb_free(&p);

    /* A 64-bit id in the middle of a packed list, after narrow ones, and in a later sample. */
    base(&p);
    add_function(&p, 1);
    add_location(&p, 1, 1);
    add_location(&p, 1ull << 40, 1);
    add_location(&p, 0xffffffffu, 1);
    uint64_t mixed[] = {1, 1ull << 40, 1, 0xffffffffu};
    pb_packed(&m, 1, mixed, 4);
    pb_u64(&m, 2, 1);
    pb_msg(&p, 2, &m);
    pb_u64(&m, 1, 1);
    pb_u64(&m, 1, 1ull << 40);
    pb_u64(&m, 2, 1);
    pb_msg(&p, 2, &m);
    pr = t_decode(p.b, p.n);
    if (pr) {
        CHECK_INT(pr->nsample_locs, 6);
        uint32_t want[] = {0, 1, 0, 2, 0, 1};
        for (int i = 0; i < 6; i++) CHECK_INT(pr->sample_locs[i], want[i]);
    }
    ap_pprof_profile_free(pr);
    pb_free(&p);

    /* Packed ids of every varint length, read by the branch-free loop and the general one. */
    base(&p);
    add_function(&p, 1);
    uint64_t lens[] = {1,       127,       128,       16383,      16384,      2097151,
                       2097152, 268435455, 268435456, 0xfffffffe, 1ull << 35, 1ull << 62};
    size_t nlens = sizeof lens / sizeof *lens;
    for (size_t i = 0; i < nlens; i++) add_location(&p, lens[i], 1);
    uint64_t seq[40];
    size_t nseq = 0;
    for (int rep = 0; rep < 3; rep++)
        for (size_t i = 0; i < nlens; i++) seq[nseq++] = lens[(i * 7 + (size_t)rep) % nlens];
    pb_packed(&m, 1, seq, nseq);
    pb_u64(&m, 2, 1);
    pb_msg(&p, 2, &m);
    pr = t_decode(p.b, p.n);
    if (pr) {
        CHECK_INT(pr->nsample_locs, nseq);
        int ok = 1;
        for (size_t i = 0; i < nseq; i++) ok &= pr->locations[pr->sample_locs[i]].id == seq[i];
        CHECK(ok);
    }
    ap_pprof_profile_free(pr);
    pb_free(&p);

    /* Samples: value count and sample types. */
    base(&p);
    pb_u64(&m, 2, 1);
    pb_u64(&m, 2, 1);
    pb_msg(&p, 2, &m);
    CHECK_ERR(decode_pb_err(&p), AP_PPROF_EMALFORMED, "has 2 values but there are 1");
    pb_str(&p, 6, "");
    pb_u64(&m, 2, 1);
    pb_msg(&p, 2, &m);
    CHECK_ERR(decode_pb_err(&p), AP_PPROF_EMALFORMED, "missing sample type");

    /* Labels: str wins over num; key-only labels vanish but their key is still checked. */
    base(&p);
    pb lab = {0};
    pb_u64(&m, 2, 1);
    pb_u64(&lab, 1, 3);
    pb_u64(&lab, 2, 3);
    pb_u64(&lab, 3, 5);
    pb_u64(&lab, 4, 99); /* ignored for a string label, as in Go */
    pb_msg(&m, 3, &lab);
    pb_u64(&lab, 1, 3);
    pb_msg(&m, 3, &lab);
    pb_u64(&lab, 1, 3);
    pb_u64(&lab, 3, 7);
    pb_msg(&m, 3, &lab);
    pb_u64(&lab, 1, 3);
    pb_u64(&lab, 4, 2);
    pb_msg(&m, 3, &lab);
    pb_msg(&p, 2, &m);
    pr = t_decode(p.b, p.n);
    if (pr) {
        CHECK_INT(pr->samples[0].nlabel, 3);
        CHECK_INT(pr->labels[0].flags, 0);
        CHECK_INT(pr->labels[0].str, 3);
        CHECK_INT(pr->labels[1].flags, AP_PPROF_LABEL_NUM);
        CHECK_INT(pr->labels[1].num, 7);
        CHECK_INT(pr->labels[2].flags, AP_PPROF_LABEL_NUM | AP_PPROF_LABEL_UNIT_SET);
        CHECK_INT(pr->labels[2].num, 0);
        ap_pprof_profile_free(pr);
    }
    pb_free(&p);
    base(&p);
    pb_u64(&m, 2, 1);
    pb_u64(&lab, 1, 50);
    pb_msg(&m, 3, &lab);
    pb_msg(&p, 2, &m);
    CHECK_ERR(decode_pb_err(&p), AP_PPROF_EMALFORMED, "string index 50");

    /* Line.column (newer than Debian's pprof) is read when well-formed, skipped otherwise. */
    base(&p);
    add_function(&p, 1);
    pb_u64(&m, 1, 1);
    pb_u64(&line, 1, 1);
    pb_u64(&line, 3, 12);
    pb_msg(&m, 4, &line);
    pb_msg(&p, 4, &m);
    pr = t_decode(p.b, p.n);
    if (pr) CHECK_INT(pr->lines[0].column, 12);
    ap_pprof_profile_free(pr);
    pb_free(&p);
    base(&p);
    add_function(&p, 1);
    pb_u64(&m, 1, 1);
    pb_u64(&line, 1, 1);
    pb_str(&line, 3, "x");
    pb_msg(&m, 4, &line);
    pb_msg(&p, 4, &m);
    CHECK_INT(decode_pb_err(&p).code, AP_PPROF_OK);
}

/* A deterministic generator for the packed-id tests. */
static uint64_t t_rand(uint64_t *s)
{
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return *s >> 33;
}

/* A profile of `ns` samples (ids from ids[], nper[i] each, packed or one field per id), then
 * the locations of `nloc` ids `locids` (after the samples, so that the block decoder, which
 * reads ahead within the window, runs on them). */
static pb packed_profile(const uint64_t *ids, const size_t *nper, size_t ns, int packed,
                         const uint64_t *locids, size_t nloc)
{
    pb p = {0}, m = {0};
    base(&p);
    for (size_t i = 0; i < ns; i++) {
        if (packed) {
            if (nper[i]) pb_packed(&m, 1, ids, nper[i]);
        } else {
            for (size_t k = 0; k < nper[i]; k++) pb_u64(&m, 1, ids[k]);
        }
        ids += nper[i];
        pb_u64(&m, 2, 1);
        pb_msg(&p, 2, &m);
    }
    add_function(&p, 1);
    for (size_t i = 0; i < nloc; i++) add_location(&p, locids[i], 1);
    return p;
}

/* The decoder reads packed ids 64 bytes at a time from a mask of varint ends: every length,
 * blocks and samples cut anywhere, a long id mid-block, an id past 32 bits mid-block (the rest
 * then goes 64-bit), give what one field per id gives. */
static void test_packed_blocks(void)
{
    const uint64_t pool[] = {1,       2,         127,       128,        300, 16383, 16384,  2097151,
                             2097152, 268435455, 268435456, 0xfffffffe, 5,   77,    1000000};
    const size_t npool = sizeof pool / sizeof *pool;
    enum { NS = 300 };
    for (int variant = 0; variant < 3; variant++) {
        uint64_t seed = 42 + (uint64_t)variant;
        size_t nper[NS], total = 0;
        uint64_t *ids = malloc(NS * 120 * sizeof *ids);
        for (size_t i = 0; i < NS; i++) {
            nper[i] = (size_t)(t_rand(&seed) % 120);
            for (size_t k = 0; k < nper[i]; k++) {
                /* variant 0: 1-4 byte ids only; 1: some 5-byte ones; 2: a 64-bit id in the
                 * middle of sample 150's list. */
                size_t lim = variant == 0 ? 10 : npool;
                uint64_t v = pool[t_rand(&seed) % lim];
                if (variant == 0 && v >= 268435456) v = 3;
                if (variant == 2 && i == 150 && k == nper[i] / 2) v = 1ull << 40;
                ids[total++] = v;
            }
        }
        uint64_t locids[sizeof pool / sizeof *pool + 1];
        memcpy(locids, pool, sizeof pool);
        locids[npool] = 1ull << 40;
        pb a = packed_profile(ids, nper, NS, 1, locids, npool + 1);
        pb b = packed_profile(ids, nper, NS, 0, locids, npool + 1);
        ap_pprof_profile *pa = t_decode(a.b, a.n), *pb_ = t_decode(b.b, b.n);
        if (pa && pb_) {
            CHECK_INT(pa->nsample_locs, total);
            CHECK_INT(pb_->nsample_locs, total);
            int same = 1;
            for (size_t k = 0; k < total && k < pa->nsample_locs; k++)
                same &= pa->locations[pa->sample_locs[k]].id == ids[k] &&
                        pa->sample_locs[k] == pb_->sample_locs[k];
            CHECK(same);
            for (size_t i = 0; i < NS; i++) same &= pa->samples[i].nloc == nper[i];
            CHECK(same);
        }
        ap_pprof_profile_free(pa);
        ap_pprof_profile_free(pb_);
        pb_free(&a);
        pb_free(&b);
        free(ids);
    }

    /* Sequential ids (the resolver's flat pass): a good profile, then an unknown id in sample
     * 5 and a wrong value count in sample 7 (and the other way round): the first in sample
     * order is reported. */
    enum { NL = 3000 };
    uint64_t *locids = malloc(NL * sizeof *locids);
    for (size_t i = 0; i < NL; i++) locids[i] = i + 1;
    uint64_t ids[NS * 60];
    size_t nper[NS], total = 0;
    uint64_t seed = 7;
    for (size_t i = 0; i < NS; i++) {
        nper[i] = 1 + (size_t)(t_rand(&seed) % 59);
        for (size_t k = 0; k < nper[i]; k++) ids[total++] = 1 + t_rand(&seed) % NL;
    }
    pb a = packed_profile(ids, nper, NS, 1, locids, NL);
    ap_pprof_profile *pa = t_decode(a.b, a.n);
    if (pa) {
        int ok = pa->nsample_locs == total;
        for (size_t k = 0; k < total && ok; k++) ok = pa->sample_locs[k] == ids[k] - 1;
        CHECK(ok);
    }
    ap_pprof_profile_free(pa);
    pb_free(&a);
    for (int order = 0; order < 2; order++) {
        pb p = {0}, m = {0};
        base(&p);
        for (size_t i = 0; i < 10; i++) {
            uint64_t row[3] = {1, 2, 3};
            if (i == (order ? 7u : 5u)) row[1] = NL + 1;
            pb_packed(&m, 1, row, 3);
            pb_u64(&m, 2, 1);
            if (i == (order ? 5u : 7u)) pb_u64(&m, 2, 1);
            pb_msg(&p, 2, &m);
        }
        add_function(&p, 1);
        for (size_t i = 0; i < NL; i++) add_location(&p, locids[i], 1);
        CHECK_ERR(decode_pb_err(&p), AP_PPROF_EMALFORMED,
                  order ? "malformed profile: sample #5: has 2 values but there are 1"
                        : "malformed profile: sample #5: location id 3001 not found");
    }
    /* Id 0 (stored as 0 - 1, which wraps) is not found either. */
    {
        pb p = {0}, m = {0};
        base(&p);
        uint64_t row[3] = {1, 0, 2};
        pb_packed(&m, 1, row, 3);
        pb_u64(&m, 2, 1);
        pb_msg(&p, 2, &m);
        add_function(&p, 1);
        for (size_t i = 0; i < 40; i++) add_location(&p, locids[i], 1);
        CHECK_ERR(decode_pb_err(&p), AP_PPROF_EMALFORMED,
                  "malformed profile: sample #0: location id 0 not found");
    }
    free(locids);

    /* Varints of every length (sample values, location addresses), with bytes after them. */
    {
        pb p = {0}, m = {0};
        base(&p);
        uint64_t want[130];
        int nv = 0;
        for (int k = 0; k < 64; k++) {
            want[nv++] = 1ull << k;
            want[nv++] = (1ull << k) - 1 + (1ull << k); /* all ones up to bit k */
        }
        want[nv++] = UINT64_MAX;
        for (int i = 0; i < nv; i++) {
            uint64_t one = 1;
            pb_packed(&m, 1, &one, 1);
            pb_u64(&m, 2, want[i]);
            pb_msg(&p, 2, &m);
        }
        add_function(&p, 1);
        for (int i = 0; i < nv; i++) {
            pb l = {0};
            pb_u64(&l, 1, (uint64_t)i + 1);
            pb_u64(&l, 3, want[i]);
            pb_msg(&p, 4, &l);
        }
        pb_str(&p, 6, "padding after the last varint");
        ap_pprof_profile *pr = t_decode(p.b, p.n);
        if (pr) {
            int ok = pr->nsamples == (uint32_t)nv && pr->nlocations == (uint32_t)nv;
            for (int i = 0; ok && i < nv; i++)
                ok = (uint64_t)pr->values[i] == want[i] && pr->locations[i].address == want[i];
            CHECK(ok);
        }
        ap_pprof_profile_free(pr);
        pb_free(&p);
    }

    /* A packed list ending inside a varint, with plenty of bytes after it: the error names the
     * byte where the cut varint starts. */
    {
        pb p = {0}, m = {0}, body = {0};
        base(&p);
        for (int i = 0; i < 40; i++) pb_varint(&body, 1);
        uint8_t cut[] = {0x81, 0x81};
        pb_bytes(&body, cut, sizeof cut);
        size_t at = p.n + 2 /* sample key, length */ + 2 /* ids key, length */ + 40;
        pb_msg(&m, 1, &body);
        pb_u64(&m, 2, 1);
        pb_msg(&p, 2, &m);
        add_function(&p, 1);
        for (int i = 0; i < 40; i++) add_location(&p, (uint64_t)i + 1, 1);
        char want[96];
        snprintf(want, sizeof want, "(byte %zu: sample #0: bad varint (packed))", at);
        CHECK_ERR(decode_pb_err(&p), AP_PPROF_EMALFORMED, want);
    }
}

static void test_gzip(void)
{
    size_t len, rawlen, gzlen;
    uint8_t *gz = t_data("goapp-cpu-1.pb.gz", &len);
    uint8_t *raw = t_gunzip(gz, len, &rawlen);
    CHECK(raw != NULL);

    /* Raw and gzip'd give the same profile. */
    ap_pprof_profile *a = t_decode(gz, len), *b = t_decode(raw, rawlen);
    if (a && b) {
        CHECK_INT(a->nsamples, b->nsamples);
        CHECK_INT(a->decompressed_size, rawlen);
        CHECK(!b->gzipped && a->gzipped);
    }
    ap_pprof_profile_free(a);
    ap_pprof_profile_free(b);

    /* Two gzip members are one stream (Go's multistream reader). */
    size_t half = rawlen / 2, l1, l2;
    /* Split on a field boundary is not needed: members concatenate before parsing. */
    uint8_t *g1 = t_gzip(raw, half, &l1), *g2 = t_gzip(raw + half, rawlen - half, &l2);
    uint8_t *both = malloc(l1 + l2 + 8);
    memcpy(both, g1, l1);
    memcpy(both + l1, g2, l2);
    a = t_decode(both, l1 + l2);
    CHECK(a && a->nsamples == 945);
    ap_pprof_profile_free(a);
    /* Trailing bytes that are not a gzip header are an error, as in Go. */
    memcpy(both + l1, "\0\0\0\0\0\0\0\0", 8);
    CHECK_ERR(decode_err(both, l1 + 8, NULL), AP_PPROF_EMALFORMED, "invalid header");
    /* A corrupted trailer (CRC) is an error. */
    uint8_t *bad = malloc(l1);
    memcpy(bad, g1, l1);
    bad[l1 - 6] ^= 0xff;
    CHECK(decode_err(bad, l1, NULL).code == AP_PPROF_EMALFORMED);
    free(bad);
    free(g1);
    free(g2);
    free(both);

    /* The size limit: a bomb is stopped at the limit, without reading on. */
    ap_pprof_limits lim = {.max_decompressed = 4096};
    CHECK_ERR(decode_err(gz, len, &lim), AP_PPROF_ETOOLARGE, "limit of 4096 bytes");
    CHECK_ERR(decode_err(raw, rawlen, &lim), AP_PPROF_ETOOLARGE, "limit");
    uint8_t *zeros = calloc(64 << 20, 1);
    uint8_t *bomb = t_gzip(zeros, 64 << 20, &gzlen);
    free(zeros);
    lim.max_decompressed = 1 << 20;
    CHECK_ERR(decode_err(bomb, gzlen, &lim), AP_PPROF_ETOOLARGE, "larger than the limit");
    /* Within the limit, 64 MiB of zero bytes is a stream of field-0 varints: skipped, and the
     * result has no string table. */
    CHECK_ERR(decode_err(bomb, gzlen, NULL), AP_PPROF_EMALFORMED, "no string table");
    free(bomb);

    /* The memory limit. */
    ap_pprof_limits mem = {.max_memory = 64 << 10};
    CHECK_INT(decode_err(gz, len, &mem).code, AP_PPROF_ETOOLARGE);
    free(gz);
    free(raw);
}

static void test_reuse(void)
{
    ap_pprof_profile *p = ap_pprof_profile_new();
    const char *files[] = {"goapp-cpu-1.pb.gz", "edge/minimal.pb.gz", "bad/truncated.pb.gz",
                           "autopgo/default.pgo", "goapp-cpu-1.pb.gz"};
    uint32_t expect[] = {945, 3, 0, 6326, 945};
    for (int i = 0; i < 5; i++) {
        size_t len;
        uint8_t *b = t_data(files[i], &len);
        ap_pprof_error err;
        int rc = ap_pprof_decode_into(p, b, len, NULL, &err);
        CHECK_INT(rc, expect[i] ? 0 : -1);
        CHECK_INT(p->nsamples, expect[i]);
        free(b);
    }
    ap_pprof_profile_free(p);
}

int main(void)
{
    test_corpus_good();
    test_corpus_legacy();
    test_corpus_bad();
    test_fields();
    test_wire_rules();
    test_packed_blocks();
    test_gzip();
    test_reuse();
    return t_done();
}
