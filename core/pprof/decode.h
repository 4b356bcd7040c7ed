/* The decoder's state between the wire pass (decode.c) and the reference pass (resolve.c):
 * raw ids and string indices as read, before they are checked and turned into indices. */
#ifndef AP_PPROF_DECODE_H
#define AP_PPROF_DECODE_H

#include "internal.h"

/* A string index that cannot be valid (negative or huge on the wire). */
#define AP_DEC_BADSTR UINT32_MAX

typedef struct {
    ap_pprof_profile *p;
    ap_pprof_status status; /* why an allocation failed */
    /* End of the bytes that may be read (not parsed) past a field: the source window's end, so
     * that hot loops can load 8 or 16 bytes at a time without checking each varint's end. */
    const uint8_t *rend;
    int bmi2; /* the CPU has BMI2 (x86-64): the packed ids' fast path uses it */
    /* Sample location ids minus one (wrapping: id 0 is UINT32_MAX), straight into
     * p->sample_locs's buffer (locs32) and resolved to indices in place: when locations are
     * numbered 1..n, as runtimes and Go's encoder number them, that is already each index, and
     * locmax < n shows that every id was found. Only an id that does not fit 32 bits moves them
     * all to locs64 (the ids themselves). */
    uint32_t *locs32;
    size_t cap_locs32;
    uint32_t locmax; /* the largest id - 1 in locs32 */
    uint64_t *locs64;
    size_t cap_locs64;
    size_t nlocids;
    int wide;
    size_t nvals;   /* values go straight to p->values */
    uint32_t *nval; /* values per sample */
    size_t cap_nval;
    uint64_t *fnids; /* raw function id of each line */
    size_t cap_fnids;
    uint64_t *mapids; /* raw mapping id of each location */
    size_t cap_mapids;
    uint64_t *comments;
    size_t ncomments, cap_comments;
    uint32_t *dropped_keys; /* keys of labels Go drops (still range-checked) */
    size_t ndropped_keys, cap_dropped_keys;
    int has_doc_url;
} ap_dec;

/* Reads the wire format into d->p (cleared by the caller). */
int ap_dec_wire(ap_dec *d, const void *data, size_t len, uint64_t limit, ap_pprof_error *err);
/* postDecode + CheckValid: checks string indices and ids, turns ids into indices. */
int ap_dec_resolve(ap_dec *d, ap_pprof_error *err);
void ap_dec_free(ap_dec *d);

#endif
