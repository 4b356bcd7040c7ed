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
    {"log", ap_open_log},
    {"crypto", ap_open_crypto},
    {"kafka", ap_open_kafka},
    {"nats", ap_open_nats},
    {NULL, NULL},
};

#endif
