/* A command-line driver over core/pprof for the differential tests and by-hand checks:
 *   pproftool check FILE...            decode + validate each file, print "ok ..." or the error
 *   pproftool pgo FILE                 the PGO decision ("ok, N edges" / "ok, empty" / reason)
 *   pproftool merge -o OUT [-raw] [-drop RE [-keep RE]]... FILE...   merge, prune, encode
 *   pproftool views FILE [MAX_NODES [OUT]]   the web view's JSON (flame.h): sizes and seconds per
 *                                      step; with OUT, written to OUT.flame.json and OUT.top.json
 */
#include <stdio.h>
#include <time.h>
#include <stdlib.h>
#include <string.h>

#include "flame.h"
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

static int cmd_merge(int argc, char **argv)
{
    const char *out = NULL;
    int raw = 0;
    ap_pprof_prune_rule rules[64];
    size_t nrules = 0;
    int i = 0;
    for (; i < argc; i++) {
        if (!strcmp(argv[i], "-o") && i + 1 < argc) {
            out = argv[++i];
        } else if (!strcmp(argv[i], "-raw")) {
            raw = 1;
        } else if (!strcmp(argv[i], "-drop") && i + 1 < argc && nrules < 64) {
            rules[nrules].drop = argv[++i];
            rules[nrules++].keep = NULL;
        } else if (!strcmp(argv[i], "-keep") && i + 1 < argc && nrules > 0) {
            rules[nrules - 1].keep = argv[++i];
        } else {
            break;
        }
    }
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
    ap_pprof_pruner *pr = NULL;
    if (nrules && !(pr = ap_pprof_pruner_new(rules, nrules, &err))) {
        fprintf(stderr, "%s: %s\n", ap_pprof_code_name(err.code), err.msg);
        return 1;
    }
    ap_pprof_encode_opts opts = {.level = -1, .raw = raw};
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
    FILE *f = fopen(out, "wb");
    if (!f || fwrite(bytes, 1, len, f) != len || fclose(f)) {
        fprintf(stderr, "cannot write %s\n", out);
        return 1;
    }
    free(bytes);
    return 0;
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
        fprintf(stderr, "usage: pproftool check|pgo|merge|views ...\n");
        return 2;
    }
    if (!strcmp(argv[1], "check")) return cmd_check(argc - 2, argv + 2);
    if (!strcmp(argv[1], "pgo")) return cmd_pgo(argc - 2, argv + 2);
    if (!strcmp(argv[1], "merge")) return cmd_merge(argc - 2, argv + 2);
    if (!strcmp(argv[1], "views")) return cmd_views(argc - 2, argv + 2);
    fprintf(stderr, "unknown command %s\n", argv[1]);
    return 2;
}
