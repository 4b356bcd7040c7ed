/* Folding uploads into a merged profile at the cost of the uploads (see fold.h). The output is one
 * gzip member whose deflate stream is a run of independently deflated segments (each from a
 * reset stream, ended by a full flush, so no back-reference crosses one): a segment holds a range
 * of one table (samples, mappings, locations, functions or strings) and a fold deflates again
 * only the sample segments whose values changed, the last segment of each table it extends and
 * the small header segment at the end; the other segments' bytes are copied as they are and the
 * CRC-32 is combined from theirs. Readers see an ordinary gzip pprof (repeated fields may come in
 * any order; strings come in index order). */
#include "fold.h"

#include <math.h>
#include <stdlib.h>
#include <zlib.h>

#include "internal.h"

enum { K_SMP, K_MAP, K_LOC, K_FUN, K_STR, K_N };

typedef struct {
    uint8_t kind;
    uint32_t a, b; /* entries [a, b) of its table */
    uint8_t *z;    /* deflated, ending on a full flush */
    size_t zlen;
    uint32_t crc;
    uLong op; /* crc32_combine_gen(raw): combining with it costs one multiplication */
    uint64_t raw;
} seg;

struct ap_pprof_folder {
    ap_pprof_merger *m;
    int level;
    seg *segs; /* in file order */
    size_t nseg, capseg;
    uint32_t *seg_of; /* sample -> its segment */
    size_t cap_seg_of;
    uint32_t done[K_N];  /* entries of each table already in segments */
    size_t last[K_N];    /* the table's last segment + 1 (0: none) */
    uint64_t raw_layout; /* protobuf bytes of the last full layout */
    uint64_t raw_appended;
    z_stream zs;
    int zs_init;
    uint8_t *buf; /* one segment's protobuf */
    size_t blen, bcap;
    uint64_t *ids;
    size_t cap_ids;
    uint8_t *dirty;
    size_t cap_dirty;
    uint8_t *obuf; /* the last output */
    size_t ocap;
    /* Prune: the rules each location matches, and the samples a Prune would cut again. */
    uint64_t *marks;
    size_t cap_marks;
    uint32_t nmarked, ncounted;
    uint64_t ncut;
    int fresh; /* the base was pruned by this folder and nothing folded yet */
    ap_pprof_fold_stats st;
};

static int nomem(ap_pprof_error *err)
{
    return ap_pprof_fail(err, AP_PPROF_ENOMEM, "out of memory while folding");
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

static int put_entry(ap_pprof_folder *f, const ap_pprof_profile *p, int kind, uint32_t i)
{
    size_t need;
    const ap_pprof_sample *s = kind == K_SMP ? &p->samples[i] : NULL;
    const ap_pprof_location *l = kind == K_LOC ? &p->locations[i] : NULL;
    if (s)
        need = ((size_t)s->nloc + p->nsample_type) * FIELD_MAX + (size_t)s->nlabel * 6 * FIELD_MAX;
    else if (l)
        need = (size_t)l->nline * 4 * FIELD_MAX;
    else if (kind == K_STR)
        need = p->strings[i].len;
    else
        need = 0;
    need = 2 * need + 16 * FIELD_MAX; /* the body is built past the slot of its header */
    if (reserve(f, need)) return -1;
    uint8_t *at = f->buf + f->blen, *body = at + 2 * FIELD_MAX, *b = body;
    unsigned field;
    switch (kind) {
    case K_SMP: {
        if (ap_pprof_sgrow((void **)&f->ids, &f->cap_ids, sizeof *f->ids, s->nloc + 1)) return -1;
        const uint32_t *sl = ap_pprof_sample_locs(p, s);
        for (uint32_t j = 0; j < s->nloc; j++) f->ids[j] = p->locations[sl[j]].id;
        b = put_repeated(b, 1, f->ids, s->nloc);
        b = put_repeated(b, 2, (const uint64_t *)&p->values[(size_t)i * p->nsample_type],
                         p->nsample_type);
        const ap_pprof_label *lb = s->nlabel ? &p->labels[s->label_off] : NULL;
        for (uint32_t j = 0; j < s->nlabel; j++) {
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
        field = 2;
        break;
    }
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

/* ---- segments ---- */

/* Deflates f->buf from a reset stream: a full flush (byte-aligned, no BFINAL), or the end of the
 * stream when last. */
static int deflate_buf(ap_pprof_folder *f, int last, seg *s)
{
    if (deflateReset(&f->zs) != Z_OK) return -1;
    size_t cap = deflateBound(&f->zs, f->blen) + 64;
    uint8_t *z = malloc(cap);
    if (!z) return -1;
    f->zs.next_in = f->buf;
    f->zs.avail_in = (uInt)f->blen;
    f->zs.next_out = z;
    f->zs.avail_out = (uInt)cap;
    int rc = deflate(&f->zs, last ? Z_FINISH : Z_FULL_FLUSH);
    if (rc != (last ? Z_STREAM_END : Z_OK) || f->zs.avail_in != 0) {
        free(z);
        return -1;
    }
    free(s->z);
    s->z = z;
    s->zlen = cap - f->zs.avail_out;
    s->crc = (uint32_t)crc32(0, f->buf, (uInt)f->blen);
    s->raw = f->blen;
    s->op = crc32_combine_gen((z_off_t)f->blen);
    f->st.rewritten++;
    f->st.raw_deflated += f->blen;
    return 0;
}

static seg *seg_add(ap_pprof_folder *f, int kind)
{
    if (ap_pprof_sgrow((void **)&f->segs, &f->capseg, sizeof *f->segs, f->nseg + 1)) return NULL;
    seg *s = &f->segs[f->nseg++];
    memset(s, 0, sizeof *s);
    s->kind = (uint8_t)kind;
    f->last[kind] = f->nseg;
    return s;
}

/* Writes entries [a, b) of a table into segments of about AP_PPROF_FOLD_SEGMENT bytes (one
 * segment when whole); the first goes into segment `into` (an index + 1, 0 for a new one), the
 * others are added at the end. */
static int write_range(ap_pprof_folder *f, const ap_pprof_profile *p, int kind, uint32_t a,
                       uint32_t b, size_t into, int whole)
{
    uint32_t start = a;
    f->blen = 0;
    for (uint32_t i = a; i < b; i++) {
        if (put_entry(f, p, kind, i)) return -1;
        if ((whole || f->blen < AP_PPROF_FOLD_SEGMENT) && i + 1 < b) continue;
        seg *s = into ? &f->segs[into - 1] : seg_add(f, kind);
        if (!s) return -1;
        size_t si = (size_t)(s - f->segs);
        into = 0;
        s->a = start;
        s->b = i + 1;
        if (deflate_buf(f, 0, s)) return -1;
        if (kind == K_SMP)
            for (uint32_t x = start; x <= i; x++) f->seg_of[x] = (uint32_t)si;
        start = i + 1;
        f->blen = 0;
    }
    return 0;
}

static void segs_clear(ap_pprof_folder *f)
{
    for (size_t i = 0; i < f->nseg; i++) free(f->segs[i].z);
    f->nseg = 0;
    memset(f->done, 0, sizeof f->done);
    memset(f->last, 0, sizeof f->last);
}

/* Extends every table's segments to its current end: the last segment of a table is written
 * again with the new entries while it is under the segment size, the rest go in new segments. */
static int extend(ap_pprof_folder *f, const ap_pprof_profile *p)
{
    uint32_t count[K_N] = {p->nsamples, p->nmappings, p->nlocations, p->nfunctions, p->nstrings};
    if (ap_pprof_sgrow((void **)&f->seg_of, &f->cap_seg_of, sizeof *f->seg_of,
                       (size_t)p->nsamples + 1))
        return -1;
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
        if (write_range(f, p, k, a, count[k], into, 0)) return -1;
        if (f->raw_layout) f->raw_appended += f->st.raw_deflated - raw0;
        f->done[k] = count[k];
    }
    return 0;
}

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
static int layout(ap_pprof_folder *f, const ap_pprof_profile *src, ap_pprof_error *err)
{
    uint32_t n = src->nsamples, nv = src->nsample_type;
    int d = ap_pprof_default_index(src);
    weighted *order = malloc(((size_t)n + 1) * sizeof *order);
    ap_pprof_sample *ss = malloc(((size_t)n + 1) * sizeof *ss);
    int64_t *vv = malloc(((size_t)n * nv + 1) * sizeof *vv);
    ap_pprof_merger *m = ap_pprof_merger_new();
    int rc = -1;
    if (!order || !ss || !vv || !m) {
        nomem(err);
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
    ap_pprof_profile view = *src;
    view.samples = ss;
    view.values = vv;
    if (ap_pprof_merger_add(m, &view, err)) goto done;
    ap_pprof_merger_free(f->m);
    f->m = m;
    m = NULL;
    segs_clear(f);
    const ap_pprof_profile *p = ap_pprof_merger_profile(f->m);
    f->raw_layout = 0;
    if (extend(f, p)) {
        nomem(err);
        goto done;
    }
    uint64_t raw = 0;
    for (size_t i = 0; i < f->nseg; i++) raw += f->segs[i].raw;
    f->raw_layout = raw ? raw : 1;
    f->raw_appended = 0;
    f->nmarked = f->ncounted = 0; /* indices changed */
    f->ncut = 0;
    f->st.compacted = 1;
    rc = 0;
done:
    free(order);
    free(ss);
    free(vv);
    ap_pprof_merger_free(m);
    return rc;
}

/* Marks the locations and counts the samples that came since the last call (see ncut). */
static int update_marks(ap_pprof_folder *f, const ap_pprof_pruner *pr, ap_pprof_error *err)
{
    const ap_pprof_profile *p = ap_pprof_merger_profile(f->m);
    if (ap_pprof_sgrow((void **)&f->marks, &f->cap_marks, sizeof *f->marks,
                       (size_t)p->nlocations + 1))
        return nomem(err);
    if (ap_pprof_prune_marks(p, pr, f->nmarked, p->nlocations, f->marks, err)) return -1;
    f->nmarked = p->nlocations;
    for (uint32_t s = f->ncounted; s < p->nsamples; s++)
        f->ncut += (uint64_t)ap_pprof_prune_would_cut(p, f->marks, s);
    f->ncounted = p->nsamples;
    return 0;
}

/* ---- output ---- */

/* gzip: header, the segments, the header segment (ending the stream), CRC-32 and size. */
static int write_out(ap_pprof_folder *f, const ap_pprof_profile *p, const uint8_t **out,
                     size_t *len)
{
    seg hdr;
    memset(&hdr, 0, sizeof hdr);
    f->blen = 0;
    if (put_header(f, p) || deflate_buf(f, 1, &hdr)) {
        free(hdr.z);
        return -1;
    }
    size_t total = 10 + hdr.zlen + 8;
    uint64_t raw = hdr.raw;
    for (size_t i = 0; i < f->nseg; i++) total += f->segs[i].zlen;
    /* The folder keeps its output buffer: a new one every fold would be fresh pages. */
    if (ap_pprof_sgrow((void **)&f->obuf, &f->ocap, 1, total)) {
        free(hdr.z);
        return -1;
    }
    uint8_t *o = f->obuf, *w = o;
    static const uint8_t gz[10] = {0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff};
    memcpy(w, gz, sizeof gz);
    w += sizeof gz;
    uLong crc = crc32(0, NULL, 0);
    for (size_t i = 0; i < f->nseg; i++) {
        const seg *s = &f->segs[i];
        memcpy(w, s->z, s->zlen);
        w += s->zlen;
        crc = crc32_combine_op(crc, s->crc, s->op);
        raw += s->raw;
    }
    memcpy(w, hdr.z, hdr.zlen);
    w += hdr.zlen;
    crc = crc32_combine(crc, hdr.crc, (z_off_t)hdr.raw);
    free(hdr.z);
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
    f->level = level;
    if (deflateInit2(&f->zs, level, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
        free(f);
        nomem(err);
        return NULL;
    }
    f->zs_init = 1;
    ap_pprof_profile *p = ap_pprof_decode(base, len, limits, err);
    if (!p) {
        err->input = 0;
        ap_pprof_folder_free(f);
        return NULL;
    }
    int rc = pruner ? ap_pprof_prune(p, pruner, err) : 0;
    if (!rc) rc = layout(f, p, err);
    if (!rc && pruner) rc = update_marks(f, pruner, err);
    f->fresh = 1;
    ap_pprof_profile_free(p);
    if (rc) {
        ap_pprof_folder_free(f);
        return NULL;
    }
    return f;
}

void ap_pprof_folder_free(ap_pprof_folder *f)
{
    if (!f) return;
    segs_clear(f);
    free(f->segs);
    free(f->seg_of);
    free(f->buf);
    free(f->ids);
    free(f->dirty);
    free(f->obuf);
    free(f->marks);
    if (f->zs_init) deflateEnd(&f->zs);
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
    if (ap_pprof_merger_add(f->m, src, err)) {
        rc = err->code == AP_PPROF_EINCOMPATIBLE ? 1 : -1;
        if (rc == 1) ap_pprof_error_prefix(err, "merge in full");
        goto done;
    }
    rc = 0;
done:
    ap_pprof_profile_free(own);
    return rc;
}

int ap_pprof_folder_fold(ap_pprof_folder *f, const ap_pprof_input *inputs, size_t n,
                         const ap_pprof_limits *limits, const ap_pprof_pruner *pruner,
                         const uint8_t **out, size_t *out_len, ap_pprof_fold_stats *stats,
                         ap_pprof_error *err)
{
    ap_pprof_error_clear(err);
    *out = NULL;
    *out_len = 0;
    memset(&f->st, 0, sizeof f->st);
    size_t nt;
    if (pruner && !f->fresh && f->ncut) {
        /* Each merge prunes the whole profile again (as the original worker does), and here that
         * would cut some samples once more: only a full merge does that. */
        ap_pprof_fail(err, AP_PPROF_EINVAL, "%llu samples would be pruned again: merge in full",
                      (unsigned long long)f->ncut);
        return 1;
    }
    f->fresh = 0;
    ap_pprof_merger_touched(f->m, 1, &nt);
    uint32_t base_samples = f->done[K_SMP];
    for (size_t i = 0; i < n; i++) {
        int rc = fold_one(f, &inputs[i], limits, pruner, err);
        if (rc) {
            err->input = (int)i;
            ap_pprof_merger_touched(f->m, 0, &nt);
            return rc;
        }
    }
    const uint32_t *touched = ap_pprof_merger_touched(f->m, 0, &nt);
    const ap_pprof_profile *p = ap_pprof_merger_profile(f->m);
    uint32_t nv = p->nsample_type;
    /* A sum that cancelled out: Go's Merge drops the sample (and what only it used). */
    for (size_t i = 0; i < nt; i++) {
        int zero = 1;
        for (uint32_t k = 0; k < nv; k++) zero &= p->values[(size_t)touched[i] * nv + k] == 0;
        if (zero) {
            ap_pprof_fail(err, AP_PPROF_EINVAL, "a sum cancelled out to zero: merge in full");
            return 1;
        }
    }
    if (ap_pprof_sgrow((void **)&f->dirty, &f->cap_dirty, 1, f->nseg + 1)) return nomem(err);
    memset(f->dirty, 0, f->nseg);
    uint32_t ntouched = 0;
    for (size_t i = 0; i < nt; i++) {
        if (touched[i] >= base_samples) continue;
        uint32_t s = f->seg_of[touched[i]];
        ntouched++;
        f->dirty[s] = 1;
    }
    uint32_t added = p->nsamples - base_samples;
    if (f->raw_appended > f->raw_layout) {
        if (layout(f, p, err)) return -1;
    } else {
        for (size_t s = 0, ns = f->nseg; s < ns; s++) {
            if (!f->dirty[s]) continue;
            if (write_range(f, p, K_SMP, f->segs[s].a, f->segs[s].b, s + 1, 1)) return nomem(err);
        }
        if (extend(f, p)) return nomem(err);
    }
    if (pruner && update_marks(f, pruner, err)) return -1;
    if (write_out(f, ap_pprof_merger_profile(f->m), out, out_len)) return nomem(err);
    f->st.touched = ntouched;
    f->st.added = added;
    if (stats) *stats = f->st;
    return 0;
}
