/* Profile.Write: the protobuf in Go's field order with Go's string table order (preEncode),
 * packed repeated fields only past two elements as Go does, streamed through deflate in
 * chunks so the serialized profile is never held whole. */
#include <stdlib.h>
#include <zlib.h>

#include "internal.h"
#include "zpar.h"

typedef struct {
    const ap_pprof_profile *p;
    const uint32_t *canon; /* by-content string identity, NULL when strings are unique */
    uint32_t *enc;         /* string index -> encoded index (AP_PPROF_NONE until assigned) */
    uint32_t *order;       /* encoded index -> string index */
    uint32_t norder;

    ap_zpar *z;   /* gzip writer, NULL for raw output */
    uint8_t *out; /* raw result */
    size_t olen, ocap;

    uint8_t *scratch; /* one message body */
    size_t scap;
    ap_pprof_label *lab; /* one sample's labels in Go order */
    size_t lcap;
    ap_pprof_error *err;
} enc_t;

static int nomem(enc_t *e)
{
    return ap_pprof_fail(e->err, AP_PPROF_ENOMEM, "out of memory while encoding");
}

static inline uint32_t add_string(enc_t *e, uint32_t i)
{
    uint32_t c = e->canon ? e->canon[i] : i;
    uint32_t x = e->enc[c];
    if (x == AP_PPROF_NONE) {
        x = e->enc[c] = e->norder;
        e->order[e->norder++] = c;
    }
    return x;
}

static inline uint32_t str_of(const enc_t *e, uint32_t i)
{
    return e->enc[e->canon ? e->canon[i] : i];
}

/* The labels of sample s in Go's order. */
static const ap_pprof_label *sample_labels(enc_t *e, const ap_pprof_sample *s)
{
    const ap_pprof_profile *p = e->p;
    const ap_pprof_label *l = &p->labels[s->label_off];
    if (p->labels_sorted || s->nlabel < 2) return l;
    if (s->nlabel > e->lcap) {
        free(e->lab);
        e->lcap = s->nlabel * 2;
        e->lab = malloc(e->lcap * sizeof *e->lab);
        if (!e->lab) {
            e->lcap = 0;
            return NULL;
        }
    }
    memcpy(e->lab, l, s->nlabel * sizeof *l);
    ap_pprof_sort_labels(p, e->lab, s->nlabel, e->canon);
    return e->lab;
}

static int same_key(const enc_t *e, const ap_pprof_label *a, const ap_pprof_label *b)
{
    if ((a->flags ^ b->flags) & AP_PPROF_LABEL_NUM) return 0;
    return e->canon ? e->canon[a->key] == e->canon[b->key] : a->key == b->key;
}

/* preEncode's addString calls, in its order. */
static int build_strings(enc_t *e)
{
    const ap_pprof_profile *p = e->p;
    e->enc = malloc((size_t)p->nstrings * sizeof *e->enc);
    e->order = malloc((size_t)p->nstrings * sizeof *e->order);
    if (!e->enc || !e->order) return nomem(e);
    memset(e->enc, 0xff, (size_t)p->nstrings * sizeof *e->enc);
    add_string(e, 0);
    for (uint32_t i = 0; i < 2 * p->nsample_type; i++) add_string(e, p->sample_type[i]);
    for (uint32_t i = 0; i < p->nsamples; i++) {
        const ap_pprof_sample *s = &p->samples[i];
        if (!s->nlabel) continue;
        const ap_pprof_label *l = sample_labels(e, s);
        if (!l) return nomem(e);
        for (uint32_t j = 0; j < s->nlabel; j++) {
            if (!(l[j].flags & AP_PPROF_LABEL_NUM)) {
                add_string(e, l[j].key);
                add_string(e, l[j].str);
            } else {
                if (j == 0 || !same_key(e, &l[j], &l[j - 1])) add_string(e, l[j].key);
                if (l[j].flags & AP_PPROF_LABEL_UNIT_SET) add_string(e, l[j].unit);
            }
        }
    }
    for (uint32_t i = 0; i < p->nmappings; i++) {
        add_string(e, p->mappings[i].file);
        add_string(e, p->mappings[i].build_id);
    }
    for (uint32_t i = 0; i < p->nfunctions; i++) {
        add_string(e, p->functions[i].name);
        add_string(e, p->functions[i].system_name);
        add_string(e, p->functions[i].filename);
    }
    add_string(e, p->drop_frames);
    add_string(e, p->keep_frames);
    add_string(e, p->period_type[0]);
    add_string(e, p->period_type[1]);
    for (uint32_t i = 0; i < p->ncomments; i++) add_string(e, p->comments[i]);
    add_string(e, p->default_sample_type);
    if (p->doc_url) add_string(e, p->doc_url);
    return 0;
}

/* ---- output ---- */

static int out_reserve(enc_t *e, size_t n)
{
    if (e->ocap - e->olen >= n) return 0;
    size_t ncap = e->ocap ? e->ocap : 65536;
    while (ncap - e->olen < n) ncap *= 2;
    uint8_t *no = realloc(e->out, ncap);
    if (!no) return nomem(e);
    e->out = no;
    e->ocap = ncap;
    return 0;
}

static int emit(enc_t *e, const void *data, size_t n)
{
    if (e->z) {
        if (ap_zpar_write(e->z, data, n)) return nomem(e);
        return 0;
    }
    if (out_reserve(e, n)) return -1;
    memcpy(e->out + e->olen, data, n);
    e->olen += n;
    return 0;
}

/* ---- messages ---- */

/* Worst case of one field: key (2 bytes for our fields) + a 10-byte varint. */
#define FIELD_MAX 12

static int scratch_reserve(enc_t *e, size_t n)
{
    if (e->scap >= n) return 0;
    size_t ncap = e->scap ? e->scap : 4096;
    while (ncap < n) ncap *= 2;
    free(e->scratch);
    e->scratch = malloc(ncap);
    if (!e->scratch) {
        e->scap = 0;
        return nomem(e);
    }
    e->scap = ncap;
    return 0;
}

static inline uint8_t *put_key(uint8_t *b, unsigned field, unsigned wt)
{
    return ap_put_varint(b, ((uint64_t)field << 3) | wt);
}

static inline uint8_t *put_u64(uint8_t *b, unsigned field, uint64_t v)
{
    b = put_key(b, field, 0);
    return ap_put_varint(b, v);
}

static inline uint8_t *put_u64_opt(uint8_t *b, unsigned field, uint64_t v)
{
    return v ? put_u64(b, field, v) : b;
}

/* Emits `field` with a length-delimited body that was built in e->scratch[0..n). */
static int emit_message(enc_t *e, unsigned field, size_t n)
{
    uint8_t hdr[FIELD_MAX];
    uint8_t *h = put_key(hdr, field, 2);
    h = ap_put_varint(h, n);
    if (emit(e, hdr, (size_t)(h - hdr))) return -1;
    return emit(e, e->scratch, n);
}

/* encodeUint64s / encodeInt64s: packed when there are more than two. */
static uint8_t *put_repeated(uint8_t *b, unsigned field, const uint64_t *v, uint32_t n)
{
    if (n > 2) {
        size_t len = 0;
        for (uint32_t i = 0; i < n; i++) len += ap_varint_size(v[i]);
        b = put_key(b, field, 2);
        b = ap_put_varint(b, len);
        for (uint32_t i = 0; i < n; i++) b = ap_put_varint(b, v[i]);
        return b;
    }
    for (uint32_t i = 0; i < n; i++) b = put_u64(b, field, v[i]);
    return b;
}

static int encode_samples(enc_t *e)
{
    const ap_pprof_profile *p = e->p;
    uint32_t nv = p->nsample_type;
    uint64_t *ids = NULL;
    size_t idcap = 0;
    for (uint32_t i = 0; i < p->nsamples; i++) {
        const ap_pprof_sample *s = &p->samples[i];
        size_t need = (size_t)(s->nloc + nv) * FIELD_MAX + (size_t)s->nlabel * 5 * FIELD_MAX + 32;
        if (scratch_reserve(e, need)) goto fail;
        if (s->nloc > idcap) {
            free(ids);
            idcap = s->nloc * 2;
            ids = malloc(idcap * sizeof *ids);
            if (!ids) {
                nomem(e);
                goto fail;
            }
        }
        const uint32_t *sl = ap_pprof_sample_locs(p, s);
        for (uint32_t j = 0; j < s->nloc; j++) ids[j] = p->locations[sl[j]].id;
        uint8_t *b = e->scratch;
        b = put_repeated(b, 1, ids, s->nloc);
        b = put_repeated(b, 2, (const uint64_t *)&p->values[(size_t)i * nv], nv);
        if (s->nlabel) {
            const ap_pprof_label *l = sample_labels(e, s);
            if (!l) {
                nomem(e);
                goto fail;
            }
            for (uint32_t j = 0; j < s->nlabel; j++) {
                uint8_t body[4 * FIELD_MAX], *q = body;
                q = put_u64_opt(q, 1, str_of(e, l[j].key));
                if (!(l[j].flags & AP_PPROF_LABEL_NUM)) {
                    q = put_u64_opt(q, 2, str_of(e, l[j].str));
                } else {
                    q = put_u64_opt(q, 3, (uint64_t)l[j].num);
                    if (l[j].flags & AP_PPROF_LABEL_UNIT_SET)
                        q = put_u64_opt(q, 4, str_of(e, l[j].unit));
                }
                b = put_key(b, 3, 2);
                b = ap_put_varint(b, (uint64_t)(q - body));
                memcpy(b, body, (size_t)(q - body));
                b += q - body;
            }
        }
        if (emit_message(e, 2, (size_t)(b - e->scratch))) goto fail;
    }
    free(ids);
    return 0;
fail:
    free(ids);
    return -1;
}

static int encode_tables(enc_t *e)
{
    const ap_pprof_profile *p = e->p;
    if (scratch_reserve(e, 16 * FIELD_MAX)) return -1;
    for (uint32_t i = 0; i < p->nsample_type; i++) {
        uint8_t *b = e->scratch;
        b = put_u64_opt(b, 1, str_of(e, p->sample_type[2 * i]));
        b = put_u64_opt(b, 2, str_of(e, p->sample_type[2 * i + 1]));
        if (emit_message(e, 1, (size_t)(b - e->scratch))) return -1;
    }
    if (encode_samples(e)) return -1;
    if (scratch_reserve(e, 16 * FIELD_MAX)) return -1;
    for (uint32_t i = 0; i < p->nmappings; i++) {
        const ap_pprof_mapping *m = &p->mappings[i];
        uint8_t *b = e->scratch;
        b = put_u64_opt(b, 1, m->id);
        b = put_u64_opt(b, 2, m->start);
        b = put_u64_opt(b, 3, m->limit);
        b = put_u64_opt(b, 4, m->offset);
        b = put_u64_opt(b, 5, str_of(e, m->file));
        b = put_u64_opt(b, 6, str_of(e, m->build_id));
        for (unsigned f = 0; f < 4; f++)
            if (m->flags & (1u << f)) b = put_u64(b, 7 + f, 1);
        if (emit_message(e, 3, (size_t)(b - e->scratch))) return -1;
    }
    for (uint32_t i = 0; i < p->nlocations; i++) {
        const ap_pprof_location *l = &p->locations[i];
        if (scratch_reserve(e, (size_t)l->nline * 4 * FIELD_MAX + 5 * FIELD_MAX)) return -1;
        uint8_t *b = e->scratch;
        b = put_u64_opt(b, 1, l->id);
        b = put_u64_opt(b, 2, l->mapping == AP_PPROF_NONE ? 0 : p->mappings[l->mapping].id);
        b = put_u64_opt(b, 3, l->address);
        for (uint32_t j = 0; j < l->nline; j++) {
            const ap_pprof_line *ln = &p->lines[l->line_off + j];
            uint8_t body[3 * FIELD_MAX], *q = body;
            q = put_u64_opt(q, 1, p->functions[ln->function].id);
            q = put_u64_opt(q, 2, (uint64_t)ln->line);
            q = put_u64_opt(q, 3, (uint64_t)ln->column);
            b = put_key(b, 4, 2);
            b = ap_put_varint(b, (uint64_t)(q - body));
            memcpy(b, body, (size_t)(q - body));
            b += q - body;
        }
        if (l->is_folded) b = put_u64(b, 5, 1);
        if (emit_message(e, 4, (size_t)(b - e->scratch))) return -1;
    }
    if (scratch_reserve(e, 16 * FIELD_MAX)) return -1;
    for (uint32_t i = 0; i < p->nfunctions; i++) {
        const ap_pprof_function *f = &p->functions[i];
        uint8_t *b = e->scratch;
        b = put_u64_opt(b, 1, f->id);
        b = put_u64_opt(b, 2, str_of(e, f->name));
        b = put_u64_opt(b, 3, str_of(e, f->system_name));
        b = put_u64_opt(b, 4, str_of(e, f->filename));
        b = put_u64_opt(b, 5, (uint64_t)f->start_line);
        if (emit_message(e, 5, (size_t)(b - e->scratch))) return -1;
    }
    for (uint32_t i = 0; i < e->norder; i++) {
        const ap_pprof_str *s = &p->strings[e->order[i]];
        uint8_t hdr[FIELD_MAX], *h = put_key(hdr, 6, 2);
        h = ap_put_varint(h, s->len);
        if (emit(e, hdr, (size_t)(h - hdr)) || emit(e, s->ptr, s->len)) return -1;
    }
    uint8_t tail[16 * FIELD_MAX], *b = tail;
    b = put_u64_opt(b, 7, str_of(e, p->drop_frames));
    b = put_u64_opt(b, 8, str_of(e, p->keep_frames));
    b = put_u64_opt(b, 9, (uint64_t)p->time_nanos);
    b = put_u64_opt(b, 10, (uint64_t)p->duration_nanos);
    uint32_t pt0 = str_of(e, p->period_type[0]), pt1 = str_of(e, p->period_type[1]);
    if (pt0 || pt1) {
        uint8_t body[2 * FIELD_MAX], *q = body;
        q = put_u64_opt(q, 1, pt0);
        q = put_u64_opt(q, 2, pt1);
        b = put_key(b, 11, 2);
        b = ap_put_varint(b, (uint64_t)(q - body));
        memcpy(b, body, (size_t)(q - body));
        b += q - body;
    }
    b = put_u64_opt(b, 12, (uint64_t)p->period);
    if (emit(e, tail, (size_t)(b - tail))) return -1;
    if (p->ncomments) {
        if (scratch_reserve(e, (size_t)p->ncomments * FIELD_MAX + FIELD_MAX)) return -1;
        uint64_t *c = malloc(p->ncomments * sizeof *c);
        if (!c) return nomem(e);
        for (uint32_t i = 0; i < p->ncomments; i++) c[i] = str_of(e, p->comments[i]);
        uint8_t *q = put_repeated(e->scratch, 13, c, p->ncomments);
        free(c);
        if (emit(e, e->scratch, (size_t)(q - e->scratch))) return -1;
    }
    b = tail;
    b = put_u64(b, 14, str_of(e, p->default_sample_type)); /* Go always writes it */
    if (p->doc_url) b = put_u64_opt(b, 15, str_of(e, p->doc_url));
    return emit(e, tail, (size_t)(b - tail));
}

int ap_pprof_encode(const ap_pprof_profile *p, const ap_pprof_encode_opts *opts, uint8_t **out,
                    size_t *out_len, ap_pprof_error *err)
{
    enc_t e;
    memset(&e, 0, sizeof e);
    e.p = p;
    e.err = err;
    int gz = !(opts && opts->raw);
    int level = opts ? opts->level : Z_DEFAULT_COMPRESSION;
    if (level < -1 || level > 9)
        return ap_pprof_fail(err, AP_PPROF_EINVAL, "gzip level %d is not in -1..9", level);
    int threads = opts ? opts->threads : 0;
    if (threads <= 0) threads = ap_zpar_auto_threads();
    *out = NULL;
    *out_len = 0;
    int rc = -1;
    uint32_t *canon = NULL;
    if (ap_pprof_string_canon(p, &canon)) {
        nomem(&e);
        goto done;
    }
    e.canon = canon;
    if (build_strings(&e)) goto done;
    /* gzip with mtime 0 and no name, in blocks whose bytes do not depend on the thread count,
     * so equal profiles give equal bytes. */
    if (gz && !(e.z = ap_zpar_new(level, threads))) {
        nomem(&e);
        goto done;
    }
    if (encode_tables(&e)) goto done;
    if (e.z) {
        if (ap_zpar_finish(e.z, out, out_len)) {
            nomem(&e);
            goto done;
        }
    } else {
        *out = e.out;
        *out_len = e.olen;
        e.out = NULL;
    }
    rc = 0;
done:
    ap_zpar_free(e.z);
    free(e.out);
    free(e.scratch);
    free(e.lab);
    free(e.enc);
    free(e.order);
    free(canon);
    return rc;
}
