/* Helpers shared by the files of core/pprof: growable arrays with a memory budget, the string
 * arena, hashing and error formatting. Not part of the public API. */
#ifndef AP_PPROF_INTERNAL_H
#define AP_PPROF_INTERNAL_H

#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pprof.h"

#if defined(__GNUC__)
#define AP_LIKELY(x)    __builtin_expect(!!(x), 1)
#define AP_UNLIKELY(x)  __builtin_expect(!!(x), 0)
#define AP_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define AP_LIKELY(x)   (x)
#define AP_UNLIKELY(x) (x)
#define AP_PRINTF(a, b)
#endif

/* ---- errors ---- */
int ap_pprof_fail(ap_pprof_error *err, ap_pprof_status code, const char *fmt, ...) AP_PRINTF(3, 4);
/* Prefixes err->msg with "where: " (e.g. "input 2"). */
void ap_pprof_error_prefix(ap_pprof_error *err, const char *fmt, ...) AP_PRINTF(2, 3);

/* ---- growable arrays charged to a profile's memory budget ---- */

/* Ensures *cap >= need elements of `size` bytes; returns 0, or -1 (AP_PPROF_ETOOLARGE when the
 * budget is exceeded, AP_PPROF_ENOMEM when malloc fails) with *status set. */
int ap_pprof_grow(ap_pprof_profile *p, void **ptr, uint32_t *cap, size_t size, uint64_t need,
                  ap_pprof_status *status);
int ap_pprof_grow_sz(ap_pprof_profile *p, void **ptr, size_t *cap, size_t size, uint64_t need,
                     ap_pprof_status *status);

/* Grows a plain scratch array (not charged to any profile) to at least need elements (never
 * leaving NULL behind); 0, or -1 when realloc fails. */
static inline int ap_pprof_sgrow(void **p, size_t *cap, size_t size, size_t need)
{
    if (need == 0) need = 1;
    if (need <= *cap) return 0;
    size_t n = *cap ? *cap : 64;
    while (n < need) n *= 2;
    void *np = realloc(*p, n * size);
    if (!np) return -1;
    *p = np;
    *cap = n;
    return 0;
}

/* Allocates from the profile's arena (8-byte aligned); NULL with *status on failure. */
void *ap_pprof_arena_alloc(ap_pprof_profile *p, size_t n, ap_pprof_status *status);
void ap_pprof_arena_free(ap_pprof_profile *p, int keep_first);

/* Appends a string (copied into the arena) without interning; returns its index. */
uint32_t ap_pprof_push_string(ap_pprof_profile *p, const char *s, size_t len,
                              ap_pprof_status *status);
/* Builds the intern table over the current strings (which must be unique). */
int ap_pprof_strings_index(ap_pprof_profile *p);

/* Charges `bytes` of external allocations to the budget (negative to release). */
int ap_pprof_charge(ap_pprof_profile *p, int64_t bytes, ap_pprof_status *status);

/* ---- hashing ---- */

static inline uint64_t ap_mix64(uint64_t a, uint64_t b)
{
    __uint128_t r = (__uint128_t)a * b;
    return (uint64_t)r ^ (uint64_t)(r >> 64);
}

#define AP_H1 0xa0761d6478bd642full
#define AP_H2 0xe7037ed1a0b428dbull
#define AP_H3 0x8ebc6af09c88c6e3ull

static inline uint64_t ap_rd64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

static inline uint64_t ap_rd32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* A wyhash-style 64-bit hash of bytes: fast on short keys, good enough spread for open
 * addressing with the full hash kept for early rejects. */
static inline uint64_t ap_hash_bytes(const void *data, size_t len, uint64_t seed)
{
    const uint8_t *p = data;
    uint64_t a, b;
    seed ^= ap_mix64(seed ^ AP_H1, AP_H2 ^ len);
    if (AP_LIKELY(len <= 16)) {
        if (len >= 4) {
            a = (ap_rd32(p) << 32) | ap_rd32(p + ((len >> 3) << 2));
            b = (ap_rd32(p + len - 4) << 32) | ap_rd32(p + len - 4 - ((len >> 3) << 2));
        } else if (len > 0) {
            a = ((uint64_t)p[0] << 16) | ((uint64_t)p[len >> 1] << 8) | p[len - 1];
            b = 0;
        } else {
            a = b = 0;
        }
    } else {
        size_t i = len;
        if (i > 48) {
            uint64_t s1 = seed, s2 = seed;
            do {
                seed = ap_mix64(ap_rd64(p) ^ AP_H1, ap_rd64(p + 8) ^ seed);
                s1 = ap_mix64(ap_rd64(p + 16) ^ AP_H2, ap_rd64(p + 24) ^ s1);
                s2 = ap_mix64(ap_rd64(p + 32) ^ AP_H3, ap_rd64(p + 40) ^ s2);
                p += 48;
                i -= 48;
            } while (i > 48);
            seed ^= s1 ^ s2;
        }
        while (i > 16) {
            seed = ap_mix64(ap_rd64(p) ^ AP_H1, ap_rd64(p + 8) ^ seed);
            i -= 16;
            p += 16;
        }
        a = ap_rd64(p + i - 16);
        b = ap_rd64(p + i - 8);
    }
    return ap_mix64(AP_H1 ^ len, ap_mix64(a ^ AP_H1, b ^ seed));
}

static inline uint64_t ap_hash_u64(uint64_t x)
{
    return ap_mix64(x ^ AP_H1, AP_H2);
}

/* Rounds up to a power of two (n >= 1). */
static inline uint64_t ap_pow2(uint64_t n)
{
    uint64_t r = 1;
    while (r < n) r <<= 1;
    return r;
}

/* ---- protobuf wire format ---- */

/* Reads a varint as Go's profile decoder does: at most 10 bytes, excess high bits dropped.
 * Returns the byte after it, or NULL when it is truncated or longer than 10 bytes. */
static inline const uint8_t *ap_varint(const uint8_t *p, const uint8_t *end, uint64_t *out)
{
    if (AP_LIKELY(p < end && *p < 0x80)) {
        *out = *p;
        return p + 1;
    }
    if (end - p >= 2 && p[1] < 0x80) {
        *out = (uint64_t)(p[0] & 0x7f) | ((uint64_t)p[1] << 7);
        return p + 2;
    }
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    /* Up to 8 bytes (addresses, lengths) without a branch per byte: the first clear high bit
     * ends it, then the 7-bit groups are packed pairwise in three steps. */
    if (end - p >= 8) {
        uint64_t x = ap_rd64(p);
        uint64_t stop = ~x & 0x8080808080808080ull;
        if (stop) {
            x &= stop ^ (stop - 1); /* the bytes up to the last one */
            x = (x & 0x007f007f007f007full) | ((x & 0x7f007f007f007f00ull) >> 1);
            x = (x & 0x00003fff00003fffull) | ((x & 0x3fff00003fff0000ull) >> 2);
            x = (x & 0x000000000fffffffull) | ((x & 0x0fffffff00000000ull) >> 4);
            *out = x;
            return p + ((unsigned)__builtin_ctzll(stop) >> 3) + 1;
        }
    }
#endif
    uint64_t v = 0;
    for (int i = 0; i < 10; i++) {
        if (p + i >= end) return NULL;
        uint8_t b = p[i];
        v |= (uint64_t)(b & 0x7f) << (7 * i);
        if (b < 0x80) {
            *out = v;
            return p + i + 1;
        }
    }
    return NULL;
}

static inline size_t ap_varint_size(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

static inline uint8_t *ap_put_varint(uint8_t *p, uint64_t v)
{
    while (v >= 0x80) {
        *p++ = (uint8_t)v | 0x80;
        v >>= 7;
    }
    *p++ = (uint8_t)v;
    return p;
}

/* Wrapping signed addition, as Go's int64 arithmetic. */
static inline int64_t ap_add_wrap(int64_t a, int64_t b)
{
    return (int64_t)((uint64_t)a + (uint64_t)b);
}

/* Compares two strings of a profile (for sorting by Go's byte order). */
static inline int ap_str_cmp(const ap_pprof_str *a, const ap_pprof_str *b)
{
    uint32_t n = a->len < b->len ? a->len : b->len;
    int c = n ? memcmp(a->ptr, b->ptr, n) : 0;
    if (c) return c;
    return a->len < b->len ? -1 : a->len > b->len;
}

static inline int ap_str_eq(const ap_pprof_str *a, const char *s, size_t len)
{
    return a->len == len && (len == 0 || memcmp(a->ptr, s, len) == 0);
}

/* For each string index, the first index holding the same bytes (NULL when strings are
 * already unique): lets code that needs Go's by-content string identity work on any profile.
 * Caller frees. Returns -1 on allocation failure. */
int ap_pprof_string_canon(const ap_pprof_profile *p, uint32_t **out);

/* Sorts the labels of one sample into Go's encoding order (see labels_sorted), stable. */
void ap_pprof_sort_labels(const ap_pprof_profile *p, ap_pprof_label *l, uint32_t n,
                          const uint32_t *canon);

/* ---- the merger, seen from an incremental encoder (fold.c) ---- */

/* The profile being merged (owned by the merger; valid until the next add or finish). */
ap_pprof_profile *ap_pprof_merger_profile(ap_pprof_merger *m);
/* Takes one sample's key (output location indices, output labels: valid during the call) and
 * values; 0, or -1 with the caller's error set by the sink. */
typedef int (*ap_pprof_key_sink)(void *ctx, const uint32_t *locs, uint32_t nloc,
                                 const ap_pprof_label *labels, uint32_t nlabel,
                                 const int64_t *values);
/* ap_pprof_merger_add whose samples go to sink instead of the merged profile (which keeps the
 * other tables): what a fold indexes itself. Not to be mixed with ap_pprof_merger_add. */
int ap_pprof_merger_add_keys(ap_pprof_merger *m, const ap_pprof_profile *src,
                             ap_pprof_key_sink sink, void *ctx, ap_pprof_error *err);

/* ---- Prune, seen from a fold ---- */

/* For locations [from, to) of p: bit r of marks[x] set when rule r (of at most 64) matches a
 * frame of location x. On a pruned profile every such match is the outermost frame's (Prune
 * trims the others away), so Prune would change nothing but the samples that
 * ap_pprof_prune_would_cut names. */
int ap_pprof_prune_marks(const ap_pprof_profile *p, const ap_pprof_pruner *pr, uint32_t from,
                         uint32_t to, uint64_t *marks, ap_pprof_error *err);
/* Whether Prune with those rules would cut sample s again (a matching location beneath a
 * frame the same rule does not match, from the root). */
int ap_pprof_prune_would_cut(const ap_pprof_profile *p, const uint64_t *marks, uint32_t s);
/* The same for a stack given as location indices, leaf first. */
int ap_pprof_prune_would_cut_locs(const uint64_t *marks, const uint32_t *locs, uint32_t nloc);

/* ---- PGO ---- */

/* The decoder's message for input with no protobuf bytes (also after gunzip): Go's ErrNoData,
 * which the PGO loader accepts as an empty profile. */
#define AP_PPROF_EMPTY_INPUT "parsing profile: empty input file (0 bytes)"
#define AP_PPROF_EMPTY_GZIP  "parsing profile: empty input file (the gzip stream holds no data)"

/* One entry of the compiler's named edge map: names are canonical string indices of the profile
 * (AP_PPROF_NONE for a frame without a function: Go's empty name). */
typedef struct {
    uint32_t caller, callee;
    int64_t offset, weight;
} ap_pprof_named_edge;

/* ap_pprof_pgo_check, and when `list` is not NULL the named edge map itself: out->edges entries
 * in no particular order (malloc'd; NULL when the loader keeps none). */
int ap_pprof_pgo_graph(const ap_pprof_profile *p, ap_pprof_pgo *out, ap_pprof_named_edge **list,
                       ap_pprof_error *err);

#endif
