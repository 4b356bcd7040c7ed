/* File-system calls luv does not offer, for lua/autopgo/blob/file.lua: advisory locks (flock) that
 * the kernel drops when a process dies, and core/fs's atomic writes and directory pages as single
 * thread-pool jobs. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>

#include "atomic.h"
#include "list.h"
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

typedef struct {
    char *path;
    char *tmp;
    const char *data;
    size_t len;
    int exclusive;
    int rc;
    ap_fs_info info;
} fs_job;

/* Errors read like luv's ("ENOENT: no such file or directory: path") so callers map them alike. */
static void push_errno(lua_State *L, int rc, const char *path)
{
    ap_push_error(L, uv_err_name(rc), "%s: %s", uv_strerror(rc), path);
}

/* The fields of a file's ap_fs_info into the table on top. */
static void push_info_fields(lua_State *L, const ap_fs_info *info)
{
    lua_pushinteger(L, (lua_Integer)info->ino);
    lua_setfield(L, -2, "ino");
    lua_pushinteger(L, (lua_Integer)info->size);
    lua_setfield(L, -2, "size");
    lua_pushinteger(L, (lua_Integer)info->mtime_sec);
    lua_setfield(L, -2, "mtime_sec");
    lua_pushinteger(L, (lua_Integer)info->mtime_nsec);
    lua_setfield(L, -2, "mtime_nsec");
}

static void write_new_work(void *d)
{
    fs_job *j = d;
    j->rc = ap_fs_write_new(j->path, j->data, j->len, &j->info);
}

static int write_new_after(lua_State *L, void *d)
{
    fs_job *j = d;
    if (j->rc) {
        push_errno(L, j->rc, j->path);
        return 1;
    }
    lua_pushnil(L);
    lua_createtable(L, 0, 4);
    push_info_fields(L, &j->info);
    return 2;
}

static void place_work(void *d)
{
    fs_job *j = d;
    j->rc = ap_fs_place(j->tmp, j->path, j->exclusive);
}

static int place_after(lua_State *L, void *d)
{
    fs_job *j = d;
    if (j->rc) {
        push_errno(L, j->rc, j->path);
        return 1;
    }
    lua_pushnil(L);
    lua_pushboolean(L, 1);
    return 2;
}

static void job_free(void *d)
{
    fs_job *j = d;
    free(j->path);
    free(j->tmp);
    free(j);
}

static fs_job *new_job(lua_State *L, const char *path, const char *tmp)
{
    fs_job *j = calloc(1, sizeof *j);
    if (j) j->path = strdup(path);
    if (j && tmp) j->tmp = strdup(tmp);
    if (!j || !j->path || (tmp && !j->tmp)) {
        if (j) job_free(j);
        luaL_error(L, "out of memory");
    }
    return j;
}

/* fs.write_new_async(path, data, cb(err, { ino, size, mtime_sec, mtime_nsec })) -> true
 * Creates path (parents included), writes data and fsyncs, on the thread pool. */
static int l_write_new_async(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    size_t len;
    const char *data = ap_check_bytes(L, 2, &len);
    luaL_checktype(L, 3, LUA_TFUNCTION);
    fs_job *j = new_job(L, path, NULL);
    j->data = data;
    j->len = len;
    int pins[] = {2};
    ap_work_queue(L, 3, pins, 1, j, write_new_work, write_new_after, job_free);
    lua_pushboolean(L, 1);
    return 1;
}

/* fs.place_async(tmp, path, exclusive, cb(err, true)) -> true
 * Links (exclusive: EEXIST if path exists) or renames tmp to path, then fsyncs the directory. */
static int l_place_async(lua_State *L)
{
    const char *tmp = luaL_checkstring(L, 1);
    const char *path = luaL_checkstring(L, 2);
    int exclusive = lua_toboolean(L, 3);
    luaL_checktype(L, 4, LUA_TFUNCTION);
    fs_job *j = new_job(L, path, tmp);
    j->exclusive = exclusive;
    ap_work_queue(L, 4, NULL, 0, j, place_work, place_after, job_free);
    lua_pushboolean(L, 1);
    return 1;
}

typedef struct {
    char *dir, *prefix, *after;
    size_t limit;
    int rc;
    ap_fs_page page;
} list_job;

static void list_work(void *d)
{
    list_job *j = d;
    j->rc = ap_fs_list_page(j->dir, j->prefix, j->after, j->limit, &j->page);
}

static int list_after(lua_State *L, void *d)
{
    list_job *j = d;
    if (j->rc) {
        push_errno(L, j->rc, j->dir);
        return 1;
    }
    lua_pushnil(L);
    lua_createtable(L, (int)j->page.n, 0);
    for (size_t i = 0; i < j->page.n; i++) {
        lua_createtable(L, 0, 5);
        lua_pushstring(L, j->page.entries[i].name);
        lua_setfield(L, -2, "name");
        push_info_fields(L, &j->page.entries[i].info);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    lua_pushboolean(L, j->page.has_dirs);
    return 3;
}

static void list_free(void *d)
{
    list_job *j = d;
    ap_fs_page_free(&j->page);
    free(j->dir);
    free(j->prefix);
    free(j->after);
    free(j);
}

/* fs.list_page_async(dir, prefix, after|nil, limit, cb(err, files, has_dirs)) -> true
 * The first limit regular files of dir named prefix... and sorting after `after`, by name:
 * { name, ino, size, mtime_sec, mtime_nsec } each (core/fs/list.h). has_dirs: a directory named
 * prefix... is there too (its files would interleave in key order). */
static int l_list_page_async(lua_State *L)
{
    const char *dir = luaL_checkstring(L, 1);
    const char *prefix = luaL_checkstring(L, 2);
    const char *after = luaL_optstring(L, 3, NULL);
    lua_Integer limit = luaL_checkinteger(L, 4);
    luaL_argcheck(L, limit >= 0 && limit <= 1000000, 4, "limit must be in 0..1000000");
    luaL_checktype(L, 5, LUA_TFUNCTION);
    list_job *j = calloc(1, sizeof *j);
    if (j) {
        j->dir = strdup(dir);
        j->prefix = strdup(prefix);
        j->after = after ? strdup(after) : NULL;
    }
    if (!j || !j->dir || !j->prefix || (after && !j->after)) {
        if (j) list_free(j);
        return luaL_error(L, "out of memory");
    }
    j->limit = (size_t)limit;
    ap_work_queue(L, 5, NULL, 0, j, list_work, list_after, list_free);
    lua_pushboolean(L, 1);
    return 1;
}

int ap_open_fs(lua_State *L)
{
    static const luaL_Reg funcs[] = {
        {"flock", l_flock},
        {"write_new_async", l_write_new_async},
        {"place_async", l_place_async},
        {"list_page_async", l_list_page_async},
        {NULL, NULL},
    };
    luaL_newlib(L, funcs);
    return 1;
}
