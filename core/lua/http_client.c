/* Lua binding of core/http_client: one client per Lua state on the process's loop; requests
 * report to a Lua callback. lua/autopgo/http.lua builds the coroutine API on top of it. */
#include <stdlib.h>
#include <string.h>

#include "binding.h"
#include "http_client.h"

#define CLIENT_TYPE "autopgo.http_client"
#define CALL_TYPE   "autopgo.http_call"

typedef struct {
    ap_http_client *c;
    int closing; /* the state is going away: callbacks must not run Lua */
} client_ud;

typedef struct req_ctx req_ctx;

/* The Lua userdata only points at the C context, which lives until on_done: a request never
 * depends on when the collector runs. */
typedef struct {
    req_ctx *ctx;
} req_box;

struct req_ctx {
    ap_http_call *r;
    lua_State *L;
    client_ud *client;
    req_box *box;
    int cb_ref, self_ref, body_ref;
    ap_bytes *reading; /* the autopgo.bytes body the transfer reads, NULL for a string */
};

static const char client_key = 0; /* registry slot of the state's client */

static client_ud *get_client(lua_State *L)
{
    lua_rawgetp(L, LUA_REGISTRYINDEX, &client_key);
    client_ud *u = lua_touserdata(L, -1);
    lua_pop(L, 1);
    if (u && u->c) return u;
    u = ap_new_udata(L, sizeof *u, CLIENT_TYPE);
    u->c = ap_http_client_new(ap_loop(L));
    if (u->c == NULL) {
        lua_pop(L, 1);
        return NULL;
    }
    lua_rawsetp(L, LUA_REGISTRYINDEX, &client_key);
    return u;
}

static int l_client_gc(lua_State *L)
{
    client_ud *u = luaL_checkudata(L, 1, CLIENT_TYPE);
    if (u->c) {
        u->closing = 1;
        ap_http_client_close(u->c);
        u->c = NULL;
    }
    return 0;
}

static int l_client_tostring(lua_State *L)
{
    client_ud *u = luaL_checkudata(L, 1, CLIENT_TYPE);
    lua_pushfstring(L, "autopgo.http_client (%d active)",
                    u->c ? (int)ap_http_client_active(u->c) : 0);
    return 1;
}

static req_box *ap_check_http_request(lua_State *L, int idx)
{
    return luaL_checkudata(L, idx, CALL_TYPE);
}

static void push_headers(lua_State *L, const ap_http_call *r)
{
    lua_newtable(L);
    size_t n = ap_http_call_header_count(r);
    for (size_t i = 0; i < n; i++) {
        const char *name, *value;
        ap_http_call_header(r, i, &name, &value);
        if (lua_getfield(L, -1, name) == LUA_TSTRING) {
            lua_pushliteral(L, ", ");
            lua_pushstring(L, value);
            lua_concat(L, 3);
        } else {
            lua_pop(L, 1);
            lua_pushstring(L, value);
        }
        lua_setfield(L, -2, name);
    }
}

static void on_data(ap_http_call *r, void *ud, const char *data, size_t len)
{
    (void)r;
    req_ctx *ctx = ud;
    if (ctx->client->closing) return;
    lua_State *L = ctx->L;
    int top = lua_gettop(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, ctx->cb_ref);
    lua_pushliteral(L, "data");
    lua_pushlstring(L, data, len);
    ap_call(L, 2, 0, 0);
    lua_settop(L, top);
}

static void on_need(ap_http_call *r, void *ud)
{
    (void)r;
    req_ctx *ctx = ud;
    if (ctx->client->closing) return;
    lua_State *L = ctx->L;
    int top = lua_gettop(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, ctx->cb_ref);
    lua_pushliteral(L, "need");
    ap_call(L, 1, 0, 0);
    lua_settop(L, top);
}

/* cb("done", err | nil, status, headers, body | nil) */
static void on_done(ap_http_call *r, void *ud, ap_http_call_result res, const char *msg)
{
    req_ctx *ctx = ud;
    if (ctx->box) ctx->box->ctx = NULL;
    if (ctx->client->closing) {
        free(ctx);
        return;
    }
    lua_State *L = ctx->L;
    int top = lua_gettop(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, ctx->cb_ref);
    lua_pushliteral(L, "done");
    if (res == AP_HTTP_CALL_OK)
        lua_pushnil(L);
    else
        lua_pushfstring(L, "%s: %s", ap_http_call_result_code(res), msg);
    lua_pushinteger(L, ap_http_call_status(r));
    push_headers(L, r);
    size_t len;
    const char *body = ap_http_call_body(r, &len);
    if (body && res == AP_HTTP_CALL_OK)
        lua_pushlstring(L, body, len);
    else
        lua_pushnil(L);
    luaL_unref(L, LUA_REGISTRYINDEX, ctx->cb_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, ctx->self_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, ctx->body_ref);
    if (ctx->reading) ap_bytes_read_end(ctx->reading);
    free(ctx);
    ap_call(L, 5, 0, 0);
    lua_settop(L, top);
}

/* Reads an optional field of the spec table; raises on a wrong type. */
static const char *opt_string(lua_State *L, const char *key, size_t *len)
{
    int t = lua_getfield(L, 1, key);
    const char *s = NULL;
    if (t == LUA_TSTRING)
        s = lua_tolstring(L, -1, len);
    else if (t != LUA_TNIL)
        luaL_error(L, "http request: '%s' must be a string, got %s", key, lua_typename(L, t));
    lua_pop(L, 1); /* the spec table keeps the string alive */
    return s;
}

static double opt_number(lua_State *L, const char *key, double dflt)
{
    int t = lua_getfield(L, 1, key);
    double v = dflt;
    if (t == LUA_TNUMBER)
        v = lua_tonumber(L, -1);
    else if (t != LUA_TNIL)
        luaL_error(L, "http request: '%s' must be a number, got %s", key, lua_typename(L, t));
    lua_pop(L, 1);
    return v;
}

static int opt_bool(lua_State *L, const char *key)
{
    lua_getfield(L, 1, key);
    int v = lua_toboolean(L, -1);
    lua_pop(L, 1);
    return v;
}

/* http_client.request(spec, cb) -> request | nil, "INVALID: ...", "INVALID"
 * spec: method, url, headers ({"Name: value", ...}), body (string or autopgo.bytes) | body_path |
 * body_stream (+ body_length), stream, max_body, timeout, connect_timeout (seconds), insecure,
 * follow_redirects, ca_file, ca_pem, client_cert, client_key, client_cert_pem, client_key_pem,
 * user_agent, tls_server_name, proxy. cb("data", chunk) | cb("need") | cb("done", err, status,
 * headers, body). */
static int l_request(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    ap_http_call_opts o;
    memset(&o, 0, sizeof o);
    size_t len;
    o.method = opt_string(L, "method", &len);
    o.url = opt_string(L, "url", &len);
    if (o.url == NULL) return luaL_error(L, "http request: 'url' is required");
    o.user_agent = opt_string(L, "user_agent", &len);
    o.tls_server_name = opt_string(L, "tls_server_name", &len);
    o.proxy = opt_string(L, "proxy", &len);
    o.ca_file = opt_string(L, "ca_file", &len);
    o.client_cert = opt_string(L, "client_cert", &len);
    o.client_key = opt_string(L, "client_key", &len);
    o.ca_pem = opt_string(L, "ca_pem", &o.ca_pem_len);
    o.client_cert_pem = opt_string(L, "client_cert_pem", &o.client_cert_pem_len);
    o.client_key_pem = opt_string(L, "client_key_pem", &o.client_key_pem_len);
    o.insecure = opt_bool(L, "insecure");
    o.follow_redirects = opt_bool(L, "follow_redirects");
    o.stream_response = opt_bool(L, "stream");
    o.timeout_ms = (long)(opt_number(L, "timeout", 0) * 1000);
    o.connect_timeout_ms = (long)(opt_number(L, "connect_timeout", 0) * 1000);
    o.max_body = (int64_t)opt_number(L, "max_body", 0);

    int body_idx = 0;
    const char *body = NULL;
    ap_bytes *body_bytes = NULL;
    int bt = lua_getfield(L, 1, "body");
    if (bt == LUA_TUSERDATA) {
        /* an autopgo.bytes view: sent from where it is held, read until the transfer is done */
        body_bytes = ap_test_bytes(L, -1, &body, &len);
        if (body_bytes == NULL)
            return luaL_error(L, "http request: 'body' must be a string or autopgo.bytes");
        lua_pop(L, 1);
    } else {
        lua_pop(L, 1);
        body = opt_string(L, "body", &len);
    }
    size_t path_len;
    const char *body_path = opt_string(L, "body_path", &path_len);
    int body_stream = opt_bool(L, "body_stream");
    if ((body != NULL) + (body_path != NULL) + (body_stream != 0) > 1)
        return luaL_error(L, "http request: give at most one of body, body_path, body_stream");
    if (body) {
        o.body_kind = AP_HTTP_CALL_BODY_MEMORY;
        o.body = body;
        o.body_len = len;
        lua_getfield(L, 1, "body");
        body_idx = lua_gettop(L);
    } else if (body_path) {
        o.body_kind = AP_HTTP_CALL_BODY_FILE;
        o.body_path = body_path;
    } else if (body_stream) {
        o.body_kind = AP_HTTP_CALL_BODY_STREAM;
        o.body_length = (int64_t)opt_number(L, "body_length", -1);
    }

    /* Header lines go in a scratch userdata so that a raise cannot leak them. */
    size_t nh = 0;
    const char **hdrs = NULL;
    if (lua_getfield(L, 1, "headers") == LUA_TTABLE) {
        int hidx = lua_gettop(L);
        nh = (size_t)luaL_len(L, hidx);
        hdrs = lua_newuserdatauv(L, (nh ? nh : 1) * sizeof *hdrs, 0);
        for (size_t i = 0; i < nh; i++) {
            lua_rawgeti(L, hidx, (lua_Integer)i + 1);
            hdrs[i] = lua_tostring(L, -1);
            if (hdrs[i] == NULL)
                return luaL_error(L, "http request: header %d is not a string", (int)i + 1);
            lua_pop(L, 1); /* the headers table keeps it alive */
        }
    } else if (!lua_isnil(L, -1)) {
        return luaL_error(L, "http request: 'headers' must be a list of strings");
    }
    o.headers = hdrs;
    o.nheaders = nh;

    client_ud *client = get_client(L);
    if (client == NULL) return ap_fail(L, "UNAVAILABLE", "cannot create the HTTP client");

    /* Everything that can raise is done: from here on C owns memory. */
    req_box *box = ap_new_udata(L, sizeof *box, CALL_TYPE);
    int box_idx = lua_gettop(L);
    req_ctx *ctx = calloc(1, sizeof *ctx);
    if (ctx == NULL) return ap_fail(L, "UNAVAILABLE", "out of memory");
    ctx->L = ap_main_state(L);
    ctx->client = client;
    ctx->box = box;
    ctx->body_ref = LUA_NOREF;
    static const ap_http_call_handlers handlers = {on_data, on_need, on_done};
    char err[512];
    ctx->r = ap_http_call_start(client->c, &o, &handlers, ctx, err, sizeof err);
    if (ctx->r == NULL) {
        free(ctx);
        return ap_fail(L, "INVALID", "%s", err);
    }
    box->ctx = ctx;
    lua_pushvalue(L, 2);
    ctx->cb_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pushvalue(L, box_idx);
    ctx->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    if (body_idx) {
        lua_pushvalue(L, body_idx);
        ctx->body_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    if (body_bytes) {
        ap_bytes_read_begin(body_bytes);
        ctx->reading = body_bytes;
    }
    lua_pushvalue(L, box_idx);
    return 1;
}

/* request:ack() -- the last "data" chunk was consumed; the next may come */
static int l_ack(lua_State *L)
{
    req_box *b = ap_check_http_request(L, 1);
    if (b->ctx) ap_http_call_ack(b->ctx->r);
    return 0;
}

/* request:feed(chunk | nil) -- answers "need": a chunk of the body, or nil at its end */
static int l_feed(lua_State *L)
{
    req_box *b = ap_check_http_request(L, 1);
    size_t len = 0;
    const char *s = luaL_optlstring(L, 2, NULL, &len);
    if (b->ctx) ap_http_call_feed(b->ctx->r, s, len, s == NULL);
    return 0;
}

/* request:cancel([reason]) -- ends the request with CANCELED; "done" follows */
static int l_cancel(lua_State *L)
{
    req_box *b = ap_check_http_request(L, 1);
    const char *reason = luaL_optstring(L, 2, NULL);
    if (b->ctx) ap_http_call_cancel(b->ctx->r, reason);
    return 0;
}

/* request:response() -> status, headers (what has arrived so far) | nil once done */
static int l_response(lua_State *L)
{
    req_box *b = ap_check_http_request(L, 1);
    if (b->ctx == NULL) return 0;
    lua_pushinteger(L, ap_http_call_status(b->ctx->r));
    push_headers(L, b->ctx->r);
    return 2;
}

/* request:active() -> boolean */
static int l_active(lua_State *L)
{
    req_box *b = ap_check_http_request(L, 1);
    lua_pushboolean(L, b->ctx != NULL);
    return 1;
}

/* request:__close() -- leaving a to-be-closed variable cancels what is still running */
static int l_request_close(lua_State *L)
{
    req_box *b = ap_check_http_request(L, 1);
    if (b->ctx) ap_http_call_cancel(b->ctx->r, "the request went out of scope");
    return 0;
}

static int l_request_gc(lua_State *L)
{
    req_box *b = ap_check_http_request(L, 1);
    /* Active requests are pinned, so this only happens while the state closes. */
    if (b->ctx) b->ctx->box = NULL;
    b->ctx = NULL;
    return 0;
}

static int l_request_tostring(lua_State *L)
{
    req_box *b = ap_check_http_request(L, 1);
    lua_pushfstring(L, "autopgo.http_call (%s)", b->ctx ? "active" : "done");
    return 1;
}

/* http_client.active() -> number of requests in flight */
static int l_active_count(lua_State *L)
{
    lua_rawgetp(L, LUA_REGISTRYINDEX, &client_key);
    client_ud *u = lua_touserdata(L, -1);
    lua_pushinteger(L, u && u->c ? (lua_Integer)ap_http_client_active(u->c) : 0);
    return 1;
}

int ap_open_http_client(lua_State *L)
{
    static const luaL_Reg client_meta[] = {{"__gc", l_client_gc},
                                           {"__close", l_client_gc},
                                           {"__tostring", l_client_tostring},
                                           {NULL, NULL}};
    ap_register_type(L, CLIENT_TYPE, NULL, client_meta);
    static const luaL_Reg req_methods[] = {{"ack", l_ack},       {"feed", l_feed},
                                           {"cancel", l_cancel}, {"response", l_response},
                                           {"active", l_active}, {NULL, NULL}};
    static const luaL_Reg req_meta[] = {{"__gc", l_request_gc},
                                        {"__close", l_request_close},
                                        {"__tostring", l_request_tostring},
                                        {NULL, NULL}};
    ap_register_type(L, CALL_TYPE, req_methods, req_meta);
    static const luaL_Reg fns[] = {
        {"request", l_request}, {"active", l_active_count}, {NULL, NULL}};
    luaL_newlib(L, fns);
    return 1;
}
