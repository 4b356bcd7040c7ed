/* What the worker does to a batch of profiles, in one call: decode each input (reusing two
 * profiles' buffers; the next input is decoded on a helper thread while the current one is
 * merged), Merge, Prune with each rule, encode. */
#include <errno.h>
#include <fcntl.h>
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
    size_t bytes;        /* encoded size */
    ap_pprof_error err;
    int rc;
} decode_task;

/* Reads a whole file; a file larger than any profile the limits allow is refused unread. */
static uint8_t *read_file(const char *path, uint64_t max, size_t *len, ap_pprof_error *err)
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
    buf = malloc((size_t)st.st_size ? (size_t)st.st_size : 1);
    if (!buf) {
        ap_pprof_fail(err, AP_PPROF_ENOMEM, "out of memory reading %s", path);
        goto fail;
    }
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
    free(buf);
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
    uint8_t *data = read_file(in->path, max, &len, &t->err);
    if (!data) {
        t->rc = -1;
        return NULL;
    }
    t->bytes = len;
    t->rc = ap_pprof_decode_into(t->p, data, len, t->limits, &t->err);
    free(data);
    return NULL;
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

    int rc = -1;
    ap_pprof_profile *scratch[2] = {NULL, NULL}, *merged = NULL;
    decode_task task[2];
    memset(task, 0, sizeof task);
    pthread_t helper;
    int helper_running = 0;
    ap_pprof_merger *m = ap_pprof_merger_new();
    ap_pprof_error incompatible;
    ap_pprof_error_clear(&incompatible);
    if (!m || !(scratch[0] = ap_pprof_profile_new()) || !(scratch[1] = ap_pprof_profile_new())) {
        ap_pprof_fail(err, AP_PPROF_ENOMEM, "out of memory");
        goto done;
    }
    for (int k = 0; k < 2; k++) {
        task[k].limits = limits;
        task[k].p = scratch[k];
    }
    /* Input i is decoded into scratch[i % 2]; the decode of input i + 1 overlaps the merge of
     * input i when there is more than one thread to use. */
    if (!inputs[0].profile) {
        task[0].in = &inputs[0];
        decode_thread(&task[0]);
    }
    for (size_t i = 0; i < n; i++) {
        decode_task *cur = &task[i % 2], *next = &task[(i + 1) % 2];
        if (helper_running) {
            pthread_join(helper, NULL);
            helper_running = 0;
        }
        if (i + 1 < n && !inputs[i + 1].profile) {
            next->in = &inputs[i + 1];
            if (threads > 1 && pthread_create(&helper, NULL, decode_thread, next) == 0)
                helper_running = 1;
            else
                decode_thread(next); /* sequential, just ahead of its turn */
        }
        const ap_pprof_profile *src = inputs[i].profile;
        if (!src) {
            if (cur->rc) {
                *err = cur->err;
                err->input = (int)i;
                goto done;
            }
            src = cur->p;
            sum.bytes_in += cur->bytes;
            sum.decompressed_in += cur->p->decompressed_size;
        }
        sum.inputs++;
        sum.samples_in += src->nsamples;
        /* After an incompatible input the rest are still decoded: parsing precedes merging in
         * the original, so a malformed input is what gets reported. */
        if (incompatible.code) continue;
        if (ap_pprof_merger_add(m, src, err)) {
            if (err->code != AP_PPROF_EINCOMPATIBLE) {
                err->input = (int)i;
                goto done;
            }
            incompatible = *err;
            incompatible.input = (int)i;
            incompatible.other = 0;
        }
    }
    if (incompatible.code) {
        *err = incompatible;
        goto done;
    }
    ap_pprof_profile_free(scratch[0]);
    ap_pprof_profile_free(scratch[1]);
    scratch[0] = scratch[1] = NULL;
    merged = ap_pprof_merger_finish(m, err);
    if (!merged) goto done;
    if (pruner && ap_pprof_prune(merged, pruner, err)) goto done;
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
    if (helper_running) pthread_join(helper, NULL);
    if (rc && out && *out) {
        free(*out);
        *out = NULL;
    }
    if (summary) *summary = sum;
    ap_pprof_profile_free(scratch[0]);
    ap_pprof_profile_free(scratch[1]);
    ap_pprof_profile_free(merged);
    ap_pprof_merger_free(m);
    return rc;
}
