/* Shared by the core/pprof unit tests: checks with a pass/fail count, file reading, and a
 * small protobuf writer to craft inputs byte by byte. */
#ifndef AP_PPROF_TEST_HELPERS_H
#define AP_PPROF_TEST_HELPERS_H

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "pprof.h"

extern int t_pass, t_fail;

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (cond) {                                                                                \
            t_pass++;                                                                              \
        } else {                                                                                   \
            t_fail++;                                                                              \
            fprintf(stderr, "%s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #cond);               \
        }                                                                                          \
    } while (0)

#define CHECK_INT(a, b)                                                                            \
    do {                                                                                           \
        long long a_ = (long long)(a), b_ = (long long)(b);                                        \
        if (a_ == b_) {                                                                            \
            t_pass++;                                                                              \
        } else {                                                                                   \
            t_fail++;                                                                              \
            fprintf(stderr, "%s:%d: %s == %lld, expected %s == %lld\n", __FILE__, __LINE__, #a,    \
                    a_, #b, b_);                                                                   \
        }                                                                                          \
    } while (0)

/* err->msg contains `needle`. */
#define CHECK_ERR(err, code_, needle)                                                              \
    do {                                                                                           \
        ap_pprof_error e_ = (err);                                                                 \
        int ok_ = e_.code == (code_) && strstr(e_.msg, (needle)) != NULL;                          \
        if (ok_) {                                                                                 \
            t_pass++;                                                                              \
        } else {                                                                                   \
            t_fail++;                                                                              \
            fprintf(stderr, "%s:%d: expected %s containing \"%s\", got %s: %s\n", __FILE__,        \
                    __LINE__, ap_pprof_code_name(code_), (needle), ap_pprof_code_name(e_.code),    \
                    e_.msg);                                                                       \
        }                                                                                          \
    } while (0)

/* Prints "N passed, N failed" and returns the exit status. */
int t_done(void);

/* Reads a whole file (malloc'd); NULL if it cannot. */
uint8_t *t_read(const char *path, size_t *len);
/* A file of the shared corpus (AP_TESTDATA), e.g. t_data("edge/minimal.pb.gz"). */
uint8_t *t_data(const char *rel, size_t *len);
const char *t_data_path(const char *rel);
/* Lists the regular files of a corpus directory; returns the count (names are static). */
int t_list(const char *rel, char names[][256], int max);

/* A growing byte buffer with protobuf writers. */
typedef struct {
    uint8_t *b;
    size_t n, cap;
} pb;

void pb_free(pb *p);
void pb_bytes(pb *p, const void *d, size_t n);
void pb_varint(pb *p, uint64_t v);
void pb_key(pb *p, unsigned field, unsigned wt);
void pb_u64(pb *p, unsigned field, uint64_t v);              /* varint field */
void pb_len(pb *p, unsigned field, const void *d, size_t n); /* length-delimited field */
void pb_str(pb *p, unsigned field, const char *s);
void pb_msg(pb *p, unsigned field, const pb *m); /* embeds m (then frees it) */
void pb_packed(pb *p, unsigned field, const uint64_t *v, size_t n);

/* gzip of data (level 6, mtime 0); malloc'd. */
uint8_t *t_gzip(const void *data, size_t n, size_t *out_len);
/* gunzip (all members) into a malloc'd buffer. */
uint8_t *t_gunzip(const void *data, size_t n, size_t *out_len);

/* A small valid profile: 2 sample types (samples/count, cpu/nanoseconds), 1 mapping,
 * 3 functions, 3 locations, samples as given by `stacks` (location ids, 0-terminated) and
 * `values` (pairs). Returns the raw protobuf. */
typedef struct {
    uint64_t locs[8];
    int64_t v[2];
    const char *label_key, *label_val;
} t_sample;
pb t_profile(const t_sample *s, int n, int64_t period, int64_t time_nanos);

/* Decode or fail the test. */
ap_pprof_profile *t_decode(const void *d, size_t n);

#endif
