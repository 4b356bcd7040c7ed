/* Tests for core/fs/list.c: a page of a directory in name order (after, limit, prefix), the
 * directories that make a page not stand alone, symlinks followed, errors as -errno. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "list.h"
#include "../test.h"

static char root[64];

static void touch(const char *rel, const char *body)
{
    char p[256];
    snprintf(p, sizeof p, "%s/%s", root, rel);
    FILE *f = fopen(p, "wb");
    if (!f) {
        perror(p);
        exit(2);
    }
    fputs(body, f);
    fclose(f);
}

/* The page's names joined with ',' ("" when empty; "ERR" on failure). */
static const char *page(const char *prefix, const char *after, size_t limit, int *has_dirs)
{
    static char out[512];
    ap_fs_page p;
    if (ap_fs_list_page(root, prefix, after, limit, &p) != 0) return "ERR";
    out[0] = 0;
    for (size_t i = 0; i < p.n; i++) {
        if (i) strcat(out, ",");
        strcat(out, p.entries[i].name);
    }
    if (has_dirs) *has_dirs = p.has_dirs;
    ap_fs_page_free(&p);
    return out;
}

static void test_pages_in_name_order(void)
{
    /* created out of order: readdir order is not name order */
    const char *names[] = {"k09", "k01", "k10", "k05", "k02", "k07", "k03", "k08", "k04", "k06"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) touch(names[i], names[i]);
    int dirs = -1;
    CHECK_STR(page("", NULL, 3, &dirs), "k01,k02,k03");
    CHECK(dirs == 0);
    CHECK_STR(page("", "k03", 3, NULL), "k04,k05,k06");
    CHECK_STR(page("", "k035", 2, NULL), "k04,k05");
    CHECK_STR(page("", "k09", 5, NULL), "k10");
    CHECK_STR(page("", "k10", 5, NULL), "");
    CHECK_STR(page("", NULL, 0, NULL), "");
    CHECK_STR(page("", NULL, 100, NULL), "k01,k02,k03,k04,k05,k06,k07,k08,k09,k10");
    CHECK_STR(page("k1", NULL, 100, NULL), "k10");
    CHECK_STR(page("k0", "k08", 100, NULL), "k09");
    CHECK_STR(page("x", NULL, 100, NULL), "");
}

static void test_describes_each_file(void)
{
    ap_fs_page p;
    CHECK(ap_fs_list_page(root, "k05", NULL, 1, &p) == 0);
    CHECK(p.n == 1);
    struct stat st;
    char path[256];
    snprintf(path, sizeof path, "%s/k05", root);
    CHECK(stat(path, &st) == 0);
    if (p.n == 1) {
        CHECK(p.entries[0].info.size == 3);
        CHECK(p.entries[0].info.ino == (uint64_t)st.st_ino);
        CHECK(p.entries[0].info.mtime_sec == (int64_t)st.st_mtim.tv_sec);
        CHECK(p.entries[0].info.mtime_nsec == st.st_mtim.tv_nsec);
    }
    ap_fs_page_free(&p);
}

static void test_directories_and_links(void)
{
    char p[256];
    snprintf(p, sizeof p, "%s/k05.d", root);
    CHECK(mkdir(p, 0755) == 0);
    int dirs = -1;
    CHECK_STR(page("k0", NULL, 2, &dirs), "k01,k02"); /* never listed as a file */
    CHECK(dirs == 1);
    CHECK_STR(page("k1", NULL, 2, &dirs), "k10"); /* only directories under the prefix count */
    CHECK(dirs == 0);
    char target[256];
    snprintf(target, sizeof target, "%s/k01", root);
    snprintf(p, sizeof p, "%s/l1", root);
    CHECK(symlink(target, p) == 0);
    snprintf(target, sizeof target, "%s/k05.d", root);
    snprintf(p, sizeof p, "%s/l2", root);
    CHECK(symlink(target, p) == 0);
    snprintf(p, sizeof p, "%s/l3", root);
    CHECK(symlink("/nonexistent/autopgo", p) == 0);
    CHECK_STR(page("l", NULL, 10, &dirs),
              "l1");  /* a link to a file is a file, a dangling one nothing */
    CHECK(dirs == 1); /* a link to a directory is one */
}

static void test_errors_come_back_as_negative_errno(void)
{
    ap_fs_page p;
    char missing[128];
    snprintf(missing, sizeof missing, "%s/none", root);
    CHECK(ap_fs_list_page(missing, "", NULL, 5, &p) == -ENOENT);
    CHECK(p.n == 0 && p.entries == NULL);
    char file[128];
    snprintf(file, sizeof file, "%s/k01", root);
    CHECK(ap_fs_list_page(file, "", NULL, 5, &p) == -ENOTDIR);
}

int main(void)
{
    snprintf(root, sizeof root, "/tmp/ap-fs-list-XXXXXX");
    if (!mkdtemp(root)) {
        perror("mkdtemp");
        return 2;
    }
    RUN(test_pages_in_name_order);
    RUN(test_describes_each_file);
    RUN(test_directories_and_links);
    RUN(test_errors_come_back_as_negative_errno);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", root);
    if (system(cmd) != 0) fprintf(stderr, "cannot remove %s\n", root);
    TEST_MAIN_END();
}
