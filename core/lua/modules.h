/* The bindings that make up autopgo.core; tests/lua/layout_spec.lua checks this list against
 * the binding files in core/lua a binding cannot be forgotten. */
#ifndef AP_MODULES_H
#define AP_MODULES_H

#include "binding.h"

typedef struct {
    const char *name;
    lua_CFunction open;
} ap_module;

static const ap_module ap_modules[] = {
    /* clang-format off */
    {"log", ap_open_log},
    {"bytes", ap_open_bytes}, /* before http_server, which hands them out */
    {"crypto", ap_open_crypto},
    {"http_server", ap_open_http_server},
    {"http_client", ap_open_http_client},
    {"fs", ap_open_fs},
    {"pprof", ap_open_pprof},
    {"pgo", ap_open_pgo},
    {"flame", ap_open_flame},
    {"kafka", ap_open_kafka},
    {"nats", ap_open_nats},
    {"redis", ap_open_redis},
    {NULL, NULL},
    /* clang-format on */
};

#endif
