/* The Lua library compiled into the host binary (generated from lua/ by cmake/embed_lua.cmake). */
#ifndef AP_EMBED_H
#define AP_EMBED_H

#include <stddef.h>

typedef struct {
    const char *path; /* relative to lua/, e.g. "autopgo/cli.lua", "roles/server.lua" */
    const char *data;
    size_t len;
} ap_embedded_file;

extern const ap_embedded_file ap_embedded_files[];
/* The web view's assets (core/host/CMakeLists.txt), relative to lua/ui/: "index.html", ... */
extern const ap_embedded_file ap_ui_assets[];

#endif
