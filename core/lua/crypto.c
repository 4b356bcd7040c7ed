/* Lua binding of core/crypto: digests, HMAC, base64, hex, random bytes, UUIDs, SHA-256 signing,
 * constant-time equality and streaming hashers (autopgo.hash); file digests run on the thread pool.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "binding.h"
#include "crypto.h"

#define HASH_TYPE "autopgo.hash"

static const char *check_alg(lua_State *L, int idx)
{
    const char *alg = luaL_checkstring(L, idx);
    if (ap_hash_size(alg) == 0)
        luaL_argerror(L, idx,
                      lua_pushfstring(L, "unknown digest '%s' (md5, sha1, sha256, sha512)", alg));
    return alg;
}

/* crypto.digest(alg, data) -> raw digest (data: a string or autopgo.bytes) */
static int l_digest(lua_State *L)
{
    const char *alg = check_alg(L, 1);
    size_t len;
    const char *data = ap_check_bytes(L, 2, &len);
    uint8_t out[64];
    size_t n = ap_digest(alg, data, len, out);
    if (n == 0) return ap_fail(L, "CRYPTO", "digest failed");
    lua_pushlstring(L, (const char *)out, n);
    return 1;
}

/* crypto.hmac(alg, key, data) -> raw MAC */
static int l_hmac(lua_State *L)
{
    const char *alg = check_alg(L, 1);
    size_t klen, len;
    const char *key = luaL_checklstring(L, 2, &klen);
    const char *data = luaL_checklstring(L, 3, &len);
    uint8_t out[64];
    size_t n = ap_hmac(alg, key, klen, data, len, out);
    if (n == 0) return ap_fail(L, "CRYPTO", "hmac failed");
    lua_pushlstring(L, (const char *)out, n);
    return 1;
}

/* crypto.hex(data) -> lowercase hex */
static int l_hex(lua_State *L)
{
    static const char digits[] = "0123456789abcdef";
    size_t len;
    const unsigned char *s = (const unsigned char *)luaL_checklstring(L, 1, &len);
    luaL_Buffer b;
    char *p = luaL_buffinitsize(L, &b, len * 2);
    for (size_t i = 0; i < len; i++) {
        p[2 * i] = digits[s[i] >> 4];
        p[2 * i + 1] = digits[s[i] & 15];
    }
    luaL_pushresultsize(&b, len * 2);
    return 1;
}

/* crypto.base64_encode(data [, url]) -> text (url: URL-safe alphabet, no padding) */
static int l_base64_encode(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    int url = lua_toboolean(L, 2);
    luaL_Buffer b;
    char *p = luaL_buffinitsize(L, &b, ap_base64_encoded_len(len));
    luaL_pushresultsize(&b, ap_base64_encode((const uint8_t *)s, len, url, p));
    return 1;
}

/* crypto.base64_decode(text) -> data | nil, "INVALID: ...", "INVALID" (either alphabet) */
static int l_base64_decode(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    luaL_Buffer b;
    char *p = luaL_buffinitsize(L, &b, len / 4 * 3 + 3);
    long n = ap_base64_decode(s, len, (uint8_t *)p);
    if (n < 0) return ap_fail(L, "INVALID", "invalid base64");
    luaL_pushresultsize(&b, (size_t)n);
    return 1;
}

/* crypto.random(n) -> n random bytes */
static int l_random(lua_State *L)
{
    lua_Integer n = luaL_checkinteger(L, 1);
    luaL_argcheck(L, n >= 0 && n <= 65536, 1, "must be between 0 and 65536");
    luaL_Buffer b;
    char *p = luaL_buffinitsize(L, &b, (size_t)n);
    if (ap_random((uint8_t *)p, (size_t)n) != 0) return ap_fail(L, "CRYPTO", "no randomness");
    luaL_pushresultsize(&b, (size_t)n);
    return 1;
}

/* crypto.equal(a, b) -> boolean, comparing the bytes in constant time (for secrets) */
static int l_equal(lua_State *L)
{
    size_t alen, blen;
    const char *a = luaL_checklstring(L, 1, &alen);
    const char *b = luaL_checklstring(L, 2, &blen);
    lua_pushboolean(L, ap_equal_ct(a, alen, b, blen));
    return 1;
}

/* crypto.uuid4() -> "xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx" */
static int l_uuid4(lua_State *L)
{
    uint8_t r[16];
    if (ap_random(r, sizeof r) != 0) return ap_fail(L, "CRYPTO", "no randomness");
    r[6] = (r[6] & 0x0f) | 0x40;
    r[8] = (r[8] & 0x3f) | 0x80;
    char out[37];
    static const char digits[] = "0123456789abcdef";
    int o = 0;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10) out[o++] = '-';
        out[o++] = digits[r[i] >> 4];
        out[o++] = digits[r[i] & 15];
    }
    lua_pushlstring(L, out, 36);
    return 1;
}

/* crypto.sign_sha256(pem, data) -> signature | nil, "CRYPTO: ...", "CRYPTO" */
static int l_sign_sha256(lua_State *L)
{
    size_t plen, len;
    const char *pem = luaL_checklstring(L, 1, &plen);
    const char *data = luaL_checklstring(L, 2, &len);
    uint8_t *sig;
    size_t sig_len;
    char err[300];
    if (ap_sign_sha256(pem, plen, data, len, &sig, &sig_len, err, sizeof err) != 0)
        return ap_fail(L, "CRYPTO", "%s", err);
    lua_pushlstring(L, (const char *)sig, sig_len);
    free(sig);
    return 1;
}

typedef struct {
    ap_hash *h;
    int done;
} hash_ud;

static hash_ud *ap_check_hash(lua_State *L, int idx)
{
    return luaL_checkudata(L, idx, HASH_TYPE);
}

/* crypto.hasher(alg) -> hash object */
static int l_hasher(lua_State *L)
{
    const char *alg = check_alg(L, 1);
    hash_ud *u = ap_new_udata(L, sizeof *u, HASH_TYPE);
    u->h = ap_hash_new(alg);
    if (u->h == NULL) return ap_fail(L, "CRYPTO", "cannot create %s hasher", alg);
    return 1;
}

/* hash:update(data) -> hash */
static int l_hash_update(lua_State *L)
{
    hash_ud *u = ap_check_hash(L, 1);
    size_t len;
    const char *s = luaL_checklstring(L, 2, &len);
    luaL_argcheck(L, u->h && !u->done, 1, "hash already finished");
    ap_hash_update(u->h, s, len);
    lua_settop(L, 1);
    return 1;
}

/* hash:digest() -> raw digest (the hash cannot be updated afterwards) */
static int l_hash_digest(lua_State *L)
{
    hash_ud *u = ap_check_hash(L, 1);
    luaL_argcheck(L, u->h && !u->done, 1, "hash already finished");
    uint8_t out[64];
    size_t n = ap_hash_final(u->h, out);
    u->done = 1;
    lua_pushlstring(L, (const char *)out, n);
    return 1;
}

static int l_hash_gc(lua_State *L)
{
    hash_ud *u = ap_check_hash(L, 1);
    ap_hash_free(u->h);
    u->h = NULL;
    return 0;
}

static int l_hash_tostring(lua_State *L)
{
    hash_ud *u = ap_check_hash(L, 1);
    lua_pushfstring(L, HASH_TYPE " (%s): %p", u->done ? "finished" : "open", (void *)u);
    return 1;
}

typedef struct {
    char alg[16];
    char *path;
    uint8_t out[64];
    size_t n;
    uint64_t size;
    int err;
} file_digest_job;

static void file_digest_work(void *data)
{
    file_digest_job *j = data;
    j->n = ap_digest_file(j->alg, j->path, j->out, &j->size, &j->err);
}

static int file_digest_after(lua_State *L, void *data)
{
    file_digest_job *j = data;
    if (j->n == 0) {
        ap_push_error(L, j->err == ENOENT ? "NOT_FOUND" : "IO", "%s: %s", j->path,
                      strerror(j->err));
        return 1;
    }
    lua_pushnil(L);
    lua_pushlstring(L, (const char *)j->out, j->n);
    lua_pushinteger(L, (lua_Integer)j->size);
    return 3;
}

static void file_digest_cleanup(void *data)
{
    file_digest_job *j = data;
    free(j->path);
    free(j);
}

/* crypto.digest_file(alg, path, cb) -- cb(err, digest, size), hashed on the thread pool */
static int l_digest_file(lua_State *L)
{
    const char *alg = check_alg(L, 1);
    const char *path = luaL_checkstring(L, 2);
    luaL_checktype(L, 3, LUA_TFUNCTION);
    file_digest_job *j = calloc(1, sizeof *j);
    char *p = strdup(path);
    if (j == NULL || p == NULL) {
        free(j);
        free(p);
        return luaL_error(L, "out of memory");
    }
    snprintf(j->alg, sizeof j->alg, "%s", alg);
    j->path = p;
    ap_work_queue(L, 3, NULL, 0, j, file_digest_work, file_digest_after, file_digest_cleanup);
    return 0;
}

int ap_open_crypto(lua_State *L)
{
    static const luaL_Reg hash_methods[] = {
        {"update", l_hash_update}, {"digest", l_hash_digest}, {NULL, NULL}};
    static const luaL_Reg hash_meta[] = {
        {"__gc", l_hash_gc}, {"__close", l_hash_gc}, {"__tostring", l_hash_tostring}, {NULL, NULL}};
    ap_register_type(L, HASH_TYPE, hash_methods, hash_meta);
    static const luaL_Reg fns[] = {
        {"digest", l_digest},
        {"hmac", l_hmac},
        {"hex", l_hex},
        {"base64_encode", l_base64_encode},
        {"base64_decode", l_base64_decode},
        {"random", l_random},
        {"equal", l_equal},
        {"uuid4", l_uuid4},
        {"sign_sha256", l_sign_sha256},
        {"hasher", l_hasher},
        {"digest_file", l_digest_file},
        {NULL, NULL},
    };
    luaL_newlib(L, fns);
    return 1;
}
