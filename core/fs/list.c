/* A page of a directory in name order (see list.h): one readdir keeping the `limit` smallest
 * qualifying names in a max-heap, so a page costs O(entries log limit) in C and stats only what it
 * returns. */
#include "list.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

typedef struct {
    char **v;
    size_t n, cap;
} heap; /* max-heap by strcmp: v[0] is the largest name kept */

static void sift_down(heap *h, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < h->n && strcmp(h->v[l], h->v[m]) > 0) m = l;
        if (r < h->n && strcmp(h->v[r], h->v[m]) > 0) m = r;
        if (m == i) return;
        char *t = h->v[i];
        h->v[i] = h->v[m];
        h->v[m] = t;
        i = m;
    }
}

static int heap_push(heap *h, char *s)
{
    if (h->n == h->cap) {
        size_t cap = h->cap ? 2 * h->cap : 64;
        char **v = realloc(h->v, cap * sizeof *v);
        if (!v) return -ENOMEM;
        h->v = v;
        h->cap = cap;
    }
    size_t i = h->n++;
    h->v[i] = s;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (strcmp(h->v[p], h->v[i]) >= 0) break;
        char *t = h->v[p];
        h->v[p] = h->v[i];
        h->v[i] = t;
        i = p;
    }
    return 0;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* What kind the entry is: 1 a regular file, 2 a directory, 0 anything else (or gone). */
static int kind_of(int dfd, const struct dirent *d, struct stat *st, int *statted)
{
    *statted = 0;
    if (d->d_type == DT_REG) return 1;
    if (d->d_type == DT_DIR) return 2;
    if (d->d_type != DT_LNK && d->d_type != DT_UNKNOWN) return 0;
    if (fstatat(dfd, d->d_name, st, 0) != 0) return 0;
    *statted = 1;
    return S_ISREG(st->st_mode) ? 1 : S_ISDIR(st->st_mode) ? 2 : 0;
}

int ap_fs_list_page(const char *dir, const char *prefix, const char *after, size_t limit,
                    ap_fs_page *out)
{
    memset(out, 0, sizeof *out);
    DIR *dp = opendir(dir);
    if (!dp) return -errno;
    int dfd = dirfd(dp), rc = 0;
    size_t plen = prefix ? strlen(prefix) : 0;
    heap h = {0};
    for (;;) {
        errno = 0; /* readdir's end and its failure differ only by errno */
        struct dirent *d = readdir(dp);
        if (!d) {
            rc = errno ? -errno : 0;
            break;
        }
        const char *name = d->d_name;
        if (!strcmp(name, ".") || !strcmp(name, "..")) continue;
        if (plen && strncmp(name, prefix, plen) != 0) continue;
        struct stat st;
        int statted, kind = kind_of(dfd, d, &st, &statted);
        if (kind == 2) out->has_dirs = 1;
        if (kind != 1 || (after && strcmp(name, after) <= 0)) continue;
        if (limit == 0) continue;
        if (h.n == limit) {
            if (strcmp(name, h.v[0]) >= 0) continue;
            char *s = strdup(name);
            if (!s) {
                rc = -ENOMEM;
                break;
            }
            free(h.v[0]);
            h.v[0] = s;
            sift_down(&h, 0);
            continue;
        }
        char *s = strdup(name);
        if (!s || (rc = heap_push(&h, s)) != 0) {
            free(s);
            rc = -ENOMEM;
            break;
        }
    }
    if (!rc && h.n) {
        qsort(h.v, h.n, sizeof *h.v, by_name);
        out->entries = calloc(h.n, sizeof *out->entries);
        if (!out->entries) rc = -ENOMEM;
    }
    for (size_t i = 0; i < h.n; i++) {
        struct stat st;
        if (rc || fstatat(dfd, h.v[i], &st, 0) != 0 || !S_ISREG(st.st_mode)) {
            free(h.v[i]); /* gone (or no longer a file) since the readdir: not listed */
            continue;
        }
        ap_fs_entry *e = &out->entries[out->n++];
        e->name = h.v[i];
        e->info.ino = (uint64_t)st.st_ino;
        e->info.size = (uint64_t)st.st_size;
        e->info.mtime_sec = (int64_t)st.st_mtim.tv_sec;
        e->info.mtime_nsec = st.st_mtim.tv_nsec;
    }
    free(h.v);
    closedir(dp);
    if (rc) ap_fs_page_free(out);
    return rc;
}

void ap_fs_page_free(ap_fs_page *p)
{
    for (size_t i = 0; i < p->n; i++) free(p->entries[i].name);
    free(p->entries);
    p->entries = NULL;
    p->n = 0;
}
