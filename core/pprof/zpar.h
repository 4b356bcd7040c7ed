/* A gzip writer that deflates fixed-size blocks on several threads (the pigz scheme): each
 * block is primed with the previous block's last 32 KiB and ends on a sync flush, so the
 * blocks concatenate into one deflate stream. The bytes do not depend on the thread count. */
#ifndef AP_PPROF_ZPAR_H
#define AP_PPROF_ZPAR_H

#include <stddef.h>
#include <stdint.h>

#define AP_ZPAR_BLOCK (1u << 20)

typedef struct ap_zpar ap_zpar;

/* level: zlib level (-1 default); threads: workers (<= 1 compresses on the caller's thread). */
ap_zpar *ap_zpar_new(int level, int threads);
/* A buffer of up to AP_ZPAR_BLOCK bytes the caller fills and passes to ap_zpar_commit. */
uint8_t *ap_zpar_buffer(ap_zpar *z, size_t *room);
/* Marks n more bytes of the buffer as written; full blocks go to the workers. */
int ap_zpar_commit(ap_zpar *z, size_t n);
int ap_zpar_write(ap_zpar *z, const void *data, size_t n);
/* Ends the stream; *out (malloc'd) is the whole gzip file. The writer must still be freed. */
int ap_zpar_finish(ap_zpar *z, uint8_t **out, size_t *len);
void ap_zpar_free(ap_zpar *z);

/* Thread count for "automatic": online CPUs + 1 (1 on a single CPU), at most 4. */
int ap_zpar_auto_threads(void);

#endif
