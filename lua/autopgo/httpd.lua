-- The HTTP server for Lua code: httpd.listen{...} serves HTTP/1.1 (and HTTP/2 over TLS) with the
-- h2o server of the C core
-- (core.http_server) and runs handler(req, res) in its own coroutine per request, so handlers can
-- wait on stores and buses. httpd.router() maps "METHOD /path/{param}" patterns to handlers.
--
--   local srv = assert(httpd.listen { host = "0.0.0.0", port = 8080, max_body = bytes,
--     handler = function(req, res) res:json(200, { ok = true }) end })
--   srv.port; srv:close(on_closed) or srv:shutdown() (in a coroutine); srv:stats()
--   req.method, req.path (decoded), req.raw_path, req.target (with the query), req.query (map),
--   req.query_list, req.headers (lower-case names, "host" and "content-length" included),
--   req.params (router), req.peer, req.body_size; req:body() (the whole body), req:read(n) (the next
--   piece, nil at the end), req:body_bytes() (the body, held once, for C and the stores), req:header(name)
--   res:status(n), res:header(k, v), res:add_header(k, v), res:send(body), res:write(chunk) (waits
--   for the client), res:finish([chunk]), res:abort(), res:send_file(path, mime), res:json(status, value),
--   res:error(status, message), res:state()
local core = require "autopgo.core"
local async = require "autopgo.async"
local url = require "autopgo.url"
local json = require "autopgo.json"
local log = require "autopgo.log"
local fail = require "autopgo.fail"
local uv = require "luv"

local M = {}

M.default_max_body = 64 * 1024 * 1024
M.default_chunk = 64 * 1024

--- Raises the soft limit on open files to the hard limit (as Go's runtime does at start), so many
-- idle connections cannot run the server out of descriptors. Returns the limit now in force.
function M.raise_fd_limit()
  return core.http_server.raise_fd_limit()
end

-- Requests -------------------------------------------------------------------------------------

local Request = {}
Request.__index = Request

--- The whole body as a string (a copy of what the server received).
function Request:body()
  return self._ud:body()
end

--- The body as an autopgo.bytes view, held once in C on HTTP/1 and HTTP/2 alike (no copy): what
-- the validator and every store's put take, and what a reader (thread-pool work, an HTTP
-- transfer) keeps alive even if the client goes away. #b is its size, b:sub(i, j) copies a piece.
-- Released when the handler returns (the collector would only notice a small userdata).
function Request:body_bytes()
  if not self._bytes then
    local b, err, code = self._ud:body_bytes()
    if not b then return nil, err, code end
    self._bytes = b
  end
  return self._bytes
end

--- Bytes i..j of the body (1-based, inclusive, like string.sub), copied.
function Request:body_sub(i, j)
  return self._ud:body_sub(i, j)
end

--- Streaming read: the next piece of the body (at most n bytes, default 64 KiB), nil at the end;
-- a large upload can be passed on piece by piece without a second full copy.
function Request:read(n)
  n = n or M.default_chunk
  local pos = self._pos
  if pos > self.body_size then return nil end
  local chunk, err, code = self._ud:body_sub(pos, pos + n - 1)
  if not chunk then return nil, err, code end
  self._pos = pos + #chunk
  return chunk
end

--- Rewinds the streaming read to the start of the body.
function Request:rewind()
  self._pos = 1
end

--- A request header (case-insensitive name) or nil.
function Request:header(name)
  return self.headers[name:lower()]
end

-- Responses ------------------------------------------------------------------------------------

local Response = {}
Response.__index = Response

--- Sets the status code (default 200). Returns the response for chaining.
function Response:status(code)
  assert(math.type(code) == "integer" and code >= 100 and code <= 999, "status must be an HTTP status code")
  self._status = code
  return self
end

--- Sets a header, replacing any earlier value of that name; a nil value removes it.
function Response:header(name, value)
  name = name:lower()
  local kept = {}
  for _, h in ipairs(self._headers) do
    if h[1] ~= name then kept[#kept + 1] = h end
  end
  if value ~= nil then kept[#kept + 1] = { name, tostring(value) } end
  self._headers = kept
  return self
end

--- Adds a header without replacing earlier ones of the same name.
function Response:add_header(name, value)
  self._headers[#self._headers + 1] = { name:lower(), tostring(value) }
  return self
end

--- The value set for a response header, or nil.
function Response:get_header(name)
  name = name:lower()
  for _, h in ipairs(self._headers) do
    if h[1] == name then return h[2] end
  end
  return nil
end

--- "open" (nothing sent), "started" (headers sent, body streaming), "finished", or "gone" (the
-- connection was lost or the response fully sent and released).
function Response:state()
  return self._ud:state()
end

-- Splits the headers into the list h2o sends and an explicit Content-Length, if any.
function Response:_split_headers()
  local list, length = {}, nil
  for _, h in ipairs(self._headers) do
    if h[1] == "content-length" then
      length = math.tointeger(tonumber(h[2]))
    else
      list[#list + 1] = h
    end
  end
  return list, length
end

function Response:_start(length)
  local list, explicit = self:_split_headers()
  return self._ud:start(self._status, list, length or explicit)
end

--- Sends the whole body (a string) and finishes the response.
function Response:send(body)
  body = body == nil and "" or tostring(body)
  if self._ud:state() == "open" then
    local ok, err, code = self:_start((self._is_head and self._streamed or 0) + #body)
    if not ok then return nil, err, code end
  end
  -- HEAD: the headers describe the body, which is not sent (h2o would send it).
  return self._ud:send(self._is_head and "" or body, true)
end

--- Streams a piece of the body (chunked unless a Content-Length header was set). Suspends the
-- calling coroutine until the client has taken it, so a slow client slows the producer down.
function Response:write(chunk)
  chunk = tostring(chunk)
  if self._is_head then
    -- Counted for the Content-Length that finish() announces; never sent.
    self._streamed = (self._streamed or 0) + #chunk
    return true
  end
  if self._ud:state() == "open" then
    local ok, err, code = self:_start(nil)
    if not ok then return nil, err, code end
  end
  if chunk == "" then return true end
  local ud = self._ud
  local ok, err, code = async.await(function(cb)
    local sent, serr = ud:send(chunk, false, cb)
    if not sent then cb(serr) end
  end)
  if ok == nil and err then return nil, err, code end
  return true
end

--- Ends a streamed response (after optional last piece).
function Response:finish(chunk)
  local state = self._ud:state()
  if state == "finished" or state == "gone" then return true end
  if state == "open" then
    if self._is_head then self._streamed = (self._streamed or 0) + #(chunk or "") end
    return self:send(self._is_head and "" or (chunk or ""))
  end
  return self._ud:send(chunk and tostring(chunk) or "", true)
end

--- Breaks off a started response: the connection closes without completing the body, so the
-- client sees a failed transfer rather than a short one that looks whole.
function Response:abort()
  if self._ud:state() ~= "started" then return self:finish() end
  return self._ud:send("", "abort")
end

--- Answers with the contents of a file, read by the server as the client takes it.
function Response:send_file(path, mime)
  local list = self:_split_headers()
  return self._ud:send_file(self._status, list, path, mime or self:get_header("content-type")
    or "application/octet-stream")
end

--- Sends a JSON body the way Go's json.Encoder writes it (compact, trailing newline).
function Response:json(status, value)
  self:status(status)
  self:header("content-type", "application/json")
  return self:send(json.encode_line(value))
end

--- Sends the API's error body {"message": "...", "code": status}.
function Response:error(status, message)
  return self:json(status, json.object("message", message, "code", status))
end

-- Servers --------------------------------------------------------------------------------------

local Server = {}
Server.__index = Server

--- Stops accepting connections; requests in flight finish. on_closed() runs once all is done.
function Server:close(on_closed)
  return self._ud:close(on_closed)
end

--- close() for coroutines: returns once the server has stopped.
function Server:shutdown()
  local ud = self._ud
  async.await(function(cb) ud:close(function() cb(nil) end) end)
  return true
end

--- { active = requests in progress, connections = open connections, too_large, over_budget,
-- refused_connections, bad_framing, buffered } (see core/lua/http_server.c)
function Server:stats()
  return self._ud:stats()
end

--- Reads the TLS certificate and key (and client CA) files again: new handshakes use them, open
-- connections keep theirs. Returns true or nil, "TLS: ...", "TLS" (the old ones stay).
function Server:reload_tls()
  return self._ud:reload_tls()
end

-- mkdir -p, synchronous: once, when a server starts (and outside coroutines too).
local function mkdirs(path)
  local sofar = path:sub(1, 1) == "/" and "" or "."
  for seg in path:gmatch("[^/]+") do
    sofar = sofar .. "/" .. seg
    local ok, err, ecode = uv.fs_mkdir(sofar, 448)
    if not ok and ecode ~= "EEXIST" then return nil, err end
  end
  return true
end

local function finish_failed(res)
  local ok, err = pcall(function()
    local state = res:state()
    if state == "open" then
      res:error(500, "internal server error")
    elseif state == "started" then
      res:finish()
    end
  end)
  if not ok then log.error("cannot answer a failed request", "error", tostring(err)) end
end

--- The ETag of content whose SHA-256 is `hex` ("sha256:<hex>", quoted): what every download of
-- the API sends, and what a client computes of a file it holds to ask for a 304.
function M.digest_etag(hex)
  return '"sha256:' .. hex .. '"'
end

--- Whether an If-None-Match header matches etag (weak comparison, "*" matches anything), as
-- RFC 9110 §13.1.2 says for GET.
function M.none_match(header, etag)
  if not header then return false end
  local function strip(e) return (e:gsub("^W/", "")) end
  for candidate in header:gmatch("[^,]+") do
    candidate = candidate:match("^%s*(.-)%s*$")
    if candidate == "*" or strip(candidate) == strip(etag) then return true end
  end
  return false
end

--- Starts a server. opts: host ("0.0.0.0"), port (8080; 0 picks a free one), max_body (bytes,
-- 64 MiB; larger bodies get 413 before they are read), request_timeout (seconds to receive a
-- request, also the keep-alive idle time; 120), json_errors (true: the server's own 400/413 answers
-- use the API's JSON error body), spool_dir (where h2o keeps request bodies over 32 MiB, in a
-- temporary file it unlinks at once; created if missing; default h2o's /tmp), tls_cert and tls_key
-- (PEM files: serve HTTPS, with HTTP/2 by ALPN), tls_client_ca (PEM: require client certificates
-- signed by it), max_connections (more are closed at once; 0 none), max_buffered (bytes of request
-- bodies buffered at once before requests still arriving get 503; 0 none), handler =
-- function(req, res) or a router.
-- Returns the server (srv.port is the bound port) or nil, "LISTEN: ...", "LISTEN".
function M.listen(opts)
  assert(type(opts) == "table", "httpd.listen: options table expected")
  local handler = opts.handler
  assert(type(handler) == "function" or (type(handler) == "table" and getmetatable(handler)
    and getmetatable(handler).__call), "httpd.listen: handler must be a function or a router")
  local name = opts.name or "http"
  local run = handler
  if type(handler) ~= "function" then run = function(req, res) return handler(req, res) end end
  local function on_request(ud, info)
    local target = info.target
    local raw_path, raw_query = target:match("^([^?]*)%??(.*)$")
    local query, query_list = url.parse_query(raw_query)
    local req = setmetatable({
      method = info.method, target = target, raw_path = raw_path, path = url.unescape(raw_path),
      query = query, query_list = query_list, headers = info.headers, peer = info.peer,
      body_size = info.body_size, params = {}, _ud = ud, _pos = 1,
    }, Request)
    local res = setmetatable({ _ud = ud, _status = 200, _headers = {}, _is_head = info.method == "HEAD" }, Response)
    async.spawn_with(function(ok, err, traceback)
      if req._bytes then req._bytes:release() end
      if not ok then
        log.error("http handler failed", "server", name, "method", req.method, "path", req.raw_path,
          "error", traceback or tostring(err))
        finish_failed(res)
        return
      end
      local state = res:state()
      if state == "open" then
        log.error("http handler returned without answering", "server", name, "method", req.method,
          "path", req.raw_path)
        finish_failed(res)
      elseif state == "started" then
        res:finish()
      end
    end, run, req, res)
  end
  if opts.spool_dir then
    local ok, merr = mkdirs(opts.spool_dir)
    if not ok then return fail.new("LISTEN", "cannot create the spool directory %s: %s", opts.spool_dir, merr) end
  end
  local ud, err, code = core.http_server.listen {
    host = opts.host or "0.0.0.0",
    port = opts.port or 8080,
    max_body = opts.max_body or M.default_max_body,
    request_timeout_ms = math.floor((opts.request_timeout or 120) * 1000),
    json_errors = opts.json_errors ~= false,
    spool_dir = opts.spool_dir,
    tls_cert = opts.tls_cert,
    tls_key = opts.tls_key,
    tls_client_ca = opts.tls_client_ca,
    max_connections = opts.max_connections,
    max_buffered = opts.max_buffered,
    on_request = on_request,
  }
  if not ud then return nil, err, code end
  return setmetatable({ _ud = ud, port = ud:port(), name = name, tls = opts.tls_cert ~= nil }, Server)
end

-- Routing --------------------------------------------------------------------------------------

local Router = {}
Router.__index = Router

local function split(path)
  local segs = {}
  for seg in (path:sub(2) .. "/"):gmatch("([^/]*)/") do segs[#segs + 1] = seg end
  return segs
end

--- Adds a route: method ("GET", "POST", ... or "*") and a pattern of literal segments and
-- {name} segments, e.g. "/api/profile/{app}". A {name} matches one segment (which may be empty);
-- its percent-decoded value is in req.params.name. `access` is what the router's guard (see
-- autopgo.auth) checks before fn runs: "open", or a scope ("upload", "download", "delete",
-- "metrics") held for req.params.app when the route has an {app}. A route that declares none is
-- refused whenever the guard requires tokens.
function Router:add(method, pattern, fn, access)
  assert(pattern:sub(1, 1) == "/", "route patterns start with /")
  local segs = {}
  for i, seg in ipairs(split(pattern)) do
    local param = seg:match("^{([%w_]+)}$")
    segs[i] = param and { param = param } or { literal = seg }
  end
  self.routes[#self.routes + 1] = { method = method:upper(), segs = segs, fn = fn, access = access }
  return self
end

local function match(route, raw)
  if #route.segs ~= #raw then return nil end
  local params = {}
  for i, seg in ipairs(route.segs) do
    local value = url.unescape(raw[i])
    if seg.param then
      params[seg.param] = value
    elseif seg.literal ~= value then
      return nil
    end
  end
  return params
end

--- Dispatches a request; answers 404 or 405 (with Allow) the way Go's ServeMux does when no
-- route matches.
function Router:handle(req, res)
  local raw = split(req.raw_path)
  local allowed = {}
  for _, route in ipairs(self.routes) do
    local params = match(route, raw)
    if params then
      if route.method == "*" or route.method == req.method or (route.method == "GET" and req.method == "HEAD") then
        req.params = params
        if self.guard and not self.guard:check(req, res, route.access) then return end
        return route.fn(req, res)
      end
      allowed[route.method] = true
      if route.method == "GET" then allowed.HEAD = true end
    end
  end
  if next(allowed) then
    local list = {}
    for m in pairs(allowed) do list[#list + 1] = m end
    table.sort(list)
    res:status(405):header("allow", table.concat(list, ", "))
    res:header("content-type", "text/plain; charset=utf-8"):header("x-content-type-options", "nosniff")
    return res:send("Method Not Allowed\n")
  end
  if self.not_found then return self.not_found(req, res) end
  res:status(404):header("content-type", "text/plain; charset=utf-8")
  res:header("x-content-type-options", "nosniff")
  return res:send("404 page not found\n")
end

Router.__call = Router.handle

--- A new router; opts.not_found = function(req, res) replaces the 404 answer; opts.guard (an
-- autopgo.auth guard) admits or refuses each request to a route before its handler runs.
function M.router(opts)
  return setmetatable({ routes = {}, not_found = opts and opts.not_found, guard = opts and opts.guard }, Router)
end

return M
