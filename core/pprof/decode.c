/* Hand-written profile.proto wire decoder with the exact acceptance rules of Go's
 * profile/proto.go + encode.go (field types, packed/unpacked, unknown fields, concatenation),
 * reading the window its source gives (source.c: a whole inflated buffer, or zlib's streaming
 * window past 64 MiB). References are resolved and checked in resolve.c. */
#include <stdio.h>
#include <stdlib.h>

#include "decode.h"
#include "source.h"

/* AP_PPROF_PORTABLE leaves out the x86 paths (the tests build it to cover the others). */
#if defined(__SSE2__) && !defined(AP_PPROF_PORTABLE)
#include <emmintrin.h>
#define AP_DEC_SSE2 1
#endif
#if defined(__x86_64__) && defined(__GNUC__) && defined(__BYTE_ORDER__) &&                         \
    __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__ && !defined(AP_PPROF_PORTABLE)
#include <immintrin.h>
#define AP_DEC_BMI2 1
#endif

/* Field kinds, for error messages. */
static const char *const field_names[] = {
    "field 0",        "sample_type",  "sample",      "mapping",     "location",
    "function",       "string_table", "drop_frames", "keep_frames", "time_nanos",
    "duration_nanos", "period_type",  "period",      "comment",     "default_sample_type",
    "doc_url",
};

/* The one wire error Go's Parse reports as itself rather than as an unrecognized format. */
static const char concatenated[] = "concatenated profiles detected";

typedef struct {
    const uint8_t *at; /* where it went wrong */
    const char *what;  /* static text */
    uint64_t arg;
    int has_arg;
} wire_err;

#define WFAIL(e, ptr, text)                                                                        \
    do {                                                                                           \
        (e)->at = (ptr);                                                                           \
        (e)->what = (text);                                                                        \
        (e)->has_arg = 0;                                                                          \
        return -1;                                                                                 \
    } while (0)

#define WFAILN(e, ptr, text, n)                                                                    \
    do {                                                                                           \
        (e)->at = (ptr);                                                                           \
        (e)->what = (text);                                                                        \
        (e)->arg = (n);                                                                            \
        (e)->has_arg = 1;                                                                          \
        return -1;                                                                                 \
    } while (0)

/* Skips a field of wire type `wt` whose key ended at *pp. Go accepts 0, 1, 2 and 5. */
static int skip_field(const uint8_t **pp, const uint8_t *end, unsigned wt, wire_err *e)
{
    const uint8_t *p = *pp;
    uint64_t v;
    switch (wt) {
    case 0:
        p = ap_varint(p, end, &v);
        if (!p) WFAIL(e, *pp, "bad varint");
        break;
    case 1:
        if (end - p < 8) WFAIL(e, p, "not enough data for a fixed64");
        p += 8;
        break;
    case 2:
        p = ap_varint(p, end, &v);
        if (!p) WFAIL(e, *pp, "bad varint (length)");
        if (v > (uint64_t)(end - p))
            WFAILN(e, *pp, "length runs past the end (too much data): ", v);
        p += v;
        break;
    case 5:
        if (end - p < 4) WFAIL(e, p, "not enough data for a fixed32");
        p += 4;
        break;
    default:
        WFAILN(e, p, "unknown wire type ", wt);
    }
    *pp = p;
    return 0;
}

/* Reads the value of a varint-typed field (Go's decodeInt64/decodeUint64/decodeBool). A known
 * field with another wire type is Go's "type mismatch"; types 3, 4, 6, 7 are unknown. */
static inline int read_varint_field(const uint8_t **pp, const uint8_t *end, unsigned wt,
                                    uint64_t *out, wire_err *e)
{
    if (AP_UNLIKELY(wt != 0)) {
        if (wt == 3 || wt == 4 || wt == 6 || wt == 7) WFAILN(e, *pp, "unknown wire type ", wt);
        WFAILN(e, *pp, "type mismatch: expected a varint, got wire type ", wt);
    }
    const uint8_t *p = ap_varint(*pp, end, out);
    if (!p) WFAIL(e, *pp, "bad varint");
    *pp = p;
    return 0;
}

/* Reads the payload of a length-delimited field. */
static inline int read_len_field(const uint8_t **pp, const uint8_t *end, unsigned wt,
                                 const uint8_t **data, size_t *len, wire_err *e)
{
    if (AP_UNLIKELY(wt != 2)) {
        if (wt == 3 || wt == 4 || wt == 6 || wt == 7) WFAILN(e, *pp, "unknown wire type ", wt);
        WFAILN(e, *pp, "type mismatch: expected a message or string, got wire type ", wt);
    }
    uint64_t n;
    const uint8_t *p = ap_varint(*pp, end, &n);
    if (!p) WFAIL(e, *pp, "bad varint (length)");
    if (n > (uint64_t)(end - p)) WFAILN(e, *pp, "length runs past the end (too much data): ", n);
    *data = p;
    *len = (size_t)n;
    *pp = p + n;
    return 0;
}

static inline const uint8_t *read_key(const uint8_t *p, const uint8_t *end, uint64_t *field,
                                      unsigned *wt)
{
    uint64_t k;
    p = ap_varint(p, end, &k);
    if (!p) return NULL;
    *field = k >> 3;
    *wt = (unsigned)(k & 7);
    return p;
}

/* A string index as stored: out-of-range values become AP_DEC_BADSTR, which never passes the
 * range check in resolve.c (Go converts to int and compares with len(stringTable)). */
static inline uint32_t str_index(uint64_t v)
{
    return v >= AP_DEC_BADSTR ? AP_DEC_BADSTR : (uint32_t)v;
}

/* ---- temporaries ---- */

static int tgrow(ap_dec *d, void **ptr, size_t *cap, size_t size, uint64_t need)
{
    ap_pprof_status st = AP_PPROF_OK;
    if (ap_pprof_grow_sz(d->p, ptr, cap, size, need, &st)) {
        d->status = st;
        return -1;
    }
    return 0;
}

static int pgrow(ap_dec *d, void **ptr, uint32_t *cap, size_t size, uint64_t need)
{
    ap_pprof_status st = AP_PPROF_OK;
    if (ap_pprof_grow(d->p, ptr, cap, size, need, &st)) {
        d->status = st;
        return -1;
    }
    return 0;
}

#define OOM(e, ptr)                                                                                \
    do {                                                                                           \
        (e)->at = (ptr);                                                                           \
        (e)->what = NULL;                                                                          \
        return -1;                                                                                 \
    } while (0)

/* ---- messages ---- */

static int dec_value_type(const uint8_t *p, const uint8_t *end, uint32_t *type, uint32_t *unit,
                          wire_err *e)
{
    *type = *unit = 0;
    while (p < end) {
        uint64_t f, v;
        unsigned wt;
        const uint8_t *k = p;
        p = read_key(p, end, &f, &wt);
        if (!p) WFAIL(e, k, "bad varint (field key)");
        if (f == 1 || f == 2) {
            if (read_varint_field(&p, end, wt, &v, e)) return -1;
            if (f == 1)
                *type = str_index(v);
            else
                *unit = str_index(v);
        } else if (skip_field(&p, end, wt, e)) {
            return -1;
        }
    }
    return 0;
}

/* Packed or single repeated varints appended to a uint64 array. */
static int dec_repeated_u64(ap_dec *d, const uint8_t **pp, const uint8_t *end, unsigned wt,
                            uint64_t **arr, size_t *n, size_t *cap, wire_err *e)
{
    if (wt == 2) {
        const uint8_t *data;
        size_t len;
        if (read_len_field(pp, end, wt, &data, &len, e)) return -1;
        if (len == 0) return 0;
        const uint8_t *q = data, *qend = data + len;
        /* At most one element per byte. */
        if (*n + len > *cap && tgrow(d, (void **)arr, cap, sizeof **arr, *n + len)) OOM(e, data);
        uint64_t *out = *arr + *n;
        while (q < qend) {
            if (AP_LIKELY(*q < 0x80)) {
                *out++ = *q++;
                continue;
            }
            /* Location ids of big profiles are mostly two bytes. */
            if (qend - q >= 2 && q[1] < 0x80) {
                *out++ = (uint64_t)(q[0] & 0x7f) | ((uint64_t)q[1] << 7);
                q += 2;
                continue;
            }
            const uint8_t *r = ap_varint(q, qend, out);
            if (!r) WFAIL(e, q, "bad varint (packed)");
            out++;
            q = r;
        }
        *n = (size_t)(out - *arr);
        return 0;
    }
    uint64_t v;
    if (read_varint_field(pp, end, wt, &v, e)) return -1;
    if (*n + 1 > *cap && tgrow(d, (void **)arr, cap, sizeof **arr, *n + 1)) OOM(e, *pp);
    (*arr)[(*n)++] = v;
    return 0;
}

/* Switches location ids to 64-bit storage (an id >= 2^32 - 1 appeared). */
static int go_wide(ap_dec *d)
{
    if (tgrow(d, (void **)&d->locs64, &d->cap_locs64, sizeof *d->locs64, d->nlocids + 16))
        return -1;
    for (size_t i = 0; i < d->nlocids; i++) d->locs64[i] = (uint32_t)(d->locs32[i] + 1);
    d->wide = 1;
    return 0;
}

static inline int push_locid(ap_dec *d, uint64_t v)
{
    if (!d->wide) {
        if (v < 0xffffffffu) {
            if (d->nlocids + 1 > d->cap_locs32 &&
                tgrow(d, (void **)&d->locs32, &d->cap_locs32, sizeof *d->locs32, d->nlocids + 1))
                return -1;
            uint32_t x = (uint32_t)v - 1;
            d->locs32[d->nlocids++] = x;
            if (x > d->locmax) d->locmax = x;
            return 0;
        }
        if (go_wide(d)) return -1;
    }
    if (d->nlocids + 1 > d->cap_locs64 &&
        tgrow(d, (void **)&d->locs64, &d->cap_locs64, sizeof *d->locs64, d->nlocids + 1))
        return -1;
    d->locs64[d->nlocids++] = v;
    return 0;
}

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define AP_DEC_BLOCKS 1
/* Bit i set when q[i] ends a varint (its high bit is clear), for the 64 bytes at q. */
static inline uint64_t varint_ends(const uint8_t *q)
{
    uint64_t m = 0;
#ifdef AP_DEC_SSE2
    for (int i = 0; i < 4; i++)
        m |= (uint64_t)(uint16_t)_mm_movemask_epi8(_mm_loadu_si128((const __m128i *)(q + 16 * i)))
             << (16 * i);
    return ~m;
#else
    /* Each byte's stop bit moved to bit 0, then gathered into the top byte by one multiply. */
    for (int i = 0; i < 8; i++) {
        uint64_t t = (~ap_rd64(q + 8 * i) & 0x8080808080808080ull) >> 7;
        m |= ((t * 0x0102040810204080ull) >> 56) << (8 * i);
    }
    return m;
#endif
}

/* Reads the ids that end in the first n (<= 64) bytes at q, as id - 1 into out (returned
 * advanced), raising *mx to the largest; *used is the bytes they took. Stops before an id of 5
 * bytes or more (29 bits and up), left to the general path. Reads up to 68 bytes from q. EXTRACT
 * gives the id from x, the 4 bytes at its start, and nb, its length. */
#define AP_IDS_BLOCK(EXTRACT)                                                                      \
    uint64_t m = varint_ends(q);                                                                   \
    if (n < 64) m &= (1ull << n) - 1;                                                              \
    uint32_t top = *mx;                                                                            \
    unsigned start = 0;                                                                            \
    while (m) {                                                                                    \
        unsigned stop = (unsigned)__builtin_ctzll(m);                                              \
        unsigned nb = stop + 1 - start;                                                            \
        if (AP_UNLIKELY(nb > 4)) break;                                                            \
        uint32_t x = (uint32_t)ap_rd32(q + start);                                                 \
        uint32_t v = (EXTRACT)-1;                                                                  \
        *out++ = v;                                                                                \
        top = v > top ? v : top;                                                                   \
        start = stop + 1;                                                                          \
        m &= m - 1;                                                                                \
    }                                                                                              \
    *mx = top;                                                                                     \
    *used = start;                                                                                 \
    return out

static const uint32_t varint_keep[5] = {0, 0xff, 0xffff, 0xffffff, 0xffffffff};

static inline uint32_t varint4(uint32_t x, unsigned nb)
{
    x &= varint_keep[nb];
    return (x & 0x7f) | ((x >> 1) & 0x3f80) | ((x >> 2) & 0x1fc000) | ((x >> 3) & 0xfe00000);
}

static inline uint32_t *ids_block(const uint8_t *q, size_t n, uint32_t *out, uint32_t *mx,
                                  unsigned *used)
{
    AP_IDS_BLOCK(varint4(x, nb));
}

#ifdef AP_DEC_BMI2
/* The same with BMI2 (chosen at run time): one instruction gathers the 7-bit groups. */
__attribute__((target("bmi,bmi2"))) static uint32_t *
ids_block_bmi2(const uint8_t *q, size_t n, uint32_t *out, uint32_t *mx, unsigned *used)
{
    AP_IDS_BLOCK(_pext_u32(_bzhi_u32(x, 8 * nb), 0x7f7f7f7f));
}
#endif
#undef AP_IDS_BLOCK
#endif

/* Sample.location_id, packed or not: the hottest loop of the decoder. */
static int dec_locids(ap_dec *d, const uint8_t **pp, const uint8_t *end, unsigned wt, wire_err *e)
{
    if (wt != 2) {
        uint64_t v;
        if (read_varint_field(pp, end, wt, &v, e)) return -1;
        if (push_locid(d, v)) OOM(e, *pp);
        return 0;
    }
    const uint8_t *data;
    size_t len;
    if (read_len_field(pp, end, wt, &data, &len, e)) return -1;
    if (len == 0) return 0;
    const uint8_t *q = data, *qend = data + len;
    if (!d->wide) {
        /* At most one id per byte. */
        if (d->nlocids + len > d->cap_locs32 &&
            tgrow(d, (void **)&d->locs32, &d->cap_locs32, sizeof *d->locs32, d->nlocids + len))
            OOM(e, data);
        uint32_t *out = d->locs32 + d->nlocids, mx = d->locmax;
        while (q < qend) {
#ifdef AP_DEC_BLOCKS
            /* 64 bytes at a time: the ends of their varints form a bit mask and each id is read
             * from its start and length, so no load waits on the previous id's length (the one
             * serial step is clearing the mask's lowest bit). Ids of big profiles mix 1-, 2- and
             * 3-byte varints unpredictably: a loop that found each length by looking at the
             * bytes was a fifth of the decoder's time in mispredictions and waits. Loads reach
             * up to 72 bytes ahead, within the window (d->rend). */
            if (AP_LIKELY(d->rend - q >= 72)) {
                size_t left = (size_t)(qend - q);
                unsigned used;
#ifdef AP_DEC_BMI2
                if (d->bmi2)
                    out = ids_block_bmi2(q, left < 64 ? left : 64, out, &mx, &used);
                else
#endif
                    out = ids_block(q, left < 64 ? left : 64, out, &mx, &used);
                q += used;
                if (used) continue;
                /* A long (or truncated) varint first: one at a time below. */
            }
#endif
            uint64_t v;
            const uint8_t *r = ap_varint(q, qend, &v);
            if (!r) WFAIL(e, q, "bad varint (packed)");
            q = r;
            if (v >= 0xffffffffu) {
                d->nlocids = (size_t)(out - d->locs32);
                if (go_wide(d) || push_locid(d, v)) OOM(e, q);
                goto wide;
            }
            uint32_t x = (uint32_t)v - 1;
            *out++ = x;
            mx = x > mx ? x : mx;
        }
        d->nlocids = (size_t)(out - d->locs32);
        d->locmax = mx;
        return 0;
    }
wide:
    while (q < qend) {
        uint64_t v;
        const uint8_t *r = ap_varint(q, qend, &v);
        if (!r) WFAIL(e, q, "bad varint (packed)");
        q = r;
        if (push_locid(d, v)) OOM(e, q);
    }
    return 0;
}

static int dec_label(ap_dec *d, const uint8_t *p, const uint8_t *end, wire_err *e)
{
    uint64_t key = 0, str = 0, num = 0, unit = 0;
    while (p < end) {
        uint64_t f, v;
        unsigned wt;
        const uint8_t *k = p;
        p = read_key(p, end, &f, &wt);
        if (!p) WFAIL(e, k, "bad varint (field key)");
        if (f >= 1 && f <= 4) {
            if (read_varint_field(&p, end, wt, &v, e)) return -1;
            if (f == 1)
                key = v;
            else if (f == 2)
                str = v;
            else if (f == 3)
                num = v;
            else
                unit = v;
        } else if (skip_field(&p, end, wt, e)) {
            return -1;
        }
    }
    /* Go's postDecode: a label is a string label when str != 0, numeric when num or unit is
     * set, and otherwise it is dropped. The key is checked in every kept label; the unit only
     * for numeric ones. A dropped label's key is still checked (getString runs first). */
    ap_pprof_profile *pr = d->p;
    if (str == 0 && num == 0 && unit == 0) {
        /* Kept out of the profile but its key must still be a valid string index. */
        if (d->ndropped_keys + 1 > d->cap_dropped_keys &&
            tgrow(d, (void **)&d->dropped_keys, &d->cap_dropped_keys, sizeof(uint32_t),
                  d->ndropped_keys + 1))
            OOM(e, end);
        d->dropped_keys[d->ndropped_keys++] = str_index(key);
        return 0;
    }
    if (pr->nlabels + 1 > pr->cap_labels && pgrow(d, (void **)&pr->labels, &pr->cap_labels,
                                                  sizeof *pr->labels, (uint64_t)pr->nlabels + 1))
        OOM(e, end);
    ap_pprof_label *l = &pr->labels[pr->nlabels++];
    l->key = str_index(key);
    if (str != 0) {
        l->str = str_index(str);
        l->unit = 0;
        l->flags = 0;
        l->num = 0;
    } else {
        l->str = 0;
        l->unit = str_index(unit);
        l->flags = AP_PPROF_LABEL_NUM | (unit != 0 ? AP_PPROF_LABEL_UNIT_SET : 0);
        l->num = (int64_t)num;
    }
    return 0;
}

static int dec_sample(ap_dec *d, const uint8_t *p, const uint8_t *end, wire_err *e)
{
    ap_pprof_profile *pr = d->p;
    if (pr->nsamples + 1 > pr->cap_samples &&
        pgrow(d, (void **)&pr->samples, &pr->cap_samples, sizeof *pr->samples,
              (uint64_t)pr->nsamples + 1))
        OOM(e, p);
    if (pr->nsamples + 1 > d->cap_nval &&
        tgrow(d, (void **)&d->nval, &d->cap_nval, sizeof *d->nval, (uint64_t)pr->nsamples + 1))
        OOM(e, p);
    size_t loc0 = d->nlocids, val0 = d->nvals;
    uint32_t lab0 = pr->nlabels;
    while (p < end) {
        uint64_t f;
        unsigned wt;
        const uint8_t *k = p;
        p = read_key(p, end, &f, &wt);
        if (!p) WFAIL(e, k, "bad varint (field key)");
        if (f == 1) {
            if (dec_locids(d, &p, end, wt, e)) return -1;
        } else if (f == 2 && wt == 0) {
            /* Go writes up to two values unpacked: the common case, inline. */
            uint64_t v;
            const uint8_t *r = ap_varint(p, end, &v);
            if (!r) WFAIL(e, p, "bad varint");
            p = r;
            if (d->nvals + 1 > pr->cap_values &&
                tgrow(d, (void **)&pr->values, &pr->cap_values, sizeof *pr->values, d->nvals + 1))
                OOM(e, p);
            pr->values[d->nvals++] = (int64_t)v;
        } else if (f == 2) {
            if (dec_repeated_u64(d, &p, end, wt, (uint64_t **)&pr->values, &d->nvals,
                                 &pr->cap_values, e))
                return -1;
        } else if (f == 3) {
            const uint8_t *data;
            size_t len;
            if (read_len_field(&p, end, wt, &data, &len, e)) return -1;
            if (dec_label(d, data, data + len, e)) return -1;
        } else if (skip_field(&p, end, wt, e)) {
            return -1;
        }
    }
    if (d->nlocids - loc0 > UINT32_MAX - 1 || d->nvals - val0 > UINT32_MAX - 1 ||
        d->nlocids > UINT32_MAX - 1)
        WFAIL(e, end, "sample too large");
    ap_pprof_sample *s = &pr->samples[pr->nsamples];
    s->loc_off = (uint32_t)loc0;
    s->nloc = (uint32_t)(d->nlocids - loc0);
    s->label_off = lab0;
    s->nlabel = pr->nlabels - lab0;
    d->nval[pr->nsamples] = (uint32_t)(d->nvals - val0);
    pr->nsamples++;
    return 0;
}

static int dec_mapping(ap_dec *d, const uint8_t *p, const uint8_t *end, wire_err *e)
{
    ap_pprof_profile *pr = d->p;
    if (pr->nmappings + 1 > pr->cap_mappings &&
        pgrow(d, (void **)&pr->mappings, &pr->cap_mappings, sizeof *pr->mappings,
              (uint64_t)pr->nmappings + 1))
        OOM(e, p);
    ap_pprof_mapping m = {0};
    while (p < end) {
        uint64_t f, v;
        unsigned wt;
        const uint8_t *k = p;
        p = read_key(p, end, &f, &wt);
        if (!p) WFAIL(e, k, "bad varint (field key)");
        if (f >= 1 && f <= 10) {
            if (read_varint_field(&p, end, wt, &v, e)) return -1;
            switch (f) {
            case 1:
                m.id = v;
                break;
            case 2:
                m.start = v;
                break;
            case 3:
                m.limit = v;
                break;
            case 4:
                m.offset = v;
                break;
            case 5:
                m.file = str_index(v);
                break;
            case 6:
                m.build_id = str_index(v);
                break;
            default: {
                uint32_t bit = 1u << (f - 7);
                if (v)
                    m.flags |= bit;
                else
                    m.flags &= ~bit;
            }
            }
        } else if (skip_field(&p, end, wt, e)) {
            return -1;
        }
    }
    pr->mappings[pr->nmappings++] = m;
    return 0;
}

static int dec_line(ap_dec *d, const uint8_t *p, const uint8_t *end, wire_err *e)
{
    ap_pprof_profile *pr = d->p;
    if (pr->nlines + 1 > pr->cap_lines &&
        pgrow(d, (void **)&pr->lines, &pr->cap_lines, sizeof *pr->lines, (uint64_t)pr->nlines + 1))
        OOM(e, p);
    if ((size_t)pr->nlines + 1 > d->cap_fnids &&
        tgrow(d, (void **)&d->fnids, &d->cap_fnids, sizeof *d->fnids, (uint64_t)pr->nlines + 1))
        OOM(e, p);
    uint64_t fn = 0, line = 0, column = 0;
    while (p < end) {
        uint64_t f;
        unsigned wt;
        const uint8_t *k = p;
        p = read_key(p, end, &f, &wt);
        if (!p) WFAIL(e, k, "bad varint (field key)");
        if (f == 1) {
            if (read_varint_field(&p, end, wt, &fn, e)) return -1;
        } else if (f == 2) {
            if (read_varint_field(&p, end, wt, &line, e)) return -1;
        } else if (f == 3 && wt == 0) {
            /* Line.column: newer than Debian's pprof, which skips it; read it only when it is
             * well-formed so that we accept exactly what Go accepts. */
            if (read_varint_field(&p, end, wt, &column, e)) return -1;
        } else if (skip_field(&p, end, wt, e)) {
            return -1;
        }
    }
    ap_pprof_line *l = &pr->lines[pr->nlines];
    l->function = 0;
    l->pad_ = 0;
    l->line = (int64_t)line;
    l->column = (int64_t)column;
    d->fnids[pr->nlines] = fn;
    pr->nlines++;
    return 0;
}

static int dec_location(ap_dec *d, const uint8_t *p, const uint8_t *end, wire_err *e)
{
    ap_pprof_profile *pr = d->p;
    if (pr->nlocations + 1 > pr->cap_locations &&
        pgrow(d, (void **)&pr->locations, &pr->cap_locations, sizeof *pr->locations,
              (uint64_t)pr->nlocations + 1))
        OOM(e, p);
    if ((size_t)pr->nlocations + 1 > d->cap_mapids &&
        tgrow(d, (void **)&d->mapids, &d->cap_mapids, sizeof *d->mapids,
              (uint64_t)pr->nlocations + 1))
        OOM(e, p);
    ap_pprof_location l = {0};
    uint64_t mapid = 0;
    l.line_off = pr->nlines;
    while (p < end) {
        uint64_t f, v;
        unsigned wt;
        const uint8_t *k = p;
        p = read_key(p, end, &f, &wt);
        if (!p) WFAIL(e, k, "bad varint (field key)");
        if (f == 4) {
            const uint8_t *data;
            size_t len;
            if (read_len_field(&p, end, wt, &data, &len, e)) return -1;
            if (dec_line(d, data, data + len, e)) return -1;
        } else if (f >= 1 && f <= 5) {
            if (read_varint_field(&p, end, wt, &v, e)) return -1;
            if (f == 1)
                l.id = v;
            else if (f == 2)
                mapid = v;
            else if (f == 3)
                l.address = v;
            else
                l.is_folded = v != 0;
        } else if (skip_field(&p, end, wt, e)) {
            return -1;
        }
    }
    l.nline = pr->nlines - l.line_off;
    l.mapping = AP_PPROF_NONE;
    d->mapids[pr->nlocations] = mapid;
    pr->locations[pr->nlocations++] = l;
    return 0;
}

static int dec_function(ap_dec *d, const uint8_t *p, const uint8_t *end, wire_err *e)
{
    ap_pprof_profile *pr = d->p;
    if (pr->nfunctions + 1 > pr->cap_functions &&
        pgrow(d, (void **)&pr->functions, &pr->cap_functions, sizeof *pr->functions,
              (uint64_t)pr->nfunctions + 1))
        OOM(e, p);
    ap_pprof_function fn = {0};
    while (p < end) {
        uint64_t f, v;
        unsigned wt;
        const uint8_t *k = p;
        p = read_key(p, end, &f, &wt);
        if (!p) WFAIL(e, k, "bad varint (field key)");
        if (f >= 1 && f <= 5) {
            if (read_varint_field(&p, end, wt, &v, e)) return -1;
            switch (f) {
            case 1:
                fn.id = v;
                break;
            case 2:
                fn.name = str_index(v);
                break;
            case 3:
                fn.system_name = str_index(v);
                break;
            case 4:
                fn.filename = str_index(v);
                break;
            default:
                fn.start_line = (int64_t)v;
            }
        } else if (skip_field(&p, end, wt, e)) {
            return -1;
        }
    }
    pr->functions[pr->nfunctions++] = fn;
    return 0;
}

/* One top-level field whose key and payload are complete in [p, end). */
static int dec_top(ap_dec *d, uint64_t field, unsigned wt, const uint8_t *p, const uint8_t *end,
                   const uint8_t **next, wire_err *e)
{
    ap_pprof_profile *pr = d->p;
    const uint8_t *data;
    size_t len;
    uint64_t v;
    switch (field) {
    case 1:
    case 2:
    case 3:
    case 4:
    case 5:
    case 6:
    case 11:
        if (read_len_field(&p, end, wt, &data, &len, e)) return -1;
        *next = p;
        switch (field) {
        case 1: {
            if (pgrow(d, (void **)&pr->sample_type, &pr->cap_sample_type, 2 * sizeof(uint32_t),
                      (uint64_t)pr->nsample_type + 1))
                OOM(e, data);
            uint32_t *st = &pr->sample_type[2 * pr->nsample_type];
            if (dec_value_type(data, data + len, &st[0], &st[1], e)) return -1;
            pr->nsample_type++;
            return 0;
        }
        case 2:
            return dec_sample(d, data, data + len, e);
        case 3:
            return dec_mapping(d, data, data + len, e);
        case 4:
            return dec_location(d, data, data + len, e);
        case 5:
            return dec_function(d, data, data + len, e);
        case 6: {
            ap_pprof_status st = AP_PPROF_OK;
            if (ap_pprof_push_string(pr, (const char *)data, len, &st) == AP_PPROF_NONE) {
                d->status = st;
                OOM(e, data);
            }
            if (pr->strings[0].len != 0) WFAIL(e, data, "string_table[0] must be ''");
            return 0;
        }
        default:
            /* period_type: a later one replaces an earlier one entirely. */
            return dec_value_type(data, data + len, &pr->period_type[0], &pr->period_type[1], e);
        }
    case 13:
        if (dec_repeated_u64(d, &p, end, wt, &d->comments, &d->ncomments, &d->cap_comments, e))
            return -1;
        *next = p;
        return 0;
    case 9:
        /* A second non-zero time_nanos means two profiles were concatenated (checked before
         * the wire type, as in Go). */
        if (pr->time_nanos != 0) WFAIL(e, p, concatenated);
        /* fall through */
    case 7:
    case 8:
    case 10:
    case 12:
    case 14:
        if (read_varint_field(&p, end, wt, &v, e)) return -1;
        *next = p;
        switch (field) {
        case 7:
            pr->drop_frames = str_index(v);
            break;
        case 8:
            pr->keep_frames = str_index(v);
            break;
        case 9:
            pr->time_nanos = (int64_t)v;
            break;
        case 10:
            pr->duration_nanos = (int64_t)v;
            break;
        case 12:
            pr->period = (int64_t)v;
            break;
        default:
            pr->default_sample_type = str_index(v);
        }
        return 0;
    case 15:
        /* doc_url: newer than Debian's pprof (which skips the field); only a well-formed one
         * is read, and a bad index is ignored rather than rejected (see resolve.c). */
        if (wt == 0) {
            if (read_varint_field(&p, end, wt, &v, e)) return -1;
            pr->doc_url = str_index(v);
            d->has_doc_url = 1;
            *next = p;
            return 0;
        }
        /* fall through */
    default:
        if (skip_field(&p, end, wt, e)) return -1;
        *next = p;
        return 0;
    }
}

/* ---- driver ---- */

static int report(ap_dec *d, ap_src *s, const wire_err *we, uint64_t field, uint64_t ordinal,
                  ap_pprof_error *err)
{
    if (!we->what) {
        ap_pprof_status st = d->status ? d->status : AP_PPROF_ENOMEM;
        return ap_pprof_fail(err, st, "%s while decoding",
                             st == AP_PPROF_ETOOLARGE
                                 ? "the decoded profile needs more memory than its limit"
                                 : "out of memory");
    }
    uint64_t off = s->base + (uint64_t)(we->at - s->buf);
    const char *fname =
        field < sizeof field_names / sizeof *field_names ? field_names[field] : "unknown field";
    char arg[32] = "";
    if (we->has_arg) snprintf(arg, sizeof arg, "%llu", (unsigned long long)we->arg);
    /* Go's Parse words first: a wire error falls through to its legacy parsers, which do not
     * recognise the bytes either; only concatenation is reported as itself. Then where. */
    if (we->what == concatenated)
        return ap_pprof_fail(
            err, AP_PPROF_EMALFORMED,
            "parsing profile: concatenated profiles detected (byte %llu: %s #%llu)",
            (unsigned long long)off, fname, (unsigned long long)ordinal);
    if (field == (uint64_t)-1)
        return ap_pprof_fail(err, AP_PPROF_EMALFORMED,
                             "parsing profile: unrecognized profile format (byte %llu: %s%s)",
                             (unsigned long long)off, we->what, arg);
    return ap_pprof_fail(err, AP_PPROF_EMALFORMED,
                         "parsing profile: unrecognized profile format (byte %llu: %s #%llu: %s%s)",
                         (unsigned long long)off, fname, (unsigned long long)ordinal, we->what,
                         arg);
}

void ap_dec_free(ap_dec *d)
{
    ap_pprof_profile *p = d->p;
    uint64_t bytes = d->cap_nval * sizeof *d->nval + d->cap_fnids * sizeof *d->fnids +
                     d->cap_mapids * sizeof *d->mapids + d->cap_comments * sizeof *d->comments +
                     d->cap_dropped_keys * sizeof *d->dropped_keys;
    if (p) p->mem_used -= bytes;
    if (p && d->locs32) {
        /* The location id buffer becomes (or returns to) the profile's sample_locs. */
        p->sample_locs = d->locs32;
        p->cap_sample_locs = d->cap_locs32;
        d->locs32 = NULL;
    }
    if (p) p->mem_used -= d->cap_locs64 * sizeof *d->locs64;
    free(d->locs64);
    free(d->nval);
    free(d->fnids);
    free(d->mapids);
    free(d->comments);
    free(d->dropped_keys);
    memset(d, 0, sizeof *d);
}

int ap_dec_wire(ap_dec *d, const void *data, size_t len, uint64_t limit, ap_pprof_error *err)
{
    ap_pprof_profile *p = d->p;
    ap_src s;
    ap_src_init(&s, data, len, limit, p);
#ifdef AP_DEC_BMI2
    d->bmi2 = __builtin_cpu_supports("bmi2");
#endif
    p->wire_size = len;
    p->gzipped = s.gz;
    p->nstrings = 0; /* the wire's string table, verbatim */
    p->strings_unique = 0;
    if (!s.gz && len > limit) {
        ap_src_free(&s);
        return ap_pprof_fail(err, AP_PPROF_ETOOLARGE,
                             "profile is larger than the limit of %llu bytes",
                             (unsigned long long)limit);
    }
    uint64_t counts[16] = {0};
    int rc = 0;
    for (;;) {
        if (ap_src_avail(&s) < 24 && ap_src_fill(&s, 24, err)) {
            rc = -1;
            break;
        }
        if (ap_src_avail(&s) == 0) break;
        const uint8_t *start = s.buf + s.lo, *end = s.buf + s.hi;
        uint64_t field;
        unsigned wt;
        wire_err we = {0};
        const uint8_t *p2 = read_key(start, end, &field, &wt);
        if (!p2) {
            we.at = start;
            we.what = "bad varint (field key)";
            rc = report(d, &s, &we, (uint64_t)-1, 0, err);
            break;
        }
        /* Make the whole field available: for length-delimited ones, its payload. */
        size_t need = (size_t)(p2 - start) + 10;
        if (wt == 2) {
            uint64_t n;
            const uint8_t *q = ap_varint(p2, end, &n);
            if (q) {
                uint64_t total = (uint64_t)(q - start) + n;
                if (total > s.limit + 1) total = s.limit + 1; /* fill reports the limit */
                need = (size_t)total;
            }
        } else if (wt == 1) {
            need = (size_t)(p2 - start) + 8;
        } else if (wt == 5) {
            need = (size_t)(p2 - start) + 4;
        }
        if (ap_src_avail(&s) < need) {
            if (ap_src_fill(&s, need, err)) {
                rc = -1;
                break;
            }
            start = s.buf + s.lo;
            end = s.buf + s.hi;
            p2 = read_key(start, end, &field, &wt);
        }
        uint64_t ordinal = field < 16 ? counts[field]++ : 0;
        const uint8_t *next = NULL;
        d->rend = end;
        if (dec_top(d, field, wt, p2, end, &next, &we)) {
            rc = report(d, &s, &we, field, ordinal, err);
            break;
        }
        s.lo = (size_t)(next - s.buf);
    }
    p->decompressed_size = s.total;
    ap_src_free(&s);
    if (rc) return -1;
    if (s.total == 0)
        return ap_pprof_fail(err, AP_PPROF_EMALFORMED, "%s",
                             s.gz ? AP_PPROF_EMPTY_GZIP : AP_PPROF_EMPTY_INPUT);
    return 0;
}
