/* Just enough of klib's khash.h for <h2o/http2_internal.h> to compile (the Debian package ships
 * the header but not khash.h). server.c reads one field of h2o_http2_stream_t and never touches a
 * connection's stream table: the lookup below is a stub that must not be called. */
#ifndef AP_H2O_SHIM_KHASH_H
#define AP_H2O_SHIM_KHASH_H

#include <stddef.h>

typedef unsigned int khiter_t;
#define KHASH_MAP_INIT_INT64(name, type) typedef struct kh_##name##_s kh_##name##_t;
#define khash_t(name)                    kh_##name##_t
#define kh_get(name, h, k)               ((void)(h), (void)(k), (khiter_t)0)
#define kh_end(h)                        ((khiter_t)0)
#define kh_val(h, i)                     NULL

#endif
