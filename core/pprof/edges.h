/* The compiler's view of a profile (Go 1.23 cmd/internal/pgo): the named call-edge map and its
 * total weight, written as a minimal pprof or as `GO PREPROFILE V1`, and the decisions the
 * compiler derives from it (99 % CDF hot call sites, hot callees, devirtualization targets). */
#ifndef AP_PPROF_EDGES_H
#define AP_PPROF_EDGES_H

#include "pprof.h"

/* One named call edge; names are offsets into ap_pgo_edges.names (not NUL-terminated). */
typedef struct {
    size_t caller, callee;
    uint32_t caller_len, callee_len;
    int64_t offset; /* caller line - caller Function.start_line */
    int64_t weight;
} ap_pgo_edge;

enum { AP_PGO_SAMPLES_COUNT = 0, AP_PGO_CPU_NANOSECONDS = 1 };

typedef struct {
    int usable;     /* go build -pgo accepts it */
    int empty;      /* accepted, but the compiler ignores it (no edges, or weights sum to 0) */
    int kind;       /* the weight's sample type: AP_PGO_* (samples/count when from preprofile) */
    int preprofile; /* read from GO PREPROFILE V1 text */
    char reason[200];
    int64_t total_weight; /* sum of the edge weights (Go's TotalWeight) */
    ap_pgo_edge *edges;   /* Go's NamedEdgeMap.ByWeight order */
    size_t n, cap;
    char *names;
    size_t names_len, names_cap;
} ap_pgo_edges;

/* The edge map exactly as FromPProf builds it. An unusable profile still gives an object (usable
 * = 0, reason set); only allocation failures fail. */
int ap_pgo_edges_from_profile(const ap_pprof_profile *p, ap_pgo_edges **out, ap_pprof_error *err);
/* Parses `GO PREPROFILE V1` text as the compiler does (FromSerialized); order kept as written. */
int ap_pgo_edges_from_preprofile(const void *data, size_t len, ap_pgo_edges **out,
                                 ap_pprof_error *err);
/* Either input format: preprofile text when it starts with the header, empty input as an empty
 * profile (Go's ErrNoData), else a pprof profile (gzip'd or not). */
int ap_pgo_edges_load(const void *data, size_t len, const ap_pprof_limits *limits,
                      ap_pgo_edges **out, ap_pprof_error *err);
void ap_pgo_edges_free(ap_pgo_edges *e);

static inline const char *ap_pgo_caller(const ap_pgo_edges *e, const ap_pgo_edge *x)
{
    return e->names + x->caller;
}
static inline const char *ap_pgo_callee(const ap_pgo_edges *e, const ap_pgo_edge *x)
{
    return e->names + x->callee;
}

/* The suffix the no-inline list appends to callee names: the compiler finds no function of that
 * name, so the callee is never a hot inline target, while the edge keeps its weight (the total and
 * every other decision stay as they were) and its place in the sort order. */
#define AP_PGO_NO_INLINE_SUFFIX " (autopgo: no_inline)"

/* Renames every edge whose callee is one of names[0..n) (exact linker names); returns how many
 * edges it renamed, -1 when out of memory. Edges that become equal are summed, as Go would. */
long ap_pgo_edges_no_inline(ap_pgo_edges *e, const char *const *names, const size_t *lens, size_t n,
                            ap_pprof_error *err);

/* `go tool preprofile` output for the map, byte for byte (*out malloc'd). Fails with
 * INVALID_ARGUMENT when the profile is not usable. */
int ap_pgo_write_preprofile(const ap_pgo_edges *e, uint8_t **out, size_t *len, ap_pprof_error *err);

/* The smallest pprof profile FromPProf reads back as this exact map: one sample type, one
 * function per name (start line 1), one location per (function, line), one two-frame sample per
 * edge, in ByWeight order; no labels, mappings, addresses or times. A pure function of the map,
 * so equal maps give equal bytes. */
int ap_pgo_minimal_profile(const ap_pgo_edges *e, ap_pprof_profile **out, ap_pprof_error *err);

/* Per call site (caller, offset): the devirtualization choice, the heaviest callee (ties: the
 * lexicographically first name, as devirtualize/pgo.go when both have IR). */
typedef struct {
    size_t edge;      /* index of the chosen edge */
    uint32_t callees; /* distinct callees seen at the site */
    uint32_t ties;    /* callees as heavy as the chosen one (the compiler prefers one with IR) */
    int64_t weight;   /* sum of the site's edge weights */
} ap_pgo_site;

typedef struct {
    double threshold;      /* CDF percent (Go: 99, -d=pgoinlinecdfthreshold) */
    size_t nhot;           /* edges[0..nhot) are the hot call sites' edges (hotNodesFromCDF) */
    double thres_from_cdf; /* what pgodebug prints as hot-callsite-thres-from-CDF */
    double *cum;           /* cumulative share in percent after each edge (n entries) */
    size_t *hot_callees;   /* edge index naming each distinct hot callee, by first appearance */
    size_t nhot_callees;
    ap_pgo_site *sites; /* every call site, heaviest first (ties: caller, offset) */
    size_t nsites;
} ap_pgo_decisions;

int ap_pgo_decide(const ap_pgo_edges *e, double threshold, ap_pgo_decisions *out,
                  ap_pprof_error *err);
void ap_pgo_decisions_free(ap_pgo_decisions *d);

/* The decisions as the JSON document of GET /api/profile/{app}/decisions, byte for byte what
 * autopgo.json writes (tests/lua/pgo_spec.lua's reference_doc): each list cut to its first limit
 * entries (0: all), signature (64 hex digits) as given; extra (raw JSON members, each starting with
 * a comma) goes before the closing brace. *out malloc'd, no trailing newline. */
int ap_pgo_decisions_json(const ap_pgo_edges *e, const ap_pgo_decisions *d, size_t limit,
                          const char *signature, const char *extra, size_t extra_len, uint8_t **out,
                          size_t *len, ap_pprof_error *err);

#endif
