/* The byte source of the decoder: raw protobuf in place, or gzip inflated in a bounded,
 * growing window so that only the unparsed tail of the stream is held in memory. */
#ifndef AP_PPROF_SOURCE_H
#define AP_PPROF_SOURCE_H

#include <zlib.h>

#include "internal.h"

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
