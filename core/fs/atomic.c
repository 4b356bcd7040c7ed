/* Whole-file writes that never leave half a file behind (see atomic.h). */
#include "atomic.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int ap_fs_mkdirs(const char *path)
{
    char buf[PATH_MAX];
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof buf) return -ENAMETOOLONG;
    memcpy(buf, path, n + 1);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(buf, 0755) != 0 && errno != EEXIST) return -errno;
        *p = '/';
    }
    if (mkdir(buf, 0755) != 0 && errno != EEXIST) return -errno;
    return 0;
}

/* The directory part of path into buf ("." when there is none). */
static void dir_of(const char *path, char *buf, size_t size)
{
    const char *slash = strrchr(path, '/');
    if (slash == NULL) {
        snprintf(buf, size, ".");
    } else if (slash == path) {
        snprintf(buf, size, "/");
    } else {
        size_t n = (size_t)(slash - path);
        if (n >= size) n = size - 1;
        memcpy(buf, path, n);
        buf[n] = '\0';
    }
}

static int fsync_dir(const char *path)
{
    char dir[PATH_MAX];
    dir_of(path, dir, sizeof dir);
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return -errno;
    int rc = fsync(fd) == 0 ? 0 : -errno;
    close(fd);
    return rc;
}

int ap_fs_write_new(const char *path, const void *data, size_t len, ap_fs_info *info)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0 && errno == ENOENT) {
        char dir[PATH_MAX];
        dir_of(path, dir, sizeof dir);
        int rc = ap_fs_mkdirs(dir);
        if (rc) return rc;
        fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    }
    if (fd < 0) return -errno;
    const char *p = data;
    size_t left = len;
    int rc = 0;
    while (left > 0) {
        ssize_t w = write(fd, p, left);
        if (w < 0) {
            if (errno == EINTR) continue;
            rc = -errno;
            goto fail;
        }
        p += w;
        left -= (size_t)w;
    }
    if (fsync(fd) != 0) {
        rc = -errno;
        goto fail;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        rc = -errno;
        goto fail;
    }
    if (close(fd) != 0) {
        fd = -1;
        rc = -errno;
        goto fail;
    }
    info->ino = (uint64_t)st.st_ino;
    info->size = (uint64_t)st.st_size;
    info->mtime_sec = (int64_t)st.st_mtim.tv_sec;
    info->mtime_nsec = st.st_mtim.tv_nsec;
    return 0;
fail:
    if (fd >= 0) close(fd);
    unlink(path);
    return rc;
}

int ap_fs_place(const char *tmp, const char *path, int exclusive)
{
    int rc = 0;
    /* A concurrent delete may remove the directory between mkdir and the move: try again. */
    for (int attempt = 0; attempt < 5; attempt++) {
        rc = exclusive ? link(tmp, path) : rename(tmp, path);
        if (rc == 0) break;
        rc = -errno;
        if (rc != -ENOENT) return rc;
        char dir[PATH_MAX];
        dir_of(path, dir, sizeof dir);
        int mrc = ap_fs_mkdirs(dir);
        if (mrc) return mrc;
    }
    if (rc) return rc;
    if (exclusive) unlink(tmp);
    return fsync_dir(path);
}
