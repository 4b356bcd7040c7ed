/* profile.Merge: the same order of operations as Go's profileMerger (so ids and table order
 * come out the same), with integer keys over an interned string pool instead of Go's
 * formatted string keys. Inputs are added one at a time and may be freed after each add. */
#include <stdio.h>
#include <stdlib.h>

#include "internal.h"

/* Open addressing keyed by a 64-bit hash: a slot holds the hash's top 32 bits (tag) and
 * index + 1. The probe starts at the hash's top bits, so growing needs only the tag. */
typedef struct {
    uint64_t *slots;
    uint32_t bits, n;
} table;

/* Bits of a table for about `expect` entries: at most half full, 64 slots at least, 2^32 at most
 * (the sample table below sizes alike). */
static uint32_t table_bits(uint64_t expect)
{
    uint64_t cap = ap_pow2(expect * 2 + 64);
    if (cap > (1ull << 32)) cap = 1ull << 32;
    uint32_t bits = 0;
    while ((1ull << bits) < cap) bits++;
    return bits;
}

static int table_init(table *t, uint64_t expect)
{
    t->bits = table_bits(expect);
    t->slots = calloc(1ull << t->bits, sizeof *t->slots);
    t->n = 0;
    return t->slots ? 0 : -1;
}

static int table_grow(table *t)
{
    if (t->bits >= 32) return -1;
    uint32_t nbits = t->bits + 1;
    uint64_t ncap = 1ull << nbits, mask = ncap - 1;
    uint64_t *ns = calloc(ncap, sizeof *ns);
    if (!ns) return -1;
    for (uint64_t i = 0, cap = 1ull << t->bits; i < cap; i++) {
        uint64_t s = t->slots[i];
        if (!s) continue;
        for (uint64_t j = (s >> 32) >> (32 - nbits);; j = (j + 1) & mask) {
            if (!ns[j]) {
                ns[j] = s;
                break;
            }
        }
    }
    free(t->slots);
    t->slots = ns;
    t->bits = nbits;
    return 0;
}

static inline uint64_t table_start(const table *t, uint64_t h)
{
    return h >> (64 - t->bits);
}

/* The sample table's slots also hold what confirms a match without reading the sample itself
 * (a cache miss each, with millions of samples): where its locations start, its label set (an
 * id interned per merged profile, equal ids for equal labels) and its location count, capped.
 * A match then costs the slot, the location run and the values. */
typedef struct {
    uint32_t tag, idx1; /* the hash's top 32 bits; sample index + 1 (0: empty) */
    uint32_t loc_off;   /* the sample's sample_locs offset */
    uint32_t meta;      /* label set << 8 | min(nloc, 255) */
} sslot;

typedef struct {
    sslot *slots;
    uint32_t bits, n;
} stable;

static inline uint64_t stable_start(const stable *t, uint64_t h)
{
    return h >> (64 - t->bits);
}

#define LSET_OVER 0xffffffu /* label sets past this many are not interned: compare in full */
#define NLOC_CAP  255u

static int stable_init(stable *t, uint64_t expect)
{
    t->bits = table_bits(expect);
    t->slots = calloc(1ull << t->bits, sizeof *t->slots);
    t->n = 0;
    return t->slots ? 0 : -1;
}

static int stable_grow(stable *t)
{
    if (t->bits >= 32) return -1;
    uint32_t nbits = t->bits + 1;
    uint64_t ncap = 1ull << nbits, mask = ncap - 1;
    sslot *ns = calloc(ncap, sizeof *ns);
    if (!ns) return -1;
    for (uint64_t i = 0, cap = 1ull << t->bits; i < cap; i++) {
        const sslot *s = &t->slots[i];
        if (!s->idx1) continue;
        for (uint64_t j = s->tag >> (32 - nbits);; j = (j + 1) & mask) {
            if (!ns[j].idx1) {
                ns[j] = *s;
                break;
            }
        }
    }
    free(t->slots);
    t->slots = ns;
    t->bits = nbits;
    return 0;
}

/* The output entry an earlier input's entry of the same id became: inputs that number their
 * tables alike (profiles of one generator or binary build, a merged profile merged again) find
 * their functions and locations by id, compared in full (keys are unique in the output, so an
 * equal key is the table's answer), without hashing and probing. An input that numbers them
 * otherwise stops guessing after a few misses. */
typedef struct {
    uint32_t *at; /* by id: output index + 1, 0 for none */
    size_t cap;
    uint32_t hits, misses; /* this input's */
} guess;

static inline uint32_t guess_get(const guess *g, uint64_t id)
{
    if (id >= g->cap || (g->misses > 64 && g->misses > g->hits)) return AP_PPROF_NONE;
    return g->at[id] - 1;
}

/* Records x for id (ids past `bound`, sparse ones, are not worth an array). */
static void guess_set(guess *g, uint64_t id, uint32_t x, uint64_t bound)
{
    if (id > bound) return;
    if (id >= g->cap) {
        size_t old = g->cap;
        if (ap_pprof_sgrow((void **)&g->at, &g->cap, sizeof *g->at, (size_t)id + 1)) return;
        memset(g->at + old, 0, (g->cap - old) * sizeof *g->at);
    }
    g->at[id] = x + 1;
}

struct ap_pprof_merger {
    ap_pprof_profile *out;
    uint32_t ninputs;
    stable samples;
    table locations, functions, mappings;
    int tables_ready;
    /* Label sets of the merged profile, interned (id = index + 1; 0 is no labels): runs of
     * lset_lab, as the samples carry them (sorted, units normalized). */
    table lsets;
    guess fguess, lguess;
    uint32_t *lset_off; /* by id - 1: offset in lset_lab; the run ends at the next one's */
    size_t nlsets, cap_lset_off;
    ap_pprof_label *lset_lab;
    size_t nlset_lab, cap_lset_lab;
    /* The label sets of this input's samples by their input bytes (direct-mapped; nl 0 is
     * empty): a set seen before in the input is not mapped, sorted and interned again. */
    struct {
        uint64_t h, hl; /* hash of the input bytes; of the mapped labels */
        uint32_t src_off, nl, lset, pad;
    } lmemo[256];
    uint8_t *comment_seen; /* by output string index */
    size_t comment_seen_cap;

    /* Per input: output index of each input string/function/mapping/location. */
    const ap_pprof_profile *src;
    uint32_t *smap, *fmap, *mmap, *lmap;
    int64_t *moff; /* address offset of each input mapping (Go's mapInfo.offset) */
    size_t cap_s, cap_f, cap_m, cap_l;

    /* Keys of the batch of samples being mapped, and of the location being mapped. */
    uint32_t *klocs;
    size_t nklocs, cap_klocs;
    ap_pprof_label *klabels;
    size_t nklabels, cap_klabels;
    ap_pprof_line *klines;
    size_t cap_klines;

    ap_pprof_status status;
};

ap_pprof_merger *ap_pprof_merger_new(void)
{
    ap_pprof_merger *m = calloc(1, sizeof *m);
    return m;
}

static void free_tables(ap_pprof_merger *m)
{
    free(m->samples.slots);
    free(m->locations.slots);
    free(m->functions.slots);
    free(m->mappings.slots);
    free(m->lsets.slots);
    memset(&m->lsets, 0, sizeof m->lsets);
    m->nlsets = m->nlset_lab = 0;
    /* Guesses name entries of this output. */
    if (m->fguess.cap) memset(m->fguess.at, 0, m->fguess.cap * sizeof *m->fguess.at);
    if (m->lguess.cap) memset(m->lguess.at, 0, m->lguess.cap * sizeof *m->lguess.at);
    memset(&m->samples, 0, sizeof m->samples);
    memset(&m->locations, 0, sizeof m->locations);
    memset(&m->functions, 0, sizeof m->functions);
    memset(&m->mappings, 0, sizeof m->mappings);
    m->tables_ready = 0;
}

void ap_pprof_merger_free(ap_pprof_merger *m)
{
    if (!m) return;
    ap_pprof_profile_free(m->out);
    free_tables(m);
    free(m->comment_seen);
    free(m->smap);
    free(m->fmap);
    free(m->mmap);
    free(m->lmap);
    free(m->moff);
    free(m->klocs);
    free(m->klabels);
    free(m->klines);
    free(m->fguess.at);
    free(m->lguess.at);
    free(m->lset_off);
    free(m->lset_lab);
    free(m);
}

static int nomem(ap_pprof_error *err)
{
    return ap_pprof_fail(err, AP_PPROF_ENOMEM, "out of memory while merging");
}

/* ---- strings ---- */

static inline uint32_t map_string(ap_pprof_merger *m, uint32_t i)
{
    uint32_t o = m->smap[i];
    if (AP_LIKELY(o != AP_PPROF_NONE)) return o;
    const ap_pprof_str *s = &m->src->strings[i];
    o = ap_pprof_intern(m->out, s->ptr, s->len);
    if (o == AP_PPROF_NONE) {
        m->status = AP_PPROF_ENOMEM;
        return AP_PPROF_NONE;
    }
    m->smap[i] = o;
    return o;
}

#define MS(m, i, fail)                                                                             \
    ({                                                                                             \
        uint32_t ms_ = map_string((m), (i));                                                       \
        if (ms_ == AP_PPROF_NONE) goto fail;                                                       \
        ms_;                                                                                       \
    })

/* ---- mappings ---- */

typedef struct {
    uint64_t size, offset;
    uint32_t bidfile; /* build id, else file name, else "" (Go's buildIDOrFile) */
} mapping_key;

static mapping_key mapping_key_of(const ap_pprof_profile *p, const ap_pprof_mapping *mp)
{
    /* Go normalizes for address space randomization: size rounded up to 4 KiB. */
    mapping_key k;
    uint64_t size = mp->limit - mp->start;
    size = size + 0x1000 - 1;
    size = size - (size % 0x1000);
    k.size = size;
    k.offset = mp->offset;
    k.bidfile = p->strings[mp->build_id].len ? mp->build_id : mp->file;
    return k;
}

static int map_mapping(ap_pprof_merger *m, uint32_t i, uint32_t *out_idx, int64_t *offset)
{
    if (m->mmap[i] != AP_PPROF_NONE) {
        *out_idx = m->mmap[i];
        *offset = m->moff[i];
        return 0;
    }
    ap_pprof_profile *out = m->out;
    const ap_pprof_mapping *sm = &m->src->mappings[i];
    uint32_t file = MS(m, sm->file, fail), bid = MS(m, sm->build_id, fail);
    ap_pprof_mapping nm = *sm;
    nm.file = file;
    nm.build_id = bid;
    mapping_key k = mapping_key_of(out, &nm);
    uint64_t h = ap_hash_bytes(&k, sizeof k.size + sizeof k.offset, k.bidfile);
    table *t = &m->mappings;
    uint64_t mask = (1ull << t->bits) - 1, tag = h >> 32;
    uint64_t j = table_start(t, h);
    for (;; j = (j + 1) & mask) {
        uint64_t s = t->slots[j];
        if (!s) break;
        if ((s >> 32) != tag) continue;
        uint32_t x = (uint32_t)s - 1;
        mapping_key o = mapping_key_of(out, &out->mappings[x]);
        if (o.size == k.size && o.offset == k.offset && o.bidfile == k.bidfile) {
            m->mmap[i] = x;
            m->moff[i] = (int64_t)(out->mappings[x].start - sm->start);
            *out_idx = x;
            *offset = m->moff[i];
            return 0;
        }
    }
    if (ap_pprof_grow(out, (void **)&out->mappings, &out->cap_mappings, sizeof *out->mappings,
                      (uint64_t)out->nmappings + 1, &m->status))
        return -1;
    uint32_t x = out->nmappings++;
    nm.id = (uint64_t)x + 1;
    out->mappings[x] = nm;
    t->slots[j] = (tag << 32) | ((uint64_t)x + 1);
    if (++t->n * 2 > (1ull << t->bits) && table_grow(t)) goto fail;
    m->mmap[i] = x;
    m->moff[i] = 0;
    *out_idx = x;
    *offset = 0;
    return 0;
fail:
    if (!m->status) m->status = AP_PPROF_ENOMEM;
    return -1;
}

/* ---- functions ---- */

static uint32_t map_function(ap_pprof_merger *m, uint32_t i)
{
    uint32_t o = m->fmap[i];
    if (o != AP_PPROF_NONE) return o;
    ap_pprof_profile *out = m->out;
    const ap_pprof_function *sf = &m->src->functions[i];
    struct {
        int64_t start_line;
        uint32_t name, system_name, filename, pad;
    } k;
    k.start_line = sf->start_line;
    k.name = MS(m, sf->name, fail);
    k.system_name = MS(m, sf->system_name, fail);
    k.filename = MS(m, sf->filename, fail);
    k.pad = 0;
    uint32_t g = guess_get(&m->fguess, sf->id);
    if (g != AP_PPROF_NONE && g < out->nfunctions) {
        const ap_pprof_function *of = &out->functions[g];
        if (of->start_line == k.start_line && of->name == k.name &&
            of->system_name == k.system_name && of->filename == k.filename) {
            m->fguess.hits++;
            m->fmap[i] = g;
            return g;
        }
        m->fguess.misses++;
    }
    uint64_t bound = 4 * (uint64_t)m->src->nfunctions + 1024;
    uint64_t h = ap_hash_bytes(&k, sizeof k, 0);
    table *t = &m->functions;
    uint64_t mask = (1ull << t->bits) - 1, tag = h >> 32;
    uint64_t j = table_start(t, h);
    for (;; j = (j + 1) & mask) {
        uint64_t s = t->slots[j];
        if (!s) break;
        if ((s >> 32) != tag) continue;
        uint32_t x = (uint32_t)s - 1;
        const ap_pprof_function *of = &out->functions[x];
        if (of->start_line == k.start_line && of->name == k.name &&
            of->system_name == k.system_name && of->filename == k.filename) {
            m->fmap[i] = x;
            guess_set(&m->fguess, sf->id, x, bound);
            return x;
        }
    }
    if (ap_pprof_grow(out, (void **)&out->functions, &out->cap_functions, sizeof *out->functions,
                      (uint64_t)out->nfunctions + 1, &m->status))
        return AP_PPROF_NONE;
    uint32_t x = out->nfunctions++;
    ap_pprof_function *nf = &out->functions[x];
    nf->id = (uint64_t)x + 1;
    nf->start_line = k.start_line;
    nf->name = k.name;
    nf->system_name = k.system_name;
    nf->filename = k.filename;
    t->slots[j] = (tag << 32) | ((uint64_t)x + 1);
    if (++t->n * 2 > (1ull << t->bits) && table_grow(t)) goto fail;
    m->fmap[i] = x;
    guess_set(&m->fguess, sf->id, x, bound);
    return x;
fail:
    if (!m->status) m->status = AP_PPROF_ENOMEM;
    return AP_PPROF_NONE;
}

/* ---- locations ---- */

typedef struct {
    uint64_t addr; /* relative to the mapping's start */
    uint32_t mapping, folded;
} location_key;

/* Whether output location x has Go's locationKey k with those lines. */
static inline int location_is(const ap_pprof_profile *out, uint32_t x, const location_key *k,
                              const ap_pprof_line *lines, uint32_t nline)
{
    const ap_pprof_location *ol = &out->locations[x];
    if (ol->mapping != k->mapping || ol->is_folded != k->folded || ol->nline != nline) return 0;
    uint64_t oaddr =
        ol->mapping != AP_PPROF_NONE ? ol->address - out->mappings[ol->mapping].start : ol->address;
    return oaddr == k->addr &&
           (nline == 0 || memcmp(&out->lines[ol->line_off], lines, nline * sizeof *lines) == 0);
}

static uint32_t map_location(ap_pprof_merger *m, uint32_t i)
{
    ap_pprof_profile *out = m->out;
    const ap_pprof_profile *src = m->src;
    const ap_pprof_location *sl = &src->locations[i];
    uint32_t mi = AP_PPROF_NONE;
    int64_t off = 0;
    if (sl->mapping != AP_PPROF_NONE && map_mapping(m, sl->mapping, &mi, &off))
        return AP_PPROF_NONE;
    uint64_t addr = sl->address + (uint64_t)off;
    /* Functions are mapped before the location is looked up, as in Go. */
    if (ap_pprof_sgrow((void **)&m->klines, &m->cap_klines, sizeof *m->klines, sl->nline))
        goto nomem;
    for (uint32_t j = 0; j < sl->nline; j++) {
        const ap_pprof_line *ln = &src->lines[sl->line_off + j];
        uint32_t f = map_function(m, ln->function);
        if (f == AP_PPROF_NONE) return AP_PPROF_NONE;
        m->klines[j].function = f;
        m->klines[j].pad_ = 0;
        m->klines[j].line = ln->line;
        m->klines[j].column = ln->column;
    }
    /* Go's locationKey: address relative to the mapping start, mapping id, lines, folded. */
    location_key k;
    k.addr = mi != AP_PPROF_NONE ? addr - out->mappings[mi].start : addr;
    k.mapping = mi;
    k.folded = sl->is_folded;
    uint32_t g = guess_get(&m->lguess, sl->id);
    if (g != AP_PPROF_NONE && g < out->nlocations) {
        if (location_is(out, g, &k, m->klines, sl->nline)) {
            m->lguess.hits++;
            m->lmap[i] = g;
            return g;
        }
        m->lguess.misses++;
    }
    uint64_t bound = 4 * (uint64_t)src->nlocations + 1024;
    uint64_t h = ap_hash_bytes(&k, sizeof k, sl->nline);
    if (sl->nline) h = ap_hash_bytes(m->klines, sl->nline * sizeof *m->klines, h);
    table *t = &m->locations;
    uint64_t mask = (1ull << t->bits) - 1, tag = h >> 32;
    uint64_t j = table_start(t, h);
    for (;; j = (j + 1) & mask) {
        uint64_t s = t->slots[j];
        if (!s) break;
        if ((s >> 32) != tag) continue;
        uint32_t x = (uint32_t)s - 1;
        if (location_is(out, x, &k, m->klines, sl->nline)) {
            m->lmap[i] = x;
            guess_set(&m->lguess, sl->id, x, bound);
            return x;
        }
    }
    if (ap_pprof_grow(out, (void **)&out->locations, &out->cap_locations, sizeof *out->locations,
                      (uint64_t)out->nlocations + 1, &m->status) ||
        ap_pprof_grow(out, (void **)&out->lines, &out->cap_lines, sizeof *out->lines,
                      (uint64_t)out->nlines + sl->nline, &m->status))
        return AP_PPROF_NONE;
    uint32_t x = out->nlocations++;
    ap_pprof_location *nl = &out->locations[x];
    nl->id = (uint64_t)x + 1;
    nl->address = addr;
    nl->mapping = mi;
    nl->line_off = out->nlines;
    nl->nline = sl->nline;
    nl->is_folded = sl->is_folded;
    if (sl->nline) memcpy(&out->lines[out->nlines], m->klines, sl->nline * sizeof *m->klines);
    out->nlines += sl->nline;
    t->slots[j] = (tag << 32) | ((uint64_t)x + 1);
    if (++t->n * 2 > (1ull << t->bits) && table_grow(t)) goto nomem;
    m->lmap[i] = x;
    guess_set(&m->lguess, sl->id, x, bound);
    return x;
nomem:
    if (!m->status) m->status = AP_PPROF_ENOMEM;
    return AP_PPROF_NONE;
}

/* ---- samples ---- */

/* Go's sample key treats a numeric key's units as printed by %x: no units and a single ""
 * unit print alike, while units of two or more values always differ from none. Units are
 * made uniform per key so that equal keys compare equal and encode alike. */
static void normalize_units(ap_pprof_label *l, uint32_t n)
{
    uint32_t i = 0;
    while (i < n) {
        if (!(l[i].flags & AP_PPROF_LABEL_NUM)) {
            i++;
            continue;
        }
        uint32_t j = i + 1;
        int any = (l[i].flags & AP_PPROF_LABEL_UNIT_SET) != 0;
        while (j < n && (l[j].flags & AP_PPROF_LABEL_NUM) && l[j].key == l[i].key) {
            any |= (l[j].flags & AP_PPROF_LABEL_UNIT_SET) != 0;
            j++;
        }
        if (any && j - i == 1 && l[i].unit == 0) any = 0;
        for (uint32_t k = i; k < j; k++) {
            if (any) {
                if (!(l[k].flags & AP_PPROF_LABEL_UNIT_SET)) l[k].unit = 0;
                l[k].flags |= AP_PPROF_LABEL_UNIT_SET;
            } else {
                l[k].flags &= ~(uint32_t)AP_PPROF_LABEL_UNIT_SET;
                l[k].unit = 0;
            }
        }
        i = j;
    }
}

/* A sample whose key (output locations and labels) is built and hashed, waiting for its
 * table lookup. Keys are built a batch ahead so that the table slots can be prefetched: with
 * millions of samples every lookup would otherwise wait on a cache miss. */
typedef struct {
    uint64_t h;
    uint32_t si;
    uint32_t loc_off, nloc;
    uint32_t lab_off, nlab;
    uint32_t lset; /* label set id (0: none; LSET_OVER: not interned) */
} pending;

/* The id of a label set (interned on first sight); LSET_OVER past 2^24 - 2 sets, NONE when
 * out of memory. */
static uint32_t intern_lset(ap_pprof_merger *m, const ap_pprof_label *l, uint32_t n, uint64_t h)
{
    table *t = &m->lsets;
    uint64_t mask = (1ull << t->bits) - 1, tag = h >> 32;
    uint64_t j = table_start(t, h);
    size_t bytes = n * sizeof *l;
    for (;; j = (j + 1) & mask) {
        uint64_t s = t->slots[j];
        if (!s) break;
        if ((s >> 32) != tag) continue;
        uint32_t x = (uint32_t)s - 1;
        size_t off = m->lset_off[x];
        size_t end = x + 1 < m->nlsets ? m->lset_off[x + 1] : m->nlset_lab;
        if (end - off == n && memcmp(&m->lset_lab[off], l, bytes) == 0) return x + 1;
    }
    if (m->nlsets >= LSET_OVER - 1) return LSET_OVER;
    if (ap_pprof_sgrow((void **)&m->lset_off, &m->cap_lset_off, sizeof *m->lset_off,
                       m->nlsets + 1) ||
        ap_pprof_sgrow((void **)&m->lset_lab, &m->cap_lset_lab, sizeof *m->lset_lab,
                       m->nlset_lab + n) ||
        m->nlset_lab + n > UINT32_MAX)
        return AP_PPROF_NONE;
    uint32_t x = (uint32_t)m->nlsets++;
    m->lset_off[x] = (uint32_t)m->nlset_lab;
    memcpy(&m->lset_lab[m->nlset_lab], l, bytes);
    m->nlset_lab += n;
    t->slots[j] = (tag << 32) | ((uint64_t)x + 1);
    if (++t->n * 2 > (1ull << t->bits) && table_grow(t)) return AP_PPROF_NONE;
    return x + 1;
}

#define BATCH 32

static int build_key(ap_pprof_merger *m, uint32_t si, pending *pd)
{
    const ap_pprof_profile *src = m->src;
    const ap_pprof_sample *ss = &src->samples[si];
    size_t lo = m->nklocs, ko = m->nklabels;
    if (ap_pprof_sgrow((void **)&m->klocs, &m->cap_klocs, sizeof *m->klocs, lo + ss->nloc))
        goto nomem;
    const uint32_t *sl = ap_pprof_sample_locs(src, ss);
    for (uint32_t j = 0; j < ss->nloc; j++) {
        uint32_t x = m->lmap[sl[j]];
        if (x == AP_PPROF_NONE) {
            x = map_location(m, sl[j]);
            if (x == AP_PPROF_NONE) return -1;
        }
        m->klocs[lo + j] = x;
    }
    uint32_t nl = ss->nlabel;
    uint64_t seed = nl, hs = 0;
    pd->lset = 0;
    if (nl) {
        if (ap_pprof_sgrow((void **)&m->klabels, &m->cap_klabels, sizeof *m->klabels, ko + nl))
            goto nomem;
        const ap_pprof_label *l = &src->labels[ss->label_off];
        ap_pprof_label *kl = &m->klabels[ko];
        hs = ap_hash_bytes(l, nl * sizeof *l, nl);
        size_t e = hs & (sizeof m->lmemo / sizeof m->lmemo[0] - 1);
        if (m->lmemo[e].nl == nl && m->lmemo[e].h == hs &&
            memcmp(&src->labels[m->lmemo[e].src_off], l, nl * sizeof *l) == 0) {
            pd->lset = m->lmemo[e].lset;
            seed = m->lmemo[e].hl;
            memcpy(kl, &m->lset_lab[m->lset_off[pd->lset - 1]], nl * sizeof *kl);
            goto labelled;
        }
        for (uint32_t j = 0; j < nl; j++) {
            ap_pprof_label *k = &kl[j];
            k->key = MS(m, l[j].key, nomem);
            k->flags = l[j].flags;
            if (l[j].flags & AP_PPROF_LABEL_NUM) {
                k->str = 0;
                k->num = l[j].num;
                k->unit = (l[j].flags & AP_PPROF_LABEL_UNIT_SET) ? MS(m, l[j].unit, nomem) : 0;
            } else {
                k->str = MS(m, l[j].str, nomem);
                k->num = 0;
                k->unit = 0;
            }
        }
        if (!src->labels_sorted) ap_pprof_sort_labels(m->out, kl, nl, NULL);
        normalize_units(kl, nl);
        uint64_t hl = ap_hash_bytes(kl, nl * sizeof *kl, nl);
        pd->lset = intern_lset(m, kl, nl, hl);
        if (pd->lset == AP_PPROF_NONE) goto nomem;
        seed = hl;
        if (pd->lset != LSET_OVER) {
            m->lmemo[e].h = hs;
            m->lmemo[e].hl = hl;
            m->lmemo[e].src_off = ss->label_off;
            m->lmemo[e].nl = nl;
            m->lmemo[e].lset = pd->lset;
        }
    }
labelled:
    m->nklocs = lo + ss->nloc;
    m->nklabels = ko + nl;
    pd->si = si;
    pd->loc_off = (uint32_t)lo;
    pd->nloc = ss->nloc;
    pd->lab_off = (uint32_t)ko;
    pd->nlab = nl;
    uint64_t h = ap_hash_bytes(&m->klocs[lo], (size_t)ss->nloc * 4, seed);
    pd->h = h;
    __builtin_prefetch(&m->samples.slots[stable_start(&m->samples, h)]);
    return 0;
nomem:
    if (!m->status) m->status = AP_PPROF_ENOMEM;
    return -1;
}

/* Whether output sample x (slot s) has the key of pd. */
static inline int sample_matches(const ap_pprof_profile *out, const sslot *s, const pending *pd,
                                 const uint32_t *klocs, const ap_pprof_label *klabels)
{
    uint32_t nloc = pd->nloc, nl = pd->nlab;
    uint32_t meta = s->meta;
    if ((meta >> 8) != LSET_OVER && pd->lset != LSET_OVER && (meta & 255) != NLOC_CAP &&
        nloc < NLOC_CAP) {
        /* Both label sets interned and both counts exact: the slot decides. */
        if (meta != (pd->lset << 8 | nloc)) return 0;
        return nloc == 0 || memcmp(&out->sample_locs[s->loc_off], klocs, (size_t)nloc * 4) == 0;
    }
    const ap_pprof_sample *os = &out->samples[s->idx1 - 1];
    return os->nloc == nloc && os->nlabel == nl &&
           (nloc == 0 || memcmp(ap_pprof_sample_locs(out, os), klocs, (size_t)nloc * 4) == 0) &&
           (nl == 0 || memcmp(&out->labels[os->label_off], klabels, nl * sizeof *klabels) == 0);
}

static int add_sample(ap_pprof_merger *m, const pending *pd)
{
    ap_pprof_profile *out = m->out;
    uint32_t nv = out->nsample_type;
    const int64_t *sv = &m->src->values[(size_t)pd->si * nv];
    uint32_t nloc = pd->nloc, nl = pd->nlab;
    const uint32_t *klocs = nloc ? &m->klocs[pd->loc_off] : NULL;
    const ap_pprof_label *klabels = nl ? &m->klabels[pd->lab_off] : NULL;
    stable *t = &m->samples;
    uint64_t h = pd->h, mask = (1ull << t->bits) - 1;
    uint32_t tag = (uint32_t)(h >> 32);
    uint64_t j = stable_start(t, h);
    for (;; j = (j + 1) & mask) {
        const sslot *s = &t->slots[j];
        if (!s->idx1) break;
        if (s->tag != tag || !sample_matches(out, s, pd, klocs, klabels)) continue;
        uint32_t x = s->idx1 - 1;
        int64_t *ov = &out->values[(size_t)x * nv];
        for (uint32_t v = 0; v < nv; v++) ov[v] = ap_add_wrap(ov[v], sv[v]);
        return 0;
    }
    if (ap_pprof_grow(out, (void **)&out->samples, &out->cap_samples, sizeof *out->samples,
                      (uint64_t)out->nsamples + 1, &m->status) ||
        ap_pprof_grow_sz(out, (void **)&out->sample_locs, &out->cap_sample_locs,
                         sizeof *out->sample_locs, (uint64_t)out->nsample_locs + nloc,
                         &m->status) ||
        ap_pprof_grow(out, (void **)&out->labels, &out->cap_labels, sizeof *out->labels,
                      (uint64_t)out->nlabels + nl, &m->status) ||
        ap_pprof_grow_sz(out, (void **)&out->values, &out->cap_values, sizeof *out->values,
                         ((uint64_t)out->nsamples + 1) * nv, &m->status))
        return -1;
    if ((uint64_t)out->nsample_locs + nloc > UINT32_MAX - 1) {
        m->status = AP_PPROF_ETOOLARGE;
        return -1;
    }
    uint32_t x = out->nsamples++;
    ap_pprof_sample *ns = &out->samples[x];
    ns->loc_off = out->nsample_locs;
    ns->nloc = nloc;
    ns->label_off = out->nlabels;
    ns->nlabel = nl;
    if (nloc) memcpy(&out->sample_locs[out->nsample_locs], klocs, (size_t)nloc * 4);
    out->nsample_locs += nloc;
    if (nl) memcpy(&out->labels[out->nlabels], klabels, nl * sizeof *klabels);
    out->nlabels += nl;
    memcpy(&out->values[(size_t)x * nv], sv, nv * sizeof *sv);
    t->slots[j] =
        (sslot){tag, x + 1, ns->loc_off, pd->lset << 8 | (nloc < NLOC_CAP ? nloc : NLOC_CAP)};
    if (++t->n * 2 > (1ull << t->bits) && stable_grow(t)) {
        m->status = AP_PPROF_ENOMEM;
        return -1;
    }
    return 0;
}

/* Go's loop over src.Sample: all-zero samples are skipped before anything is mapped; the
 * others are mapped (locations first, in order) and looked up, a batch at a time. */
static int map_samples(ap_pprof_merger *m)
{
    const ap_pprof_profile *src = m->src;
    uint32_t nv = src->nsample_type;
    pending batch[BATCH];
    uint32_t i = 0;
    while (i < src->nsamples) {
        int nb = 0;
        m->nklocs = m->nklabels = 0;
        for (; i < src->nsamples && nb < BATCH; i++) {
            const int64_t *v = &src->values[(size_t)i * nv];
            int zero = 1;
            for (uint32_t k = 0; k < nv; k++) zero &= v[k] == 0;
            if (zero) continue;
            if (build_key(m, i, &batch[nb])) return -1;
            nb++;
        }
        /* The slots were prefetched as the keys were built; now the likely match's location
         * run and values, so the batch's cache misses overlap instead of queueing. */
        ap_pprof_profile *out = m->out;
        const stable *t = &m->samples;
        for (int b = 0; b < nb; b++) {
            const sslot *sl = &t->slots[stable_start(t, batch[b].h)];
            if (!sl->idx1 || sl->tag != (uint32_t)(batch[b].h >> 32)) continue;
            if (batch[b].nloc) __builtin_prefetch(&out->sample_locs[sl->loc_off]);
            __builtin_prefetch(&out->values[(size_t)(sl->idx1 - 1) * nv]);
        }
        for (int b = 0; b < nb; b++)
            if (add_sample(m, &batch[b])) return -1;
    }
    return 0;
}

/* ---- headers ---- */

static int str_same(const ap_pprof_profile *a, uint32_t i, const ap_pprof_profile *b, uint32_t j)
{
    const ap_pprof_str *x = &a->strings[i];
    return ap_str_eq(x, b->strings[j].ptr, b->strings[j].len);
}

static void describe_types(const ap_pprof_profile *p, char *buf, size_t n)
{
    size_t o = 0;
    buf[0] = 0;
    o += (size_t)snprintf(buf, n, "[");
    for (uint32_t i = 0; i < p->nsample_type && o < n; i++) {
        const ap_pprof_str *t = &p->strings[p->sample_type[2 * i]];
        const ap_pprof_str *u = &p->strings[p->sample_type[2 * i + 1]];
        o += (size_t)snprintf(buf + o, n - o, "%s%.*s/%.*s", i ? " " : "", (int)t->len, t->ptr,
                              (int)u->len, u->ptr);
    }
    if (o < n) snprintf(buf + o, n - o, "]");
}

/* Go's compatible(): same period type, same sample types in the same order. */
static int check_compatible(ap_pprof_merger *m, const ap_pprof_profile *src, ap_pprof_error *err)
{
    const ap_pprof_profile *out = m->out;
    if (!str_same(out, out->period_type[0], src, src->period_type[0]) ||
        !str_same(out, out->period_type[1], src, src->period_type[1])) {
        const ap_pprof_str *a = &out->strings[out->period_type[0]],
                           *b = &out->strings[out->period_type[1]],
                           *c = &src->strings[src->period_type[0]],
                           *d = &src->strings[src->period_type[1]];
        ap_pprof_fail(err, AP_PPROF_EINCOMPATIBLE,
                      "incompatible period types %.*s/%.*s and %.*s/%.*s", (int)c->len, c->ptr,
                      (int)d->len, d->ptr, (int)a->len, a->ptr, (int)b->len, b->ptr);
        return -1;
    }
    int same = out->nsample_type == src->nsample_type;
    for (uint32_t i = 0; same && i < src->nsample_type; i++)
        same = str_same(out, out->sample_type[2 * i], src, src->sample_type[2 * i]) &&
               str_same(out, out->sample_type[2 * i + 1], src, src->sample_type[2 * i + 1]);
    if (!same) {
        char a[120], b[120];
        describe_types(src, a, sizeof a);
        describe_types(out, b, sizeof b);
        ap_pprof_fail(err, AP_PPROF_EINCOMPATIBLE, "incompatible sample types %s and %s", a, b);
        return -1;
    }
    return 0;
}

static int prepare_input(ap_pprof_merger *m, const ap_pprof_profile *src)
{
    m->src = src;
    if (ap_pprof_sgrow((void **)&m->smap, &m->cap_s, sizeof *m->smap, src->nstrings) ||
        ap_pprof_sgrow((void **)&m->fmap, &m->cap_f, sizeof *m->fmap, src->nfunctions) ||
        ap_pprof_sgrow((void **)&m->lmap, &m->cap_l, sizeof *m->lmap, src->nlocations))
        return -1;
    size_t capm = m->cap_m;
    if (ap_pprof_sgrow((void **)&m->mmap, &m->cap_m, sizeof *m->mmap, src->nmappings)) return -1;
    if (m->cap_m != capm || !m->moff) {
        free(m->moff);
        m->moff = malloc((m->cap_m ? m->cap_m : 1) * sizeof *m->moff);
        if (!m->moff) return -1;
    }
    memset(m->smap, 0xff, (size_t)src->nstrings * sizeof *m->smap);
    memset(m->fmap, 0xff, (size_t)src->nfunctions * sizeof *m->fmap);
    memset(m->lmap, 0xff, (size_t)src->nlocations * sizeof *m->lmap);
    memset(m->mmap, 0xff, (size_t)src->nmappings * sizeof *m->mmap);
    for (size_t i = 0; i < sizeof m->lmemo / sizeof m->lmemo[0]; i++) m->lmemo[i].nl = 0;
    m->fguess.hits = m->fguess.misses = m->lguess.hits = m->lguess.misses = 0;
    return 0;
}

static int first_input(ap_pprof_merger *m, const ap_pprof_profile *src)
{
    ap_pprof_profile *out = m->out;
    if (stable_init(&m->samples, src->nsamples) || table_init(&m->lsets, 64) ||
        table_init(&m->locations, src->nlocations) || table_init(&m->functions, src->nfunctions) ||
        table_init(&m->mappings, src->nmappings))
        return -1;
    m->tables_ready = 1;
    if (ap_pprof_grow(out, (void **)&out->sample_type, &out->cap_sample_type, 2 * sizeof(uint32_t),
                      src->nsample_type ? src->nsample_type : 1, &m->status))
        return -1;
    for (uint32_t i = 0; i < 2 * src->nsample_type; i++) {
        out->sample_type[i] = map_string(m, src->sample_type[i]);
        if (out->sample_type[i] == AP_PPROF_NONE) return -1;
    }
    out->nsample_type = src->nsample_type;
    uint32_t x[5] = {src->period_type[0], src->period_type[1], src->drop_frames, src->keep_frames,
                     src->doc_url};
    for (int i = 0; i < 5; i++)
        if ((x[i] = map_string(m, x[i])) == AP_PPROF_NONE) return -1;
    out->period_type[0] = x[0];
    out->period_type[1] = x[1];
    out->drop_frames = x[2];
    out->keep_frames = x[3];
    out->doc_url = x[4];
    return 0;
}

static int combine_header(ap_pprof_merger *m, const ap_pprof_profile *src)
{
    ap_pprof_profile *out = m->out;
    /* Exactly combineHeaders' loop body (including its handling of zero values). */
    if (out->time_nanos == 0 || src->time_nanos < out->time_nanos)
        out->time_nanos = src->time_nanos;
    out->duration_nanos = ap_add_wrap(out->duration_nanos, src->duration_nanos);
    if (out->period == 0 || out->period < src->period) out->period = src->period;
    for (uint32_t i = 0; i < src->ncomments; i++) {
        uint32_t c = map_string(m, src->comments[i]);
        if (c == AP_PPROF_NONE) return -1;
        if ((size_t)c >= m->comment_seen_cap) {
            size_t old = m->comment_seen_cap;
            if (ap_pprof_sgrow((void **)&m->comment_seen, &m->comment_seen_cap, 1, (size_t)c + 1))
                return -1;
            memset(m->comment_seen + old, 0, m->comment_seen_cap - old);
        }
        if (m->comment_seen[c]) continue; /* Go keeps the first of equal comments */
        m->comment_seen[c] = 1;
        if (ap_pprof_grow(out, (void **)&out->comments, &out->cap_comments, sizeof *out->comments,
                          (uint64_t)out->ncomments + 1, &m->status))
            return -1;
        out->comments[out->ncomments++] = c;
    }
    if (out->default_sample_type == 0 || out->strings[out->default_sample_type].len == 0) {
        uint32_t d = map_string(m, src->default_sample_type);
        if (d == AP_PPROF_NONE) return -1;
        out->default_sample_type = d;
    }
    return 0;
}

int ap_pprof_merger_add(ap_pprof_merger *m, const ap_pprof_profile *src, ap_pprof_error *err)
{
    m->status = AP_PPROF_OK;
    if (!m->out) {
        m->out = ap_pprof_profile_new();
        if (!m->out) return nomem(err);
        /* An empty intern table: every output string is unique. */
        if (ap_pprof_strings_index(m->out)) return nomem(err);
        m->ninputs = 0;
    }
    ap_pprof_profile *out = m->out;
    if (prepare_input(m, src)) return nomem(err);
    if (m->ninputs == 0) {
        if (first_input(m, src)) goto failed;
    } else if (check_compatible(m, src, err)) {
        return -1;
    }
    if (combine_header(m, src)) goto failed;

    /* The first mapping seen is the main binary: keep it first even if unused. */
    if (out->nmappings == 0 && src->nmappings > 0) {
        uint32_t x;
        int64_t off;
        if (map_mapping(m, 0, &x, &off)) goto failed;
    }
    if (map_samples(m)) goto failed;
    m->ninputs++;
    m->src = NULL;
    return 0;
failed:
    m->src = NULL;
    if (m->status == AP_PPROF_ETOOLARGE)
        return ap_pprof_fail(err, AP_PPROF_ETOOLARGE, "merged profile is too large");
    return nomem(err);
}

ap_pprof_profile *ap_pprof_merger_finish(ap_pprof_merger *m, ap_pprof_error *err)
{
    if (!m->out || m->ninputs == 0) {
        ap_pprof_fail(err, AP_PPROF_EINVAL, "no profiles to merge");
        return NULL;
    }
    ap_pprof_profile *out = m->out;
    m->out = NULL;
    free_tables(m);
    if (m->comment_seen) memset(m->comment_seen, 0, m->comment_seen_cap);
    m->ninputs = 0;
    out->labels_sorted = 1;
    out->strings_unique = 1;
    ap_pprof_profile_shrink(out);
    uint32_t nv = out->nsample_type;
    for (uint32_t i = 0; i < out->nsamples; i++) {
        int zero = 1;
        for (uint32_t k = 0; k < nv; k++) zero &= out->values[(size_t)i * nv + k] == 0;
        if (zero) {
            /* Values that cancelled out: Go re-merges the result alone to drop them. */
            ap_pprof_profile *again = NULL;
            if (ap_pprof_merger_add(m, out, err) == 0) again = ap_pprof_merger_finish(m, err);
            ap_pprof_profile_free(out);
            return again;
        }
    }
    return out;
}

ap_pprof_profile *ap_pprof_merger_profile(ap_pprof_merger *m)
{
    return m->out;
}

ap_pprof_profile *ap_pprof_merge(const ap_pprof_profile *const *srcs, size_t n, ap_pprof_error *err)
{
    ap_pprof_error_clear(err);
    if (n == 0) {
        ap_pprof_fail(err, AP_PPROF_EINVAL, "no profiles to merge");
        return NULL;
    }
    /* Go checks every input against the first before merging anything. */
    ap_pprof_merger *m = ap_pprof_merger_new();
    if (!m) {
        nomem(err);
        return NULL;
    }
    ap_pprof_profile *out = NULL;
    for (size_t i = 0; i < n; i++) {
        if (ap_pprof_merger_add(m, srcs[i], err)) {
            if (err) {
                err->input = (int)i;
                if (err->code == AP_PPROF_EINCOMPATIBLE) err->other = 0;
            }
            goto done;
        }
    }
    out = ap_pprof_merger_finish(m, err);
done:
    ap_pprof_merger_free(m);
    return out;
}

ap_pprof_profile *ap_pprof_compact(const ap_pprof_profile *p, ap_pprof_error *err)
{
    return ap_pprof_merge(&p, 1, err);
}

/* ---- keyed adds (fold.c) ---- */

/* ap_pprof_merger_add, except that the samples are not kept: each non-zero sample of src goes
 * to sink with its key (output location indices, labels as the merged profile has them) once
 * its locations are mapped, in Go's order. The tables other than the samples grow as in an add. */
int ap_pprof_merger_add_keys(ap_pprof_merger *m, const ap_pprof_profile *src,
                             ap_pprof_key_sink sink, void *ctx, ap_pprof_error *err)
{
    m->status = AP_PPROF_OK;
    if (!m->out) {
        m->out = ap_pprof_profile_new();
        if (!m->out) return nomem(err);
        if (ap_pprof_strings_index(m->out)) return nomem(err);
        m->ninputs = 0;
    }
    ap_pprof_profile *out = m->out;
    if (prepare_input(m, src)) return nomem(err);
    if (m->ninputs == 0) {
        if (first_input(m, src)) goto failed;
        free(m->samples.slots); /* the sink keeps the samples */
        if (stable_init(&m->samples, 0)) goto failed;
    } else if (check_compatible(m, src, err)) {
        return -1;
    }
    if (combine_header(m, src)) goto failed;
    if (out->nmappings == 0 && src->nmappings > 0) {
        uint32_t x;
        int64_t off;
        if (map_mapping(m, 0, &x, &off)) goto failed;
    }
    uint32_t nv = src->nsample_type;
    for (uint32_t i = 0; i < src->nsamples; i++) {
        const int64_t *v = &src->values[(size_t)i * nv];
        int zero = 1;
        for (uint32_t k = 0; k < nv; k++) zero &= v[k] == 0;
        if (zero) continue;
        pending pd;
        m->nklocs = m->nklabels = 0;
        if (build_key(m, i, &pd)) goto failed;
        if (sink(ctx, pd.nloc ? m->klocs : NULL, pd.nloc, pd.nlab ? m->klabels : NULL, pd.nlab,
                 v)) {
            m->src = NULL;
            return -1; /* the sink set err */
        }
    }
    m->ninputs++;
    m->src = NULL;
    return 0;
failed:
    m->src = NULL;
    if (m->status == AP_PPROF_ETOOLARGE)
        return ap_pprof_fail(err, AP_PPROF_ETOOLARGE, "merged profile is too large");
    return nomem(err);
}
