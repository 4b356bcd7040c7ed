/* Lua binding of core/http: http_server.listen{...} starts an h2o server on the loop and calls
 * on_request(req, info) for each request; req userdata answer it. lua/autopgo/httpd.lua builds
 * the friendly API (coroutines, routing) on top. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "binding.h"
#include "server.h"

#define SERVER_TYPE  "autopgo.http_server"
#define REQUEST_TYPE "autopgo.http_request"

typedef struct {
    ap_http_server *srv;
    lua_State *L;
    int self_ref;
    int on_request_ref;
    int on_closed_ref;
    int closing;
    int closed;
    int port;
} server_ud;

typedef struct {
    ap_http_req *r; /* NULL once h2o released the request */
    lua_State *L;
    int self_ref;    /* keeps this userdata alive while h2o holds the request */
    int pins_ref;    /* table of strings h2o is still sending */
    int inflight;    /* key in pins of the piece awaiting on_proceed, 0 if none */
    int proceed_ref; /* Lua callback waiting for on_proceed */
    int next_pin;
} request_ud;

static server_ud *ap_check_http_server(lua_State *L, int idx)
{
    return luaL_checkudata(L, idx, SERVER_TYPE);
}

static request_ud *ap_check_http_request(lua_State *L, int idx)
{
    return luaL_checkudata(L, idx, REQUEST_TYPE);
}

/* ---- requests ------------------------------------------------------------------------------ */

static void push_str(lua_State *L, ap_http_str s)
{
    lua_pushlstring(L, s.base, s.len);
}

static void on_request_gone(void *data)
{
    request_ud *u = data;
    lua_State *L = u->L;
    u->r = NULL;
    luaL_unref(L, LUA_REGISTRYINDEX, u->pins_ref);
    u->pins_ref = LUA_NOREF;
    luaL_unref(L, LUA_REGISTRYINDEX, u->self_ref);
    u->self_ref = LUA_NOREF;
}

static void on_proceed(void *data, int ok)
{
    request_ud *u = data;
    lua_State *L = u->L;
    int top = lua_gettop(L);
    if (u->pins_ref != LUA_NOREF && u->inflight) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, u->pins_ref);
        lua_pushnil(L);
        lua_rawseti(L, -2, u->inflight);
        lua_pop(L, 1);
    }
    u->inflight = 0;
    int cb = u->proceed_ref;
    u->proceed_ref = LUA_NOREF;
    if (cb == LUA_NOREF) return;
    lua_rawgeti(L, LUA_REGISTRYINDEX, cb);
    luaL_unref(L, LUA_REGISTRYINDEX, cb);
    if (ok) {
        lua_pushnil(L);
    } else {
        ap_push_error(L, "CLOSED", "the client connection went away");
    }
    ap_call(L, 1, 0, 0);
    lua_settop(L, top);
}

static void server_on_request(void *data, ap_http_req *r)
{
    server_ud *s = data;
    lua_State *L = s->L;
    int top = lua_gettop(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, s->on_request_ref);
    request_ud *u = ap_new_udata(L, sizeof *u, REQUEST_TYPE);
    u->r = r;
    u->L = L;
    u->proceed_ref = LUA_NOREF;
    lua_newtable(L);
    u->pins_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pushvalue(L, -1);
    u->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    ap_http_req_set_owner(r, on_request_gone, u);

    lua_createtable(L, 0, 6);
    push_str(L, ap_http_req_method(r));
    lua_setfield(L, -2, "method");
    push_str(L, ap_http_req_path(r));
    lua_setfield(L, -2, "target");
    lua_newtable(L);
    ap_http_str name, value;
    for (size_t i = 0; ap_http_req_header(r, i, &name, &value) == 0; i++) {
        lua_pushlstring(L, name.base, name.len);
        lua_pushvalue(L, -1);
        lua_rawget(L, -3);
        if (lua_isnil(L, -1)) {
            lua_pop(L, 1);
            push_str(L, value);
        } else { /* a repeated header: values joined as HTTP allows */
            lua_pushliteral(L, ", ");
            push_str(L, value);
            lua_concat(L, 3);
        }
        lua_rawset(L, -3);
    }
    /* h2o keeps these two out of the header list; handlers still want to see them. */
    push_str(L, ap_http_req_authority(r));
    lua_setfield(L, -2, "host");
    if (ap_http_req_has_body(r)) {
        lua_pushfstring(L, "%I", (lua_Integer)ap_http_req_body(r).len);
        lua_setfield(L, -2, "content-length");
    }
    lua_setfield(L, -2, "headers");
    lua_pushinteger(L, (lua_Integer)ap_http_req_body(r).len);
    lua_setfield(L, -2, "body_size");
    char peer[80];
    if (ap_http_req_peer(r, peer, sizeof peer) == 0) {
        lua_pushstring(L, peer);
        lua_setfield(L, -2, "peer");
    }
    ap_call(L, 2, 0, 0);
    lua_settop(L, top);
}

/* req:body() -> string: the whole request body */
static int l_req_body(lua_State *L)
{
    request_ud *u = ap_check_http_request(L, 1);
    if (!u->r) return ap_fail(L, "CLOSED", "the request is finished");
    push_str(L, ap_http_req_body(u->r));
    return 1;
}

/* req:body_bytes() -> bytes | nil, err: the body as an autopgo.bytes view, held once in C (no
 * copy, HTTP/1 and HTTP/2 alike) for as long as a view or a reader holds it */
static int l_req_body_bytes(lua_State *L)
{
    request_ud *u = ap_check_http_request(L, 1);
    if (!u->r) return ap_fail(L, "CLOSED", "the request is finished");
    /* no body: an empty view (its one reference is never dropped) */
    static ap_bytes empty = {.base = "", .len = 0, .refs = 1};
    ap_bytes *b = ap_http_req_has_body(u->r) ? ap_http_req_body_bytes(u->r) : &empty;
    if (b == NULL) return ap_fail(L, "UNAVAILABLE", "out of memory");
    if (b == &empty) ap_bytes_ref(b);
    ap_push_bytes(L, b, 0, b->len);
    return 1;
}

/* req:body_sub(i, j) -> string: bytes i..j of the body (1-based, inclusive, like string.sub) */
static int l_req_body_sub(lua_State *L)
{
    request_ud *u = ap_check_http_request(L, 1);
    lua_Integer i = luaL_checkinteger(L, 2);
    lua_Integer j = luaL_checkinteger(L, 3);
    if (!u->r) return ap_fail(L, "CLOSED", "the request is finished");
    ap_http_str b = ap_http_req_body(u->r);
    if (i < 1) i = 1;
    if (j > (lua_Integer)b.len) j = (lua_Integer)b.len;
    if (i > j) {
        lua_pushliteral(L, "");
    } else {
        lua_pushlstring(L, b.base + i - 1, (size_t)(j - i + 1));
    }
    return 1;
}

/* Reads a list of { name, value } pairs at idx into headers (2 strings per header). Returns the
 * number of headers; strings stay on the Lua stack's table, which the caller keeps. */
static size_t check_headers(lua_State *L, int idx, ap_http_str *out, size_t max)
{
    if (lua_isnoneornil(L, idx)) return 0;
    luaL_checktype(L, idx, LUA_TTABLE);
    size_t n = (size_t)luaL_len(L, idx);
    luaL_argcheck(L, n <= max, idx, "too many headers");
    for (size_t i = 0; i < n; i++) {
        lua_rawgeti(L, idx, (lua_Integer)i + 1);
        luaL_argcheck(L, lua_istable(L, -1), idx, "each header must be { name, value }");
        lua_rawgeti(L, -1, 1);
        lua_rawgeti(L, -2, 2);
        size_t nl, vl;
        const char *nm = lua_tolstring(L, -2, &nl);
        const char *vv = lua_tolstring(L, -1, &vl);
        luaL_argcheck(L, nm && vv, idx, "header names and values must be strings");
        luaL_argcheck(L,
                      !memchr(nm, '\n', nl) && !memchr(nm, '\r', nl) && !memchr(vv, '\n', vl) &&
                          !memchr(vv, '\r', vl),
                      idx, "header names and values must not contain line breaks");
        out[2 * i] = (ap_http_str){nm, nl};
        out[2 * i + 1] = (ap_http_str){vv, vl};
        lua_pop(L, 3); /* the strings stay alive in the table at idx */
    }
    return n;
}

#define MAX_HEADERS 64

static int check_status(lua_State *L, int idx)
{
    lua_Integer status = luaL_checkinteger(L, idx);
    luaL_argcheck(L, status >= 100 && status <= 999, idx, "must be an HTTP status code");
    return (int)status;
}

/* req:start(status, headers, content_length|nil) -> true | nil, err */
static int l_req_start(lua_State *L)
{
    request_ud *u = ap_check_http_request(L, 1);
    int status = check_status(L, 2);
    ap_http_str headers[2 * MAX_HEADERS];
    size_t n = check_headers(L, 3, headers, MAX_HEADERS);
    size_t len = SIZE_MAX;
    if (!lua_isnoneornil(L, 4)) {
        lua_Integer cl = luaL_checkinteger(L, 4);
        luaL_argcheck(L, cl >= 0, 4, "must not be negative");
        len = (size_t)cl;
    }
    if (!u->r) return ap_fail(L, "CLOSED", "the request is finished");
    if (ap_http_req_start(u->r, status, headers, n, len) != 0)
        return ap_fail(L, "STATE", "the response was already started");
    lua_pushboolean(L, 1);
    return 1;
}

/* req:send(data, final, cb) -> true | nil, err. For a non-final piece cb(err) runs once the
 * client wants more (err nil) or went away; only one piece may be in flight. final = "abort"
 * breaks the response off instead of completing it. */
static int l_req_send(lua_State *L)
{
    request_ud *u = ap_check_http_request(L, 1);
    size_t len;
    const char *data = luaL_checklstring(L, 2, &len);
    int final = lua_type(L, 3) == LUA_TSTRING && strcmp(lua_tostring(L, 3), "abort") == 0
                    ? AP_HTTP_SEND_ABORT
                    : lua_toboolean(L, 3);
    if (!final) luaL_checktype(L, 4, LUA_TFUNCTION);
    if (!u->r) return ap_fail(L, "CLOSED", "the client connection went away");
    if (!ap_http_req_started(u->r)) return ap_fail(L, "STATE", "the response was not started");
    if (ap_http_req_finished(u->r)) return ap_fail(L, "STATE", "the response is already finished");
    if (u->inflight || u->proceed_ref != LUA_NOREF)
        return ap_fail(L, "STATE", "a previous write has not completed");
    /* h2o sends from the string's own memory: keep it referenced until h2o is done with it. */
    lua_rawgeti(L, LUA_REGISTRYINDEX, u->pins_ref);
    int key = ++u->next_pin;
    lua_pushvalue(L, 2);
    lua_rawseti(L, -2, key);
    lua_pop(L, 1);
    if (!final) {
        lua_pushvalue(L, 4);
        u->proceed_ref = luaL_ref(L, LUA_REGISTRYINDEX);
        u->inflight = key;
    }
    ap_http_req *r = u->r;
    /* A final send may release the request (and unpin everything) before it returns. */
    ap_http_req_send(r, data, len, final, final ? NULL : on_proceed, u);
    lua_pushboolean(L, 1);
    return 1;
}

/* req:send_file(status, headers, path, mime) -> true | nil, err */
static int l_req_send_file(lua_State *L)
{
    request_ud *u = ap_check_http_request(L, 1);
    int status = check_status(L, 2);
    ap_http_str headers[2 * MAX_HEADERS];
    size_t n = check_headers(L, 3, headers, MAX_HEADERS);
    const char *path = luaL_checkstring(L, 4);
    const char *mime = luaL_optstring(L, 5, "application/octet-stream");
    if (!u->r) return ap_fail(L, "CLOSED", "the client connection went away");
    if (ap_http_req_started(u->r)) return ap_fail(L, "STATE", "the response was already started");
    if (ap_http_req_send_file(u->r, status, headers, n, path, mime) != 0)
        return ap_fail(L, "NOT_FOUND", "cannot open %s", path);
    lua_pushboolean(L, 1);
    return 1;
}

/* req:state() -> "open" | "started" | "finished" | "gone" */
static int l_req_state(lua_State *L)
{
    request_ud *u = ap_check_http_request(L, 1);
    if (!u->r)
        lua_pushliteral(L, "gone");
    else if (ap_http_req_finished(u->r))
        lua_pushliteral(L, "finished");
    else if (ap_http_req_started(u->r))
        lua_pushliteral(L, "started");
    else
        lua_pushliteral(L, "open");
    return 1;
}

static int l_req_tostring(lua_State *L)
{
    request_ud *u = ap_check_http_request(L, 1);
    lua_pushfstring(L, REQUEST_TYPE " (%s): %p", u->r ? "open" : "gone", (void *)u);
    return 1;
}

static int l_req_gc(lua_State *L)
{
    (void)ap_check_http_request(L, 1); /* pinned while h2o holds the request: nothing to free */
    return 0;
}

/* ---- servers ------------------------------------------------------------------------------- */

static void server_on_closed(void *data)
{
    server_ud *s = data;
    lua_State *L = s->L;
    int top = lua_gettop(L);
    s->closed = 1;
    s->srv = NULL;
    luaL_unref(L, LUA_REGISTRYINDEX, s->on_request_ref);
    s->on_request_ref = LUA_NOREF;
    int cb = s->on_closed_ref;
    s->on_closed_ref = LUA_NOREF;
    luaL_unref(L, LUA_REGISTRYINDEX, s->self_ref);
    s->self_ref = LUA_NOREF;
    if (cb != LUA_NOREF) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, cb);
        luaL_unref(L, LUA_REGISTRYINDEX, cb);
        ap_call(L, 0, 0, 0);
    }
    lua_settop(L, top);
}

static lua_Integer opt_int_field(lua_State *L, int idx, const char *name, lua_Integer dflt,
                                 lua_Integer min, lua_Integer max)
{
    lua_getfield(L, idx, name);
    lua_Integer v = dflt;
    if (!lua_isnil(L, -1)) {
        int ok;
        v = lua_tointegerx(L, -1, &ok);
        if (!ok || v < min || v > max)
            luaL_error(L, "http_server.listen: %s must be an integer between %I and %I", name, min,
                       max);
    }
    lua_pop(L, 1);
    return v;
}

static const char *opt_str_field(lua_State *L, int idx, const char *name)
{
    lua_getfield(L, idx, name); /* left on the stack: the string stays alive until listen returns */
    if (lua_isnil(L, -1)) return NULL;
    if (lua_type(L, -1) != LUA_TSTRING)
        luaL_error(L, "http_server.listen: %s must be a string", name);
    return lua_tostring(L, -1);
}

/* http_server.listen{ host, port, max_body, request_timeout_ms, json_errors, spool_dir, tls_cert,
 *   tls_key, tls_client_ca, max_connections, max_buffered, on_request }
 *   -> server | nil, "LISTEN: ...", "LISTEN" */
static int l_listen(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_getfield(L, 1, "host");
    const char *host = luaL_optstring(L, -1, "0.0.0.0");
    int port = (int)opt_int_field(L, 1, "port", 8080, 0, 65535);
    lua_Integer max_body = opt_int_field(L, 1, "max_body", 64 << 20, 0, INT64_MAX);
    lua_Integer timeout = opt_int_field(L, 1, "request_timeout_ms", 120000, 1, INT32_MAX);
    lua_getfield(L, 1, "json_errors");
    int json_errors = lua_toboolean(L, -1);
    lua_getfield(L, 1, "spool_dir");
    const char *spool_dir = luaL_optstring(L, -1, NULL);
    const char *tls_cert = opt_str_field(L, 1, "tls_cert");
    const char *tls_key = opt_str_field(L, 1, "tls_key");
    const char *tls_client_ca = opt_str_field(L, 1, "tls_client_ca");
    lua_Integer max_conns = opt_int_field(L, 1, "max_connections", 0, 0, INT32_MAX);
    lua_Integer max_buffered = opt_int_field(L, 1, "max_buffered", 0, 0, INT64_MAX);
    lua_getfield(L, 1, "on_request");
    luaL_argcheck(L, lua_isfunction(L, -1), 1, "on_request must be a function");

    server_ud *s = ap_new_udata(L, sizeof *s, SERVER_TYPE);
    s->L = ap_main_state(L);
    s->on_request_ref = LUA_NOREF;
    s->on_closed_ref = LUA_NOREF;
    s->self_ref = LUA_NOREF;
    ap_http_server_config cfg = {
        .host = host,
        .port = port,
        .max_body = (size_t)max_body,
        .request_timeout_ms = (uint64_t)timeout,
        .json_errors = json_errors,
        .spool_dir = spool_dir,
        .tls_cert = tls_cert,
        .tls_key = tls_key,
        .tls_client_ca = tls_client_ca,
        .max_connections = (size_t)max_conns,
        .max_buffered = (size_t)max_buffered,
        .on_request = server_on_request,
        .data = s,
    };
    char err[256];
    if (ap_http_server_start(ap_loop(L), &cfg, &s->srv, err, sizeof err) != 0)
        return ap_fail(L, "LISTEN", "%s", err);
    s->port = ap_http_server_port(s->srv);
    lua_pushvalue(L, -2);
    s->on_request_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pushvalue(L, -1);
    s->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return 1;
}

/* server:port() -> integer */
static int l_server_port(lua_State *L)
{
    server_ud *s = ap_check_http_server(L, 1);
    lua_pushinteger(L, s->port);
    return 1;
}

/* server:reload_tls() -> true | nil, "TLS: ...", "TLS": reads the certificate files again */
static int l_server_reload_tls(lua_State *L)
{
    server_ud *s = ap_check_http_server(L, 1);
    if (!s->srv) return ap_fail(L, "STATE", "the server is closed");
    char err[512];
    if (ap_http_server_reload_tls(s->srv, err, sizeof err) != 0)
        return ap_fail(L, "TLS", "%s", err);
    lua_pushboolean(L, 1);
    return 1;
}

/* http_server.raise_fd_limit() -> the soft limit on open files after raising it to the hard one */
static int l_raise_fd_limit(lua_State *L)
{
    lua_pushinteger(L, ap_http_raise_fd_limit());
    return 1;
}

/* server:stats() -> { active = requests in progress, connections = open connections,
 *                     too_large = requests refused with 413 before reaching the handler,
 *                     over_budget = requests refused with 503 past max_buffered,
 *                     refused_connections = connections closed past max_connections,
 *                     bad_framing = requests refused with 400 for ambiguous framing,
 *                     buffered = request bytes buffered now } */
static int l_server_stats(lua_State *L)
{
    server_ud *s = ap_check_http_server(L, 1);
    lua_createtable(L, 0, 7);
    lua_pushinteger(L, s->srv ? (lua_Integer)ap_http_server_over_budget(s->srv) : 0);
    lua_setfield(L, -2, "over_budget");
    lua_pushinteger(L, s->srv ? (lua_Integer)ap_http_server_refused_connections(s->srv) : 0);
    lua_setfield(L, -2, "refused_connections");
    lua_pushinteger(L, s->srv ? (lua_Integer)ap_http_server_bad_framing(s->srv) : 0);
    lua_setfield(L, -2, "bad_framing");
    lua_pushinteger(L, s->srv ? (lua_Integer)ap_http_server_buffered(s->srv) : 0);
    lua_setfield(L, -2, "buffered");
    lua_pushinteger(L, s->srv ? (lua_Integer)ap_http_server_active_requests(s->srv) : 0);
    lua_setfield(L, -2, "active");
    lua_pushinteger(L, s->srv ? (lua_Integer)ap_http_server_connections(s->srv) : 0);
    lua_setfield(L, -2, "connections");
    lua_pushinteger(L, s->srv ? (lua_Integer)ap_http_server_too_large(s->srv) : 0);
    lua_setfield(L, -2, "too_large");
    return 1;
}

/* server:close([cb]) -> true: stop accepting, let requests in flight finish, then cb() */
static int l_server_close(lua_State *L)
{
    server_ud *s = ap_check_http_server(L, 1);
    if (!lua_isnoneornil(L, 2)) luaL_checktype(L, 2, LUA_TFUNCTION);
    if (s->closing) {
        if (!lua_isnoneornil(L, 2)) {
            if (s->closed) {
                lua_pushvalue(L, 2);
                ap_call(L, 0, 0, 0);
            } else {
                return ap_fail(L, "STATE", "the server is already closing");
            }
        }
        lua_pushboolean(L, 1);
        return 1;
    }
    s->closing = 1;
    if (!lua_isnoneornil(L, 2)) {
        lua_pushvalue(L, 2);
        s->on_closed_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    ap_http_server_close(s->srv, server_on_closed, s);
    lua_pushboolean(L, 1);
    return 1;
}

static int l_server_tostring(lua_State *L)
{
    server_ud *s = ap_check_http_server(L, 1);
    lua_pushfstring(L, SERVER_TYPE " (port %d, %s): %p", s->port,
                    s->closed    ? "closed"
                    : s->closing ? "closing"
                                 : "listening",
                    (void *)s);
    return 1;
}

static int l_server_gc(lua_State *L)
{
    (void)ap_check_http_server(L, 1); /* pinned until closed: nothing left to free */
    return 0;
}

int ap_open_http_server(lua_State *L)
{
    static const luaL_Reg req_methods[] = {
        {"body", l_req_body},
        {"body_sub", l_req_body_sub},
        {"body_bytes", l_req_body_bytes},
        {"start", l_req_start},
        {"send", l_req_send},
        {"send_file", l_req_send_file},
        {"state", l_req_state},
        {NULL, NULL},
    };
    static const luaL_Reg req_meta[] = {
        {"__gc", l_req_gc},
        {"__close", l_req_gc},
        {"__tostring", l_req_tostring},
        {NULL, NULL},
    };
    static const luaL_Reg srv_methods[] = {
        {"port", l_server_port},
        {"stats", l_server_stats},
        {"reload_tls", l_server_reload_tls},
        {"close", l_server_close},
        {NULL, NULL},
    };
    static const luaL_Reg srv_meta[] = {
        {"__gc", l_server_gc},
        {"__close", l_server_gc},
        {"__tostring", l_server_tostring},
        {NULL, NULL},
    };
    ap_register_type(L, REQUEST_TYPE, req_methods, req_meta);
    ap_register_type(L, SERVER_TYPE, srv_methods, srv_meta);
    static const luaL_Reg funcs[] = {
        {"listen", l_listen},
        {"raise_fd_limit", l_raise_fd_limit},
        {NULL, NULL},
    };
    luaL_newlib(L, funcs);
    return 1;
}
