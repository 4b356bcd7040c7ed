/* Folding uploads into a merged profile at the cost of the uploads (see fold.h). The output is one
 * gzip member whose deflate stream is a run of independently deflated segments (each from a
 * reset stream, ended by a full flush, so no back-reference crosses one): a segment holds a range
 * of one table (samples, mappings, locations, functions or strings) and a fold deflates again
 * only the sample segments whose values changed, the last segment of each table it extends and
 * the small header segment at the end; the other segments' bytes are copied as they are and the
 * CRC-32 is combined from theirs. Readers see an ordinary gzip pprof (repeated fields may come in
 * any order; strings come in index order).
 *
 * What stays in memory follows the program, not the uploads: the merger keeps the strings,
 * functions, locations and mappings (to intern what an upload brings) but no sample; a sample is
 * a 128-bit digest of its key in an open-addressing table and its values. The deflated segments
 * live in a temp file (unlinked as soon as it is made, so nothing outlives the folder, not even a
 * kill -9): a changed sample segment is read, inflated alone, its values patched, and deflated
 * again; the whole output is read back to be handed out. */
#include "fold.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>
#include <zlib.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

#include "internal.h"

enum { K_SMP, K_MAP, K_LOC, K_FUN, K_STR, K_N };

typedef struct {
    uint8_t kind;
    uint32_t a, b; /* entries [a, b) of its table */
    uint64_t off;  /* in the temp file */
    uint32_t zlen, cap;
    uint32_t crc;
    uLong op; /* crc32_combine_gen(raw): combining with it costs one multiplication */
    uint64_t raw;
} seg;

struct ap_pprof_folder {
    ap_pprof_merger *m; /* every table but the samples, and the header */
    int level;
    uint32_t nv;
    /* Samples: index i is the output's i-th; its key's digest (2 words). Their values are in the
     * segments (pending samples: in pvals). */
    uint64_t *dig;
    uint32_t nsamples;
    size_t cap_dig;
    uint32_t *slots; /* open addressing: sample index + 1, probed from the digest's top bits */
    uint32_t sbits;
    /* Samples not yet in segments ([done[K_SMP], nsamples)): their keys encoded (a varint length
     * of the location field, the location field, the label fields) at pend[poff[k]..poff[k+1]),
     * and their values at pvals[k * nv]. */
    uint8_t *pend;
    size_t plen, cap_pend;
    size_t *poff;
    size_t cap_poff;
    int64_t *pvals;
    size_t cap_pvals;
    /* What the adds of this fold add to samples in segments: entry e is sample dx[e] + dv[e * nv];
     * dslot an open-addressing table of e + 1 by sample (2^dbits slots). An entry is zeroed once
     * its segment is written with it. */
    uint32_t *dx, *dslot;
    int64_t *dv;
    size_t nd, cap_dx, cap_dv;
    uint32_t dbits;
    seg *segs; /* in output order */
    size_t nseg, capseg;
    uint32_t *sseg; /* the sample segments, in sample order */
    size_t nsseg, cap_sseg;
    uint32_t done[K_N];  /* entries of each table already in segments */
    size_t last[K_N];    /* the table's last segment + 1 (0: none) */
    uint64_t raw_layout; /* protobuf bytes of the last full layout */
    uint64_t raw_appended;
    int fd;                 /* the temp file of the segments */
    uint64_t fend, garbage; /* its size; bytes of it no segment uses */
    z_stream zs, is;
    int zs_init, is_init;
    uint8_t *buf; /* one segment's protobuf */
    size_t blen, bcap;
    uint8_t *zb; /* one segment deflated */
    size_t zcap;
    uint8_t *ib; /* one segment read back and inflated */
    size_t icap;
    uint64_t *ids;
    size_t cap_ids;
    uint32_t *locs;
    size_t cap_locs;
    uint8_t *dirty;
    size_t cap_dirty;
    /* Prune: the rules each location matches, and the samples a Prune would cut again. */
    uint64_t *marks;
    size_t cap_marks;
    uint32_t nmarked, ncounted;
    uint64_t ncut;
    int fresh;           /* the base was pruned by this folder and nothing folded yet */
    ap_pprof_error *err; /* of the call in progress (the sink's) */
    ap_pprof_fold_stats st;
};

static int nomem(ap_pprof_error *err)
{
    return ap_pprof_fail(err, AP_PPROF_ENOMEM, "out of memory while folding");
}

static int ioerr(ap_pprof_error *err, const char *what)
{
    return ap_pprof_fail(err, AP_PPROF_EIO, "folder temp file: %s: %s", what, strerror(errno));
}

/* ---- protobuf of one entry, appended to f->buf ---- */

#define FIELD_MAX 12

static inline uint8_t *put_key(uint8_t *b, unsigned field, unsigned wt)
{
    return ap_put_varint(b, ((uint64_t)field << 3) | wt);
}

static inline uint8_t *put_u64(uint8_t *b, unsigned field, uint64_t v)
{
    return ap_put_varint(put_key(b, field, 0), v);
}

static inline uint8_t *put_opt(uint8_t *b, unsigned field, uint64_t v)
{
    return v ? put_u64(b, field, v) : b;
}

/* Go's encodeUint64s: packed past two values. */
static uint8_t *put_repeated(uint8_t *b, unsigned field, const uint64_t *v, uint32_t n)
{
    if (n <= 2) {
        for (uint32_t i = 0; i < n; i++) b = put_u64(b, field, v[i]);
        return b;
    }
    size_t len = 0;
    for (uint32_t i = 0; i < n; i++) len += ap_varint_size(v[i]);
    b = ap_put_varint(put_key(b, field, 2), len);
    for (uint32_t i = 0; i < n; i++) b = ap_put_varint(b, v[i]);
    return b;
}

/* Writes a message: field key, length, then the body built at body[0..n) (moved into place). */
static uint8_t *close_message(uint8_t *at, unsigned field, uint8_t *body, size_t n)
{
    uint8_t hdr[FIELD_MAX], *h = ap_put_varint(put_key(hdr, field, 2), n);
    size_t hl = (size_t)(h - hdr);
    memmove(at + hl, body, n);
    memcpy(at, hdr, hl);
    return at + hl + n;
}

static int reserve(ap_pprof_folder *f, size_t n)
{
    return ap_pprof_sgrow((void **)&f->buf, &f->bcap, 1, f->blen + n);
}

/* Entry i of a table other than the samples (which the folder keeps itself). */
static int put_entry(ap_pprof_folder *f, const ap_pprof_profile *p, int kind, uint32_t i)
{
    const ap_pprof_location *l = kind == K_LOC ? &p->locations[i] : NULL;
    size_t need = l ? (size_t)l->nline * 4 * FIELD_MAX : kind == K_STR ? p->strings[i].len : 0;
    need = 2 * need + 16 * FIELD_MAX; /* the body is built past the slot of its header */
    if (reserve(f, need)) return -1;
    uint8_t *at = f->buf + f->blen, *body = at + 2 * FIELD_MAX, *b = body;
    unsigned field;
    switch (kind) {
    case K_MAP: {
        const ap_pprof_mapping *m = &p->mappings[i];
        b = put_opt(b, 1, m->id);
        b = put_opt(b, 2, m->start);
        b = put_opt(b, 3, m->limit);
        b = put_opt(b, 4, m->offset);
        b = put_opt(b, 5, m->file);
        b = put_opt(b, 6, m->build_id);
        for (unsigned k = 0; k < 4; k++)
            if (m->flags & (1u << k)) b = put_u64(b, 7 + k, 1);
        field = 3;
        break;
    }
    case K_LOC:
        b = put_opt(b, 1, l->id);
        b = put_opt(b, 2, l->mapping == AP_PPROF_NONE ? 0 : p->mappings[l->mapping].id);
        b = put_opt(b, 3, l->address);
        for (uint32_t j = 0; j < l->nline; j++) {
            const ap_pprof_line *ln = &p->lines[l->line_off + j];
            uint8_t lbody[3 * FIELD_MAX], *q = lbody;
            q = put_opt(q, 1, p->functions[ln->function].id);
            q = put_opt(q, 2, (uint64_t)ln->line);
            q = put_opt(q, 3, (uint64_t)ln->column);
            b = ap_put_varint(put_key(b, 4, 2), (uint64_t)(q - lbody));
            memcpy(b, lbody, (size_t)(q - lbody));
            b += q - lbody;
        }
        if (l->is_folded) b = put_u64(b, 5, 1);
        field = 4;
        break;
    case K_FUN: {
        const ap_pprof_function *fn = &p->functions[i];
        b = put_opt(b, 1, fn->id);
        b = put_opt(b, 2, fn->name);
        b = put_opt(b, 3, fn->system_name);
        b = put_opt(b, 4, fn->filename);
        b = put_opt(b, 5, (uint64_t)fn->start_line);
        field = 5;
        break;
    }
    default:
        memcpy(b, p->strings[i].ptr, p->strings[i].len);
        b += p->strings[i].len;
        field = 6;
        break;
    }
    f->blen += (size_t)(close_message(at, field, body, (size_t)(b - body)) - at);
    return 0;
}

/* The scalars and small repeated fields, written last (the merged strings are unique, so string
 * indices are written as they are). */
static int put_header(ap_pprof_folder *f, const ap_pprof_profile *p)
{
    if (reserve(f, ((size_t)p->nsample_type * 2 + p->ncomments + 20) * FIELD_MAX)) return -1;
    uint8_t *b = f->buf + f->blen;
    for (uint32_t i = 0; i < p->nsample_type; i++) {
        uint8_t body[2 * FIELD_MAX], *q = body;
        q = put_opt(q, 1, p->sample_type[2 * i]);
        q = put_opt(q, 2, p->sample_type[2 * i + 1]);
        b = ap_put_varint(put_key(b, 1, 2), (uint64_t)(q - body));
        memcpy(b, body, (size_t)(q - body));
        b += q - body;
    }
    b = put_opt(b, 7, p->drop_frames);
    b = put_opt(b, 8, p->keep_frames);
    b = put_opt(b, 9, (uint64_t)p->time_nanos);
    b = put_opt(b, 10, (uint64_t)p->duration_nanos);
    if (p->period_type[0] || p->period_type[1]) {
        uint8_t body[2 * FIELD_MAX], *q = body;
        q = put_opt(q, 1, p->period_type[0]);
        q = put_opt(q, 2, p->period_type[1]);
        b = ap_put_varint(put_key(b, 11, 2), (uint64_t)(q - body));
        memcpy(b, body, (size_t)(q - body));
        b += q - body;
    }
    b = put_opt(b, 12, (uint64_t)p->period);
    for (uint32_t i = 0; i < p->ncomments; i++) {
        uint64_t c = p->comments[i];
        if (ap_pprof_sgrow((void **)&f->ids, &f->cap_ids, sizeof *f->ids, p->ncomments)) return -1;
        f->ids[i] = c;
    }
    b = put_repeated(b, 13, f->ids, p->ncomments);
    b = put_u64(b, 14, p->default_sample_type); /* Go always writes it */
    b = put_opt(b, 15, p->doc_url);
    f->blen = (size_t)(b - f->buf);
    return 0;
}

/* ---- samples: the digest table and the pending keys ---- */

#define SEED2 0x9e3779b97f4a7c15ull

static int slots_init(ap_pprof_folder *f, uint64_t expect)
{
    uint64_t cap = ap_pow2(expect * 2 + 64);
    if (cap > (1ull << 32)) return -1;
    uint32_t *s = calloc(cap, sizeof *s);
    if (!s) return -1;
    free(f->slots);
    f->slots = s;
    f->sbits = 0;
    while ((1ull << f->sbits) < cap) f->sbits++;
    return 0;
}

static int slots_grow(ap_pprof_folder *f)
{
    uint32_t *old = f->slots;
    f->slots = NULL;
    if (slots_init(f, (uint64_t)1 << f->sbits)) {
        f->slots = old;
        return -1;
    }
    free(old);
    uint64_t mask = (1ull << f->sbits) - 1;
    for (uint32_t i = 0; i < f->nsamples; i++) {
        uint64_t j = f->dig[2 * (size_t)i] >> (64 - f->sbits);
        while (f->slots[j]) j = (j + 1) & mask;
        f->slots[j] = i + 1;
    }
    return 0;
}

/* A sample's key as the folder writes it: the location ids, then the labels (put_entry of
 * Go's encoder), after a varint length of the location field. */
static int put_key_bytes(ap_pprof_folder *f, const uint32_t *locs, uint32_t nloc,
                         const ap_pprof_label *lb, uint32_t nl)
{
    size_t need = ((size_t)nloc + 1) * FIELD_MAX + (size_t)nl * 6 * FIELD_MAX + FIELD_MAX;
    if (ap_pprof_sgrow((void **)&f->pend, &f->cap_pend, 1, f->plen + need) ||
        ap_pprof_sgrow((void **)&f->ids, &f->cap_ids, sizeof *f->ids, (size_t)nloc + 1))
        return -1;
    for (uint32_t j = 0; j < nloc; j++) f->ids[j] = (uint64_t)locs[j] + 1; /* id = index + 1 */
    size_t flen;                                                           /* put_repeated's size */
    if (nloc > 2) {
        size_t len = 0;
        for (uint32_t j = 0; j < nloc; j++) len += ap_varint_size(f->ids[j]);
        flen = 1 + ap_varint_size(len) + len;
    } else {
        flen = 0;
        for (uint32_t j = 0; j < nloc; j++) flen += 1 + ap_varint_size(f->ids[j]);
    }
    uint8_t *b = ap_put_varint(f->pend + f->plen, flen);
    b = put_repeated(b, 1, f->ids, nloc);
    for (uint32_t j = 0; j < nl; j++) {
        uint8_t lbody[4 * FIELD_MAX], *q = lbody;
        q = put_opt(q, 1, lb[j].key);
        if (!(lb[j].flags & AP_PPROF_LABEL_NUM)) {
            q = put_opt(q, 2, lb[j].str);
        } else {
            q = put_opt(q, 3, (uint64_t)lb[j].num);
            if (lb[j].flags & AP_PPROF_LABEL_UNIT_SET) q = put_opt(q, 4, lb[j].unit);
        }
        b = ap_put_varint(put_key(b, 3, 2), (uint64_t)(q - lbody));
        memcpy(b, lbody, (size_t)(q - lbody));
        b += q - lbody;
    }
    f->plen = (size_t)(b - f->pend);
    return 0;
}

/* The delta of sample x (in a segment) in this fold: NULL when it has none (or, with add, when
 * out of memory: a new zero one otherwise). */
static int64_t *delta(ap_pprof_folder *f, uint32_t x, int add)
{
    uint32_t nv = f->nv ? f->nv : 1;
    if (f->dslot) {
        uint64_t mask = (1ull << f->dbits) - 1, j = ap_hash_u64(x) >> (64 - f->dbits);
        for (; f->dslot[j]; j = (j + 1) & mask)
            if (f->dx[f->dslot[j] - 1] == x) return &f->dv[(size_t)(f->dslot[j] - 1) * nv];
        if (!add) return NULL;
        if ((f->nd + 1) * 2 <= (1ull << f->dbits)) {
            if (ap_pprof_sgrow((void **)&f->dx, &f->cap_dx, sizeof *f->dx, f->nd + 1) ||
                ap_pprof_sgrow((void **)&f->dv, &f->cap_dv, nv * sizeof *f->dv, f->nd + 1))
                return NULL;
            f->dx[f->nd] = x;
            memset(&f->dv[f->nd * nv], 0, nv * sizeof *f->dv);
            f->dslot[j] = (uint32_t)++f->nd;
            return &f->dv[(f->nd - 1) * nv];
        }
    } else if (!add) {
        return NULL;
    }
    /* (re)build the table twice as large, then add */
    uint32_t bits = f->dslot ? f->dbits + 1 : 10;
    uint32_t *ns = calloc((size_t)1 << bits, sizeof *ns);
    if (!ns) return NULL;
    free(f->dslot);
    f->dslot = ns;
    f->dbits = bits;
    uint64_t mask = (1ull << bits) - 1;
    for (size_t e = 0; e < f->nd; e++) {
        uint64_t j = ap_hash_u64(f->dx[e]) >> (64 - bits);
        while (ns[j]) j = (j + 1) & mask;
        ns[j] = (uint32_t)e + 1;
    }
    return delta(f, x, 1);
}

/* Forgets this fold's deltas. */
static void deltas_clear(ap_pprof_folder *f)
{
    if (f->dslot) memset(f->dslot, 0, ((size_t)1 << f->dbits) * sizeof *f->dslot);
    f->nd = 0;
}

static int all_zero(const int64_t *v, uint32_t nv)
{
    for (uint32_t k = 0; k < nv; k++)
        if (v[k]) return 0;
    return 1;
}

/* The merger's sink: a sample found again adds its values, a new one is indexed and its key kept
 * until it is written. */
static int sink(void *ctx, const uint32_t *locs, uint32_t nloc, const ap_pprof_label *lb,
                uint32_t nl, const int64_t *v)
{
    ap_pprof_folder *f = ctx;
    uint32_t nv = f->nv;
    uint64_t h1 = ap_hash_bytes(locs, (size_t)nloc * 4, nl);
    uint64_t h2 = ap_hash_bytes(locs, (size_t)nloc * 4, nl ^ SEED2);
    if (nl) {
        h1 = ap_hash_bytes(lb, nl * sizeof *lb, h1);
        h2 = ap_hash_bytes(lb, nl * sizeof *lb, h2 ^ SEED2);
    }
    uint64_t mask = (1ull << f->sbits) - 1, j = h1 >> (64 - f->sbits);
    for (; f->slots[j]; j = (j + 1) & mask) {
        uint32_t x = f->slots[j] - 1;
        if (f->dig[2 * (size_t)x] != h1 || f->dig[2 * (size_t)x + 1] != h2) continue;
        int64_t *ov =
            x >= f->done[K_SMP] ? &f->pvals[(size_t)(x - f->done[K_SMP]) * nv] : delta(f, x, 1);
        if (!ov) return nomem(f->err);
        for (uint32_t k = 0; k < nv; k++) ov[k] = ap_add_wrap(ov[k], v[k]);
        return 0;
    }
    uint32_t x = f->nsamples;
    size_t k = x - f->done[K_SMP];
    if (x == UINT32_MAX ||
        ap_pprof_sgrow((void **)&f->dig, &f->cap_dig, 2 * sizeof *f->dig, (size_t)x + 1) ||
        ap_pprof_sgrow((void **)&f->pvals, &f->cap_pvals, (nv ? nv : 1) * sizeof *f->pvals,
                       k + 1) ||
        ap_pprof_sgrow((void **)&f->poff, &f->cap_poff, sizeof *f->poff, k + 2))
        return nomem(f->err);
    f->poff[k] = f->plen;
    if (put_key_bytes(f, locs, nloc, lb, nl)) return nomem(f->err);
    f->poff[k + 1] = f->plen;
    f->dig[2 * (size_t)x] = h1;
    f->dig[2 * (size_t)x + 1] = h2;
    memcpy(&f->pvals[k * nv], v, nv * sizeof *v);
    f->slots[j] = x + 1;
    f->nsamples++;
    if ((uint64_t)f->nsamples * 2 > (1ull << f->sbits) && slots_grow(f)) return nomem(f->err);
    return 0;
}

/* The pending key of sample x: the location field and the label fields. */
static void pending_key(const ap_pprof_folder *f, uint32_t x, const uint8_t **loc, size_t *nloc,
                        const uint8_t **lab, size_t *nlab)
{
    size_t k = x - f->done[K_SMP];
    const uint8_t *p = f->pend + f->poff[k], *end = f->pend + f->poff[k + 1];
    uint64_t n = 0;
    p = ap_varint(p, end, &n);
    *loc = p;
    *nloc = (size_t)n;
    *lab = p + n;
    *nlab = (size_t)(end - (p + n));
}

/* Appends sample message: its key's location field, its values, its label fields. */
static int put_sample(ap_pprof_folder *f, const uint8_t *loc, size_t nloc, const uint8_t *lab,
                      size_t nlab, const int64_t *v)
{
    uint8_t vb[FIELD_MAX * 2 + 8 * FIELD_MAX], *q = vb;
    uint8_t *heap = NULL;
    if (f->nv > 8) {
        heap = malloc(((size_t)f->nv + 2) * FIELD_MAX);
        if (!heap) return -1;
        q = heap;
    }
    uint8_t *vs = q;
    q = put_repeated(q, 2, (const uint64_t *)v, f->nv);
    size_t nval = (size_t)(q - vs), body = nloc + nval + nlab;
    int rc = reserve(f, 2 * FIELD_MAX + body);
    if (!rc) {
        uint8_t *b = ap_put_varint(put_key(f->buf + f->blen, 2, 2), body);
        memcpy(b, loc, nloc);
        memcpy(b + nloc, vs, nval);
        memcpy(b + nloc + nval, lab, nlab);
        f->blen = (size_t)(b + body - f->buf);
    }
    free(heap);
    return rc;
}

/* Splits the next sample message of an inflated segment into its location and label fields
 * (the folder wrote it: locations, values, labels). Returns the byte after it, NULL if bad. */
static const uint8_t *split_sample(const uint8_t *p, const uint8_t *end, const uint8_t **loc,
                                   size_t *nloc, const uint8_t **val, const uint8_t **lab,
                                   size_t *nlab)
{
    uint64_t key, len;
    if (!(p = ap_varint(p, end, &key)) || key != ((2u << 3) | 2) ||
        !(p = ap_varint(p, end, &len)) || len > (uint64_t)(end - p))
        return NULL;
    const uint8_t *q = p, *mend = p + len, *v0 = NULL, *v1 = NULL;
    while (q < mend) {
        const uint8_t *at = q;
        uint64_t k, x;
        if (!(q = ap_varint(q, mend, &k))) return NULL;
        if ((k & 7) == 0) {
            if (!(q = ap_varint(q, mend, &x))) return NULL;
        } else if ((k & 7) == 2) {
            if (!(q = ap_varint(q, mend, &x)) || x > (uint64_t)(mend - q)) return NULL;
            q += x;
        } else {
            return NULL;
        }
        if ((k >> 3) == 2) {
            if (!v0) v0 = at;
            v1 = q;
        }
    }
    if (!v0) v0 = v1 = mend; /* no values: cannot be, a zero sample is dropped */
    *loc = p;
    *nloc = (size_t)(v0 - p);
    *val = v0;
    *lab = v1;
    *nlab = (size_t)(mend - v1);
    return mend;
}

/* Reads the values field(s) [p, end) of a sample the folder wrote (packed past two values) into
 * v; 0, or -1 when they are not nv values. */
static int read_values(const uint8_t *p, const uint8_t *end, int64_t *v, uint32_t nv)
{
    uint32_t n = 0;
    while (p < end) {
        uint64_t k, x, len;
        if (!(p = ap_varint(p, end, &k))) return -1;
        if ((k & 7) == 0) {
            if (!(p = ap_varint(p, end, &x)) || n >= nv) return -1;
            v[n++] = (int64_t)x;
        } else {
            if (!(p = ap_varint(p, end, &len)) || len > (uint64_t)(end - p)) return -1;
            const uint8_t *pe = p + len;
            while (p < pe) {
                if (!(p = ap_varint(p, pe, &x)) || n >= nv) return -1;
                v[n++] = (int64_t)x;
            }
        }
    }
    return n == nv ? 0 : -1;
}

/* ---- the temp file ---- */

static int pread_all(int fd, void *b, size_t n, uint64_t off)
{
    uint8_t *p = b;
    while (n) {
        ssize_t r = pread(fd, p, n, (off_t)off);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            if (r == 0) errno = EIO;
            return -1;
        }
        p += r;
        n -= (size_t)r;
        off += (uint64_t)r;
    }
    return 0;
}

static int pwrite_all(int fd, const void *b, size_t n, uint64_t off)
{
    const uint8_t *p = b;
    while (n) {
        ssize_t r = pwrite(fd, p, n, (off_t)off);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            if (r == 0) errno = EIO;
            return -1;
        }
        p += r;
        n -= (size_t)r;
        off += (uint64_t)r;
    }
    return 0;
}

/* A temp file under $TMPDIR (else /tmp), unlinked at once: closing it (or dying) frees it. */
static int temp_open(ap_pprof_error *err)
{
    const char *dir = getenv("TMPDIR");
    if (!dir || !*dir) dir = "/tmp";
    char path[4096];
    if (snprintf(path, sizeof path, "%s/autopgo-fold-XXXXXX", dir) >= (int)sizeof path) {
        errno = ENAMETOOLONG;
        return ioerr(err, "create");
    }
    int fd = mkstemp(path);
    if (fd < 0) return ioerr(err, "create");
    unlink(path);
    return fd;
}

/* ---- segments ---- */

/* Deflates f->buf from a reset stream into f->zb: a full flush (byte-aligned, no BFINAL), or the
 * end of the stream when last; sets the segment's CRC and sizes. */
static int deflate_buf(ap_pprof_folder *f, int last, seg *s)
{
    if (deflateReset(&f->zs) != Z_OK) return -1;
    size_t cap = deflateBound(&f->zs, f->blen) + 64;
    if (ap_pprof_sgrow((void **)&f->zb, &f->zcap, 1, cap)) return -1;
    cap = f->zcap;
    f->zs.next_in = f->buf;
    f->zs.avail_in = (uInt)f->blen;
    f->zs.next_out = f->zb;
    f->zs.avail_out = (uInt)cap;
    int rc = deflate(&f->zs, last ? Z_FINISH : Z_FULL_FLUSH);
    if (rc != (last ? Z_STREAM_END : Z_OK) || f->zs.avail_in != 0) return -1;
    s->zlen = (uint32_t)(cap - f->zs.avail_out);
    s->crc = (uint32_t)crc32(0, f->buf, (uInt)f->blen);
    s->raw = f->blen;
    s->op = crc32_combine_gen((z_off_t)f->blen);
    f->st.rewritten++;
    f->st.raw_deflated += f->blen;
    return 0;
}

/* Deflates f->buf into segment s and writes it to the file: in its place when it fits, else at
 * the end (with room to grow: values change the size a little). */
static int store_seg(ap_pprof_folder *f, seg *s)
{
    if (deflate_buf(f, 0, s)) return nomem(f->err);
    if (s->zlen > s->cap) {
        f->garbage += s->cap;
        s->off = f->fend;
        s->cap = s->zlen + s->zlen / 8 + 16;
        f->fend += s->cap;
    }
    if (pwrite_all(f->fd, f->zb, s->zlen, s->off)) return ioerr(f->err, "write");
    return 0;
}

/* Reads segment s back and inflates it into f->ib (s->raw bytes). */
static int inflate_seg(ap_pprof_folder *f, const seg *s)
{
    if (ap_pprof_sgrow((void **)&f->zb, &f->zcap, 1, s->zlen) ||
        ap_pprof_sgrow((void **)&f->ib, &f->icap, 1, s->raw + 1))
        return nomem(f->err);
    if (pread_all(f->fd, f->zb, s->zlen, s->off)) return ioerr(f->err, "read");
    if (inflateReset(&f->is) != Z_OK) return nomem(f->err);
    f->is.next_in = f->zb;
    f->is.avail_in = s->zlen;
    f->is.next_out = f->ib;
    f->is.avail_out = (uInt)(s->raw + 1);
    int rc = inflate(&f->is, Z_SYNC_FLUSH);
    if ((rc != Z_OK && rc != Z_BUF_ERROR) || f->is.total_out != s->raw)
        return ap_pprof_fail(f->err, AP_PPROF_EIO, "folder temp file: a segment reads back wrong");
    return 0;
}

static seg *seg_add(ap_pprof_folder *f, int kind)
{
    if (ap_pprof_sgrow((void **)&f->segs, &f->capseg, sizeof *f->segs, f->nseg + 1)) return NULL;
    if (kind == K_SMP) {
        if (ap_pprof_sgrow((void **)&f->sseg, &f->cap_sseg, sizeof *f->sseg, f->nsseg + 1))
            return NULL;
        f->sseg[f->nsseg++] = (uint32_t)f->nseg;
    }
    seg *s = &f->segs[f->nseg++];
    memset(s, 0, sizeof *s);
    s->kind = (uint8_t)kind;
    f->last[kind] = f->nseg;
    return s;
}

/* Writes entries [a, b) of a table other than the samples into segments of about
 * AP_PPROF_FOLD_SEGMENT bytes; the first goes into segment `into` (an index + 1, 0 for a new
 * one), the others are added at the end. */
static int write_range(ap_pprof_folder *f, const ap_pprof_profile *p, int kind, uint32_t a,
                       uint32_t b, size_t into)
{
    uint32_t start = a;
    f->blen = 0;
    for (uint32_t i = a; i < b; i++) {
        if (put_entry(f, p, kind, i)) return nomem(f->err);
        if (f->blen < AP_PPROF_FOLD_SEGMENT && i + 1 < b) continue;
        seg *s = into ? &f->segs[into - 1] : seg_add(f, kind);
        if (!s) return nomem(f->err);
        into = 0;
        s->a = start;
        s->b = i + 1;
        if (store_seg(f, s)) return -1;
        start = i + 1;
        f->blen = 0;
    }
    return 0;
}

/* Writes samples [a, b) with their current values: those of segment `into` (an index + 1, 0 for
 * none) from its bytes plus their deltas (applied, then zeroed), the others (pending) from their
 * keys and values; into one segment when whole, else into segments of about
 * AP_PPROF_FOLD_SEGMENT bytes, the first into `into`. 1 (err set) when a sum cancels out. */
static int write_samples(ap_pprof_folder *f, size_t into, uint32_t a, uint32_t b, int whole)
{
    const uint8_t *ip = NULL, *iend = NULL;
    uint32_t old_b = a, start = a;
    if (into) {
        const seg *s = &f->segs[into - 1];
        if (inflate_seg(f, s)) return -1;
        ip = f->ib;
        iend = ip + s->raw;
        old_b = s->b;
    }
    uint32_t nv = f->nv;
    if (ap_pprof_sgrow((void **)&f->ids, &f->cap_ids, sizeof *f->ids, (size_t)nv + 1))
        return nomem(f->err);
    int64_t *v = (int64_t *)f->ids;
    f->blen = 0;
    for (uint32_t i = a; i < b; i++) {
        const uint8_t *loc, *val, *lab;
        size_t nloc, nlab;
        if (i < old_b) {
            if (!(ip = split_sample(ip, iend, &loc, &nloc, &val, &lab, &nlab)) ||
                read_values(val, lab, v, nv))
                return ap_pprof_fail(f->err, AP_PPROF_EIO, "folder temp file: a bad segment");
            int64_t *d = f->nd ? delta(f, i, 0) : NULL;
            if (d) {
                for (uint32_t k = 0; k < nv; k++) v[k] = ap_add_wrap(v[k], d[k]);
                memset(d, 0, nv * sizeof *d);
                if (all_zero(v, nv)) {
                    ap_pprof_fail(f->err, AP_PPROF_EINVAL,
                                  "a sum cancelled out to zero: merge in full");
                    return 1;
                }
            }
        } else {
            pending_key(f, i, &loc, &nloc, &lab, &nlab);
            v = &f->pvals[(size_t)(i - f->done[K_SMP]) * nv];
        }
        if (put_sample(f, loc, nloc, lab, nlab, v)) return nomem(f->err);
        v = (int64_t *)f->ids;
        if ((whole || f->blen < AP_PPROF_FOLD_SEGMENT) && i + 1 < b) continue;
        seg *s = into ? &f->segs[into - 1] : seg_add(f, K_SMP);
        if (!s) return nomem(f->err);
        into = 0;
        s->a = start;
        s->b = i + 1;
        if (store_seg(f, s)) return -1;
        start = i + 1;
        f->blen = 0;
    }
    return 0;
}

static int segs_clear(ap_pprof_folder *f)
{
    f->nseg = f->nsseg = 0;
    memset(f->done, 0, sizeof f->done);
    memset(f->last, 0, sizeof f->last);
    f->fend = f->garbage = 0;
    return f->fd >= 0 && ftruncate(f->fd, 0) ? ioerr(f->err, "truncate") : 0;
}

/* Extends every table's segments to its current end: the last segment of a table is written
 * again with the new entries while it is under the segment size, the rest go in new segments.
 * The pending sample keys are written, and dropped. */
static int extend(ap_pprof_folder *f)
{
    const ap_pprof_profile *p = ap_pprof_merger_profile(f->m);
    uint32_t count[K_N] = {f->nsamples, p->nmappings, p->nlocations, p->nfunctions, p->nstrings};
    for (int k = 0; k < K_N; k++) {
        if (count[k] == f->done[k]) continue;
        uint32_t a = f->done[k];
        size_t into = 0;
        if (f->last[k]) {
            seg *l = &f->segs[f->last[k] - 1];
            if (l->b == a && l->raw < AP_PPROF_FOLD_SEGMENT) {
                into = f->last[k];
                a = l->a;
            }
        }
        uint64_t raw0 = f->st.raw_deflated;
        int rc = k == K_SMP ? write_samples(f, into, a, count[k], 0)
                            : write_range(f, p, k, a, count[k], into);
        if (rc) return rc;
        if (f->raw_layout) f->raw_appended += f->st.raw_deflated - raw0;
        f->done[k] = count[k];
    }
    f->plen = 0;
    return 0;
}

/* ---- Prune ---- */

/* Marks the new locations and counts the new samples (all pending) that a Prune would cut. */
static int update_marks(ap_pprof_folder *f, const ap_pprof_pruner *pr)
{
    const ap_pprof_profile *p = ap_pprof_merger_profile(f->m);
    if (ap_pprof_sgrow((void **)&f->marks, &f->cap_marks, sizeof *f->marks,
                       (size_t)p->nlocations + 1))
        return nomem(f->err);
    if (ap_pprof_prune_marks(p, pr, f->nmarked, p->nlocations, f->marks, f->err)) return -1;
    f->nmarked = p->nlocations;
    for (uint32_t s = f->ncounted; s < f->nsamples; s++) {
        const uint8_t *loc, *lab, *q, *end;
        size_t nloc, nlab;
        pending_key(f, s, &loc, &nloc, &lab, &nlab);
        uint32_t n = 0;
        if (ap_pprof_sgrow((void **)&f->locs, &f->cap_locs, sizeof *f->locs, nloc + 1))
            return nomem(f->err);
        for (q = loc, end = loc + nloc; q < end;) {
            uint64_t k = 0, v = 0, len = 0; /* the folder's own bytes: well formed */
            q = ap_varint(q, end, &k);
            if ((k & 7) == 2) {
                q = ap_varint(q, end, &len);
                const uint8_t *pe = q + len;
                while (q < pe) {
                    q = ap_varint(q, pe, &v);
                    f->locs[n++] = (uint32_t)(v - 1);
                }
            } else {
                q = ap_varint(q, end, &v);
                f->locs[n++] = (uint32_t)(v - 1);
            }
        }
        f->ncut += (uint64_t)ap_pprof_prune_would_cut_locs(f->marks, f->locs, n);
    }
    f->ncounted = f->nsamples;
    return 0;
}

/* ---- layout ---- */

typedef struct {
    uint64_t w;
    uint32_t i;
} weighted;

/* Heaviest first, then in the original order (a total order: the layout is deterministic). */
static int by_weight(const void *a, const void *b)
{
    const weighted *x = a, *y = b;
    if (x->w != y->w) return x->w > y->w ? -1 : 1;
    return x->i < y->i ? -1 : x->i > y->i;
}

/* Lays the whole profile out again, hottest samples first (by the default type's magnitude), so
 * that the samples uploads keep changing share few segments: a new merger over the reordered
 * profile (Merge of one profile: tables as Go's Compact has them). */
static int layout(ap_pprof_folder *f, const ap_pprof_profile *src, const ap_pprof_pruner *pr)
{
    uint32_t n = src->nsamples, nv = src->nsample_type;
    int d = ap_pprof_default_index(src);
    weighted *order = malloc(((size_t)n + 1) * sizeof *order);
    ap_pprof_sample *ss = malloc(((size_t)n + 1) * sizeof *ss);
    int64_t *vv = malloc(((size_t)n * nv + 1) * sizeof *vv);
    ap_pprof_merger *m = ap_pprof_merger_new();
    int rc = -1;
    if (!order || !ss || !vv || !m || slots_init(f, n)) {
        nomem(f->err);
        ap_pprof_merger_free(m);
        goto done;
    }
    for (uint32_t i = 0; i < n; i++) {
        int64_t v = d >= 0 ? src->values[(size_t)i * nv + (uint32_t)d] : 0;
        order[i].w = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
        order[i].i = i;
    }
    qsort(order, n, sizeof *order, by_weight);
    for (uint32_t i = 0; i < n; i++) {
        ss[i] = src->samples[order[i].i];
        memcpy(&vv[(size_t)i * nv], &src->values[(size_t)order[i].i * nv], nv * sizeof *vv);
    }
    free(order);
    order = NULL;
    ap_pprof_profile view = *src;
    view.samples = ss;
    view.values = vv;
    ap_pprof_merger_free(f->m);
    f->m = m;
    f->nv = nv;
    f->nsamples = 0;
    f->plen = 0;
    deltas_clear(f);
    f->nmarked = f->ncounted = 0; /* indices change */
    f->ncut = 0;
    if (segs_clear(f)) goto done;
    if (ap_pprof_merger_add_keys(m, &view, sink, f, f->err)) goto done;
    free(ss);
    free(vv);
    ss = NULL;
    vv = NULL;
    if (pr && update_marks(f, pr)) goto done;
    f->raw_layout = 0;
    if (extend(f)) goto done;
    uint64_t raw = 0;
    for (size_t i = 0; i < f->nseg; i++) raw += f->segs[i].raw;
    f->raw_layout = raw ? raw : 1;
    f->raw_appended = 0;
    /* What only the layout needed: the keys and values of the whole base. */
    free(f->pend);
    free(f->poff);
    free(f->pvals);
    f->pend = NULL;
    f->poff = NULL;
    f->pvals = NULL;
    f->cap_pend = f->cap_poff = f->cap_pvals = 0;
    f->st.compacted = 1;
    rc = 0;
done:
    free(order);
    free(ss);
    free(vv);
    return rc;
}

/* Gives the heap freed by a layout (the decoded profile) back to the system: what stays is the
 * folder's. */
static void trim(void)
{
#ifdef __GLIBC__
    malloc_trim(0);
#endif
}

/* ---- output ---- */

/* gzip: header, the segments (read back from the file), the header segment (ending the stream),
 * CRC-32 and size, in a new buffer. */
static int write_out(ap_pprof_folder *f, uint8_t **out, size_t *len)
{
    seg hdr;
    memset(&hdr, 0, sizeof hdr);
    f->blen = 0;
    if (put_header(f, ap_pprof_merger_profile(f->m)) || deflate_buf(f, 1, &hdr))
        return nomem(f->err);
    size_t total = 10 + hdr.zlen + 8;
    uint64_t raw = hdr.raw;
    for (size_t i = 0; i < f->nseg; i++) total += f->segs[i].zlen;
    uint8_t *o = malloc(total), *w = o;
    if (!o) return nomem(f->err);
    static const uint8_t gz[10] = {0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff};
    memcpy(w, gz, sizeof gz);
    w += sizeof gz;
    uLong crc = crc32(0, NULL, 0);
    /* The file mapped for the copy only: its pages are the page cache's, not the folder's. */
    const uint8_t *file = NULL;
    if (f->fend) {
        void *mp = mmap(NULL, f->fend, PROT_READ, MAP_SHARED | MAP_POPULATE, f->fd, 0);
        if (mp == MAP_FAILED) {
            free(o);
            return ioerr(f->err, "map");
        }
        file = mp;
    }
    for (size_t i = 0; i < f->nseg; i++) {
        const seg *s = &f->segs[i];
        memcpy(w, file + s->off, s->zlen);
        w += s->zlen;
        crc = crc32_combine_op(crc, s->crc, s->op);
        raw += s->raw;
    }
    if (file) munmap((void *)file, f->fend);
    memcpy(w, f->zb, hdr.zlen);
    w += hdr.zlen;
    crc = crc32_combine(crc, hdr.crc, (z_off_t)hdr.raw);
    for (int i = 0; i < 4; i++) *w++ = (uint8_t)(crc >> (8 * i));
    for (int i = 0; i < 4; i++) *w++ = (uint8_t)(raw >> (8 * i));
    *out = o;
    *len = total;
    f->st.segments = (uint32_t)f->nseg + 1;
    f->st.raw_total = raw;
    return 0;
}

/* ---- the folder ---- */

ap_pprof_folder *ap_pprof_folder_new(const void *base, size_t len, const ap_pprof_limits *limits,
                                     const ap_pprof_pruner *pruner, int level, ap_pprof_error *err)
{
    ap_pprof_error_clear(err);
    if (level < -1 || level > 9) {
        ap_pprof_fail(err, AP_PPROF_EINVAL, "gzip level %d is not in -1..9", level);
        return NULL;
    }
    ap_pprof_folder *f = calloc(1, sizeof *f);
    if (!f) {
        nomem(err);
        return NULL;
    }
    f->fd = -1;
    f->err = err;
    f->level = level;
    if (deflateInit2(&f->zs, level, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
        free(f);
        nomem(err);
        return NULL;
    }
    f->zs_init = 1;
    if (inflateInit2(&f->is, -15) != Z_OK) {
        ap_pprof_folder_free(f);
        nomem(err);
        return NULL;
    }
    f->is_init = 1;
    if ((f->fd = temp_open(err)) < 0) {
        ap_pprof_folder_free(f);
        return NULL;
    }
    ap_pprof_profile *p = ap_pprof_decode(base, len, limits, err);
    if (!p) {
        err->input = 0;
        ap_pprof_folder_free(f);
        return NULL;
    }
    int rc = pruner ? ap_pprof_prune(p, pruner, err) : 0;
    if (!rc) rc = layout(f, p, pruner);
    f->fresh = 1;
    f->err = NULL;
    ap_pprof_profile_free(p);
    trim();
    if (rc) {
        ap_pprof_folder_free(f);
        return NULL;
    }
    return f;
}

void ap_pprof_folder_free(ap_pprof_folder *f)
{
    if (!f) return;
    if (f->fd >= 0) close(f->fd);
    free(f->dig);
    free(f->pvals);
    free(f->dx);
    free(f->dv);
    free(f->dslot);
    free(f->slots);
    free(f->pend);
    free(f->poff);
    free(f->segs);
    free(f->sseg);
    free(f->buf);
    free(f->zb);
    free(f->ib);
    free(f->ids);
    free(f->locs);
    free(f->dirty);
    free(f->marks);
    if (f->zs_init) deflateEnd(&f->zs);
    if (f->is_init) inflateEnd(&f->is);
    ap_pprof_merger_free(f->m);
    free(f);
}

/* Whether src has exactly the merged profile's sample types (names and units, in order): then
 * CompatibilizeSampleTypes leaves both alone. */
static int same_types(const ap_pprof_profile *out, const ap_pprof_profile *src)
{
    if (out->nsample_type != src->nsample_type) return 0;
    for (uint32_t i = 0; i < 2 * src->nsample_type; i++) {
        const ap_pprof_str *a = &out->strings[out->sample_type[i]];
        if (!ap_str_eq(a, src->strings[src->sample_type[i]].ptr,
                       src->strings[src->sample_type[i]].len))
            return 0;
    }
    return 1;
}

/* One upload into the merger: decoded (or copied, when a given profile must change), scaled as
 * Go's Profile.Scale, pruned, added. Returns 0, 1 (fold it in full instead) or -1. */
static int fold_one(ap_pprof_folder *f, const ap_pprof_input *in, const ap_pprof_limits *limits,
                    const ap_pprof_pruner *pruner, ap_pprof_error *err)
{
    double ratio = in->scale;
    int scale = ratio != 0 && ratio != 1;
    ap_pprof_profile *own = NULL;
    const ap_pprof_profile *src = in->profile;
    if (in->path) return ap_pprof_fail(err, AP_PPROF_EINVAL, "a fold takes no file inputs");
    if (src && (scale || pruner)) {
        /* A caller's profile is not changed: scale and prune a copy of it. */
        uint8_t *raw = NULL;
        size_t rlen = 0;
        ap_pprof_encode_opts o = {.raw = 1};
        if (ap_pprof_encode(src, &o, &raw, &rlen, err)) return -1;
        own = ap_pprof_decode(raw, rlen, NULL, err);
        free(raw);
        if (!own) return -1;
    } else if (!src) {
        own = ap_pprof_decode(in->data, in->len, limits, err);
        if (!own) return -1;
    }
    if (own) src = own;
    int rc = -1;
    if (!same_types(ap_pprof_merger_profile(f->m), src)) {
        ap_pprof_fail(err, AP_PPROF_EINVAL, "other sample types than the base's: merge in full");
        rc = 1;
        goto done;
    }
    if (scale) {
        size_t nv = (size_t)own->nsamples * own->nsample_type;
        for (size_t i = 0; i < nv; i++)
            own->values[i] = (int64_t)round((double)own->values[i] * ratio);
    }
    if (pruner && ap_pprof_prune(own, pruner, err)) goto done;
    if (ap_pprof_merger_add_keys(f->m, src, sink, f, err)) {
        rc = err->code == AP_PPROF_EINCOMPATIBLE ? 1 : -1;
        if (rc == 1) ap_pprof_error_prefix(err, "merge in full");
        goto done;
    }
    rc = 0;
done:
    ap_pprof_profile_free(own);
    return rc;
}

/* The sample segment holding sample x (x < done[K_SMP]): the sample segments cover the samples
 * in order. */
static uint32_t seg_of(const ap_pprof_folder *f, uint32_t x)
{
    size_t lo = 0, hi = f->nsseg;
    while (hi - lo > 1) {
        size_t mid = (lo + hi) / 2;
        if (f->segs[f->sseg[mid]].a <= x)
            lo = mid;
        else
            hi = mid;
    }
    return f->sseg[lo];
}

/* Lays the output out again from itself (decoded: a full merge's cost, once the base doubled);
 * the deltas not written yet (the segments of the samples they change were not written again)
 * are added to the decoded values. 1 (err set) when a sum cancels out. */
static int compact(ap_pprof_folder *f, const uint8_t *bytes, size_t len,
                   const ap_pprof_pruner *pruner)
{
    ap_pprof_profile *p = ap_pprof_decode(bytes, len, NULL, f->err);
    if (!p) return -1;
    uint32_t nv = f->nv;
    if (p->nsamples != f->nsamples || p->nsample_type != nv) {
        ap_pprof_profile_free(p);
        return ap_pprof_fail(f->err, AP_PPROF_EIO, "folder: its output reads back wrong");
    }
    /* The output's samples are the folder's, in order. */
    for (size_t e = 0; e < f->nd; e++) {
        int64_t *v = &p->values[(size_t)f->dx[e] * nv];
        for (uint32_t k = 0; k < nv; k++) v[k] = ap_add_wrap(v[k], f->dv[e * nv + k]);
        if (all_zero(v, nv)) {
            ap_pprof_profile_free(p);
            ap_pprof_fail(f->err, AP_PPROF_EINVAL, "a sum cancelled out to zero: merge in full");
            return 1;
        }
    }
    int rc = layout(f, p, pruner);
    ap_pprof_profile_free(p);
    trim();
    return rc;
}

static int fold_in(ap_pprof_folder *f, const ap_pprof_input *inputs, size_t n,
                   const ap_pprof_limits *limits, const ap_pprof_pruner *pruner, uint8_t **out,
                   size_t *out_len, ap_pprof_error *err)
{
    if (pruner && !f->fresh && f->ncut) {
        /* Each merge prunes the whole profile again (as the original worker does), and here that
         * would cut some samples once more: only a full merge does that. */
        ap_pprof_fail(err, AP_PPROF_EINVAL, "%llu samples would be pruned again: merge in full",
                      (unsigned long long)f->ncut);
        return 1;
    }
    f->fresh = 0;
    deltas_clear(f);
    /* The base doubled since the last layout, or the file holds as much garbage as segments:
     * this fold lays the profile out again (from its output, once folded). */
    int relayout =
        f->raw_appended > f->raw_layout || (f->garbage > (1u << 20) && 2 * f->garbage > f->fend);
    uint32_t base_samples = f->done[K_SMP];
    for (size_t i = 0; i < n; i++) {
        int rc = fold_one(f, &inputs[i], limits, pruner, err);
        if (rc) {
            err->input = (int)i;
            return rc;
        }
    }
    uint32_t nv = f->nv;
    /* A sum that cancelled out: Go's Merge drops the sample (and what only it used). Those of
     * the samples in segments show when their segment is written with the delta. */
    for (uint32_t x = base_samples; x < f->nsamples; x++) {
        if (all_zero(&f->pvals[(size_t)(x - base_samples) * nv], nv)) {
            ap_pprof_fail(err, AP_PPROF_EINVAL, "a sum cancelled out to zero: merge in full");
            return 1;
        }
    }
    if (ap_pprof_sgrow((void **)&f->dirty, &f->cap_dirty, 1, f->nseg + 1)) return nomem(err);
    memset(f->dirty, 0, f->nseg);
    uint32_t ntouched = (uint32_t)f->nd;
    for (size_t e = 0; e < f->nd; e++) f->dirty[seg_of(f, f->dx[e])] = 1;
    uint32_t added = f->nsamples - base_samples;
    int rc = 0;
    for (size_t s = 0, ns = f->nseg; s < ns && !rc; s++)
        if (!relayout && f->dirty[s]) rc = write_samples(f, s + 1, f->segs[s].a, f->segs[s].b, 1);
    if (!rc && pruner) rc = update_marks(f, pruner);
    if (!rc) rc = extend(f);
    if (!rc) rc = write_out(f, out, out_len);
    if (rc) return rc;
    if (relayout) {
        /* The bytes just written hold the stale values of the segments not rewritten: the
         * values are patched in the decoded profile (same sample order) before the layout. */
        uint8_t *again = NULL;
        size_t alen = 0;
        f->st.rewritten = 0;
        f->st.raw_deflated = 0;
        rc = compact(f, *out, *out_len, pruner);
        if (!rc) rc = write_out(f, &again, &alen);
        free(*out);
        *out = again;
        *out_len = alen;
        if (rc) return rc;
    }
    f->st.touched = ntouched;
    f->st.added = added;
    return 0;
}

int ap_pprof_folder_fold(ap_pprof_folder *f, const ap_pprof_input *inputs, size_t n,
                         const ap_pprof_limits *limits, const ap_pprof_pruner *pruner,
                         uint8_t **out, size_t *out_len, ap_pprof_fold_stats *stats,
                         ap_pprof_error *err)
{
    ap_pprof_error_clear(err);
    *out = NULL;
    *out_len = 0;
    memset(&f->st, 0, sizeof f->st);
    f->err = err;
    int rc = fold_in(f, inputs, n, limits, pruner, out, out_len, err);
    f->err = NULL;
    if (rc) {
        free(*out);
        *out = NULL;
        *out_len = 0;
        return rc;
    }
    if (stats) *stats = f->st;
    return 0;
}
