/* The byte source of the decoder: raw protobuf in place; gzip up to AP_SRC_WHOLE_MAX bytes
 * inflated whole with libdeflate; else (or when libdeflate refuses the input) gzip inflated by
 * zlib in a bounded, growing window so that only the unparsed tail of the stream is held. */
#ifndef AP_PPROF_SOURCE_H
#define AP_PPROF_SOURCE_H

#include <zlib.h>

#include "internal.h"

/* Gzip whose output fits in this many bytes is inflated whole by libdeflate (2-2.7x zlib's
 * inflate here; bench/merge/RESULTS.md): every upload (a few hundred KiB to a few MiB) and
 * every bench/merge input. The whole output is held, and charged to the profile, for the
 * whole decode, so beyond this (up to the profile's max_decompressed) zlib's window, which
 * holds only the unparsed tail, keeps the memory of a decode small. */
#define AP_SRC_WHOLE_MAX ((uint64_t)64 << 20)

typedef struct {
    const uint8_t *in;
    size_t in_len;
    int gz;
    z_stream zs;
    int zinit;
    uint8_t *buf; /* window (gz) or the input itself (raw) */
    size_t cap;
    size_t lo, hi;  /* unread bytes are buf[lo..hi) */
    uint64_t base;  /* stream offset of buf[0] */
    uint64_t total; /* bytes produced so far */
    uint64_t limit;
    uint32_t members; /* gzip members started */
    int eof;
    int tried_whole; /* the libdeflate whole-buffer path was tried (it ran or was skipped) */
    ap_pprof_profile *charge; /* the window is charged to this profile's budget */
    size_t charged;
} ap_src;

/* Sets up the source; never fails (allocation happens on fill). */
void ap_src_init(ap_src *s, const void *data, size_t len, uint64_t limit, ap_pprof_profile *p);
/* Makes at least `need` unread bytes available unless the stream ends first. Returns 0, or -1
 * with err filled (gzip errors, size limit, memory). */
int ap_src_fill(ap_src *s, size_t need, ap_pprof_error *err);
void ap_src_free(ap_src *s);

static inline size_t ap_src_avail(const ap_src *s)
{
    return s->hi - s->lo;
}

#endif
