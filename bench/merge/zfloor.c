/* The zlib floor of a merge: the time zlib alone needs to inflate the inputs and to deflate the
 * merged output (given uncompressed) at the same level, on one thread.
 *   zfloor LEVEL OUTPUT.raw INPUT...   prints "inflate S", "deflate S", "floor S" (wall) */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <zlib.h>

static double wall(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static unsigned char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    rewind(f);
    unsigned char *d = malloc((size_t)n + 1);
    if (fread(d, 1, (size_t)n, f) != (size_t)n) n = 0;
    fclose(f);
    *len = (size_t)n;
    return d;
}

int main(int argc, char **argv)
{
    if (argc < 4) return 2;
    int level = atoi(argv[1]);
    size_t rawlen;
    unsigned char *raw = slurp(argv[2], &rawlen), *buf = malloc(1 << 20);
    if (!raw || !buf) return 2;
    int n = argc - 3;
    unsigned char **in = calloc((size_t)n, sizeof *in);
    size_t *len = calloc((size_t)n, sizeof *len);
    for (int i = 0; i < n; i++)
        if (!(in[i] = slurp(argv[3 + i], &len[i]))) return 2;
    double t0 = wall();
    for (int i = 0; i < n; i++) {
        z_stream z = {0};
        inflateInit2(&z, 16 + MAX_WBITS);
        z.next_in = in[i];
        z.avail_in = (uInt)len[i];
        int rc;
        do {
            z.next_out = buf;
            z.avail_out = 1 << 20;
            rc = inflate(&z, Z_NO_FLUSH);
        } while (rc == Z_OK);
        inflateEnd(&z);
        if (rc != Z_STREAM_END) return fprintf(stderr, "%s: inflate failed\n", argv[3 + i]), 1;
    }
    double t1 = wall();
    z_stream z = {0};
    deflateInit2(&z, level, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY);
    z.next_in = raw;
    z.avail_in = (uInt)rawlen;
    int rc;
    do {
        z.next_out = buf;
        z.avail_out = 1 << 20;
        rc = deflate(&z, Z_FINISH);
    } while (rc == Z_OK);
    deflateEnd(&z);
    double t2 = wall();
    printf("inflate %.3f\ndeflate %.3f\nfloor %.3f\n", t1 - t0, t2 - t1, t2 - t0);
    return 0;
}
