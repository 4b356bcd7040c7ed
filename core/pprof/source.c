/* Gunzip for the decoder, with Go's gzip.Reader behaviour: multi-member streams are
 * concatenated, trailing bytes that are not a gzip header are an error, and a truncated
 * stream is "unexpected EOF". Output past the size limit is refused (gzip bombs).
 * Two paths, one result: libdeflate inflates the whole input at once when its output fits in
 * AP_SRC_WHOLE_MAX and the limit; anything else, and anything libdeflate refuses, goes to
 * zlib's streaming inflate, which alone words every error (so a malformed input fails as it
 * always did, after being tried twice). */
#include <libdeflate.h>
#include <stdlib.h>

#include "source.h"

#define WINDOW_MIN (256u << 10)

void ap_src_init(ap_src *s, const void *data, size_t len, uint64_t limit, ap_pprof_profile *p)
{
    memset(s, 0, sizeof *s);
    s->in = data;
    s->in_len = len;
    s->limit = limit;
    s->charge = p;
    s->gz = len >= 2 && s->in[0] == 0x1f && s->in[1] == 0x8b;
    if (!s->gz) {
        s->buf = (uint8_t *)s->in; /* read only, never written */
        s->hi = len;
        s->total = len;
        s->eof = 1;
    }
}

void ap_src_free(ap_src *s)
{
    if (s->gz) {
        if (s->zinit) inflateEnd(&s->zs);
        free(s->buf);
        if (s->charge) s->charge->mem_used -= s->charged;
    }
    s->buf = NULL;
}

static int too_large(ap_src *s, ap_pprof_error *err)
{
    return ap_pprof_fail(err, AP_PPROF_ETOOLARGE,
                         "decompressed profile is larger than the limit of %llu bytes",
                         (unsigned long long)s->limit);
}

/* Room for at least `want` bytes after hi: first by moving the unread tail to the front, then
 * by doubling the window (never past what the size limit allows). */
static int make_room(ap_src *s, size_t want, ap_pprof_error *err)
{
    if (s->lo > 0 && (s->cap - s->hi < want || s->lo >= s->cap / 2)) {
        memmove(s->buf, s->buf + s->lo, s->hi - s->lo);
        s->base += s->lo;
        s->hi -= s->lo;
        s->lo = 0;
    }
    if (s->cap - s->hi >= want) return 0;
    uint64_t ncap = s->cap ? (uint64_t)s->cap * 2 : WINDOW_MIN;
    while (ncap - s->hi < want) ncap *= 2;
    uint64_t max = s->limit - s->base + 1; /* a window never needs more than what is left */
    if (ncap > max) ncap = max;
    if (ncap <= s->cap) return 0;
    ap_pprof_status st = AP_PPROF_OK;
    if (s->charge && ap_pprof_charge(s->charge, (int64_t)(ncap - s->cap), &st))
        return ap_pprof_fail(err, st, "decoding needs more memory than the limit allows");
    uint8_t *nb = realloc(s->buf, ncap);
    if (!nb) {
        if (s->charge) s->charge->mem_used -= ncap - s->cap;
        return ap_pprof_fail(err, AP_PPROF_ENOMEM, "out of memory for the gzip window");
    }
    s->charged += ncap - s->cap;
    s->buf = nb;
    s->cap = ncap;
    return 0;
}

/* ---- whole-buffer path (libdeflate) ---- */

#define GZIP_MIN          18u   /* a gzip member's smallest size: 10-byte header, 8-byte trailer */
#define GZIP_FHCRC        0x02u /* header flag: a CRC-16 of the header follows it */
#define DEFLATE_MAX_RATIO 1032  /* DEFLATE never expands a byte into more than 1032 */

/* Resizes the whole-output buffer to `ncap` bytes, charged to the profile's budget. */
static int whole_resize(ap_src *s, uint64_t ncap)
{
    if (s->charge && ap_pprof_charge(s->charge, (int64_t)(ncap - s->cap), NULL)) return -1;
    uint8_t *nb = realloc(s->buf, (size_t)ncap);
    if (!nb) {
        if (s->charge) s->charge->mem_used -= ncap - s->cap;
        return -1;
    }
    s->charged += ncap - s->cap;
    s->buf = nb;
    s->cap = (size_t)ncap;
    return 0;
}

/* Inflates every member of the input into one buffer. Returns 1 when buf[0..hi) holds the
 * whole output, or 0 with the source as new, for zlib's path: an input libdeflate refuses
 * (malformed, truncated, trailing bytes), a member with a header CRC (libdeflate skips it
 * unchecked; zlib and Go check it), an output over AP_SRC_WHOLE_MAX or the limit, a buffer
 * over the memory budget. The last member's ISIZE trailer sizes the first try; it is only a
 * hint (one member's size, mod 2^32, and a crafted input may lie): a buffer too small is
 * doubled and the member inflated again, never past the bound. Known difference: libdeflate
 * accepts a few degenerate Huffman codes that zlib rejects (e.g. an empty distance code, or a
 * one-symbol code-length code) when the member's CRC-32 and ISIZE still match. */
static int inflate_whole(ap_src *s)
{
    uint64_t max = s->limit < AP_SRC_WHOLE_MAX ? s->limit : AP_SRC_WHOLE_MAX;
    if (s->in_len < GZIP_MIN || max == 0) return 0;
    const uint8_t *t = s->in + s->in_len - 4;
    uint64_t cap =
        (uint64_t)t[0] | (uint64_t)t[1] << 8 | (uint64_t)t[2] << 16 | (uint64_t)t[3] << 24;
    if (cap > (uint64_t)s->in_len * DEFLATE_MAX_RATIO)
        cap = (uint64_t)s->in_len * DEFLATE_MAX_RATIO;
    if (cap > max) return 0; /* too large for this path, or a lie: zlib decides */
    if (cap < 4096) cap = max < 4096 ? max : 4096;
    struct libdeflate_decompressor *d = libdeflate_alloc_decompressor();
    if (!d) return 0;
    size_t off = 0;
    int whole = 0;
    while (!whole && whole_resize(s, cap) == 0) {
        enum libdeflate_result r = LIBDEFLATE_SUCCESS;
        while (off < s->in_len) {
            if (s->in_len - off < GZIP_MIN || (s->in[off + 3] & GZIP_FHCRC)) break;
            size_t used = 0, got = 0;
            r = libdeflate_gzip_decompress_ex(d, s->in + off, s->in_len - off, s->buf + s->hi,
                                              s->cap - s->hi, &used, &got);
            if (r != LIBDEFLATE_SUCCESS) break;
            s->hi += got;
            s->members++;
            off += used;
        }
        if (off == s->in_len)
            whole = 1;
        else if (r != LIBDEFLATE_INSUFFICIENT_SPACE || cap >= max)
            break;
        else
            cap = cap * 2 > max ? max : cap * 2; /* this member again, with more room */
    }
    libdeflate_free_decompressor(d);
    if (!whole) {
        free(s->buf);
        if (s->charge) s->charge->mem_used -= s->charged;
        s->buf = NULL;
        s->cap = s->hi = s->charged = 0;
        s->members = 0;
        return 0;
    }
    s->total = s->hi;
    s->eof = 1;
    return 1;
}

/* ---- streaming path (zlib) ---- */

int ap_src_fill(ap_src *s, size_t need, ap_pprof_error *err)
{
    if (s->gz && !s->tried_whole) {
        s->tried_whole = 1;
        if (inflate_whole(s)) return 0;
    }
    while (s->hi - s->lo < need && !s->eof) {
        if (!s->zinit) {
            s->zs.next_in = (Bytef *)s->in;
            s->zs.avail_in = s->in_len > UINT32_MAX ? UINT32_MAX : (uInt)s->in_len;
            if (inflateInit2(&s->zs, 16 + MAX_WBITS) != Z_OK)
                return ap_pprof_fail(err, AP_PPROF_ENOMEM, "cannot initialise zlib");
            s->zinit = 1;
            s->members = 1;
        }
        size_t want = need - (s->hi - s->lo);
        if (want < 65536) want = 65536;
        if (make_room(s, want, err)) return -1;
        size_t room = s->cap - s->hi;
        /* Never produce more than one byte past the limit. */
        uint64_t left = s->limit - s->total + 1;
        if (room > left) room = (size_t)left;
        if (room > UINT32_MAX) room = UINT32_MAX;
        s->zs.next_out = s->buf + s->hi;
        s->zs.avail_out = (uInt)room;
        int rc = inflate(&s->zs, Z_NO_FLUSH);
        size_t produced = room - s->zs.avail_out;
        s->hi += produced;
        s->total += produced;
        if (s->total > s->limit) return too_large(s, err);
        /* Feed input beyond 4 GiB in slices. */
        if (s->zs.avail_in == 0) {
            size_t used = (size_t)((const uint8_t *)s->zs.next_in - s->in);
            if (used < s->in_len) {
                size_t rest = s->in_len - used;
                s->zs.avail_in = rest > UINT32_MAX ? UINT32_MAX : (uInt)rest;
            }
        }
        switch (rc) {
        case Z_OK:
            break;
        case Z_STREAM_END:
            if (s->zs.avail_in == 0) {
                s->eof = 1;
            } else {
                /* Another gzip member follows (Go's reader is multistream). */
                if (inflateReset(&s->zs) != Z_OK)
                    return ap_pprof_fail(err, AP_PPROF_EMALFORMED,
                                         "decompressing profile: gzip: reset failed");
                s->members++;
            }
            break;
        case Z_BUF_ERROR:
            if (s->zs.avail_in == 0)
                return ap_pprof_fail(
                    err, AP_PPROF_EMALFORMED,
                    "decompressing profile: unexpected EOF (after %llu decompressed "
                    "bytes)",
                    (unsigned long long)s->total);
            if (produced == 0 && room == 0) return too_large(s, err);
            break;
        case Z_MEM_ERROR:
            return ap_pprof_fail(err, AP_PPROF_ENOMEM, "zlib: out of memory");
        default:
            if (s->members > 1 && s->zs.total_out == 0)
                return ap_pprof_fail(err, AP_PPROF_EMALFORMED,
                                     "decompressing profile: gzip: invalid header (member %u: "
                                     "trailing garbage?)",
                                     s->members);
            return ap_pprof_fail(err, AP_PPROF_EMALFORMED,
                                 "decompressing profile: gzip: %s (member %u, after %llu bytes)",
                                 s->zs.msg ? s->zs.msg : "invalid data", s->members,
                                 (unsigned long long)s->total);
        }
        if (rc == Z_OK && produced == 0 && s->zs.avail_in == 0) {
            /* zlib wants more input and there is none. */
            return ap_pprof_fail(err, AP_PPROF_EMALFORMED,
                                 "decompressing profile: unexpected EOF (after %llu decompressed "
                                 "bytes)",
                                 (unsigned long long)s->total);
        }
    }
    return 0;
}
