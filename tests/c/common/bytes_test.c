/* Tests for core/common/bytes.c: a copy's references, readers and the owner's hooks (on_idle once
 * the last reader is done, on_free once the last reference goes). */
#include "bytes.h"

#include <stdlib.h>
#include <string.h>

#include "../test.h"

static void copy_counts(void)
{
    ap_bytes *b = ap_bytes_copy("hello", 5);
    CHECK(b != NULL);
    CHECK(b->len == 5 && memcmp(b->base, "hello", 5) == 0);
    CHECK(b->refs == 1 && b->readers == 0);
    ap_bytes_ref(b);
    ap_bytes_read_begin(b);
    CHECK(b->refs == 3 && b->readers == 1);
    ap_bytes_unref(b);
    ap_bytes_unref(b); /* the reader's reference still holds it (ASan would see a use after free) */
    CHECK(b->refs == 1 && memcmp(b->base, "hello", 5) == 0);
    ap_bytes_read_end(b); /* the last reference: freed */
    ap_bytes *e = ap_bytes_copy(NULL, 0);
    CHECK(e != NULL && e->len == 0);
    ap_bytes_unref(e);
}

typedef struct {
    ap_bytes super;
    int idle, freed;
} owned;

static owned *last_freed;

static void on_idle(ap_bytes *b)
{
    ((owned *)b)->idle++;
}

static void on_free(ap_bytes *b)
{
    ((owned *)b)->freed++;
    last_freed = (owned *)b;
}

static void owner_hooks(void)
{
    owned o = {.super = {.base = "x", .len = 1, .refs = 1, .on_idle = on_idle, .on_free = on_free}};
    ap_bytes_read_begin(&o.super);
    ap_bytes_read_begin(&o.super);
    ap_bytes_read_end(&o.super);
    CHECK(o.idle == 0); /* one reader left */
    ap_bytes_read_end(&o.super);
    CHECK(o.idle == 1 && o.freed == 0);
    ap_bytes_unref(&o.super);
    CHECK(o.freed == 1 && last_freed == &o);
}

int main(void)
{
    RUN(copy_counts);
    RUN(owner_hooks);
    TEST_MAIN_END();
}
