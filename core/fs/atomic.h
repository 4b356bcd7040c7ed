/* Whole-file writes that never leave half a file behind: a new file written and fsync'd, then
 * linked (create-only) or renamed into place, and its directory fsync'd. Blocking calls, meant for
 * the libuv thread pool: one job does what would otherwise take a dozen loop round trips. */
#ifndef AP_FS_ATOMIC_H
#define AP_FS_ATOMIC_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint64_t ino;
    uint64_t size;
    int64_t mtime_sec;
    long mtime_nsec;
} ap_fs_info;

/* mkdir -p with mode 0755; existing directories are fine. Returns 0 or -errno. */
int ap_fs_mkdirs(const char *path);

/* Creates path (which must not exist; missing parent directories are made), writes data, fsyncs
 * and describes the file in *info. On failure nothing is left at path. Returns 0 or -errno. */
int ap_fs_write_new(const char *path, const void *data, size_t len, ap_fs_info *info);

/* Moves the file tmp to path: with exclusive, only if path does not exist (-EEXIST otherwise,
 * tmp is kept); else replacing it. Missing parent directories of path are made. The directory of
 * path is fsync'd, so the change survives a crash. With exclusive, tmp is removed on success.
 * Returns 0 or -errno. */
int ap_fs_place(const char *tmp, const char *path, int exclusive);

#endif
