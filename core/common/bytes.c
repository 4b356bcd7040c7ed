/* Reference counting of ap_bytes (see bytes.h) and the plain owned copy. */
#include "bytes.h"

#include <stdlib.h>
#include <string.h>

static void free_copy(ap_bytes *b)
{
    free(b);
}

ap_bytes *ap_bytes_copy(const char *p, size_t n)
{
    ap_bytes *b = malloc(sizeof *b + (n ? n : 1));
    if (b == NULL) return NULL;
    char *data = (char *)(b + 1);
    if (n) memcpy(data, p, n);
    *b = (ap_bytes){.base = data, .len = n, .refs = 1, .on_free = free_copy};
    return b;
}

void ap_bytes_ref(ap_bytes *b)
{
    b->refs++;
}

void ap_bytes_unref(ap_bytes *b)
{
    if (--b->refs == 0) b->on_free(b);
}

void ap_bytes_read_begin(ap_bytes *b)
{
    b->refs++;
    b->readers++;
}

void ap_bytes_read_end(ap_bytes *b)
{
    /* The reader's reference outlives on_idle, which may release the owner's. */
    if (--b->readers == 0 && b->on_idle) b->on_idle(b);
    ap_bytes_unref(b);
}
