/* Times the phases of a merge (read, decode, merge, encode) with the pprof core directly, for
 * the profiling notes in RESULTS.md; then the whole pipeline (ap_pprof_merge_encoded) on one
 * thread and on THREADS (0: automatic), wall and CPU; also the zlib floor of the same inputs
 * and output. -pipeline skips the single-threaded phases and the floor.
 *   phases [-level N] [-threads N] [-pipeline] IN...   prints one "phase seconds" line each */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zlib.h>

#include "pprof.h"

/* Process CPU time (all threads): what each phase costs whatever else runs on the machine. */
static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static double wall(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static uint8_t *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    rewind(f);
    uint8_t *d = malloc((size_t)n + 1);
    if (fread(d, 1, (size_t)n, f) != (size_t)n) n = 0;
    fclose(f);
    *len = (size_t)n;
    return d;
}

/* zlib alone: inflate every input, deflate `raw` at `level`. */
static void floor_time(uint8_t **in, size_t *len, int n, const uint8_t *raw, size_t rawlen,
                       int level)
{
    double t0 = now();
    uint8_t *buf = malloc(1 << 20);
    size_t total = 0;
    for (int i = 0; i < n; i++) {
        z_stream z = {0};
        inflateInit2(&z, 31);
        z.next_in = in[i];
        z.avail_in = (uInt)len[i];
        int rc;
        do {
            z.next_out = buf;
            z.avail_out = 1 << 20;
            rc = inflate(&z, Z_NO_FLUSH);
            total += (1 << 20) - z.avail_out;
        } while (rc == Z_OK);
        inflateEnd(&z);
    }
    double t1 = now();
    z_stream z = {0};
    deflateInit2(&z, level, Z_DEFLATED, 31, 8, Z_DEFAULT_STRATEGY);
    z.next_in = (Bytef *)raw;
    z.avail_in = (uInt)rawlen;
    size_t out = 0;
    int rc;
    do {
        z.next_out = buf;
        z.avail_out = 1 << 20;
        rc = deflate(&z, Z_FINISH);
        out += (1 << 20) - z.avail_out;
    } while (rc == Z_OK);
    deflateEnd(&z);
    double t2 = now();
    printf("floor_inflate %.3f (%zu bytes)\nfloor_deflate %.3f (%zu -> %zu bytes)\nfloor %.3f\n",
           t1 - t0, total, t2 - t1, rawlen, out, t2 - t0);
    free(buf);
}

/* The whole pipeline as the worker runs it (inputs decoded by a pool of threads while they are
 * merged in order, parallel deflate), on `threads` threads. */
static int pipeline(uint8_t **in, size_t *len, int n, int level, int threads)
{
    ap_pprof_input *inputs = calloc((size_t)n, sizeof *inputs);
    for (int k = 0; k < n; k++) inputs[k] = (ap_pprof_input){in[k], len[k], NULL, NULL};
    ap_pprof_encode_opts go = {.level = level, .threads = threads};
    ap_pprof_error err;
    double w0 = wall(), c0 = now();
    uint8_t *res;
    size_t reslen;
    if (ap_pprof_merge_encoded(inputs, (size_t)n, NULL, NULL, &go, &res, &reslen, NULL, NULL, &err))
        return fprintf(stderr, "%s\n", err.msg), 1;
    printf("pipeline_threads_%d_wall %.3f\npipeline_threads_%d_cpu %.3f\n", threads, wall() - w0,
           threads, now() - c0);
    free(res);
    free(inputs);
    return 0;
}

int main(int argc, char **argv)
{
    int level = -1, threads = 0, only_pipeline = 0, i = 1;
    for (;;) {
        if (i + 1 < argc && !strcmp(argv[i], "-level"))
            level = atoi(argv[i + 1]), i += 2;
        else if (i + 1 < argc && !strcmp(argv[i], "-threads"))
            threads = atoi(argv[i + 1]), i += 2;
        else if (i < argc && !strcmp(argv[i], "-pipeline"))
            only_pipeline = 1, i++;
        else
            break;
    }
    int n = argc - i;
    if (n < 1) return 2;
    uint8_t **in = calloc((size_t)n, sizeof *in);
    size_t *len = calloc((size_t)n, sizeof *len);
    for (int k = 0; k < n; k++) in[k] = slurp(argv[i + k], &len[k]);
    ap_pprof_error err;
    if (only_pipeline) return pipeline(in, len, n, level, threads);
    double t_dec = 0, t_merge = 0, t;
    ap_pprof_merger *m = ap_pprof_merger_new();
    ap_pprof_profile *p = ap_pprof_profile_new();
    for (int k = 0; k < n; k++) {
        t = now();
        if (ap_pprof_decode_into(p, in[k], len[k], NULL, &err))
            return fprintf(stderr, "%s\n", err.msg), 1;
        t_dec += now() - t;
        t = now();
        if (ap_pprof_merger_add(m, p, &err)) return fprintf(stderr, "%s\n", err.msg), 1;
        t_merge += now() - t;
    }
    t = now();
    ap_pprof_profile *out = ap_pprof_merger_finish(m, &err);
    double t_fin = now() - t;
    uint8_t *raw, *gz;
    size_t rawlen, gzlen;
    ap_pprof_encode_opts ro = {.level = level, .raw = 1}, go = {.level = level, .raw = 0};
    t = now();
    ap_pprof_encode(out, &ro, &raw, &rawlen, &err);
    double t_ser = now() - t;
    t = now();
    ap_pprof_encode(out, &go, &gz, &gzlen, &err);
    double t_enc = now() - t;
    printf("decode %.3f\nmerge %.3f\nfinish %.3f\nserialize %.3f\nencode_gzip %.3f (%zu bytes)\n"
           "total %.3f\nsamples %u locations %u functions %u\n",
           t_dec, t_merge, t_fin, t_ser, t_enc, gzlen, t_dec + t_merge + t_fin + t_enc,
           out->nsamples, out->nlocations, out->nfunctions);
    if (pipeline(in, len, n, level, 1) || pipeline(in, len, n, level, threads)) return 1;
    floor_time(in, len, n, raw, rawlen, level < 0 ? 6 : level);
    return 0;
}
