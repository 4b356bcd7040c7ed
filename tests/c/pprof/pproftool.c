/* A command-line driver over core/pprof for the differential tests and by-hand checks:
 *   pproftool check FILE...            decode + validate each file, print "ok ..." or the error
 *   pproftool pgo FILE                 the PGO decision ("ok, N edges" / "ok, empty" / reason)
 *   pproftool merge -o OUT [-raw] [-drop RE [-keep RE]]... FILE...   merge, prune, encode
 *   pproftool fold -o OUT [-drop RE [-keep RE]]... [-stats] [-fallback] BASE UPLOAD...
 *     one fold per upload (core/pprof/fold.c) as the worker does, the last result written to
 *     OUT; -stats prints one line per fold (CPU time, segments deflated, RSS) to stderr; an upload
 *     that needs a full merge is merged in full with -fallback (a new folder next time), else
 *     exit 3
 *   pproftool views FILE [MAX_NODES [ROWS [OUT]]]   the web view's JSON (flame.h): sizes and
 *     seconds per step; with OUT, written to OUT.flame.json and OUT.top.json */
#include <stdio.h>
#include <time.h>
#include <stdlib.h>
#include <string.h>

#include "flame.h"
#include "fold.h"
#include "pprof.h"

static int read_file(const char *path, uint8_t **data, size_t *len)
{
    FILE *f = strcmp(path, "-") ? fopen(path, "rb") : stdin;
    if (!f) return -1;
    size_t cap = 1 << 16, n = 0;
    uint8_t *b = malloc(cap);
    for (;;) {
        if (n == cap) b = realloc(b, cap *= 2);
        size_t r = fread(b + n, 1, cap - n, f);
        if (r == 0) break;
        n += r;
    }
    if (f != stdin) fclose(f);
    *data = b;
    *len = n;
    return 0;
}

static int cmd_check(int argc, char **argv)
{
    int bad = 0;
    for (int i = 0; i < argc; i++) {
        uint8_t *d;
        size_t n;
        if (read_file(argv[i], &d, &n)) {
            printf("%s: cannot read\n", argv[i]);
            bad++;
            continue;
        }
        ap_pprof_error err;
        ap_pprof_profile *p = ap_pprof_decode(d, n, NULL, &err);
        if (!p) {
            printf("%s: %s: %s\n", argv[i], ap_pprof_code_name(err.code), err.msg);
            bad++;
        } else {
            printf("%s: ok samples=%u locations=%u functions=%u mappings=%u strings=%u\n", argv[i],
                   p->nsamples, p->nlocations, p->nfunctions, p->nmappings, p->nstrings);
            ap_pprof_profile_free(p);
        }
        free(d);
    }
    return bad ? 1 : 0;
}

static int cmd_pgo(int argc, char **argv)
{
    if (argc != 1) return 2;
    uint8_t *d;
    size_t n;
    if (read_file(argv[0], &d, &n)) return 2;
    ap_pprof_error err;
    ap_pprof_profile *p = ap_pprof_decode(d, n, NULL, &err);
    free(d);
    if (!p) {
        printf("error: %s\n", err.msg);
        return 1;
    }
    ap_pprof_pgo g;
    if (ap_pprof_pgo_check(p, &g, &err)) {
        printf("error: %s\n", err.msg);
        return 1;
    }
    if (!g.usable)
        printf("no: %s\n", g.reason);
    else if (g.empty)
        printf("ok, empty\n");
    else
        printf("ok, %llu edges\n", (unsigned long long)g.edges);
    ap_pprof_profile_free(p);
    return 0;
}

static double cpu_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int write_out(const char *out, const uint8_t *bytes, size_t len)
{
    FILE *f = fopen(out, "wb");
    if (!f || fwrite(bytes, 1, len, f) != len || fclose(f)) {
        fprintf(stderr, "cannot write %s\n", out);
        return 1;
    }
    return 0;
}

/* The options of merge and fold: -o OUT, -raw, -stats, -fallback, -drop RE [-keep RE]...;
 * returns the index of the first file argument. */
typedef struct {
    const char *out;
    int raw, stats, fallback;
    ap_pprof_prune_rule rules[64];
    size_t nrules;
} opts_t;

static int parse_opts(int argc, char **argv, opts_t *o)
{
    memset(o, 0, sizeof *o);
    int i = 0;
    for (; i < argc; i++) {
        if (!strcmp(argv[i], "-o") && i + 1 < argc) {
            o->out = argv[++i];
        } else if (!strcmp(argv[i], "-raw")) {
            o->raw = 1;
        } else if (!strcmp(argv[i], "-stats")) {
            o->stats = 1;
        } else if (!strcmp(argv[i], "-fallback")) {
            o->fallback = 1;
        } else if (!strcmp(argv[i], "-drop") && i + 1 < argc && o->nrules < 64) {
            o->rules[o->nrules].drop = argv[++i];
            o->rules[o->nrules++].keep = NULL;
        } else if (!strcmp(argv[i], "-keep") && i + 1 < argc && o->nrules > 0) {
            o->rules[o->nrules - 1].keep = argv[++i];
        } else {
            break;
        }
    }
    return i;
}

/* The pruner of the options (NULL when none, or on a bad pattern: *bad set). */
static ap_pprof_pruner *opts_pruner(const opts_t *o, int *bad)
{
    ap_pprof_error err;
    ap_pprof_pruner *pr = NULL;
    *bad = 0;
    if (o->nrules && !(pr = ap_pprof_pruner_new(o->rules, o->nrules, &err))) {
        fprintf(stderr, "%s: %s\n", ap_pprof_code_name(err.code), err.msg);
        *bad = 1;
    }
    return pr;
}

static int cmd_merge(int argc, char **argv)
{
    opts_t o;
    int i = parse_opts(argc, argv, &o), bad;
    const char *out = o.out;
    if (!out || i >= argc) return 2;
    size_t n = (size_t)(argc - i);
    ap_pprof_input *in = calloc(n, sizeof *in);
    for (size_t k = 0; k < n; k++) {
        uint8_t *d;
        if (read_file(argv[i + k], &d, &in[k].len)) {
            fprintf(stderr, "cannot read %s\n", argv[i + k]);
            return 2;
        }
        in[k].data = d;
    }
    ap_pprof_error err;
    ap_pprof_pruner *pr = opts_pruner(&o, &bad);
    if (bad) return 1;
    ap_pprof_encode_opts opts = {.level = -1, .raw = o.raw};
    uint8_t *bytes;
    size_t len;
    ap_pprof_merge_summary sum;
    int rc = ap_pprof_merge_encoded(in, n, NULL, pr, &opts, &bytes, &len, NULL, &sum, &err);
    ap_pprof_pruner_free(pr);
    for (size_t k = 0; k < n; k++) free((void *)in[k].data);
    free(in);
    if (rc) {
        fprintf(stderr, "%s: %s (input %d)\n", ap_pprof_code_name(err.code), err.msg, err.input);
        return 1;
    }
    rc = write_out(out, bytes, len);
    free(bytes);
    return rc;
}

/* The resident set of this process in KiB (VmRSS), 0 when unknown. */
static long rss_kb(void)
{
    FILE *fp = fopen("/proc/self/status", "r");
    char line[256];
    long kb = 0;
    while (fp && fgets(line, sizeof line, fp))
        if (sscanf(line, "VmRSS: %ld", &kb) == 1) break;
    if (fp) fclose(fp);
    return kb;
}

static int cmd_fold(int argc, char **argv)
{
    opts_t o;
    int i = parse_opts(argc, argv, &o), bad;
    const char *out = o.out;
    int stats = o.stats, fallback = o.fallback;
    if (!out || i + 1 >= argc) return 2;
    ap_pprof_error err;
    ap_pprof_pruner *pr = opts_pruner(&o, &bad);
    if (bad) return 1;
    /* The last result: in memory, or (cur NULL) in OUT while a folder holds it, so that the RSS
     * printed is the folder's, as in the worker (which hands each result to the store). */
    uint8_t *cur;
    size_t cur_len;
    if (read_file(argv[i], &cur, &cur_len)) return 2;
    ap_pprof_folder *f = NULL;
    int rc = 0;
    for (int k = i + 1; k < argc && !rc; k++) {
        ap_pprof_input in[2] = {{0}, {0}};
        uint8_t *d;
        if (read_file(argv[k], &d, &in[1].len)) return 2;
        in[1].data = d;
        uint8_t *bytes = NULL;
        size_t len = 0;
        ap_pprof_fold_stats st;
        double t0 = cpu_seconds();
        if (!f) {
            /* As the worker: a folder over the last output (pruned again: this step's Prune). */
            f = ap_pprof_folder_new(cur, cur_len, NULL, pr, 1, &err);
            if (!f) {
                fprintf(stderr, "%s: %s (base)\n", ap_pprof_code_name(err.code), err.msg);
                rc = 1;
                free(d);
                break;
            }
            if (stats) fprintf(stderr, "start cpu=%.4f\n", cpu_seconds() - t0);
            t0 = cpu_seconds();
        }
        rc = ap_pprof_folder_fold(f, &in[1], 1, NULL, pr, &bytes, &len, &st, &err);
        double cpu = cpu_seconds() - t0;
        int folded = rc == 0;
        if (rc == 1 && fallback) {
            /* As the worker: merge in full, and make a folder over the result next time. */
            if (stats) fprintf(stderr, "full: %s\n", err.msg);
            ap_pprof_folder_free(f);
            f = NULL;
            if (!cur && read_file(out, &cur, &cur_len)) return 2;
            in[0].data = cur;
            in[0].len = cur_len;
            ap_pprof_encode_opts o = {.level = 1};
            rc = ap_pprof_merge_encoded(in, 2, NULL, pr, &o, &bytes, &len, NULL, NULL, &err) ? -1
                                                                                             : 0;
        }
        free(d);
        if (rc == 1) {
            fprintf(stderr, "FULL: %s: %s\n", argv[k], err.msg);
            rc = 3;
        } else if (rc) {
            fprintf(stderr, "%s: %s (%s)\n", ap_pprof_code_name(err.code), err.msg, argv[k]);
            rc = 1;
        } else {
            free(cur);
            cur = bytes;
            cur_len = len;
            if (f) {
                rc = write_out(out, cur, cur_len);
                free(cur);
                cur = NULL;
            }
        }
        if (folded && stats)
            fprintf(stderr,
                    "fold cpu=%.4f bytes=%zu segments=%u rewritten=%u touched=%u added=%u "
                    "raw_deflated=%llu raw_total=%llu compacted=%d rss_kb=%ld\n",
                    cpu, len, st.segments, st.rewritten, st.touched, st.added,
                    (unsigned long long)st.raw_deflated, (unsigned long long)st.raw_total,
                    st.compacted, rss_kb());
    }
    if (!rc && cur) rc = write_out(out, cur, cur_len);
    free(cur);
    ap_pprof_folder_free(f);
    ap_pprof_pruner_free(pr);
    return rc;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cmd_views(int argc, char **argv)
{
    if (argc < 1) return 2;
    uint8_t *d;
    size_t n;
    if (read_file(argv[0], &d, &n)) return 2;
    ap_pprof_error err;
    double t0 = now();
    ap_pprof_profile *p = ap_pprof_decode(d, n, NULL, &err);
    free(d);
    if (!p) {
        printf("error: %s\n", err.msg);
        return 1;
    }
    double t1 = now();
    ap_pprof_flame_opts o = {.index = -1, .max_nodes = argc > 1 ? (uint32_t)atoi(argv[1]) : 0};
    ap_pprof_views v;
    if (ap_pprof_views_json(p, &o, argc > 2 ? (uint32_t)atoi(argv[2]) : 0, &v, &err)) {
        printf("error: %s\n", err.msg);
        return 1;
    }
    double t2 = now();
    printf("decode %.3f s, views %.3f s: flame %zu bytes, top %zu bytes (%u rows)\n", t1 - t0,
           t2 - t1, v.flame_len, v.top_len, v.nrows);
    for (int i = 0; argc > 3 && i < 2; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s.%s.json", argv[3], i ? "top" : "flame");
        FILE *f = fopen(path, "wb");
        if (!f) return 1;
        fwrite(i ? v.top : v.flame, 1, i ? v.top_len : v.flame_len, f);
        fclose(f);
    }
    ap_pprof_views_free(&v);
    ap_pprof_profile_free(p);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: pproftool check|pgo|merge|fold|views ...\n");
        return 2;
    }
    if (!strcmp(argv[1], "check")) return cmd_check(argc - 2, argv + 2);
    if (!strcmp(argv[1], "pgo")) return cmd_pgo(argc - 2, argv + 2);
    if (!strcmp(argv[1], "merge")) return cmd_merge(argc - 2, argv + 2);
    if (!strcmp(argv[1], "fold")) return cmd_fold(argc - 2, argv + 2);
    if (!strcmp(argv[1], "views")) return cmd_views(argc - 2, argv + 2);
    fprintf(stderr, "unknown command %s\n", argv[1]);
    return 2;
}
