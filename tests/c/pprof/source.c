/* Tests core/pprof/source.c: the whole-buffer gunzip (libdeflate) against the streaming one
 * (zlib). Each input is drained both ways; the bytes, or the error code and message, must be
 * the same, and the test checks which path ran (a source that started zlib has zinit set). */
#include <stdlib.h>
#include <zlib.h>

#include "helpers.h"
#include "source.h"

typedef struct {
    int rc;
    ap_pprof_error err;
    size_t n;         /* bytes out */
    uint32_t crc;     /* their CRC-32 */
    int streamed;     /* zlib ran */
    uint32_t members; /* gzip members read */
} drained;

/* Reads the whole source, `stream` forcing zlib's path (as when libdeflate refuses), charging
 * `p` when given. */
static drained drain_charged(const uint8_t *in, size_t len, uint64_t limit, int stream,
                             ap_pprof_profile *p)
{
    drained d = {0};
    ap_src s;
    ap_src_init(&s, in, len, limit, p);
    s.tried_whole = stream;
    d.crc = (uint32_t)crc32(0, NULL, 0);
    for (;;) {
        if (ap_src_fill(&s, 1 << 16, &d.err)) {
            d.rc = -1;
            break;
        }
        size_t n = ap_src_avail(&s);
        if (n == 0) break;
        d.crc = (uint32_t)crc32_z(d.crc, s.buf + s.lo, n);
        d.n += n;
        s.lo = s.hi;
    }
    d.streamed = s.zinit;
    d.members = s.members;
    ap_src_free(&s);
    return d;
}

static drained drain(const uint8_t *in, size_t len, uint64_t limit, int stream)
{
    return drain_charged(in, len, limit, stream, NULL);
}

/* Drains `in` both ways and checks they agree; returns the whole-buffer path's result. */
static drained same_both_ways(const char *what, const uint8_t *in, size_t len, uint64_t limit)
{
    drained w = drain(in, len, limit, 0), z = drain(in, len, limit, 1);
    int same = w.rc == z.rc && (w.rc ? w.err.code == z.err.code && !strcmp(w.err.msg, z.err.msg)
                                     : w.n == z.n && w.crc == z.crc);
    if (!same)
        fprintf(stderr, "%s: whole path rc %d (%s), zlib rc %d (%s), %zu vs %zu bytes\n", what,
                w.rc, w.rc ? w.err.msg : "", z.rc, z.rc ? z.err.msg : "", w.n, z.n);
    CHECK(same);
    CHECK(z.streamed);
    return w;
}

static uint8_t *cat(const uint8_t *a, size_t la, const uint8_t *b, size_t lb)
{
    uint8_t *r = malloc(la + lb);
    memcpy(r, a, la);
    if (lb) memcpy(r + la, b, lb);
    return r;
}

static void put_le32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v, p[1] = (uint8_t)(v >> 8), p[2] = (uint8_t)(v >> 16),
    p[3] = (uint8_t)(v >> 24);
}

static void test_members(const uint8_t *raw, size_t rawlen)
{
    const uint64_t lim = 512u << 20;
    size_t lg;
    uint8_t *g = t_gzip(raw, rawlen, &lg);
    uint32_t crc = (uint32_t)crc32_z(crc32(0, NULL, 0), raw, rawlen);
    drained d = same_both_ways("one member", g, lg, lim);
    CHECK(d.rc == 0 && !d.streamed && d.members == 1);
    CHECK(d.n == rawlen && d.crc == crc);

    /* Three members; the last (whose ISIZE sizes the first try) small, so the buffer grows and
     * the member that did not fit is inflated again. */
    size_t a = rawlen / 2, b = rawlen - a - 100, l1, l2, l3;
    uint8_t *g1 = t_gzip(raw, a, &l1), *g2 = t_gzip(raw + a, b, &l2),
            *g3 = t_gzip(raw + a + b, 100, &l3);
    uint8_t *g12 = cat(g1, l1, g2, l2), *g123 = cat(g12, l1 + l2, g3, l3);
    d = same_both_ways("three members", g123, l1 + l2 + l3, lim);
    CHECK(d.rc == 0 && !d.streamed && d.members == 3);
    CHECK(d.n == rawlen && d.crc == crc);
    /* The same profile decoded from one member and from three. */
    ap_pprof_profile *p1 = t_decode(g, lg), *p3 = t_decode(g123, l1 + l2 + l3);
    CHECK(p1 && p3 && p1->nsamples == p3->nsamples && p3->decompressed_size == rawlen);
    ap_pprof_profile_free(p1);
    ap_pprof_profile_free(p3);

    /* The last member largest: the first try has room to spare. */
    uint8_t *g31 = cat(g3, l3, g1, l1);
    d = same_both_ways("small member first", g31, l3 + l1, lim);
    CHECK(d.rc == 0 && !d.streamed && d.members == 2 && d.n == 100 + a);
    free(g31);

    /* A truncated member (the last, or one in the middle): zlib's "unexpected EOF". */
    d = same_both_ways("truncated last member", g123, l1 + l2 + l3 / 2, lim);
    CHECK(d.rc && d.streamed && strstr(d.err.msg, "unexpected EOF"));
    uint8_t *cut = cat(g1, l1, g2, l2 / 2);
    uint8_t *cut3 = cat(cut, l1 + l2 / 2, g3, l3);
    d = same_both_ways("truncated middle member", cut3, l1 + l2 / 2 + l3, lim);
    CHECK(d.rc && d.streamed && d.err.code == AP_PPROF_EMALFORMED);
    free(cut3);
    d = same_both_ways("truncated header", g12, l1 + 5, lim);
    CHECK(d.rc && d.streamed && strstr(d.err.msg, "unexpected EOF"));

    /* Trailing bytes that are not a member; a corrupted CRC. */
    memcpy(cut, g1, l1);
    memset(cut + l1, 0, 20);
    d = same_both_ways("trailing zeros", cut, l1 + 20, lim);
    CHECK(d.rc && d.streamed && strstr(d.err.msg, "invalid header"));
    free(cut);
    uint8_t *bad = cat(g, lg, NULL, 0);
    bad[lg - 6] ^= 0xff;
    d = same_both_ways("bad CRC", bad, lg, lim);
    CHECK(d.rc && d.streamed && d.err.code == AP_PPROF_EMALFORMED);

    /* A lying ISIZE makes the member invalid for both (the trailer is checked): too small, and
     * huge (4 GiB - 1: a hint past the bound and DEFLATE's ratio goes straight to zlib). */
    memcpy(bad, g, lg);
    put_le32(bad + lg - 4, 7);
    d = same_both_ways("ISIZE too small", bad, lg, lim);
    CHECK(d.rc && d.streamed && strstr(d.err.msg, "incorrect length check"));
    put_le32(bad + lg - 4, UINT32_MAX);
    d = same_both_ways("ISIZE huge", bad, lg, lim);
    CHECK(d.rc && d.streamed && strstr(d.err.msg, "incorrect length check"));
    /* An honest last member after a first whose ISIZE lies. */
    uint8_t *lie = cat(g1, l1, g3, l3);
    put_le32(lie + l1 - 4, 1);
    d = same_both_ways("first member's ISIZE lies", lie, l1 + l3, lim);
    CHECK(d.rc && d.streamed && strstr(d.err.msg, "incorrect length check"));
    free(lie);

    /* A header CRC (FHCRC): libdeflate skips it unchecked, so zlib reads these. */
    uint8_t *hc = malloc(lg + 2);
    memcpy(hc, g, 10);
    hc[3] |= 0x02;
    uint32_t hcrc = (uint32_t)crc32(0, hc, 10);
    hc[10] = (uint8_t)hcrc, hc[11] = (uint8_t)(hcrc >> 8);
    memcpy(hc + 12, g + 10, lg - 10);
    d = same_both_ways("good header CRC", hc, lg + 2, lim);
    CHECK(d.rc == 0 && d.streamed && d.n == rawlen);
    hc[10] ^= 1;
    d = same_both_ways("bad header CRC", hc, lg + 2, lim);
    CHECK(d.rc && d.streamed && strstr(d.err.msg, "header crc mismatch"));
    free(hc);

    /* The size limit words its error the same, whichever path meets it. */
    d = same_both_ways("over the limit", g, lg, 4096);
    CHECK(d.rc && d.err.code == AP_PPROF_ETOOLARGE && strstr(d.err.msg, "limit of 4096 bytes"));
    d = same_both_ways("exactly the limit", g, lg, rawlen);
    CHECK(d.rc == 0 && !d.streamed && d.n == rawlen);
    d = same_both_ways("one byte under", g, lg, rawlen - 1);
    CHECK(d.rc && d.err.code == AP_PPROF_ETOOLARGE);

    free(bad);
    free(g);
    free(g1);
    free(g2);
    free(g3);
    free(g12);
    free(g123);
}

/* Past AP_SRC_WHOLE_MAX, zlib's window (small memory); at it, the whole buffer. A member whose
 * ISIZE lies small about a large output grows to the bound and then goes to zlib. */
static void test_bound(void)
{
    size_t n = (size_t)AP_SRC_WHOLE_MAX + 1, lg;
    uint8_t *zeros = calloc(n, 1);
    uint8_t *g = t_gzip(zeros, n, &lg);
    drained d = drain(g, lg, 512u << 20, 0);
    CHECK(d.rc == 0 && d.streamed && d.n == n);
    uint8_t *g2 = t_gzip(zeros, n - 1, &lg);
    d = drain(g2, lg, 512u << 20, 0);
    CHECK(d.rc == 0 && !d.streamed && d.n == n - 1);
    /* Two members of half the bound each, the second's ISIZE the hint: 32 MiB, then 64. */
    size_t half = (size_t)AP_SRC_WHOLE_MAX / 2, lh;
    uint8_t *h = t_gzip(zeros, half, &lh);
    uint8_t *hh = cat(h, lh, h, lh);
    d = drain(hh, 2 * lh, 512u << 20, 0);
    CHECK(d.rc == 0 && !d.streamed && d.members == 2 && d.n == 2 * half);
    /* Three such members: past the bound, so zlib reads them all again. */
    uint8_t *hhh = cat(hh, 2 * lh, h, lh);
    d = drain(hhh, 3 * lh, 512u << 20, 0);
    CHECK(d.rc == 0 && d.streamed && d.members == 3 && d.n == 3 * half);
    free(hhh);
    free(hh);
    /* A whole buffer over the memory budget: zlib's window instead, charged and given back. */
    size_t mib = 1 << 20, lm;
    uint8_t *m = t_gzip(zeros, mib, &lm);
    ap_pprof_profile *p = ap_pprof_profile_new();
    p->mem_limit = p->mem_used + (512u << 10);
    uint64_t before = p->mem_used;
    d = drain_charged(m, lm, 512u << 20, 0, p);
    CHECK(d.rc == 0 && d.streamed && d.n == mib);
    CHECK_INT(p->mem_used, before);
    p->mem_limit = 0;
    d = drain_charged(m, lm, 512u << 20, 0, p);
    CHECK(d.rc == 0 && !d.streamed && d.n == mib);
    CHECK_INT(p->mem_used, before);
    ap_pprof_profile_free(p);
    free(m);
    free(h);
    free(g2);
    free(g);
    free(zeros);
}

int main(void)
{
    size_t len, rawlen;
    uint8_t *gz = t_data("goapp-go123-cpu-1.pb.gz", &len);
    uint8_t *raw = t_gunzip(gz, len, &rawlen);
    CHECK(raw && rawlen > 1000);
    if (raw) test_members(raw, rawlen);
    test_bound();
    /* Every file of the corpus that is gzip: the same both ways. */
    static char names[256][256];
    const char *dirs[] = {".", "bad", "edge", "autopgo"};
    for (int k = 0; k < 4; k++) {
        int n = t_list(dirs[k], names, 256);
        for (int i = 0; i < n; i++) {
            size_t l;
            uint8_t *b = t_data(names[i], &l);
            CHECK(b != NULL);
            if (b && l >= 2 && b[0] == 0x1f && b[1] == 0x8b)
                same_both_ways(names[i], b, l, 512u << 20);
            free(b);
        }
    }
    free(gz);
    free(raw);
    return t_done();
}
