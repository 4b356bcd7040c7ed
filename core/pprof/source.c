/* Streaming gunzip for the decoder, with Go's gzip.Reader behaviour: multi-member streams are
 * concatenated, trailing bytes that are not a gzip header are an error, and a truncated
 * stream is "unexpected EOF". Output past the size limit is refused (gzip bombs). */
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

int ap_src_fill(ap_src *s, size_t need, ap_pprof_error *err)
{
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
