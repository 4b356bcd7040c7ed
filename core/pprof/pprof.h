/* The pprof core: decode, validate, merge, prune and encode profile.proto profiles with the
 * semantics of github.com/google/pprof/profile (Debian's build). Plain C, no Lua. */
#ifndef AP_PPROF_H
#define AP_PPROF_H

#include <stddef.h>
#include <stdint.h>

/* ---- errors ------------------------------------------------------------------------------- */

typedef enum {
    AP_PPROF_OK = 0,
    AP_PPROF_EMALFORMED,    /* "MALFORMED": not a valid profile (gzip, wire format, references) */
    AP_PPROF_ETOOLARGE,     /* "TOO_LARGE": past a decompressed-size or memory limit */
    AP_PPROF_EINCOMPATIBLE, /* "INCOMPATIBLE": merge of profiles with different types */
    AP_PPROF_EPATTERN,      /* "BAD_PATTERN": a prune regular expression does not compile */
    AP_PPROF_ENOMEM,        /* "NOMEM": an allocation failed */
    AP_PPROF_EINVAL,        /* "INVALID_ARGUMENT": a caller error (no inputs, bad option) */
    AP_PPROF_EIO,           /* "IO": an input file could not be read */
} ap_pprof_status;

typedef struct {
    ap_pprof_status code;
    int input;     /* merge: 0-based index of the input that failed, -1 when none */
    int other;     /* merge: for INCOMPATIBLE, the input it was compared with (0), else -1 */
    char msg[320]; /* what is wrong and where, without the code prefix */
} ap_pprof_error;

/* "MALFORMED", "TOO_LARGE", ... ("OK" for AP_PPROF_OK). */
const char *ap_pprof_code_name(ap_pprof_status code);
void ap_pprof_error_clear(ap_pprof_error *err);

/* ---- limits ------------------------------------------------------------------------------- */

/* Zero fields take the defaults below. Memory is bounded by max_memory whatever the input. */
typedef struct {
    uint64_t max_decompressed; /* bytes of protobuf after gunzip; default 512 MiB */
    uint64_t max_memory;       /* bytes the decoded profile may use; default 2 GiB */
} ap_pprof_limits;

#define AP_PPROF_DEFAULT_MAX_DECOMPRESSED (512ull << 20)
#define AP_PPROF_DEFAULT_MAX_MEMORY       (2048ull << 20)

/* ---- the profile -------------------------------------------------------------------------- */

#define AP_PPROF_NONE UINT32_MAX /* an absent reference (e.g. a location without mapping) */

typedef struct {
    const char *ptr;
    uint32_t len;
    uint32_t hash; /* low bits of the string's hash, valid once the pool is interned */
} ap_pprof_str;

enum {
    AP_PPROF_HAS_FUNCTIONS = 1,
    AP_PPROF_HAS_FILENAMES = 2,
    AP_PPROF_HAS_LINE_NUMBERS = 4,
    AP_PPROF_HAS_INLINE_FRAMES = 8,
};

typedef struct {
    uint64_t id, start, limit, offset;
    uint32_t file, build_id; /* string indices */
    uint32_t flags;          /* AP_PPROF_HAS_* */
} ap_pprof_mapping;

typedef struct {
    uint64_t id;
    int64_t start_line;
    uint32_t name, system_name, filename; /* string indices */
} ap_pprof_function;

typedef struct {
    uint64_t id, address;
    uint32_t mapping;         /* index into mappings or AP_PPROF_NONE */
    uint32_t line_off, nline; /* range of lines[]; lines[line_off] is the innermost frame */
    uint32_t is_folded;
} ap_pprof_location;

typedef struct {
    uint32_t function; /* index into functions */
    uint32_t pad_;
    int64_t line;
    int64_t column; /* newer profile.proto field (Line.column); Debian's pprof ignores it */
} ap_pprof_line;

typedef struct {
    uint32_t loc_off, nloc;     /* range of sample_locs[]; sample_locs[loc_off] is the leaf */
    uint32_t label_off, nlabel; /* range of labels[] */
} ap_pprof_sample;

enum {
    AP_PPROF_LABEL_NUM = 1,      /* numeric label (num/unit), else a string label (str) */
    AP_PPROF_LABEL_UNIT_SET = 2, /* numeric: the key has units in this sample (Go's NumUnit) */
};

typedef struct {
    uint32_t key, str, unit; /* string indices; str for string labels, unit for numeric ones */
    uint32_t flags;          /* AP_PPROF_LABEL_* */
    int64_t num;
} ap_pprof_label;

typedef struct ap_pprof_arena_chunk ap_pprof_arena_chunk;

/* A decoded or merged profile. Everything refers to entries by index; `id` fields are the ids
 * written on encode (merge output: index + 1). Values of sample i are
 * values[i * nsample_type .. +nsample_type). Strings live in `strings` (index 0 is ""). */
typedef struct ap_pprof_profile {
    ap_pprof_str *strings;
    uint32_t nstrings, strings_cap;
    uint32_t *string_ht; /* intern table (slot = index + 1), NULL until needed */
    uint32_t string_ht_cap;
    int strings_unique; /* no two indices hold equal strings */

    uint32_t *sample_type; /* pairs: type, unit string indices */
    uint32_t nsample_type, cap_sample_type;
    uint32_t period_type[2];
    int64_t period, time_nanos, duration_nanos;
    uint32_t drop_frames, keep_frames, default_sample_type, doc_url;
    uint32_t *comments;
    uint32_t ncomments, cap_comments;

    ap_pprof_mapping *mappings;
    ap_pprof_function *functions;
    ap_pprof_location *locations;
    ap_pprof_line *lines;
    ap_pprof_sample *samples;
    uint32_t *sample_locs; /* location indices */
    int64_t *values;
    ap_pprof_label *labels;
    uint32_t nmappings, nfunctions, nlocations, nlines, nsamples, nsample_locs, nlabels;
    uint32_t cap_mappings, cap_functions, cap_locations, cap_lines, cap_samples, cap_labels;
    size_t cap_sample_locs, cap_values;

    /* Labels of each sample are in Go's encoding order (string labels by key, then numeric
     * labels by key, values of one key in their original order). Set by merge. */
    int labels_sorted;

    /* How it was read (0 for a merge result). */
    uint64_t wire_size;         /* bytes given to decode */
    uint64_t decompressed_size; /* protobuf bytes */
    int gzipped;

    /* Allocation bookkeeping. */
    ap_pprof_arena_chunk *arena;
    uint64_t mem_used, mem_limit;
    int busy; /* set by bindings while a thread-pool job reads the profile */
} ap_pprof_profile;

/* The location indices of sample s, leaf first; NULL when it has none. A profile whose samples
 * have no locations has no sample_locs array at all, and &NULL[off] is undefined behaviour. */
static inline uint32_t *ap_pprof_sample_locs(const ap_pprof_profile *p, const ap_pprof_sample *s)
{
    return s->nloc ? p->sample_locs + s->loc_off : NULL;
}

ap_pprof_profile *ap_pprof_profile_new(void);
void ap_pprof_profile_free(ap_pprof_profile *p);
/* Empties the profile but keeps its allocations for reuse. */
void ap_pprof_profile_clear(ap_pprof_profile *p);
/* Gives back the growth slack of its arrays (for profiles that are kept around). */
void ap_pprof_profile_shrink(ap_pprof_profile *p);
/* Bytes of memory the profile holds. */
uint64_t ap_pprof_profile_memory(const ap_pprof_profile *p);

static inline const ap_pprof_str *ap_pprof_string(const ap_pprof_profile *p, uint32_t i)
{
    return &p->strings[i];
}

/* Interns a string (copied) and returns its index, or AP_PPROF_NONE when out of memory. */
uint32_t ap_pprof_intern(ap_pprof_profile *p, const char *s, size_t len);

/* ---- decode / validate -------------------------------------------------------------------- */

/* Decodes gzip'd or raw profile.proto bytes and checks them exactly as profile.Parse does
 * (protobuf only: the legacy text formats are rejected). `limits` may be NULL. On failure
 * returns NULL and fills `err`. */
ap_pprof_profile *ap_pprof_decode(const void *data, size_t len, const ap_pprof_limits *limits,
                                  ap_pprof_error *err);
/* The same into an existing profile (cleared first), reusing its allocations. */
int ap_pprof_decode_into(ap_pprof_profile *p, const void *data, size_t len,
                         const ap_pprof_limits *limits, ap_pprof_error *err);

/* Whether `go build -pgo` (Go 1.21-1.23's loader) can use the profile, and why not. */
typedef struct {
    int usable;      /* the loader accepts it */
    int empty;       /* accepted, but there is nothing to optimise (no weighted call edges) */
    int value_index; /* the sample type it weighs by, -1 when there is none */
    uint64_t edges;  /* distinct weighted call edges the loader would use */
    int64_t total_weight;
    char reason[200]; /* why it is not usable, or what is notable ("no samples") */
} ap_pprof_pgo;

int ap_pprof_pgo_check(const ap_pprof_profile *p, ap_pprof_pgo *out, ap_pprof_error *err);

/* ---- merge -------------------------------------------------------------------------------- */

typedef struct ap_pprof_merger ap_pprof_merger;

/* Incremental profile.Merge: add inputs in order, then finish. Each added profile may be freed
 * or reused right after ap_pprof_merger_add returns. */
ap_pprof_merger *ap_pprof_merger_new(void);
int ap_pprof_merger_add(ap_pprof_merger *m, const ap_pprof_profile *src, ap_pprof_error *err);
/* Returns the merged profile (compacted, zero samples dropped) and resets the merger. */
ap_pprof_profile *ap_pprof_merger_finish(ap_pprof_merger *m, ap_pprof_error *err);
void ap_pprof_merger_free(ap_pprof_merger *m);

/* profile.Merge(srcs). err->input names an input that is incompatible with srcs[0]. */
ap_pprof_profile *ap_pprof_merge(const ap_pprof_profile *const *srcs, size_t n,
                                 ap_pprof_error *err);
/* profile.Compact(): a merge of one. */
ap_pprof_profile *ap_pprof_compact(const ap_pprof_profile *p, ap_pprof_error *err);

/* ---- prune -------------------------------------------------------------------------------- */

typedef struct {
    const char *drop; /* required */
    const char *keep; /* NULL for none; "" matches everything (as Go compiles it) */
} ap_pprof_prune_rule;

typedef struct ap_pprof_pruner ap_pprof_pruner;

/* Compiles rules (PCRE2, unanchored, UTF-8). err->input is the index of a bad rule. */
ap_pprof_pruner *ap_pprof_pruner_new(const ap_pprof_prune_rule *rules, size_t n,
                                     ap_pprof_error *err);
void ap_pprof_pruner_free(ap_pprof_pruner *pr);
/* Profile.Prune(drop, keep) for each rule in order. Does not compact (neither does Go). */
int ap_pprof_prune(ap_pprof_profile *p, const ap_pprof_pruner *pr, ap_pprof_error *err);
/* pprof's simplifyFunc: strips a leading '.' and an argument list, keeping
 * "(anonymous namespace)" and "operator()". Returns the simplified length of `name`'s prefix
 * starting at *start. */
size_t ap_pprof_simplify_func(const char *name, size_t len, size_t *start);

/* ---- encode ------------------------------------------------------------------------------- */

typedef struct {
    int level;   /* gzip level 0-9, -1 for zlib's default (6, what Go's gzip.NewWriter uses) */
    int raw;     /* 1: plain protobuf, no gzip */
    int threads; /* threads, 0 for automatic (CPUs + 1, at most 4); same bytes either way */
} ap_pprof_encode_opts;

/* Serializes like Profile.Write: same field order and string table order as Go, gzip with a
 * zero mtime, so the output is a pure function of the profile. *out is malloc'd. */
int ap_pprof_encode(const ap_pprof_profile *p, const ap_pprof_encode_opts *opts, uint8_t **out,
                    size_t *out_len, ap_pprof_error *err);

/* ---- one-shot pipeline -------------------------------------------------------------------- */

/* What an input says of itself, as decoded (before any projection or scale): what a caller that
 * merges undecoded bodies still needs of each (the worker files uploads by capture time). */
typedef struct {
    int64_t time_nanos, duration_nanos;
    int64_t first_total; /* the sum of the first sample type's values, 0 when there is none */
    uint32_t samples;
    int filled; /* 1 once the input was decoded */
} ap_pprof_input_facts;

typedef struct {
    const void *data;
    size_t len;
    const ap_pprof_profile *profile; /* used instead of data/len when set */
    const char *path;                /* a file to read instead, when set (and no profile) */
    double scale; /* Go's Profile.Scale(scale) of this input before it is merged; 0 or 1: none */
    ap_pprof_input_facts *facts; /* filled when set (by ap_pprof_merge_encoded) */
} ap_pprof_input;

typedef struct {
    uint32_t inputs, samples_in, samples, locations, functions, mappings;
    uint64_t bytes_in, decompressed_in, bytes_out;
} ap_pprof_merge_summary;

/* The one merge of autopgo (the worker and `autopgo merge` call it alike): decode every input,
 * CompatibilizeSampleTypes (keep the sample types common to every input, by name, in input 0's
 * order; INCOMPATIBLE when there is none), Merge, Prune with each rule, Compact when pruned, and
 * encode (when out != NULL) or return the profile (when out_profile != NULL). Inputs are decoded
 * one at a time, so peak memory is the merged profile plus one input (inputs whose types differ
 * from input 0's are decoded twice). err->input is the index of the input that failed (messages
 * do not name it: callers know their inputs' names); for INCOMPATIBLE, err->other is the input it
 * was compared with. When an input is incompatible the remaining inputs are still decoded so
 * that a malformed one is reported first, as parsing comes before merging in the original
 * worker. */
int ap_pprof_merge_encoded(const ap_pprof_input *inputs, size_t n, const ap_pprof_limits *limits,
                           const ap_pprof_pruner *pruner, const ap_pprof_encode_opts *opts,
                           uint8_t **out, size_t *out_len, ap_pprof_profile **out_profile,
                           ap_pprof_merge_summary *summary, ap_pprof_error *err);

/* ---- inspection and editing --------------------------------------------------------------- */

/* The sample type index pprof shows by default: default_sample_type if it names one, else the
 * last; -1 when there are none. */
int ap_pprof_default_index(const ap_pprof_profile *p);

typedef struct {
    uint32_t function; /* index */
    int64_t flat, cum;
} ap_pprof_top_entry;

/* Functions by weight of sample type `index`: fills up to n entries sorted by flat (by_cum = 0)
 * or cumulative weight, and returns how many it filled (-1 when out of memory). */
int ap_pprof_top(const ap_pprof_profile *p, int index, int by_cum, ap_pprof_top_entry *out,
                 size_t n);
/* Sum of each sample type's values into totals[nsample_type]. */
void ap_pprof_totals(const ap_pprof_profile *p, int64_t *totals);
/* The sum of sample type k's values (as ap_pprof_totals adds them); 0 when there is no type k. */
int64_t ap_pprof_total_of(const ap_pprof_profile *p, uint32_t k);

/* Renames function f (its name, and its system name when that equaled the name). */
int ap_pprof_rename_function(ap_pprof_profile *p, uint32_t f, const char *name, size_t len,
                             ap_pprof_error *err);
/* Removes every label (string or numeric) with this key from every sample; returns how many
 * label values it removed. */
uint64_t ap_pprof_drop_label(ap_pprof_profile *p, const char *key, size_t len);

#endif
