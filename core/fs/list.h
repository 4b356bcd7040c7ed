/* One page of a directory in name order, read in one blocking call (for the thread pool): the
 * file:// store lists its staging area a page at a time, and a page should cost a readdir and the
 * page's stats, not a sorted copy of every name in the directory. */
#ifndef AP_FS_LIST_H
#define AP_FS_LIST_H

#include <stddef.h>

#include "atomic.h"

typedef struct {
    char *name;
    ap_fs_info info;
} ap_fs_entry;

typedef struct {
    ap_fs_entry *entries; /* regular files (symlinks followed), by name (strcmp order) */
    size_t n;
    int has_dirs; /* a directory whose name starts with the prefix is there: its files would
                   * interleave with these in key order, so the page does not stand alone */
} ap_fs_page;

/* The first `limit` regular files of dir whose names start with prefix and sort after `after`
 * (NULL: from the start). Files that vanish while listed are left out. Returns 0 or -errno (the
 * directory cannot be read: -ENOENT when it does not exist). */
int ap_fs_list_page(const char *dir, const char *prefix, const char *after, size_t limit,
                    ap_fs_page *out);
void ap_fs_page_free(ap_fs_page *p);

#endif
