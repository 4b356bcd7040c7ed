/* Registers the embedded Lua library with package.preload and exposes `autopgo.host`. */
#ifndef AP_PRELOAD_H
#define AP_PRELOAD_H

#include <lua.h>

void ap_preload_install(lua_State *L, const char *exe);

#endif
