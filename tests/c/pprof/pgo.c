/* Tests core/pprof/pgo.c against the decisions of Go 1.23's PGO loader recorded for the corpus
 * (testdata/pprof/README.md; tools/goref checks the same against `go tool preprofile`). */
#include <stdlib.h>

#include "helpers.h"

static void expect(const char *file, int usable, int empty, uint64_t edges, const char *why)
{
    size_t len;
    uint8_t *b = t_data(file, &len);
    ap_pprof_profile *p = b ? t_decode(b, len) : NULL;
    free(b);
    if (!p) return;
    ap_pprof_pgo g;
    ap_pprof_error err;
    CHECK_INT(ap_pprof_pgo_check(p, &g, &err), 0);
    if (g.usable != usable || g.empty != empty || g.edges != edges ||
        (why && !strstr(g.reason, why)))
        fprintf(stderr, "%s: usable=%d empty=%d edges=%llu reason=%s\n", file, g.usable, g.empty,
                (unsigned long long)g.edges, g.reason);
    CHECK_INT(g.usable, usable);
    CHECK_INT(g.empty, empty);
    CHECK_INT(g.edges, edges);
    if (why) CHECK(strstr(g.reason, why) != NULL);
    ap_pprof_profile_free(p);
}

int main(void)
{
    const char *no_type = "no samples/count or cpu/nanoseconds";
    const char *no_start = "start_line";
    expect("autopgo/default.pgo", 1, 0, 1247, NULL);
    expect("goapp-go123-cpu-1.pb.gz", 1, 0, 301, NULL);
    expect("goapp-go123-cpu-2.pb.gz", 1, 0, 279, NULL);
    expect("goapp-go123-cpu-3.pb.gz", 1, 0, 303, NULL);
    expect("goapp-cpu-1.pb.gz", 0, 0, 0, no_start);
    expect("goapp-cpu-2.pb.gz", 0, 0, 0, no_start);
    expect("goapp-cpu-3.pb.gz", 0, 0, 0, no_start);
    const char *three[] = {"edge/cpu-only-nanoseconds.pb.gz",
                           "edge/dangling-mapping-id.pb.gz",
                           "edge/duplicate-samples.pb.gz",
                           "edge/empty-stack-sample.pb.gz",
                           "edge/labels-multi-and-numeric.pb.gz",
                           "edge/minimal-uncompressed.pb",
                           "edge/minimal.pb.gz",
                           "edge/period-1ms.pb.gz",
                           "edge/zero-value-samples.pb.gz"};
    for (size_t i = 0; i < sizeof three / sizeof *three; i++) expect(three[i], 1, 0, 3, NULL);
    expect("edge/heap-sample-types.pb.gz", 0, 0, 0, no_type);
    expect("edge/no-samples.pb.gz", 1, 1, 0, "no samples");
    expect("edge/no-start-line.pb.gz", 0, 0, 0, no_start);
    expect("google-pprof/derived/driver--cppbench.cpu.pb.gz", 0, 0, 0, no_start);
    expect("google-pprof/derived/profile--cppbench.heap.pb.gz", 0, 0, 0, no_type);
    expect("google-pprof/derived/profile--java.cpu.pb.gz", 0, 0, 0, no_start);
    expect("google-pprof/driver--go.nomappings.crash", 0, 0, 0, no_type);
    expect("google-pprof/proftest--large.cpu", 0, 0, 0, no_start);
    expect("google-pprof/report--sample.cpu", 0, 0, 0, no_start);
    return t_done();
}
