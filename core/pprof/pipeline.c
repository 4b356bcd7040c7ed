/* The one merge of autopgo (the worker and `autopgo merge` alike), in one call: decode the inputs
 * on a pool of threads (the caller included) into a ring of reused profiles, merge them in input
 * order on the caller's thread, CompatibilizeSampleTypes, Merge, Prune with each rule, Compact,
 * encode. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"
#include "zpar.h"

typedef struct {
    const ap_pprof_input *in;
    const ap_pprof_limits *limits;
    ap_pprof_profile *p; /* scratch to decode into */
    uint8_t *buf;        /* file contents, reused from input to input (no page faults) */
    size_t cap;
    size_t bytes; /* encoded size */
    ap_pprof_error err;
    int rc;
} decode_task;

/* Reads a whole file into *buf (grown as needed, kept for the next file); a file larger than
 * any profile the limits allow is refused unread. */
static uint8_t *read_file(const char *path, uint64_t max, uint8_t **bufp, size_t *capp, size_t *len,
                          ap_pprof_error *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        ap_pprof_fail(err, AP_PPROF_EIO, "cannot open %s: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    uint8_t *buf = NULL;
    if (fstat(fd, &st) || !S_ISREG(st.st_mode)) {
        ap_pprof_fail(err, AP_PPROF_EIO, "%s is not a regular file", path);
        goto fail;
    }
    if ((uint64_t)st.st_size > max) {
        ap_pprof_fail(err, AP_PPROF_ETOOLARGE, "%s is larger than the limit of %llu bytes", path,
                      (unsigned long long)max);
        goto fail;
    }
    if (*capp < (size_t)st.st_size || !*bufp) {
        free(*bufp);
        *capp = 0;
        *bufp = malloc((size_t)st.st_size ? (size_t)st.st_size : 1);
        if (!*bufp) {
            ap_pprof_fail(err, AP_PPROF_ENOMEM, "out of memory reading %s", path);
            goto fail;
        }
        *capp = (size_t)st.st_size ? (size_t)st.st_size : 1;
    }
    buf = *bufp;
    size_t got = 0;
    while (got < (size_t)st.st_size) {
        ssize_t r = read(fd, buf + got, (size_t)st.st_size - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            ap_pprof_fail(err, AP_PPROF_EIO, "cannot read %s: %s", path,
                          r < 0 ? strerror(errno) : "file shrank while reading");
            goto fail;
        }
        got += (size_t)r;
    }
    close(fd);
    *len = got;
    return buf;
fail:
    close(fd);
    return NULL;
}

static void *decode_thread(void *arg)
{
    decode_task *t = arg;
    const ap_pprof_input *in = t->in;
    if (!in->path) {
        t->bytes = in->len;
        t->rc = ap_pprof_decode_into(t->p, in->data, in->len, t->limits, &t->err);
        return NULL;
    }
    /* gzip may expand incompressible data a little: leave room over the decompressed limit. */
    uint64_t max = t->limits && t->limits->max_decompressed ? t->limits->max_decompressed
                                                            : AP_PPROF_DEFAULT_MAX_DECOMPRESSED;
    max += max / 64 + 4096;
    size_t len = 0;
    uint8_t *data = read_file(in->path, max, &t->buf, &t->cap, &len, &t->err);
    if (!data) {
        t->rc = -1;
        return NULL;
    }
    t->bytes = len;
    t->rc = ap_pprof_decode_into(t->p, data, len, t->limits, &t->err);
    return NULL;
}

/* ---- CompatibilizeSampleTypes ---- */

/* The sample types of input 0 by name, and how often each was seen over the inputs (Go's
 * commonSampleTypes: a type is common when every input has it, in input 0's order). */
typedef struct {
    uint32_t n;
    char **name;
    uint32_t *len;
    size_t *count;
    int *keep;    /* the common set, once fixed */
    int fixed;    /* keep[] is final: every input is projected onto it */
    int seen;     /* inputs counted */
    int empty_at; /* first input after which no type was in every input seen, -1 */
} type_set;

static void types_free(type_set *t)
{
    for (uint32_t i = 0; i < t->n; i++) free(t->name[i]);
    free(t->name);
    free(t->len);
    free(t->count);
    free(t->keep);
    memset(t, 0, sizeof *t);
}

static int types_init(type_set *t, const ap_pprof_profile *p)
{
    memset(t, 0, sizeof *t);
    t->empty_at = -1;
    size_t n = p->nsample_type ? p->nsample_type : 1;
    t->name = calloc(n, sizeof *t->name);
    t->len = calloc(n, sizeof *t->len);
    t->count = calloc(n, sizeof *t->count);
    t->keep = calloc(n, sizeof *t->keep);
    if (!t->name || !t->len || !t->count || !t->keep) return -1;
    for (uint32_t i = 0; i < p->nsample_type; i++) {
        const ap_pprof_str *s = &p->strings[p->sample_type[2 * i]];
        t->name[i] = malloc(s->len + 1);
        if (!t->name[i]) return -1;
        memcpy(t->name[i], s->ptr, s->len);
        t->len[i] = s->len;
        t->n = i + 1;
    }
    return 0;
}

/* Counts p's types; returns whether every type of input 0 is still in every input seen. */
static int types_count(type_set *t, const ap_pprof_profile *p, int index)
{
    for (uint32_t k = 0; k < t->n; k++)
        for (uint32_t i = 0; i < p->nsample_type; i++)
            if (ap_str_eq(&p->strings[p->sample_type[2 * i]], t->name[k], t->len[k])) t->count[k]++;
    t->seen++;
    int all = 1, any = 0;
    for (uint32_t k = 0; k < t->n; k++) {
        int common = t->count[k] == (size_t)t->seen;
        all &= common;
        any |= common;
    }
    if (!any && t->empty_at < 0) t->empty_at = index;
    return all;
}

/* A view of p whose sample types (and values) are the kept ones of t, in t's order: Go's
 * compatibilizeSampleTypes without touching p. Returns p itself when nothing changes. */
typedef struct {
    ap_pprof_profile view;
    uint32_t *types;
    int64_t *values;
} projection;

static const ap_pprof_profile *project(const ap_pprof_profile *p, const type_set *t, projection *pj,
                                       ap_pprof_error *err)
{
    uint32_t k = 0, remap[64], *map = remap;
    uint32_t kept = 0;
    for (uint32_t i = 0; i < t->n; i++) kept += t->keep[i] != 0;
    if (kept > 64 && !(map = malloc(kept * sizeof *map))) {
        ap_pprof_fail(err, AP_PPROF_ENOMEM, "out of memory");
        return NULL;
    }
    int modify = 0;
    uint32_t def = AP_PPROF_NONE;
    for (uint32_t i = 0; i < t->n; i++) {
        if (!t->keep[i]) continue;
        uint32_t idx = AP_PPROF_NONE;
        for (uint32_t j = 0; j < p->nsample_type && idx == AP_PPROF_NONE; j++)
            if (ap_str_eq(&p->strings[p->sample_type[2 * j]], t->name[i], t->len[i])) idx = j;
        if (idx == AP_PPROF_NONE) {
            if (map != remap) free(map);
            ap_pprof_fail(err, AP_PPROF_EINCOMPATIBLE, "%.*s sample type is not found in profile",
                          (int)t->len[i], t->name[i]);
            return NULL;
        }
        if (ap_str_eq(&p->strings[p->default_sample_type], t->name[i], t->len[i]))
            def = p->default_sample_type;
        map[k] = idx;
        modify |= idx != k;
        k++;
    }
    if (!modify && k == p->nsample_type) {
        if (map != remap) free(map);
        return p;
    }
    if (k == 0) {
        if (map != remap) free(map);
        ap_pprof_fail(err, AP_PPROF_EINCOMPATIBLE, "no sample type is common to every profile");
        return NULL;
    }
    pj->types = malloc((size_t)(k ? k : 1) * 2 * sizeof *pj->types);
    size_t nv = (size_t)p->nsamples * k;
    pj->values = malloc((nv ? nv : 1) * sizeof *pj->values);
    if (!pj->types || !pj->values) {
        if (map != remap) free(map);
        ap_pprof_fail(err, AP_PPROF_ENOMEM, "out of memory");
        return NULL;
    }
    for (uint32_t i = 0; i < k; i++) {
        pj->types[2 * i] = p->sample_type[2 * map[i]];
        pj->types[2 * i + 1] = p->sample_type[2 * map[i] + 1];
    }
    for (size_t s = 0; s < p->nsamples; s++)
        for (uint32_t i = 0; i < k; i++)
            pj->values[s * k + i] = p->values[s * p->nsample_type + map[i]];
    if (map != remap) free(map);
    pj->view = *p;
    pj->view.sample_type = pj->types;
    pj->view.nsample_type = k;
    pj->view.values = pj->values;
    /* Go: the default type is kept when it is common, else the first common type. */
    pj->view.default_sample_type = def != AP_PPROF_NONE ? def : pj->types[0];
    return &pj->view;
}

/* Go's Profile.Scale(ratio) on a view of p: every value v becomes int64(math.Round(v * ratio))
 * (halves away from zero, as C's round). Go then drops the samples left all zero, which Merge
 * skips anyway. pj may already hold p's projected values (scaled in place); else they are copied.
 */
static const ap_pprof_profile *scale_view(const ap_pprof_profile *p, double ratio, projection *pj,
                                          ap_pprof_error *err)
{
    size_t nv = (size_t)p->nsamples * p->nsample_type;
    if (!pj->values || p->values != pj->values) {
        int64_t *values = malloc((nv ? nv : 1) * sizeof *values);
        if (!values) {
            ap_pprof_fail(err, AP_PPROF_ENOMEM, "out of memory");
            return NULL;
        }
        memcpy(values, p->values, nv * sizeof *values);
        if (p != &pj->view) pj->view = *p;
        free(pj->values);
        pj->values = values;
        pj->view.values = values;
    }
    for (size_t i = 0; i < nv; i++) pj->values[i] = (int64_t)round((double)pj->values[i] * ratio);
    return &pj->view;
}

static void projection_free(projection *pj)
{
    free(pj->types);
    free(pj->values);
    pj->types = NULL;
    pj->values = NULL;
}

/* ---- the pipeline ---- */

/* Inputs are decoded by whichever thread is free, in input order, into a ring of scratch
 * profiles, and merged in order on the caller's thread. The caller decodes too whenever the
 * input it needs next is not ready and another is waiting: a helper that is descheduled (a
 * loaded machine) holds up only the one input it has claimed, never the whole sequence, and
 * with no helper at all (threads = 1, or none could start) the caller decodes everything. */
#define POOL_MAX 6 /* scratch profiles: helpers + 2 (at most 4 helpers) */

typedef struct {
    const ap_pprof_input *inputs;
    size_t n;
    int nslot;
    decode_task task[POOL_MAX];
    int ready[POOL_MAX];
    size_t next_decode; /* first input nobody has claimed */
    size_t next_merge;  /* first input not yet merged (its slot is busy until then) */
    int stop;
    pthread_mutex_t mu;
    pthread_cond_t cv;
} decode_pool;

/* Claims the next input when its slot is free; returns its index or n. Under the lock. */
static size_t pool_claim(decode_pool *pl)
{
    size_t j = pl->next_decode;
    if (pl->stop || j >= pl->n || j >= pl->next_merge + (size_t)pl->nslot) return pl->n;
    pl->next_decode++;
    return j;
}

/* Decodes input j into its slot (the lock is not held) and marks it ready. */
static void pool_decode(decode_pool *pl, size_t j)
{
    decode_task *t = &pl->task[j % (size_t)pl->nslot];
    t->in = &pl->inputs[j];
    t->rc = 0;
    t->bytes = 0;
    if (!t->in->profile) decode_thread(t);
    pthread_mutex_lock(&pl->mu);
    pl->ready[j % (size_t)pl->nslot] = 1;
    pthread_cond_broadcast(&pl->cv);
}

static void *pool_helper(void *arg)
{
    decode_pool *pl = arg;
    pthread_mutex_lock(&pl->mu);
    for (;;) {
        size_t j = pool_claim(pl);
        if (j < pl->n) {
            pthread_mutex_unlock(&pl->mu);
            pool_decode(pl, j); /* returns locked */
            continue;
        }
        if (pl->stop || pl->next_decode >= pl->n) break;
        pthread_cond_wait(&pl->cv, &pl->mu);
    }
    pthread_mutex_unlock(&pl->mu);
    return NULL;
}

/* Waits (decoding meanwhile) until input i is decoded; returns its task. */
static decode_task *pool_take(decode_pool *pl, size_t i)
{
    pthread_mutex_lock(&pl->mu);
    while (!pl->ready[i % (size_t)pl->nslot]) {
        size_t j = pool_claim(pl);
        if (j < pl->n) {
            pthread_mutex_unlock(&pl->mu);
            pool_decode(pl, j); /* returns locked */
            continue;
        }
        pthread_cond_wait(&pl->cv, &pl->mu);
    }
    pthread_mutex_unlock(&pl->mu);
    return &pl->task[i % (size_t)pl->nslot];
}

/* Input i is merged: its slot takes the input nslot places on. */
static void pool_release(decode_pool *pl, size_t i)
{
    pthread_mutex_lock(&pl->mu);
    pl->ready[i % (size_t)pl->nslot] = 0;
    pl->next_merge = i + 1;
    pthread_cond_broadcast(&pl->cv);
    pthread_mutex_unlock(&pl->mu);
}

static void pool_stop(decode_pool *pl, pthread_t *helpers, int nhelpers)
{
    pthread_mutex_lock(&pl->mu);
    pl->stop = 1;
    pthread_cond_broadcast(&pl->cv);
    pthread_mutex_unlock(&pl->mu);
    for (int k = 0; k < nhelpers; k++) pthread_join(helpers[k], NULL);
}

static void note_facts(ap_pprof_input_facts *f, const ap_pprof_profile *p)
{
    f->time_nanos = p->time_nanos;
    f->duration_nanos = p->duration_nanos;
    f->samples = p->nsamples;
    f->first_total = ap_pprof_total_of(p, 0);
    f->filled = 1;
}

/* One pass over the inputs into a merged profile. In the first pass (types->fixed == 0) input 0
 * goes in whole and the types are counted; when a later input lacks one of input 0's types the
 * pass stops merging (*redo = 1) and only decodes the rest, so that a second pass with the
 * common types fixed merges exactly what Go's CompatibilizeSampleTypes + Merge would. */
static ap_pprof_profile *merge_pass(const ap_pprof_input *inputs, size_t n,
                                    const ap_pprof_limits *limits, int threads, type_set *types,
                                    int *redo, ap_pprof_merge_summary *sum, ap_pprof_error *err)
{
    ap_pprof_profile *merged = NULL;
    decode_pool pool;
    memset(&pool, 0, sizeof pool);
    pthread_mutex_init(&pool.mu, NULL);
    pthread_cond_init(&pool.cv, NULL);
    pool.inputs = inputs;
    pool.n = n;
    /* Helpers: one fewer than the threads (the caller decodes too), none beyond the inputs
     * after the first. Scratch profiles: one per decoding thread plus the one being merged
     * (so no thread idles while the caller merges), at most one per input. */
    int nhelpers = threads - 1;
    if (nhelpers > POOL_MAX - 2) nhelpers = POOL_MAX - 2;
    if ((size_t)nhelpers > n - 1) nhelpers = (int)(n - 1);
    if (nhelpers < 0) nhelpers = 0;
    pool.nslot = nhelpers + 2;
    if ((size_t)pool.nslot > n) pool.nslot = n < 2 ? 2 : (int)n;
    pthread_t helpers[POOL_MAX];
    int started = 0;
    ap_pprof_merger *m = ap_pprof_merger_new();
    ap_pprof_error incompatible;
    ap_pprof_error_clear(&incompatible);
    *redo = 0;
    int ok = m != NULL;
    for (int k = 0; k < pool.nslot; k++) {
        pool.task[k].limits = limits;
        if (ok && !(pool.task[k].p = ap_pprof_profile_new())) ok = 0;
    }
    if (!ok) {
        ap_pprof_fail(err, AP_PPROF_ENOMEM, "out of memory");
        goto done;
    }
    for (; started < nhelpers; started++)
        if (pthread_create(&helpers[started], NULL, pool_helper, &pool) != 0) break;
    for (size_t i = 0; i < n; i++) {
        decode_task *cur = pool_take(&pool, i);
        const ap_pprof_profile *src = inputs[i].profile;
        if (!src) {
            if (cur->rc) {
                *err = cur->err;
                err->input = (int)i;
                goto done;
            }
            src = cur->p;
            sum->bytes_in += cur->bytes;
            sum->decompressed_in += cur->p->decompressed_size;
        }
        sum->inputs++;
        sum->samples_in += src->nsamples;
        if (inputs[i].facts) note_facts(inputs[i].facts, src);
        if (!types->fixed) {
            if (i == 0 && types_init(types, src)) {
                ap_pprof_fail(err, AP_PPROF_ENOMEM, "out of memory");
                goto done;
            }
            if (!types_count(types, src, (int)i) && i > 0) *redo = 1;
        }
        /* After an incompatible input the rest are still decoded: parsing precedes merging in
         * the original, so a malformed input is what gets reported. */
        if (incompatible.code || *redo) {
            pool_release(&pool, i);
            continue;
        }
        projection pj = {0};
        const ap_pprof_profile *view = src;
        if (i > 0 || types->fixed) {
            if (!types->fixed)
                for (uint32_t k = 0; k < types->n; k++) types->keep[k] = 1;
            view = project(src, types, &pj, err);
            if (!view) {
                if (err->code != AP_PPROF_EINCOMPATIBLE) {
                    err->input = (int)i;
                    goto done;
                }
                incompatible = *err;
                incompatible.input = (int)i;
                incompatible.other = 0;
                pool_release(&pool, i);
                continue;
            }
        }
        double ratio = inputs[i].scale;
        if (ratio != 0 && ratio != 1) {
            view = scale_view(view, ratio, &pj, err);
            if (!view) {
                projection_free(&pj);
                err->input = (int)i;
                goto done;
            }
        }
        int rc = ap_pprof_merger_add(m, view, err);
        projection_free(&pj);
        pool_release(&pool, i);
        if (rc) {
            if (err->code != AP_PPROF_EINCOMPATIBLE) {
                err->input = (int)i;
                goto done;
            }
            incompatible = *err;
            incompatible.input = (int)i;
            incompatible.other = 0;
        }
    }
    if (!types->fixed) {
        int any = 0;
        for (uint32_t k = 0; k < types->n; k++) any |= types->count[k] == n;
        if (!any && n > 1) {
            ap_pprof_fail(err, AP_PPROF_EINCOMPATIBLE, "no sample type is common to every profile");
            err->input = types->empty_at >= 0 ? types->empty_at : 0;
            err->other = 0;
            goto done;
        }
    }
    if (incompatible.code) {
        *err = incompatible;
        goto done;
    }
    if (*redo) goto done;
    pool_stop(&pool, helpers, started);
    started = 0;
    for (int k = 0; k < pool.nslot; k++) {
        ap_pprof_profile_free(pool.task[k].p);
        pool.task[k].p = NULL;
        free(pool.task[k].buf);
        pool.task[k].buf = NULL;
    }
    merged = ap_pprof_merger_finish(m, err);
done:
    if (err->code != AP_PPROF_OK) *redo = 0; /* a failure ends the merge: no second pass */
    pool_stop(&pool, helpers, started);
    for (int k = 0; k < pool.nslot; k++) {
        ap_pprof_profile_free(pool.task[k].p);
        free(pool.task[k].buf);
    }
    pthread_mutex_destroy(&pool.mu);
    pthread_cond_destroy(&pool.cv);
    ap_pprof_merger_free(m);
    return merged;
}

int ap_pprof_merge_encoded(const ap_pprof_input *inputs, size_t n, const ap_pprof_limits *limits,
                           const ap_pprof_pruner *pruner, const ap_pprof_encode_opts *opts,
                           uint8_t **out, size_t *out_len, ap_pprof_profile **out_profile,
                           ap_pprof_merge_summary *summary, ap_pprof_error *err)
{
    ap_pprof_error_clear(err);
    if (out) *out = NULL;
    if (out_len) *out_len = 0;
    if (out_profile) *out_profile = NULL;
    ap_pprof_merge_summary sum;
    memset(&sum, 0, sizeof sum);
    if (n == 0) return ap_pprof_fail(err, AP_PPROF_EINVAL, "no profiles to merge");
    if (!out && !out_profile)
        return ap_pprof_fail(err, AP_PPROF_EINVAL, "neither bytes nor a profile requested");
    int threads = opts && opts->threads > 0 ? opts->threads : ap_zpar_auto_threads();

    int rc = -1, redo = 0;
    type_set types;
    memset(&types, 0, sizeof types);
    ap_pprof_profile *merged = merge_pass(inputs, n, limits, threads, &types, &redo, &sum, err);
    if (!merged && redo) {
        /* Some type of input 0 is not in every input: merge again, each input reduced to the
         * common types (a mixed fleet still yields one profile, as in Go's pprof). */
        for (uint32_t k = 0; k < types.n; k++) types.keep[k] = types.count[k] == n;
        types.fixed = 1;
        memset(&sum, 0, sizeof sum);
        merged = merge_pass(inputs, n, limits, threads, &types, &redo, &sum, err);
    }
    if (!merged) goto done;
    if (pruner) {
        if (ap_pprof_prune(merged, pruner, err)) goto done;
        /* Pruning can leave identical stacks apart: Compact adds them up again, so a base
         * pruned at every merge equals one merge of everything pruned once. */
        ap_pprof_profile *compact = ap_pprof_compact(merged, err);
        if (!compact) goto done;
        ap_pprof_profile_free(merged);
        merged = compact;
    }
    sum.samples = merged->nsamples;
    sum.locations = merged->nlocations;
    sum.functions = merged->nfunctions;
    sum.mappings = merged->nmappings;
    if (out) {
        if (ap_pprof_encode(merged, opts, out, out_len, err)) goto done;
        sum.bytes_out = *out_len;
    }
    if (out_profile) {
        *out_profile = merged;
        merged = NULL;
    }
    rc = 0;
done:
    if (rc && out && *out) {
        free(*out);
        *out = NULL;
    }
    if (summary) *summary = sum;
    ap_pprof_profile_free(merged);
    types_free(&types);
    return rc;
}
