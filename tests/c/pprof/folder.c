/* Tests core/pprof/fold.c (the folder) beyond the differential fold.sh: its temp file (unlinked
 * at once, closed on every path: no descriptor and no file outlives a folder, whether it is
 * made, fails to be made, folds, fails a fold or is freed), an unusable TMPDIR, and the totals of
 * folds against the one merge of the same inputs, from a base written by the first fold layout. */
#include <dirent.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fold.h"
#include "helpers.h"

static int open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    int n = 0;
    for (struct dirent *e; d && (e = readdir(d));) n += e->d_name[0] != '.';
    if (d) closedir(d);
    return n - 1; /* the directory's own */
}

static int dir_entries(const char *path)
{
    DIR *d = opendir(path);
    int n = 0;
    for (struct dirent *e; d && (e = readdir(d));)
        n += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
    if (d) closedir(d);
    return n;
}

/* Samples and the sum of each value over them. */
static void totals(const uint8_t *b, size_t len, uint32_t *n, int64_t sum[2])
{
    ap_pprof_error err;
    ap_pprof_profile *p = ap_pprof_decode(b, len, NULL, &err);
    CHECK(p != NULL);
    *n = p ? p->nsamples : 0;
    sum[0] = sum[1] = 0;
    for (uint32_t i = 0; p && i < p->nsamples; i++)
        for (uint32_t k = 0; k < p->nsample_type && k < 2; k++)
            sum[k] += p->values[(size_t)i * p->nsample_type + k];
    ap_pprof_profile_free(p);
}

static void test_temp_file(void)
{
    char dir[] = "/tmp/ap-fold-test-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    setenv("TMPDIR", dir, 1);
    size_t blen, ulen;
    uint8_t *base = t_data("goapp-cpu-1.pb.gz", &blen), *up = t_data("goapp-cpu-2.pb.gz", &ulen);
    ap_pprof_error err;
    int fds = open_fds();

    /* a base that does not decode: nothing left */
    static const uint8_t junk[] = "not a profile";
    CHECK(ap_pprof_folder_new(junk, sizeof junk, NULL, NULL, 1, &err) == NULL);
    CHECK_INT(err.code, AP_PPROF_EMALFORMED);
    CHECK_INT(open_fds(), fds);

    /* a folder: one descriptor, no file to be seen */
    ap_pprof_folder *f = ap_pprof_folder_new(base, blen, NULL, NULL, 1, &err);
    CHECK(f != NULL);
    CHECK_INT(open_fds(), fds + 1);
    CHECK_INT(dir_entries(dir), 0);
    ap_pprof_input in = {.data = up, .len = ulen};
    uint8_t *out = NULL;
    size_t len = 0;
    ap_pprof_fold_stats st;
    CHECK_INT(ap_pprof_folder_fold(f, &in, 1, NULL, NULL, &out, &len, &st, &err), 0);
    CHECK(out != NULL && len > 0 && st.rewritten > 0);
    free(out);
    CHECK_INT(dir_entries(dir), 0);
    /* a failed fold hands nothing out; its folder is spent and freed */
    ap_pprof_input bad = {.data = junk, .len = sizeof junk};
    CHECK_INT(ap_pprof_folder_fold(f, &bad, 1, NULL, NULL, &out, &len, &st, &err), -1);
    CHECK(out == NULL && len == 0);
    CHECK_INT(err.input, 0);
    ap_pprof_folder_free(f);
    CHECK_INT(open_fds(), fds);

    /* no TMPDIR to write to: an IO error, nothing left */
    char gone[sizeof dir + 8];
    snprintf(gone, sizeof gone, "%s/none", dir);
    setenv("TMPDIR", gone, 1);
    CHECK(ap_pprof_folder_new(base, blen, NULL, NULL, 1, &err) == NULL);
    CHECK_ERR(err, AP_PPROF_EIO, "folder temp file");
    CHECK_INT(open_fds(), fds);
    unsetenv("TMPDIR");
    rmdir(dir);
    free(base);
    free(up);
}

/* Folds one upload at a time into a base written by the first fold layout (commit 61a388a):
 * the totals are the one merge's of the base and the uploads; a new folder over a fold's output
 * goes on alike. */
static void test_upgrade(void)
{
    const char *names[] = {"folded-v1.pgo", "goapp-go123-cpu-2.pb.gz", "goapp-cpu-3.pb.gz",
                           "goapp-go123-cpu-3.pb.gz"};
    ap_pprof_input in[4] = {{0}};
    uint8_t *data[4];
    for (int i = 0; i < 4; i++) {
        data[i] = t_data(names[i], &in[i].len);
        in[i].data = data[i];
    }
    ap_pprof_error err;
    ap_pprof_folder *f = ap_pprof_folder_new(in[0].data, in[0].len, NULL, NULL, 1, &err);
    CHECK(f != NULL);
    uint8_t *out = NULL;
    size_t len = 0;
    for (int i = 1; i < 4 && f; i++) {
        if (i == 3) {
            /* as after a restart: a new folder over the last output */
            ap_pprof_folder_free(f);
            f = ap_pprof_folder_new(out, len, NULL, NULL, 1, &err);
            CHECK(f != NULL);
            if (!f) break;
        }
        free(out);
        CHECK_INT(ap_pprof_folder_fold(f, &in[i], 1, NULL, NULL, &out, &len, NULL, &err), 0);
    }
    ap_pprof_folder_free(f);
    uint8_t *merged = NULL;
    size_t mlen = 0;
    ap_pprof_encode_opts o = {.level = 1};
    CHECK_INT(ap_pprof_merge_encoded(in, 4, NULL, NULL, &o, &merged, &mlen, NULL, NULL, &err), 0);
    uint32_t n1 = 0, n2 = 0;
    int64_t s1[2], s2[2];
    totals(out, len, &n1, s1);
    totals(merged, mlen, &n2, s2);
    CHECK(n1 > 0);
    CHECK_INT(n1, n2);
    CHECK_INT(s1[0], s2[0]);
    CHECK_INT(s1[1], s2[1]);
    free(out);
    free(merged);
    for (int i = 0; i < 4; i++) free(data[i]);
}

int main(void)
{
    test_temp_file();
    test_upgrade();
    return t_done();
}
