/* Installs the embedded Lua library as package.preload loaders (compiled on first require) and
 * the `autopgo.host` module that lets Lua find embedded scripts by path. */
#include "preload.h"

#include <lauxlib.h>
#include <string.h>

#include "embed.h"

static const ap_embedded_file *find(const char *path)
{
    for (const ap_embedded_file *f = ap_embedded_files; f->path; f++)
        if (strcmp(f->path, path) == 0) return f;
    return NULL;
}

static int load_file(lua_State *L, const ap_embedded_file *f)
{
    lua_pushfstring(L, "@%s", f->path);
    int status = luaL_loadbufferx(L, f->data, f->len, lua_tostring(L, -1), "t");
    lua_remove(L, -2);
    return status;
}

/* package.preload loader: upvalue 1 is the file's index. */
static int preload_loader(lua_State *L)
{
    const ap_embedded_file *f = &ap_embedded_files[lua_tointeger(L, lua_upvalueindex(1))];
    if (load_file(L, f) != LUA_OK) return lua_error(L);
    lua_pushvalue(L, 1); /* module name */
    lua_pushfstring(L, ":embedded:%s",
                    f->path); /* loader data, like package.searchpath's file name */
    lua_call(L, 2, 1);
    return 1;
}

/* host.source(path) -> source string | nil */
static int l_source(lua_State *L)
{
    const ap_embedded_file *f = find(luaL_checkstring(L, 1));
    if (f == NULL) return 0;
    lua_pushlstring(L, f->data, f->len);
    return 1;
}

/* host.load(path) -> function | nil, err */
static int l_load(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    const ap_embedded_file *f = find(path);
    if (f == NULL) {
        lua_pushnil(L);
        lua_pushfstring(L, "NOT_FOUND: no embedded script %s", path);
        return 2;
    }
    if (load_file(L, f) != LUA_OK) {
        lua_pushnil(L);
        lua_insert(L, -2);
        return 2;
    }
    return 1;
}

/* host.asset(path) -> bytes | nil (the web view's embedded files, relative to lua/ui/) */
static int l_asset(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    for (const ap_embedded_file *f = ap_ui_assets; f->path; f++) {
        if (strcmp(f->path, path) == 0) {
            lua_pushlstring(L, f->data, f->len);
            return 1;
        }
    }
    return 0;
}

/* host.assets() -> { "index.html", ... } */
static int l_assets(lua_State *L)
{
    lua_newtable(L);
    int i = 1;
    for (const ap_embedded_file *f = ap_ui_assets; f->path; f++) {
        lua_pushstring(L, f->path);
        lua_rawseti(L, -2, i++);
    }
    return 1;
}

/* host.files() -> { "autopgo/cli.lua", ... } */
static int l_files(lua_State *L)
{
    lua_newtable(L);
    int i = 1;
    for (const ap_embedded_file *f = ap_embedded_files; f->path; f++) {
        lua_pushstring(L, f->path);
        lua_rawseti(L, -2, i++);
    }
    return 1;
}

static void module_name(luaL_Buffer *b, const char *path)
{
    size_t n = strlen(path);
    if (n > 4 && strcmp(path + n - 4, ".lua") == 0) n -= 4;
    if (n > 5 && strncmp(path + n - 5, "/init", 5) == 0) n -= 5;
    for (size_t i = 0; i < n; i++) luaL_addchar(b, path[i] == '/' ? '.' : path[i]);
}

void ap_preload_install(lua_State *L, const char *exe)
{
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
    for (int i = 0; ap_embedded_files[i].path; i++) {
        luaL_Buffer b;
        luaL_buffinit(L, &b);
        module_name(&b, ap_embedded_files[i].path);
        luaL_pushresult(&b);
        lua_pushinteger(L, i);
        lua_pushcclosure(L, preload_loader, 1);
        lua_settable(L, -3);
    }
    lua_pop(L, 1);

    static const luaL_Reg fns[] = {{"source", l_source}, {"load", l_load},     {"files", l_files},
                                   {"asset", l_asset},   {"assets", l_assets}, {NULL, NULL}};
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    luaL_newlib(L, fns);
    lua_pushstring(L, exe);
    lua_setfield(L, -2, "exe");
    lua_setfield(L, -2, "autopgo.host");
    lua_pop(L, 1);
}
