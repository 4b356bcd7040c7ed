/* Bytes held once and shared by reference: a request body that the validator, the file store, an
 * HTTP transfer and Lua all read without a copy. Every call is made on the loop thread; a thread
 * reads the bytes while a reference taken on the loop (ap_bytes_read_begin) keeps them. */
#ifndef AP_BYTES_H
#define AP_BYTES_H

#include <stddef.h>

typedef struct ap_bytes ap_bytes;

struct ap_bytes {
    const char *base; /* NULL once the owner took the bytes back (see on_free, on_idle) */
    size_t len;
    size_t refs;    /* holders, readers included */
    size_t readers; /* holders reading it now, off the loop or over time (pool work, transfers) */
    /* The owner's hooks: on_idle runs when the last reader is done (may be NULL); on_free when the
     * last reference goes, and releases b with what it holds. */
    void (*on_idle)(ap_bytes *b);
    void (*on_free)(ap_bytes *b);
};

/* A copy of n bytes at p, with one reference; NULL when out of memory. */
ap_bytes *ap_bytes_copy(const char *p, size_t n);
void ap_bytes_ref(ap_bytes *b);
void ap_bytes_unref(ap_bytes *b);
/* A reader's reference: taken before the read starts, dropped once it is over. */
void ap_bytes_read_begin(ap_bytes *b);
void ap_bytes_read_end(ap_bytes *b);

#endif
