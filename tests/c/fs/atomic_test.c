/* Tests for core/fs/atomic.c: new files written whole, create-only and replacing moves, parents
 * made on the way. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "atomic.h"
#include "../test.h"

static char root[64];

static char *path_of(const char *rel)
{
    static char buf[4][256];
    static int next;
    char *p = buf[next++ % 4];
    snprintf(p, 256, "%s/%s", root, rel);
    return p;
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    static char buf[256];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

static void test_write_new_makes_parents_and_describes_the_file(void)
{
    ap_fs_info info;
    CHECK(ap_fs_write_new(path_of("a/b/c.tmp"), "hello", 5, &info) == 0);
    CHECK_STR(slurp(path_of("a/b/c.tmp")), "hello");
    struct stat st;
    CHECK(stat(path_of("a/b/c.tmp"), &st) == 0);
    CHECK(info.size == 5);
    CHECK(info.ino == (uint64_t)st.st_ino);
    CHECK(info.mtime_sec == (int64_t)st.st_mtim.tv_sec);
}

static void test_write_new_refuses_an_existing_file(void)
{
    ap_fs_info info;
    CHECK(ap_fs_write_new(path_of("exists"), "one", 3, &info) == 0);
    CHECK(ap_fs_write_new(path_of("exists"), "two", 3, &info) == -EEXIST);
    CHECK_STR(slurp(path_of("exists")), "one");
}

static void test_place_exclusive_links_once(void)
{
    ap_fs_info info;
    CHECK(ap_fs_write_new(path_of("t1"), "first", 5, &info) == 0);
    CHECK(ap_fs_place(path_of("t1"), path_of("app/staging/1"), 1) == 0);
    CHECK(access(path_of("t1"), F_OK) != 0); /* the temporary name is gone */
    CHECK_STR(slurp(path_of("app/staging/1")), "first");
    CHECK(ap_fs_write_new(path_of("t2"), "second", 6, &info) == 0);
    CHECK(ap_fs_place(path_of("t2"), path_of("app/staging/1"), 1) == -EEXIST);
    CHECK_STR(slurp(path_of("app/staging/1")), "first");
    CHECK(access(path_of("t2"), F_OK) == 0); /* kept for the caller to remove */
}

static void test_place_replaces(void)
{
    ap_fs_info info;
    CHECK(ap_fs_write_new(path_of("t3"), "v1", 2, &info) == 0);
    CHECK(ap_fs_place(path_of("t3"), path_of("base"), 0) == 0);
    CHECK(ap_fs_write_new(path_of("t4"), "v2", 2, &info) == 0);
    CHECK(ap_fs_place(path_of("t4"), path_of("base"), 0) == 0);
    CHECK_STR(slurp(path_of("base")), "v2");
    CHECK(access(path_of("t4"), F_OK) != 0);
}

static void test_errors_come_back_as_negative_errno(void)
{
    ap_fs_info info;
    CHECK(ap_fs_write_new(path_of("file"), "x", 1, &info) == 0);
    CHECK(ap_fs_write_new(path_of("file/under-a-file"), "x", 1, &info) == -ENOTDIR);
    CHECK(ap_fs_place(path_of("no-such-tmp"), path_of("dest"), 0) == -ENOENT);
    CHECK(ap_fs_mkdirs(path_of("x/y/z")) == 0);
    CHECK(ap_fs_mkdirs(path_of("x/y/z")) == 0);
}

int main(void)
{
    strcpy(root, "/tmp/autopgo-fs-test-XXXXXX");
    if (!mkdtemp(root)) return 1;
    RUN(test_write_new_makes_parents_and_describes_the_file);
    RUN(test_write_new_refuses_an_existing_file);
    RUN(test_place_exclusive_links_once);
    RUN(test_place_replaces);
    RUN(test_errors_come_back_as_negative_errno);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    if (system(cmd) != 0) fprintf(stderr, "cannot remove %s\n", root);
    TEST_MAIN_END();
}
