/* What the web view shows of a profile, as JSON computed in C: the flame graph (a call tree by
 * function name, small frames folded into "(other)" so the answer has a fixed bound) and the top
 * table (flat and cumulative per function, in `go tool pprof -top`'s order). */
#ifndef AP_PPROF_FLAME_H
#define AP_PPROF_FLAME_H

#include <stddef.h>
#include <stdint.h>

#include "pprof.h"

/* Bounds of the flame graph answer: at most max_nodes nodes (the "(other)" ones included), each
 * name cut to AP_PPROF_FLAME_MAX_NAME bytes, so the JSON stays under
 * max_nodes * AP_PPROF_FLAME_NODE_BYTES + 1 KiB whatever the profile's size (4000 nodes: < 2 MB).
 */
#define AP_PPROF_FLAME_DEFAULT_NODES 4000u
#define AP_PPROF_FLAME_LIMIT_NODES   20000u
#define AP_PPROF_FLAME_MAX_NAME      200u
#define AP_PPROF_FLAME_NODE_BYTES    (2u * AP_PPROF_FLAME_MAX_NAME + 90u)

/* Bounds of the top table: at most this many functions, names whole (they must equal pprof's). */
#define AP_PPROF_TOP_DEFAULT_ROWS 100u
#define AP_PPROF_TOP_LIMIT_ROWS   5000u

typedef struct {
    int index;          /* sample type to weigh by; -1 for pprof's default */
    uint32_t max_nodes; /* 0 for AP_PPROF_FLAME_DEFAULT_NODES; at most AP_PPROF_FLAME_LIMIT_NODES */
} ap_pprof_flame_opts;

/* {"sampleType","unit","total","frames","nodes","maxNodes","root":{"name","value","self",
 * "children":[...]}}: value is the node's total, self what stops in it; a node's dropped
 * children are one child {"name":"(other)","value","self","other":<how many>}. The tree has the
 * shape d3-flame-graph reads. *out is malloc'd (not NUL-terminated). */
int ap_pprof_flame_json(const ap_pprof_profile *p, const ap_pprof_flame_opts *opts, char **out,
                        size_t *out_len, ap_pprof_error *err);

/* {"sampleType","unit","total","functions","rows":[{"name","flat","cum"[,"inline"]}]}: every
 * function (by name, inlined frames included, cum counted once per sample) sorted as pprof's text
 * report does (flat descending, then name), the first `limit` of them (0: the default; at most
 * AP_PPROF_TOP_LIMIT_ROWS). "inline" is pprof's annotation: "inline" when every call into the
 * function was inlined, "partial-inline" when some were. `index` as for the flame graph. */
int ap_pprof_top_json(const ap_pprof_profile *p, int index, uint32_t limit, char **out,
                      size_t *out_len, ap_pprof_error *err);

/* Both views of one profile, names and distinct stacks built once (the web view's page asks for
 * both): the flame graph as ap_pprof_flame_json with opts, the top table as ap_pprof_top_json
 * with `limit` rows, and row_end[i] the offset in top just past row i (i < nrows), so the table
 * with its first n rows is top[0 .. row_end[n - 1]) followed by "]}" (or, for no row, up to
 * the '[' of "rows"). */
typedef struct {
    char *flame, *top;
    size_t flame_len, top_len;
    size_t *row_end;
    uint32_t nrows;
} ap_pprof_views;

int ap_pprof_views_json(const ap_pprof_profile *p, const ap_pprof_flame_opts *opts, uint32_t limit,
                        ap_pprof_views *v, ap_pprof_error *err);
void ap_pprof_views_free(ap_pprof_views *v);

#endif
