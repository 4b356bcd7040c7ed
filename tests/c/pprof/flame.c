/* Tests core/pprof/flame.c: the flame graph and top JSON of the web view (exact answers on the
 * minimal corpus profile, the node budget and byte bound on a real one, argument errors). The
 * numbers against `go tool pprof -top` over the whole corpus are in tests/e2e/ui_spec.lua. */
#include <stdlib.h>

#include "flame.h"
#include "helpers.h"

static ap_pprof_profile *load(const char *rel)
{
    size_t len;
    uint8_t *b = t_data(rel, &len);
    if (!b) return NULL;
    ap_pprof_profile *p = t_decode(b, len);
    free(b);
    return p;
}

/* Whether out[0..len) is exactly `want`. */
static int same(const char *out, size_t len, const char *want)
{
    if (len == strlen(want) && memcmp(out, want, len) == 0) return 1;
    fprintf(stderr, "got:  %.*s\nwant: %s\n", (int)len, out, want);
    return 0;
}

static size_t count(const char *s, size_t len, const char *needle)
{
    size_t n = 0, k = strlen(needle);
    for (size_t i = 0; i + k <= len; i++)
        if (memcmp(s + i, needle, k) == 0) n++;
    return n;
}

static void test_minimal(void)
{
    ap_pprof_profile *p = load("edge/minimal.pb.gz");
    CHECK(p != NULL);
    if (!p) return;
    char *out;
    size_t len;
    ap_pprof_error err;
    CHECK_INT(ap_pprof_top_json(p, -1, 0, &out, &len, &err), 0);
    /* go tool pprof -top: sha256.block (inline) 70ms, main.work 50ms/120ms, then by name */
    CHECK(
        same(out, len,
             "{\"sampleType\":\"cpu\",\"unit\":\"nanoseconds\",\"total\":120000000,\"functions\":5,"
             "\"rows\":[{\"name\":\"crypto/sha256.block\",\"flat\":70000000,\"cum\":70000000,"
             "\"inline\":\"inline\"},{\"name\":\"main.work\",\"flat\":50000000,\"cum\":120000000},"
             "{\"name\":\"main.hash\",\"flat\":0,\"cum\":70000000},{\"name\":\"main.main\","
             "\"flat\":0,\"cum\":120000000},{\"name\":\"runtime.main\",\"flat\":0,\"cum\":"
             "120000000}]}"));
    free(out);
    CHECK_INT(ap_pprof_top_json(p, -1, 2, &out, &len, &err), 0);
    CHECK_INT(count(out, len, "\"name\""), 2);
    free(out);

    ap_pprof_flame_opts o = {.index = -1, .max_nodes = 0};
    CHECK_INT(ap_pprof_flame_json(p, &o, &out, &len, &err), 0);
    CHECK(same(out, len,
               "{\"sampleType\":\"cpu\",\"unit\":\"nanoseconds\",\"total\":120000000,\"frames\":5,"
               "\"nodes\":6,\"maxNodes\":4000,\"root\":{\"name\":\"root\",\"value\":120000000,"
               "\"self\":0,\"children\":[{\"name\":\"runtime.main\",\"value\":120000000,\"self\":0,"
               "\"children\":[{\"name\":\"main.main\",\"value\":120000000,\"self\":0,\"children\":"
               "[{\"name\":\"main.work\",\"value\":120000000,\"self\":50000000,\"children\":[{"
               "\"name\":\"main.hash\",\"value\":70000000,\"self\":0,\"children\":[{\"name\":"
               "\"crypto/sha256.block\",\"value\":70000000,\"self\":70000000,\"children\":[]}]}]}]}"
               "]}]}}"));
    free(out);
    /* three nodes: root, runtime.main and the rest folded into (other) */
    o.max_nodes = 3;
    CHECK_INT(ap_pprof_flame_json(p, &o, &out, &len, &err), 0);
    CHECK(same(
        out, len,
        "{\"sampleType\":\"cpu\",\"unit\":\"nanoseconds\",\"total\":120000000,\"frames\":5,"
        "\"nodes\":3,\"maxNodes\":3,\"root\":{\"name\":\"root\",\"value\":120000000,\"self\":0,"
        "\"children\":[{\"name\":\"runtime.main\",\"value\":120000000,\"self\":0,\"children\":"
        "[{\"name\":\"(other)\",\"value\":120000000,\"self\":120000000,\"other\":1,"
        "\"children\":[]}]}]}}"));
    free(out);

    o.max_nodes = 1;
    CHECK_INT(ap_pprof_flame_json(p, &o, &out, &len, &err), -1);
    CHECK_ERR(err, AP_PPROF_EINVAL, "max_nodes");
    CHECK(out == NULL);
    o.max_nodes = AP_PPROF_FLAME_LIMIT_NODES + 1;
    CHECK_INT(ap_pprof_flame_json(p, &o, &out, &len, &err), -1);
    o.max_nodes = 0;
    o.index = 7;
    CHECK_INT(ap_pprof_flame_json(p, &o, &out, &len, &err), -1);
    CHECK_ERR(err, AP_PPROF_EINVAL, "sample type");
    CHECK_INT(ap_pprof_top_json(p, 0, AP_PPROF_TOP_LIMIT_ROWS + 1, &out, &len, &err), -1);
    CHECK_ERR(err, AP_PPROF_EINVAL, "limit");
    ap_pprof_profile_free(p);
}

/* Every budget is kept, the answer stays under its byte bound and values stay consistent. */
static void test_budget(void)
{
    ap_pprof_profile *p = load("goapp-go123-cpu-1.pb.gz");
    CHECK(p != NULL);
    if (!p) return;
    uint32_t budgets[] = {2, 3, 10, 100, 1000, AP_PPROF_FLAME_LIMIT_NODES};
    size_t prev_nodes = 0;
    for (size_t i = 0; i < sizeof budgets / sizeof *budgets; i++) {
        ap_pprof_flame_opts o = {.index = -1, .max_nodes = budgets[i]};
        char *out;
        size_t len;
        ap_pprof_error err;
        CHECK_INT(ap_pprof_flame_json(p, &o, &out, &len, &err), 0);
        if (!out) continue;
        size_t nodes = count(out, len, "{\"name\":");
        CHECK(nodes <= budgets[i]);
        CHECK(nodes >= prev_nodes); /* a larger budget never shows less */
        prev_nodes = nodes;
        CHECK(len <= (size_t)budgets[i] * AP_PPROF_FLAME_NODE_BYTES + 1024);
        char want[64];
        snprintf(want, sizeof want, "\"nodes\":%zu,", nodes);
        CHECK(count(out, len, want) == 1);
        /* the root carries the whole total, 9.4 s of CPU in this profile */
        CHECK(count(out, len, "\"root\":{\"name\":\"root\",\"value\":9400000000,") == 1);
        free(out);
    }
    /* 1505 frames: the largest budget shows them all, without "(other)" */
    CHECK_INT(prev_nodes, 1505);
    ap_pprof_profile_free(p);
}

/* Both views from one call equal the two separate answers, and the top table cut at each row end
 * is the answer for that limit. */
static void test_views(void)
{
    ap_pprof_profile *p = load("goapp-go123-cpu-1.pb.gz");
    CHECK(p != NULL);
    if (!p) return;
    ap_pprof_error err;
    ap_pprof_views v;
    ap_pprof_flame_opts o = {.index = -1, .max_nodes = 300};
    CHECK_INT(ap_pprof_views_json(p, &o, AP_PPROF_TOP_LIMIT_ROWS, &v, &err), 0);
    char *out;
    size_t len;
    CHECK_INT(ap_pprof_flame_json(p, &o, &out, &len, &err), 0);
    /* (out is not NUL-terminated: compared by length) */
    CHECK(v.flame && out && v.flame_len == len && memcmp(v.flame, out, len) == 0);
    free(out);
    CHECK(v.nrows > 100);
    uint32_t limits[] = {1, 2, 100, v.nrows};
    for (size_t i = 0; i < sizeof limits / sizeof *limits; i++) {
        CHECK_INT(ap_pprof_top_json(p, -1, limits[i], &out, &len, &err), 0);
        if (!out) continue;
        size_t end = v.row_end[limits[i] - 1];
        CHECK(len == end + 2 && memcmp(out, v.top, end) == 0 && memcmp(out + end, "]}", 2) == 0);
        free(out);
    }
    CHECK(v.top_len == v.row_end[v.nrows - 1] + 2);
    ap_pprof_views_free(&v);
    CHECK(v.flame == NULL && v.top == NULL && v.row_end == NULL);
    /* the arguments are checked as the separate calls check them */
    o.max_nodes = 1;
    CHECK_INT(ap_pprof_views_json(p, &o, 0, &v, &err), -1);
    CHECK_ERR(err, AP_PPROF_EINVAL, "max_nodes");
    o.max_nodes = 0;
    CHECK_INT(ap_pprof_views_json(p, &o, AP_PPROF_TOP_LIMIT_ROWS + 1, &v, &err), -1);
    CHECK_ERR(err, AP_PPROF_EINVAL, "limit");
    CHECK(v.flame == NULL && v.top == NULL);
    ap_pprof_profile_free(p);
}

/* ---- the whole call tree: each node's value is its self plus its children's, siblings differ ----
 */

typedef struct {
    const char *s, *end;
    int bad;
} cursor;

static int eat(cursor *c, const char *lit)
{
    size_t n = strlen(lit);
    if (c->bad || (size_t)(c->end - c->s) < n || memcmp(c->s, lit, n) != 0) return c->bad = 1, 0;
    c->s += n;
    return 1;
}

static long long read_int(cursor *c)
{
    char *e;
    long long v = strtoll(c->s, &e, 10);
    if (e == c->s) c->bad = 1;
    c->s = e;
    return v;
}

/* A JSON string (no escapes needed by these names' checks): its start and length. */
static void read_str(cursor *c, const char **start, size_t *len)
{
    if (!eat(c, "\"")) return;
    *start = c->s;
    while (c->s < c->end && *c->s != '"') c->s += *c->s == '\\' ? 2 : 1;
    *len = (size_t)(c->s - *start);
    eat(c, "\"");
}

/* Checks the node at c and its subtree; returns its value; *nodes counts them. */
static long long check_node(cursor *c, size_t *nodes)
{
    const char *name;
    size_t nlen;
    eat(c, "{\"name\":");
    read_str(c, &name, &nlen);
    eat(c, ",\"value\":");
    long long value = read_int(c);
    eat(c, ",\"self\":");
    long long self = read_int(c), sum = self;
    eat(c, ",\"children\":[");
    (*nodes)++;
    const char *names[4096];
    size_t lens[4096], n = 0;
    while (!c->bad && *c->s != ']') {
        if (n) eat(c, ",");
        const char *peek = c->s + strlen("{\"name\":\"");
        const char *q = peek;
        while (q < c->end && *q != '"') q += *q == '\\' ? 2 : 1;
        for (size_t i = 0; i < n && n < 4096; i++)
            if (lens[i] == (size_t)(q - peek) && memcmp(names[i], peek, lens[i]) == 0) c->bad = 1;
        if (n < 4096) names[n] = peek, lens[n] = (size_t)(q - peek);
        n++;
        sum += check_node(c, nodes);
    }
    eat(c, "]}");
    if (sum != value) c->bad = 1;
    return value;
}

static void test_tree(void)
{
    const char *files[] = {"goapp-go123-cpu-1.pb.gz", "goapp-go123-cpu-2.pb.gz",
                           "goapp-go123-cpu-3.pb.gz", "goapp-cpu-1.pb.gz", "edge/minimal.pb.gz"};
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
        ap_pprof_profile *p = load(files[i]);
        CHECK(p != NULL);
        if (!p) continue;
        ap_pprof_flame_opts o = {.index = -1, .max_nodes = AP_PPROF_FLAME_LIMIT_NODES};
        char *out;
        size_t len;
        ap_pprof_error err;
        CHECK_INT(ap_pprof_flame_json(p, &o, &out, &len, &err), 0);
        if (out) {
            const char *root = strstr(out, "\"root\":");
            CHECK(root != NULL && count(out, len, "(other)") == 0);
            cursor c = {.s = root ? root + strlen("\"root\":") : out, .end = out + len};
            size_t nodes = 0;
            long long total = check_node(&c, &nodes);
            CHECK(!c.bad);
            char want[96];
            /* every frame drawn (the budget holds them), the root with the whole total */
            snprintf(want, sizeof want, "\"total\":%lld,\"frames\":%zu,\"nodes\":%zu,", total,
                     nodes - 1, nodes);
            if (count(out, len, want) != 1) fprintf(stderr, "%s: want %s\n", files[i], want);
            CHECK(count(out, len, want) == 1);
            free(out);
        }
        ap_pprof_profile_free(p);
    }
}

int main(void)
{
    test_minimal();
    test_budget();
    test_views();
    test_tree();
    return t_done();
}
