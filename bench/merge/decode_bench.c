/* Decode-only timing of one profile: decodes it N times into a reused profile and prints the
 * median and best wall time per decode (what the server pays per upload).
 *   decode_bench FILE [N] */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "pprof.h"

static double wall(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    if (argc < 2) return 2;
    int n = argc > 2 ? atoi(argv[2]) : 200;
    FILE *f = fopen(argv[1], "rb");
    if (!f) return 2;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    rewind(f);
    unsigned char *d = malloc((size_t)len);
    if (fread(d, 1, (size_t)len, f) != (size_t)len) return 2;
    fclose(f);
    double *t = malloc((size_t)n * sizeof *t);
    ap_pprof_error err;
    ap_pprof_profile *p = ap_pprof_profile_new(), *fresh;
    for (int i = 0; i < n; i++) {
        double t0 = wall();
        if (ap_pprof_decode_into(p, d, (size_t)len, NULL, &err))
            return fprintf(stderr, "%s\n", err.msg), 1;
        t[i] = wall() - t0;
    }
    /* A fresh profile each time, as the server's validate does. */
    double t0 = wall();
    for (int i = 0; i < 20; i++) {
        fresh = ap_pprof_decode(d, (size_t)len, NULL, &err);
        ap_pprof_profile_free(fresh);
    }
    double fresh_ms = (wall() - t0) / 20 * 1e3;
    qsort(t, (size_t)n, sizeof *t, cmp);
    printf("%s: %ld bytes, %llu uncompressed, %u samples: decode median %.3f ms, best %.3f ms, "
           "fresh profile %.3f ms\n",
           argv[1], len, (unsigned long long)p->decompressed_size, p->nsamples, t[n / 2] * 1e3,
           t[0] * 1e3, fresh_ms);
    return 0;
}
