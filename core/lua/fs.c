/* File-system calls luv does not offer, for lua/autopgo/blob/file.lua: advisory locks (flock) that
 * the kernel drops when a process dies, so a crashed writer never leaves a stale lock. */
#include <errno.h>
#include <string.h>
#include <sys/file.h>

#include "binding.h"

/* fs.flock(fd, "exclusive" | "shared" | "unlock") -> true | nil, "BUSY: ...", "BUSY"
 * Never blocks the loop: a lock held elsewhere answers BUSY and the caller retries later. */
static int l_flock(lua_State *L)
{
    lua_Integer fd = luaL_checkinteger(L, 1);
    static const char *const ops[] = {"exclusive", "shared", "unlock", NULL};
    int which = luaL_checkoption(L, 2, NULL, ops);
    int op = which == 0 ? LOCK_EX : which == 1 ? LOCK_SH : LOCK_UN;
    if (flock((int)fd, op | LOCK_NB) != 0) {
        if (errno == EWOULDBLOCK) return ap_fail(L, "BUSY", "locked by another holder");
        return ap_fail(L, "IO", "flock: %s", strerror(errno));
    }
    lua_pushboolean(L, 1);
    return 1;
}

int ap_open_fs(lua_State *L)
{
    static const luaL_Reg funcs[] = {
        {"flock", l_flock},
        {NULL, NULL},
    };
    luaL_newlib(L, funcs);
    return 1;
}
