/* The profile object: allocation with a memory budget, the string arena and intern table,
 * error helpers, and label ordering shared by merge and encode. */
#include <stdio.h>
#include <stdlib.h>

#include "internal.h"

struct ap_pprof_arena_chunk {
    ap_pprof_arena_chunk *next;
    size_t size, used;
    uint8_t data[];
};

/* ---- errors ---- */

const char *ap_pprof_code_name(ap_pprof_status code)
{
    switch (code) {
    case AP_PPROF_OK:
        return "OK";
    case AP_PPROF_EMALFORMED:
        return "MALFORMED";
    case AP_PPROF_ETOOLARGE:
        return "TOO_LARGE";
    case AP_PPROF_EINCOMPATIBLE:
        return "INCOMPATIBLE";
    case AP_PPROF_EPATTERN:
        return "BAD_PATTERN";
    case AP_PPROF_ENOMEM:
        return "NOMEM";
    case AP_PPROF_EIO:
        return "IO";
    case AP_PPROF_EINVAL:
        return "INVALID_ARGUMENT";
    }
    return "UNKNOWN";
}

void ap_pprof_error_clear(ap_pprof_error *err)
{
    if (!err) return;
    err->code = AP_PPROF_OK;
    err->input = -1;
    err->other = -1;
    err->msg[0] = 0;
}

int ap_pprof_fail(ap_pprof_error *err, ap_pprof_status code, const char *fmt, ...)
{
    if (err) {
        err->code = code;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return -1;
}

void ap_pprof_error_prefix(ap_pprof_error *err, const char *fmt, ...)
{
    if (!err) return;
    char prefix[96], old[sizeof err->msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, err->msg, sizeof old);
    size_t n = strlen(prefix);
    if (n + 2 >= sizeof err->msg) return;
    memcpy(err->msg, prefix, n);
    memcpy(err->msg + n, ": ", 2);
    size_t rest = sizeof err->msg - n - 3;
    size_t ol = strlen(old);
    if (ol > rest) ol = rest;
    memcpy(err->msg + n + 2, old, ol);
    err->msg[n + 2 + ol] = 0;
}

/* ---- memory ---- */

int ap_pprof_charge(ap_pprof_profile *p, int64_t bytes, ap_pprof_status *status)
{
    if (bytes > 0 && p->mem_limit && p->mem_used + (uint64_t)bytes > p->mem_limit) {
        if (status) *status = AP_PPROF_ETOOLARGE;
        return -1;
    }
    p->mem_used += (uint64_t)bytes;
    return 0;
}

int ap_pprof_grow_sz(ap_pprof_profile *p, void **ptr, size_t *cap, size_t size, uint64_t need,
                     ap_pprof_status *status)
{
    if (need <= *cap) return 0;
    uint64_t ncap = *cap ? *cap : 16;
    while (ncap < need) ncap += ncap / 2 + 16;
    if (ncap > SIZE_MAX / size) {
        *status = AP_PPROF_ETOOLARGE;
        return -1;
    }
    uint64_t delta = (ncap - *cap) * size;
    if (ap_pprof_charge(p, (int64_t)delta, status)) {
        /* The budget may still allow exactly what is needed. */
        ncap = need;
        delta = (ncap - *cap) * size;
        if (ap_pprof_charge(p, (int64_t)delta, status)) return -1;
    }
    void *np = realloc(*ptr, ncap * size);
    if (!np) {
        p->mem_used -= delta;
        *status = AP_PPROF_ENOMEM;
        return -1;
    }
    *ptr = np;
    *cap = ncap;
    return 0;
}

int ap_pprof_grow(ap_pprof_profile *p, void **ptr, uint32_t *cap, size_t size, uint64_t need,
                  ap_pprof_status *status)
{
    if (need <= *cap) return 0;
    if (need > UINT32_MAX - 1) {
        *status = AP_PPROF_ETOOLARGE;
        return -1;
    }
    size_t c = *cap;
    if (ap_pprof_grow_sz(p, ptr, &c, size, need, status)) return -1;
    if (c > UINT32_MAX - 1) c = UINT32_MAX - 1;
    *cap = (uint32_t)c;
    return 0;
}

void *ap_pprof_arena_alloc(ap_pprof_profile *p, size_t n, ap_pprof_status *status)
{
    n = (n + 7) & ~(size_t)7;
    ap_pprof_arena_chunk *c = p->arena;
    if (!c || c->size - c->used < n) {
        /* Chunks grow with the arena so that big string tables need few of them. */
        size_t size = c ? c->size * 2 : 16384;
        if (size > (8u << 20)) size = 8u << 20;
        if (size < n) size = n;
        if (ap_pprof_charge(p, (int64_t)size, status)) return NULL;
        ap_pprof_arena_chunk *nc = malloc(sizeof *nc + size);
        if (!nc) {
            p->mem_used -= size;
            *status = AP_PPROF_ENOMEM;
            return NULL;
        }
        nc->size = size;
        nc->used = 0;
        nc->next = c;
        p->arena = c = nc;
    }
    void *r = c->data + c->used;
    c->used += n;
    return r;
}

void ap_pprof_arena_free(ap_pprof_profile *p, int keep_first)
{
    /* The newest chunk is the largest: that is the one worth keeping for reuse. */
    ap_pprof_arena_chunk *c = p->arena, *keep = NULL;
    while (c) {
        ap_pprof_arena_chunk *next = c->next;
        if (keep_first && c == p->arena) {
            keep = c;
            keep->used = 0;
            keep->next = NULL;
        } else {
            p->mem_used -= c->size;
            free(c);
        }
        c = next;
    }
    p->arena = keep;
}

ap_pprof_profile *ap_pprof_profile_new(void)
{
    ap_pprof_profile *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    ap_pprof_status st;
    if (ap_pprof_push_string(p, "", 0, &st) != 0) {
        free(p);
        return NULL;
    }
    p->strings_unique = 1;
    return p;
}

void ap_pprof_profile_free(ap_pprof_profile *p)
{
    if (!p) return;
    ap_pprof_arena_free(p, 0);
    free(p->strings);
    free(p->string_ht);
    free(p->sample_type);
    free(p->comments);
    free(p->mappings);
    free(p->functions);
    free(p->locations);
    free(p->lines);
    free(p->samples);
    free(p->sample_locs);
    free(p->values);
    free(p->labels);
    free(p);
}

void ap_pprof_profile_clear(ap_pprof_profile *p)
{
    ap_pprof_arena_free(p, 1);
    if (p->string_ht) {
        p->mem_used -= (uint64_t)p->string_ht_cap * sizeof *p->string_ht;
        free(p->string_ht);
        p->string_ht = NULL;
        p->string_ht_cap = 0;
    }
    p->nstrings = 0;
    ap_pprof_status st;
    ap_pprof_push_string(p, "", 0, &st); /* capacity exists, cannot fail */
    p->strings_unique = 1;
    p->nsample_type = 0;
    p->period_type[0] = p->period_type[1] = 0;
    p->period = p->time_nanos = p->duration_nanos = 0;
    p->drop_frames = p->keep_frames = p->default_sample_type = p->doc_url = 0;
    p->ncomments = 0;
    p->nmappings = p->nfunctions = p->nlocations = p->nlines = 0;
    p->nsamples = p->nsample_locs = p->nlabels = 0;
    p->labels_sorted = 0;
    p->wire_size = p->decompressed_size = 0;
    p->gzipped = 0;
}

/* Gives back growth slack: realloc to the exact size (in place for large blocks). */
static void shrink(ap_pprof_profile *p, void **ptr, size_t *cap, size_t n, size_t size)
{
    if (!*ptr || n == *cap) return;
    if (n == 0) n = 1;
    void *np = realloc(*ptr, n * size);
    if (!np) return;
    p->mem_used -= (*cap - n) * size;
    *ptr = np;
    *cap = n;
}

#define SHRINK32(arr, cap, n)                                                                      \
    do {                                                                                           \
        size_t c_ = p->cap;                                                                        \
        shrink(p, (void **)&p->arr, &c_, p->n, sizeof *p->arr);                                    \
        p->cap = (uint32_t)c_;                                                                     \
    } while (0)

void ap_pprof_profile_shrink(ap_pprof_profile *p)
{
    SHRINK32(mappings, cap_mappings, nmappings);
    SHRINK32(functions, cap_functions, nfunctions);
    SHRINK32(locations, cap_locations, nlocations);
    SHRINK32(lines, cap_lines, nlines);
    SHRINK32(samples, cap_samples, nsamples);
    SHRINK32(labels, cap_labels, nlabels);
    SHRINK32(strings, strings_cap, nstrings);
    shrink(p, (void **)&p->sample_locs, &p->cap_sample_locs, p->nsample_locs,
           sizeof *p->sample_locs);
    shrink(p, (void **)&p->values, &p->cap_values, (size_t)p->nsamples * p->nsample_type,
           sizeof *p->values);
}

uint64_t ap_pprof_profile_memory(const ap_pprof_profile *p)
{
    return p->mem_used + sizeof *p;
}

/* ---- strings ---- */

uint32_t ap_pprof_push_string(ap_pprof_profile *p, const char *s, size_t len,
                              ap_pprof_status *status)
{
    if (len > UINT32_MAX) {
        *status = AP_PPROF_ETOOLARGE;
        return AP_PPROF_NONE;
    }
    if (ap_pprof_grow(p, (void **)&p->strings, &p->strings_cap, sizeof *p->strings,
                      (uint64_t)p->nstrings + 1, status))
        return AP_PPROF_NONE;
    const char *copy = "";
    if (len) {
        char *c = ap_pprof_arena_alloc(p, len, status);
        if (!c) return AP_PPROF_NONE;
        memcpy(c, s, len);
        copy = c;
    }
    uint32_t i = p->nstrings++;
    p->strings[i].ptr = copy;
    p->strings[i].len = (uint32_t)len;
    p->strings[i].hash = 0;
    return i;
}

static int ht_rebuild(ap_pprof_profile *p, uint32_t cap)
{
    ap_pprof_status st;
    if (ap_pprof_charge(p, (int64_t)cap * (int64_t)sizeof(uint32_t), &st)) return -1;
    uint32_t *ht = calloc(cap, sizeof *ht);
    if (!ht) {
        p->mem_used -= (uint64_t)cap * sizeof(uint32_t);
        return -1;
    }
    if (p->string_ht) {
        p->mem_used -= (uint64_t)p->string_ht_cap * sizeof(uint32_t);
        free(p->string_ht);
    }
    p->string_ht = ht;
    p->string_ht_cap = cap;
    uint32_t mask = cap - 1;
    for (uint32_t i = 0; i < p->nstrings; i++) {
        uint32_t h = p->strings[i].hash;
        for (uint32_t j = h & mask;; j = (j + 1) & mask) {
            if (!ht[j]) {
                ht[j] = i + 1;
                break;
            }
        }
    }
    return 0;
}

int ap_pprof_strings_index(ap_pprof_profile *p)
{
    for (uint32_t i = 0; i < p->nstrings; i++)
        p->strings[i].hash = (uint32_t)ap_hash_bytes(p->strings[i].ptr, p->strings[i].len, 0);
    return ht_rebuild(p, (uint32_t)ap_pow2((uint64_t)p->nstrings * 2 + 16));
}

uint32_t ap_pprof_intern(ap_pprof_profile *p, const char *s, size_t len)
{
    /* Over a pool with duplicates the table still works: a lookup finds one of them. */
    if (!p->string_ht && ap_pprof_strings_index(p)) return AP_PPROF_NONE;
    uint32_t h = (uint32_t)ap_hash_bytes(s, len, 0);
    uint32_t mask = p->string_ht_cap - 1;
    uint32_t j = h & mask;
    for (;; j = (j + 1) & mask) {
        uint32_t e = p->string_ht[j];
        if (!e) break;
        const ap_pprof_str *x = &p->strings[e - 1];
        if (x->hash == h && ap_str_eq(x, s, len)) return e - 1;
    }
    ap_pprof_status st;
    uint32_t i = ap_pprof_push_string(p, s, len, &st);
    if (i == AP_PPROF_NONE) return AP_PPROF_NONE;
    p->strings[i].hash = h;
    if ((uint64_t)p->nstrings * 2 > p->string_ht_cap) {
        if (ht_rebuild(p, p->string_ht_cap * 2)) {
            p->nstrings--;
            return AP_PPROF_NONE;
        }
    } else {
        p->string_ht[j] = i + 1;
    }
    return i;
}

int ap_pprof_string_canon(const ap_pprof_profile *p, uint32_t **out)
{
    *out = NULL;
    if (p->strings_unique) return 0;
    uint32_t n = p->nstrings;
    uint32_t cap = (uint32_t)ap_pow2((uint64_t)n * 2 + 16), mask = cap - 1;
    uint32_t *canon = malloc((size_t)n * sizeof *canon);
    uint32_t *ht = calloc(cap, sizeof *ht);
    uint32_t *hs = malloc((size_t)n * sizeof *hs);
    if (!canon || !ht || !hs) {
        free(canon);
        free(ht);
        free(hs);
        return -1;
    }
    for (uint32_t i = 0; i < n; i++) {
        const ap_pprof_str *s = &p->strings[i];
        uint32_t h = (uint32_t)ap_hash_bytes(s->ptr, s->len, 0);
        hs[i] = h;
        uint32_t j = h & mask;
        canon[i] = i;
        for (;; j = (j + 1) & mask) {
            uint32_t e = ht[j];
            if (!e) {
                ht[j] = i + 1;
                break;
            }
            const ap_pprof_str *x = &p->strings[e - 1];
            if (hs[e - 1] == h && ap_str_eq(x, s->ptr, s->len)) {
                canon[i] = e - 1;
                break;
            }
        }
    }
    free(ht);
    free(hs);
    *out = canon;
    return 0;
}

/* ---- label order ---- */

/* Go's encoder writes string labels sorted by key, then numeric labels sorted by key; values
 * of one key keep their order. */
static int label_before(const ap_pprof_profile *p, const ap_pprof_label *a, const ap_pprof_label *b,
                        const uint32_t *canon)
{
    uint32_t ka = a->flags & AP_PPROF_LABEL_NUM, kb = b->flags & AP_PPROF_LABEL_NUM;
    if (ka != kb) return ka < kb;
    uint32_t x = canon ? canon[a->key] : a->key, y = canon ? canon[b->key] : b->key;
    if (x == y) return 0;
    return ap_str_cmp(&p->strings[x], &p->strings[y]) < 0;
}

void ap_pprof_sort_labels(const ap_pprof_profile *p, ap_pprof_label *l, uint32_t n,
                          const uint32_t *canon)
{
    /* Insertion sort: samples carry a handful of labels and the sort must be stable. */
    for (uint32_t i = 1; i < n; i++) {
        ap_pprof_label t = l[i];
        uint32_t j = i;
        while (j > 0 && label_before(p, &t, &l[j - 1], canon)) {
            l[j] = l[j - 1];
            j--;
        }
        l[j] = t;
    }
}
