/* Parallel, deterministic gzip (see zpar.h). The caller's thread serializes into the current
 * block; full blocks queue for the workers; compressed blocks are appended in order, with at
 * most a few blocks in flight so memory stays bounded. When the caller would wait for a block,
 * it compresses a queued one itself. */
#include "zpar.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#define DICT (32u << 10)

typedef struct zblock {
    uint8_t *in;
    size_t in_len;
    uint8_t dict[DICT];
    size_t dict_len;
    uint8_t *out;
    size_t out_len;
    uint32_t crc;
    int last;
    int state; /* 0 queued, 1 done, -1 failed */
    struct zblock *next_order, *next_pending;
} zblock;

struct ap_zpar {
    int level, threads, started;
    pthread_t *tids;
    pthread_mutex_t mu;
    pthread_cond_t cv_work, cv_done;
    zblock *order_head, *order_tail;     /* submitted, not yet collected, in stream order */
    zblock *pending_head, *pending_tail; /* submitted, not yet taken by a worker */
    int inflight, stop;
    zblock *cur; /* being filled */
    uint8_t tail[DICT];
    size_t tail_len;
    z_stream zs; /* for compressing on the caller's thread */
    int zs_init;
    uint8_t *out;
    size_t olen, ocap;
    uint32_t crc;
    uint64_t total;
    int failed;
};

int ap_zpar_auto_threads(void)
{
    /* One thread more than the CPUs (on a machine of two or more), so that both stay busy while
     * a thread reads a file, faults pages in or is descheduled by other work on the machine. */
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1) n = 1;
    if (n > 1) n++;
    if (n > 4) n = 4;
    return (int)n;
}

static zblock *block_new(void)
{
    zblock *b = calloc(1, sizeof *b);
    if (!b) return NULL;
    b->in = malloc(AP_ZPAR_BLOCK);
    if (!b->in) {
        free(b);
        return NULL;
    }
    return b;
}

static void block_free(zblock *b)
{
    if (!b) return;
    free(b->in);
    free(b->out);
    free(b);
}

/* Raw deflate of one block, primed with its dictionary; a sync flush leaves it byte-aligned
 * and open for the next block, Z_FINISH closes the stream. */
static int compress_block(z_stream *zs, zblock *b)
{
    if (deflateReset(zs) != Z_OK) return -1;
    if (b->dict_len && deflateSetDictionary(zs, b->dict, (uInt)b->dict_len) != Z_OK) return -1;
    size_t cap = deflateBound(zs, b->in_len) + 64;
    b->out = malloc(cap);
    if (!b->out) return -1;
    zs->next_in = b->in;
    zs->avail_in = (uInt)b->in_len;
    zs->next_out = b->out;
    zs->avail_out = (uInt)cap;
    int rc = deflate(zs, b->last ? Z_FINISH : Z_SYNC_FLUSH);
    if (b->last ? rc != Z_STREAM_END : (rc != Z_OK || zs->avail_in != 0)) return -1;
    b->out_len = cap - zs->avail_out;
    b->crc = (uint32_t)crc32(0, b->in, (uInt)b->in_len);
    return 0;
}

static void *worker(void *arg)
{
    ap_zpar *z = arg;
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    int ok = deflateInit2(&zs, z->level, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY) == Z_OK;
    pthread_mutex_lock(&z->mu);
    for (;;) {
        while (!z->pending_head && !z->stop) pthread_cond_wait(&z->cv_work, &z->mu);
        zblock *b = z->pending_head;
        if (!b) break;
        z->pending_head = b->next_pending;
        if (!z->pending_head) z->pending_tail = NULL;
        pthread_mutex_unlock(&z->mu);
        int rc = ok ? compress_block(&zs, b) : -1;
        pthread_mutex_lock(&z->mu);
        b->state = rc ? -1 : 1;
        pthread_cond_broadcast(&z->cv_done);
    }
    pthread_mutex_unlock(&z->mu);
    if (ok) deflateEnd(&zs);
    return NULL;
}

static int out_append(ap_zpar *z, const void *d, size_t n)
{
    if (z->ocap - z->olen < n) {
        size_t c = z->ocap ? z->ocap : (1u << 16);
        while (c - z->olen < n) c *= 2;
        uint8_t *o = realloc(z->out, c);
        if (!o) return -1;
        z->out = o;
        z->ocap = c;
    }
    memcpy(z->out + z->olen, d, n);
    z->olen += n;
    return 0;
}

/* Appends a compressed block to the stream. */
static int collect(ap_zpar *z, zblock *b)
{
    if (b->state < 0 || out_append(z, b->out, b->out_len)) {
        z->failed = 1;
        return -1;
    }
    z->crc = (uint32_t)crc32_combine(z->crc, b->crc, (z_off_t)b->in_len);
    z->total += b->in_len;
    return 0;
}

ap_zpar *ap_zpar_new(int level, int threads)
{
    ap_zpar *z = calloc(1, sizeof *z);
    if (!z) return NULL;
    z->level = level;
    z->threads = threads < 1 ? 1 : threads;
    pthread_mutex_init(&z->mu, NULL);
    pthread_cond_init(&z->cv_work, NULL);
    pthread_cond_init(&z->cv_done, NULL);
    if (deflateInit2(&z->zs, level, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
        ap_zpar_free(z);
        return NULL;
    }
    z->zs_init = 1;
    z->cur = block_new();
    /* The gzip header zlib writes: no name, mtime 0, XFL from the level, OS unix. */
    uint8_t hdr[10] = {0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3};
    hdr[8] = level == 9 ? 2 : (level == 1 || level == 0) ? 4 : 0;
    if (!z->cur || out_append(z, hdr, sizeof hdr)) {
        ap_zpar_free(z);
        return NULL;
    }
    return z;
}

static int submit(ap_zpar *z, int last)
{
    zblock *b = z->cur;
    z->cur = NULL;
    b->last = last;
    memcpy(b->dict, z->tail, z->tail_len);
    b->dict_len = z->tail_len;
    /* The next block's dictionary: the end of the stream so far. */
    if (b->in_len >= DICT) {
        memcpy(z->tail, b->in + b->in_len - DICT, DICT);
        z->tail_len = DICT;
    } else {
        size_t keep = DICT - b->in_len < z->tail_len ? DICT - b->in_len : z->tail_len;
        memmove(z->tail, z->tail + z->tail_len - keep, keep);
        memcpy(z->tail + keep, b->in, b->in_len);
        z->tail_len = keep + b->in_len;
    }
    /* One thread, or a stream that is one block in all (no worker started yet and this block
     * is the last): compress here rather than start workers for nothing. */
    if (z->threads <= 1 || (last && !z->started)) {
        b->state = compress_block(&z->zs, b) ? -1 : 1;
        int rc = collect(z, b);
        block_free(b);
        return rc;
    }
    pthread_mutex_lock(&z->mu);
    if (!z->started) {
        z->tids = calloc((size_t)z->threads, sizeof *z->tids);
        for (int i = 0; z->tids && i < z->threads; i++) {
            if (pthread_create(&z->tids[i], NULL, worker, z) != 0) break;
            z->started++;
        }
        if (!z->started) {
            pthread_mutex_unlock(&z->mu);
            /* No threads to be had: compress here. */
            z->threads = 1;
            b->state = compress_block(&z->zs, b) ? -1 : 1;
            int rc = collect(z, b);
            block_free(b);
            return rc;
        }
    }
    if (z->order_tail)
        z->order_tail->next_order = b;
    else
        z->order_head = b;
    z->order_tail = b;
    if (z->pending_tail)
        z->pending_tail->next_pending = b;
    else
        z->pending_head = b;
    z->pending_tail = b;
    z->inflight++;
    pthread_cond_signal(&z->cv_work);
    /* Collect finished blocks in order; wait when too many are in flight (or at the end). */
    int rc = 0;
    for (;;) {
        zblock *h = z->order_head;
        if (!h) break;
        if (h->state == 0) {
            if (z->inflight <= 2 * z->started + 1 && !last) break;
            /* Rather than wait, compress a queued block here: a worker that is descheduled
             * (a loaded machine) then delays the stream by at most the block it holds. */
            zblock *q = z->pending_head;
            if (q) {
                z->pending_head = q->next_pending;
                if (!z->pending_head) z->pending_tail = NULL;
                pthread_mutex_unlock(&z->mu);
                int qrc = compress_block(&z->zs, q);
                pthread_mutex_lock(&z->mu);
                q->state = qrc ? -1 : 1;
                continue;
            }
            pthread_cond_wait(&z->cv_done, &z->mu);
            continue;
        }
        z->order_head = h->next_order;
        if (!z->order_head) z->order_tail = NULL;
        z->inflight--;
        pthread_mutex_unlock(&z->mu);
        if (collect(z, h)) rc = -1;
        block_free(h);
        pthread_mutex_lock(&z->mu);
    }
    pthread_mutex_unlock(&z->mu);
    return rc;
}

uint8_t *ap_zpar_buffer(ap_zpar *z, size_t *room)
{
    if (!z->cur && !(z->cur = block_new())) {
        z->failed = 1;
        *room = 0;
        return NULL;
    }
    *room = AP_ZPAR_BLOCK - z->cur->in_len;
    return z->cur->in + z->cur->in_len;
}

int ap_zpar_commit(ap_zpar *z, size_t n)
{
    z->cur->in_len += n;
    if (z->cur->in_len == AP_ZPAR_BLOCK) return submit(z, 0);
    return 0;
}

int ap_zpar_write(ap_zpar *z, const void *data, size_t n)
{
    const uint8_t *p = data;
    while (n) {
        size_t room;
        uint8_t *dst = ap_zpar_buffer(z, &room);
        if (!dst) return -1;
        size_t k = n < room ? n : room;
        memcpy(dst, p, k);
        p += k;
        n -= k;
        if (ap_zpar_commit(z, k)) return -1;
    }
    return z->failed ? -1 : 0;
}

int ap_zpar_finish(ap_zpar *z, uint8_t **out, size_t *len)
{
    *out = NULL;
    *len = 0;
    if (!z->cur && !(z->cur = block_new())) return -1;
    if (submit(z, 1) || z->failed) return -1;
    uint8_t tr[8];
    uint32_t isize = (uint32_t)z->total;
    for (int i = 0; i < 4; i++) {
        tr[i] = (uint8_t)(z->crc >> (8 * i));
        tr[4 + i] = (uint8_t)(isize >> (8 * i));
    }
    if (out_append(z, tr, sizeof tr)) return -1;
    *out = z->out;
    *len = z->olen;
    z->out = NULL;
    return 0;
}

void ap_zpar_free(ap_zpar *z)
{
    if (!z) return;
    pthread_mutex_lock(&z->mu);
    z->stop = 1;
    pthread_cond_broadcast(&z->cv_work);
    pthread_mutex_unlock(&z->mu);
    for (int i = 0; i < z->started; i++) pthread_join(z->tids[i], NULL);
    free(z->tids);
    /* Blocks left over after a failure. */
    zblock *b = z->order_head;
    while (b) {
        zblock *n = b->next_order;
        block_free(b);
        b = n;
    }
    block_free(z->cur);
    if (z->zs_init) deflateEnd(&z->zs);
    pthread_mutex_destroy(&z->mu);
    pthread_cond_destroy(&z->cv_work);
    pthread_cond_destroy(&z->cv_done);
    free(z->out);
    free(z);
}
