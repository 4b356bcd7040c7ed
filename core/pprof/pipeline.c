/* What the worker does to a batch of profiles, in one call: decode each input (one at a time,
 * reusing one profile's buffers), Merge, Prune with each rule, encode. */
#include <stdlib.h>

#include "internal.h"

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

    int rc = -1;
    ap_pprof_profile *scratch = NULL, *merged = NULL;
    ap_pprof_merger *m = ap_pprof_merger_new();
    ap_pprof_error incompatible;
    ap_pprof_error_clear(&incompatible);
    if (!m) {
        ap_pprof_fail(err, AP_PPROF_ENOMEM, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        const ap_pprof_profile *src = inputs[i].profile;
        if (!src) {
            if (!scratch && !(scratch = ap_pprof_profile_new())) {
                ap_pprof_fail(err, AP_PPROF_ENOMEM, "out of memory");
                goto done;
            }
            if (ap_pprof_decode_into(scratch, inputs[i].data, inputs[i].len, limits, err)) {
                err->input = (int)i;
                goto done;
            }
            src = scratch;
            sum.bytes_in += inputs[i].len;
            sum.decompressed_in += scratch->decompressed_size;
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
    ap_pprof_profile_free(scratch);
    scratch = NULL;
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
    if (rc && out && *out) {
        free(*out);
        *out = NULL;
    }
    if (summary) *summary = sum;
    ap_pprof_profile_free(scratch);
    ap_pprof_profile_free(merged);
    ap_pprof_merger_free(m);
    return rc;
}
