/* Test helpers for the core/pprof unit tests (see helpers.h). */
#include "helpers.h"

#include <dirent.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <zlib.h>

int t_pass, t_fail;

int t_done(void)
{
    printf("%d passed, %d failed\n", t_pass, t_fail);
    return t_fail ? 1 : 0;
}

uint8_t *t_read(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 1 << 16, n = 0;
    uint8_t *b = malloc(cap);
    for (;;) {
        if (n == cap) b = realloc(b, cap *= 2);
        size_t r = fread(b + n, 1, cap - n, f);
        if (r == 0) break;
        n += r;
    }
    fclose(f);
    *len = n;
    return b;
}

const char *t_data_path(const char *rel)
{
    static char path[1024];
    snprintf(path, sizeof path, "%s/%s", AP_TESTDATA, rel);
    return path;
}

uint8_t *t_data(const char *rel, size_t *len)
{
    uint8_t *d = t_read(t_data_path(rel), len);
    if (!d) {
        fprintf(stderr, "cannot read %s\n", t_data_path(rel));
        t_fail++;
    }
    return d;
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(a, b);
}

int t_list(const char *rel, char names[][256], int max)
{
    DIR *d = opendir(t_data_path(rel));
    if (!d) return 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < max) {
        char full[1200];
        snprintf(full, sizeof full, "%s/%s/%s", AP_TESTDATA, rel, e->d_name);
        struct stat st;
        if (stat(full, &st) || !S_ISREG(st.st_mode)) continue;
        snprintf(names[n++], 256, "%.120s/%.120s", rel, e->d_name);
    }
    closedir(d);
    qsort(names, (size_t)n, 256, cmp_names);
    return n;
}

void pb_free(pb *p)
{
    free(p->b);
    memset(p, 0, sizeof *p);
}

void pb_bytes(pb *p, const void *d, size_t n)
{
    if (p->n + n > p->cap) {
        p->cap = (p->n + n) * 2 + 64;
        p->b = realloc(p->b, p->cap);
    }
    if (n) memcpy(p->b + p->n, d, n);
    p->n += n;
}

void pb_varint(pb *p, uint64_t v)
{
    uint8_t t[10];
    int i = 0;
    while (v >= 0x80) {
        t[i++] = (uint8_t)v | 0x80;
        v >>= 7;
    }
    t[i++] = (uint8_t)v;
    pb_bytes(p, t, (size_t)i);
}

void pb_key(pb *p, unsigned field, unsigned wt)
{
    pb_varint(p, ((uint64_t)field << 3) | wt);
}

void pb_u64(pb *p, unsigned field, uint64_t v)
{
    pb_key(p, field, 0);
    pb_varint(p, v);
}

void pb_len(pb *p, unsigned field, const void *d, size_t n)
{
    pb_key(p, field, 2);
    pb_varint(p, n);
    pb_bytes(p, d, n);
}

void pb_str(pb *p, unsigned field, const char *s)
{
    pb_len(p, field, s, strlen(s));
}

void pb_msg(pb *p, unsigned field, const pb *m)
{
    pb_len(p, field, m->b, m->n);
    pb_free((pb *)m);
}

void pb_packed(pb *p, unsigned field, const uint64_t *v, size_t n)
{
    pb body = {0};
    for (size_t i = 0; i < n; i++) pb_varint(&body, v[i]);
    pb_msg(p, field, &body);
}

uint8_t *t_gzip(const void *data, size_t n, size_t *out_len)
{
    z_stream zs = {0};
    deflateInit2(&zs, 6, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY);
    size_t cap = deflateBound(&zs, n) + 64;
    uint8_t *out = malloc(cap);
    zs.next_in = (Bytef *)data;
    zs.avail_in = (uInt)n;
    zs.next_out = out;
    zs.avail_out = (uInt)cap;
    deflate(&zs, Z_FINISH);
    *out_len = zs.total_out;
    deflateEnd(&zs);
    return out;
}

uint8_t *t_gunzip(const void *data, size_t n, size_t *out_len)
{
    z_stream zs = {0};
    inflateInit2(&zs, 16 + MAX_WBITS);
    size_t cap = n * 4 + 1024, len = 0;
    uint8_t *out = malloc(cap);
    zs.next_in = (Bytef *)data;
    zs.avail_in = (uInt)n;
    for (;;) {
        if (len == cap) out = realloc(out, cap *= 2);
        zs.next_out = out + len;
        zs.avail_out = (uInt)(cap - len);
        int rc = inflate(&zs, Z_NO_FLUSH);
        len = cap - zs.avail_out;
        if (rc == Z_STREAM_END) {
            if (zs.avail_in == 0) break;
            inflateReset(&zs);
        } else if (rc != Z_OK) {
            free(out);
            inflateEnd(&zs);
            return NULL;
        }
    }
    inflateEnd(&zs);
    *out_len = len;
    return out;
}

pb t_profile(const t_sample *s, int n, int64_t period, int64_t time_nanos)
{
    /* string table: 0 "", 1 samples, 2 count, 3 cpu, 4 nanoseconds, 5 main, 6 a, 7 b,
     * 8 main.go, 9 /bin/app, 10.. label strings */
    const char *strs[32] = {"",     "samples", "count", "cpu",     "nanoseconds",
                            "main", "a",       "b",     "main.go", "/bin/app"};
    int nstr = 10;
    pb p = {0}, m = {0};
    pb_u64(&m, 1, 1);
    pb_u64(&m, 2, 0x1000);
    pb_u64(&m, 3, 0x2000);
    pb_u64(&m, 5, 9);
    pb_msg(&p, 3, &m);
    for (int st = 0; st < 2; st++) {
        pb_u64(&m, 1, st ? 3 : 1);
        pb_u64(&m, 2, st ? 4 : 2);
        pb_msg(&p, 1, &m);
    }
    for (int f = 1; f <= 3; f++) {
        pb_u64(&m, 1, (uint64_t)f);
        pb_u64(&m, 2, (uint64_t)(4 + f));
        pb_u64(&m, 3, (uint64_t)(4 + f));
        pb_u64(&m, 4, 8);
        pb_u64(&m, 5, (uint64_t)(10 * f));
        pb_msg(&p, 5, &m);
    }
    for (int l = 1; l <= 3; l++) {
        pb line = {0};
        pb_u64(&m, 1, (uint64_t)l);
        pb_u64(&m, 2, 1);
        pb_u64(&m, 3, (uint64_t)(0x1000 + 0x10 * l));
        pb_u64(&line, 1, (uint64_t)l);
        pb_u64(&line, 2, (uint64_t)(10 * l + 1));
        pb_msg(&m, 4, &line);
        pb_msg(&p, 4, &m);
    }
    for (int i = 0; i < n; i++) {
        int k = 0;
        while (k < 8 && s[i].locs[k]) k++;
        pb_packed(&m, 1, s[i].locs, (size_t)k);
        pb_u64(&m, 2, (uint64_t)s[i].v[0]);
        pb_u64(&m, 2, (uint64_t)s[i].v[1]);
        if (s[i].label_key) {
            pb lab = {0};
            strs[nstr] = s[i].label_key;
            pb_u64(&lab, 1, (uint64_t)nstr++);
            strs[nstr] = s[i].label_val;
            pb_u64(&lab, 2, (uint64_t)nstr++);
            pb_msg(&m, 3, &lab);
        }
        pb_msg(&p, 2, &m);
    }
    for (int i = 0; i < nstr; i++) pb_str(&p, 6, strs[i]);
    if (time_nanos) pb_u64(&p, 9, (uint64_t)time_nanos);
    pb_u64(&p, 10, 1000);
    pb_u64(&m, 1, 3);
    pb_u64(&m, 2, 4);
    pb_msg(&p, 11, &m);
    pb_u64(&p, 12, (uint64_t)period);
    return p;
}

ap_pprof_profile *t_decode(const void *d, size_t n)
{
    ap_pprof_error err;
    ap_pprof_profile *p = ap_pprof_decode(d, n, NULL, &err);
    if (!p) {
        t_fail++;
        fprintf(stderr, "decode failed: %s: %s\n", ap_pprof_code_name(err.code), err.msg);
    }
    return p;
}
