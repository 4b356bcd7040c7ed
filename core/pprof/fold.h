/* Folding uploads into a merged profile at the cost of the uploads: the merged profile is kept
 * indexed (its tables but the samples, which are key digests and values) and encoded as
 * independently deflated segments in a temp file, of which a fold writes again only those it
 * changed. The one merge's incremental member (pipeline.c is the full one). */
#ifndef AP_PPROF_FOLD_H
#define AP_PPROF_FOLD_H

#include "pprof.h"

typedef struct ap_pprof_folder ap_pprof_folder;

typedef struct {
    uint32_t segments;     /* segments of the output */
    uint32_t rewritten;    /* segments deflated by this call (all of them after a compaction) */
    uint32_t touched;      /* samples of the base an upload changed */
    uint32_t added;        /* samples new in the output */
    uint64_t raw_deflated; /* protobuf bytes deflated by this call */
    uint64_t raw_total;    /* protobuf bytes of the output */
    int compacted;         /* the call laid the whole profile out again */
} ap_pprof_fold_stats;

/* A folder over base (an encoded profile, any layout: one written by ap_pprof_merge_encoded or
 * by an older fold is read alike) as Compact(Prune(base)) has it (pruner may be NULL; the folds
 * into it must use the same rules: a folder is made again when they change); level is the gzip
 * level of what it writes. Its segments go to a temp file under $TMPDIR (else /tmp), unlinked at
 * once. Memory: the strings, functions, locations and mappings, 24 bytes per sample (digest and
 * index slot; the values are in the segments) and 48 bytes per segment. NULL with err set
 * (MALFORMED base, IO: the temp file, ...). */
ap_pprof_folder *ap_pprof_folder_new(const void *base, size_t len, const ap_pprof_limits *limits,
                                     const ap_pprof_pruner *pruner, int level, ap_pprof_error *err);
void ap_pprof_folder_free(ap_pprof_folder *f);

/* Folds inputs (uploads, as in ap_pprof_merge_encoded, each with its scale) into the folder:
 * each is decoded, scaled, pruned with pruner (per location, as Prune on the merged whole
 * would) and merged, then the output is written to *out (gzip, malloc'd: the caller frees it).
 * The result is what ap_pprof_merge_encoded([previous output, inputs...], pruner) gives, up to
 * the order of its tables: with rules, that merge prunes the previous output again, which a fold
 * does only when it would change nothing (the folder tracks the samples a Prune would cut
 * again). Returns 0; 1 when the inputs cannot be folded (sample types other than the base's, a
 * sum cancelled out to an all-zero sample, samples a Prune would cut again), with err saying
 * why: the caller merges in full instead; -1 with err (err->input the 0-based input at fault,
 * when one is; IO when the temp file fails). After a non-zero return *out is NULL and the folder
 * is spent (it may hold part of the inputs): free it. */
int ap_pprof_folder_fold(ap_pprof_folder *f, const ap_pprof_input *inputs, size_t n,
                         const ap_pprof_limits *limits, const ap_pprof_pruner *pruner,
                         uint8_t **out, size_t *out_len, ap_pprof_fold_stats *stats,
                         ap_pprof_error *err);

/* Segment size (protobuf bytes) a fold aims at. A fold lays the whole profile out again (a
 * compaction: hottest samples first, tables in fewer segments) once the segments appended since
 * the last layout hold as many bytes as that layout did: the base has doubled, so compactions
 * cost O(log) layouts over the base's growth (or when the temp file holds more bytes no segment
 * uses than segments, past 1 MiB: segments that outgrew their room moved to its end). */
#define AP_PPROF_FOLD_SEGMENT (2u << 10)

#endif
