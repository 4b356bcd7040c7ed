/* Lua binding of core/common/bytes: autopgo.bytes userdata, a view (offset, length) of bytes held
 * once in C (a request body), read by C bindings without a copy (ap_check_bytes) and by Lua in
 * pieces. bytes.from_string(s) makes one from a string (a copy: for tests and callers that have
 * only a string). */
#include <stdlib.h>
#include <string.h>

#include "binding.h"

#define BYTES_TYPE "autopgo.bytes"

typedef struct {
    ap_bytes *b; /* NULL once closed */
    size_t off, len;
} bytes_ud;

static bytes_ud *ap_check_bytes_ud(lua_State *L, int idx)
{
    return luaL_checkudata(L, idx, BYTES_TYPE);
}

void ap_push_bytes(lua_State *L, ap_bytes *b, size_t off, size_t len)
{
    bytes_ud *u = ap_new_udata(L, sizeof *u, BYTES_TYPE);
    u->b = b;
    u->off = off;
    u->len = len;
}

/* The bytes of a view that can still be read, else NULL. */
static const char *view_of(const bytes_ud *u, size_t *len)
{
    if (u->b == NULL || u->b->base == NULL || u->off + u->len > u->b->len) return NULL;
    *len = u->len;
    return u->b->base + u->off;
}

ap_bytes *ap_test_bytes(lua_State *L, int idx, const char **data, size_t *len)
{
    bytes_ud *u = luaL_testudata(L, idx, BYTES_TYPE);
    if (u == NULL) return NULL;
    const char *p = view_of(u, len);
    if (p == NULL) return NULL;
    *data = p;
    return u->b;
}

/* bytes.from_string(s) -> bytes (a copy of s) */
static int l_from_string(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    bytes_ud *u = ap_new_udata(L, sizeof *u, BYTES_TYPE);
    u->b = ap_bytes_copy(s, len);
    if (u->b == NULL) return luaL_error(L, "out of memory");
    u->len = len;
    return 1;
}

/* bytes.is(v) -> boolean: whether v is an autopgo.bytes view */
static int l_is(lua_State *L)
{
    lua_pushboolean(L, luaL_testudata(L, 1, BYTES_TYPE) != NULL);
    return 1;
}

/* Lua string.sub's rules for i, j over a length n: the 0-based start and the count. */
static void span(lua_State *L, int idx, size_t n, size_t *start, size_t *count)
{
    lua_Integer i = luaL_optinteger(L, idx, 1);
    lua_Integer j = luaL_optinteger(L, idx + 1, -1);
    lua_Integer len = (lua_Integer)n;
    if (i < 0) i = i < -len ? 1 : len + i + 1;
    if (i == 0) i = 1;
    if (j < 0) j = len + j + 1;
    if (j > len) j = len;
    if (i > j) {
        *start = 0;
        *count = 0;
    } else {
        *start = (size_t)(i - 1);
        *count = (size_t)(j - i + 1);
    }
}

/* b:sub([i [, j]]) -> string: bytes i..j as string.sub counts them (a copy) */
static int l_sub(lua_State *L)
{
    bytes_ud *u = ap_check_bytes_ud(L, 1);
    size_t len;
    const char *p = view_of(u, &len);
    if (p == NULL) return ap_fail(L, "CLOSED", "the bytes were released");
    size_t start, count;
    span(L, 2, len, &start, &count);
    lua_pushlstring(L, p + start, count);
    return 1;
}

/* b:view([i [, j]]) -> bytes: bytes i..j (string.sub's counting) sharing the same memory */
static int l_view(lua_State *L)
{
    bytes_ud *u = ap_check_bytes_ud(L, 1);
    size_t len;
    if (view_of(u, &len) == NULL) return ap_fail(L, "CLOSED", "the bytes were released");
    size_t start, count;
    span(L, 2, len, &start, &count);
    ap_bytes_ref(u->b);
    ap_push_bytes(L, u->b, u->off + start, count);
    return 1;
}

static int l_len(lua_State *L)
{
    bytes_ud *u = ap_check_bytes_ud(L, 1);
    size_t len;
    lua_pushinteger(L, view_of(u, &len) ? (lua_Integer)len : 0);
    return 1;
}

static int l_tostring(lua_State *L)
{
    bytes_ud *u = ap_check_bytes_ud(L, 1);
    size_t len;
    if (view_of(u, &len))
        lua_pushfstring(L, BYTES_TYPE " (%I bytes): %p", (lua_Integer)len, (void *)u);
    else
        lua_pushfstring(L, BYTES_TYPE " (released): %p", (void *)u);
    return 1;
}

/* b:release(): drops this view's hold at once (the GC would, later; readers keep theirs) */
static int l_gc(lua_State *L)
{
    bytes_ud *u = ap_check_bytes_ud(L, 1);
    if (u->b) {
        ap_bytes *b = u->b;
        u->b = NULL;
        ap_bytes_unref(b);
    }
    return 0;
}

int ap_open_bytes(lua_State *L)
{
    static const luaL_Reg methods[] = {
        {"sub", l_sub},
        {"view", l_view},
        {"release", l_gc},
        {NULL, NULL},
    };
    static const luaL_Reg meta[] = {
        {"__len", l_len},           {"__gc", l_gc}, {"__close", l_gc},
        {"__tostring", l_tostring}, {NULL, NULL},
    };
    ap_register_type(L, BYTES_TYPE, methods, meta);
    static const luaL_Reg funcs[] = {
        {"from_string", l_from_string},
        {"is", l_is},
        {NULL, NULL},
    };
    luaL_newlib(L, funcs);
    return 1;
}
