-- Who may do what on an HTTP listener: bearer tokens with scopes and app patterns (--auth-file),
-- and the browser rules (no cross-origin state-changing requests, Host checked when bound to loopback).
-- The router consults a guard for every route it matches; each route declares its access: "open", or
-- a scope (upload, download, delete, metrics) checked against req.params.app when the route has one.
--
--   local g = assert(auth.guard { auth_file = path, host = "127.0.0.1", allowed_origins = { ... } })
--   router = httpd.router { guard = g }; router:add("GET", "/api/profile/{app}", fn, "download")
--   g:reload()                   -- reads the file again; a file that does not parse keeps the old grants
--   auth.may(req, scope, app)    -- for handlers that filter (listing): true when the request's token may
local core = require "autopgo.core"
local cjson = require "cjson.safe"
local fail = require "autopgo.fail"
local log = require "autopgo.log"
local metrics = require "autopgo.metrics"

local crypto = core.crypto

local refusals = metrics.counter("autopgo_auth_refusals_total",
  "Requests refused by access control, by status and reason (no_token, invalid_token, insufficient_scope,"
    .. " undeclared, origin, host).", { "status", "reason" })

local M = {}

-- The scopes a grant may hold, and what each lets a token do.
M.scopes = {
  upload = "POST /api/profile/{app}: stage profiles for the apps of the grant",
  download = "GET /api/profile/{app}, .../uploads and the listing: read the apps of the grant",
  delete = "DELETE /api/profile/{app} (and so autopgo clean): delete the apps of the grant",
  metrics = "GET /metrics when the listener puts it behind this scope (--metrics-scope metrics)",
}

-- The route access that needs no token: health and readiness always, /metrics by default.
M.OPEN = "open"

M.realm = "autopgo"

-- Methods that change state: a browser sends them cross-origin without asking first (a "simple"
-- text/plain POST), so they are the ones the Origin rule covers.
local state_changing = { POST = true, PUT = true, DELETE = true, PATCH = true }

-- Grants --------------------------------------------------------------------------------------

-- A shell-style pattern (*, ?, [abc], [!a-z]) over app names as an anchored Lua pattern, or nil and why.
local function compile_pattern(p)
  if type(p) ~= "string" or p == "" then return nil, "an app pattern must be a non-empty string" end
  if p:find("[^a-z0-9%-%*%?%[%]!]") then
    return nil, ("app pattern %q: app names are made of a-z, 0-9 and '-'; patterns add *, ? and [...]"):format(p)
  end
  local out, i = { "^" }, 1
  while i <= #p do
    local c = p:sub(i, i)
    if c == "*" then
      out[#out + 1] = ".*"
    elseif c == "?" then
      out[#out + 1] = "."
    elseif c == "[" then
      local close = p:find("]", i + 2, true)
      if not close then return nil, ("app pattern %q: [ without ]"):format(p) end
      local body = p:sub(i + 1, close - 1)
      local negate = body:sub(1, 1) == "!"
      if negate then body = body:sub(2) end
      if body == "" or body:find("[%*%?%[!]") then return nil, ("app pattern %q: bad [...] class"):format(p) end
      out[#out + 1] = "[" .. (negate and "^" or "") .. body .. "]"
      i = close
    elseif c == "]" or c == "!" then
      return nil, ("app pattern %q: %s outside [...]"):format(p, c)
    elseif c == "-" then
      out[#out + 1] = "%-"
    else
      out[#out + 1] = c
    end
    i = i + 1
  end
  out[#out + 1] = "$"
  return table.concat(out)
end

--- Parses the text of an auth file (a JSON array of grants {name, sha256, scopes, apps}). Returns
-- the grants ({ name, digest = raw 32 bytes, scopes = set, apps = list of Lua patterns }) or
-- nil, "INVALID: <where>: <what>", "INVALID". `source` names the file in messages.
function M.parse(text, source)
  source = source or "auth file"
  local doc, jerr = cjson.decode(text)
  if doc == nil then return fail.new("INVALID", "%s: not JSON: %s", source, tostring(jerr)) end
  if type(doc) ~= "table" or (next(doc) ~= nil and #doc == 0) then
    return fail.new("INVALID", "%s: must be a JSON array of grants", source)
  end
  local grants, names, digests = {}, {}, {}
  for i, g in ipairs(doc) do
    local where = ("%s: grant %d"):format(source, i)
    if type(g) ~= "table" then return fail.new("INVALID", "%s: must be an object", where) end
    for k in pairs(g) do
      if k ~= "name" and k ~= "sha256" and k ~= "scopes" and k ~= "apps" then
        return fail.new("INVALID", "%s: unknown field %q (name, sha256, scopes, apps)", where, tostring(k))
      end
    end
    if type(g.name) ~= "string" or g.name == "" then
      return fail.new("INVALID", "%s: \"name\" must be a non-empty string", where)
    end
    where = ("%s: grant %q"):format(source, g.name)
    if names[g.name] then return fail.new("INVALID", "%s: the name is used twice", where) end
    names[g.name] = true
    if type(g.sha256) ~= "string" or not g.sha256:lower():match("^" .. ("%x"):rep(64) .. "$") then
      return fail.new("INVALID", "%s: \"sha256\" must be the 64 hex digits of the SHA-256 of the token", where)
    end
    local hex = g.sha256:lower()
    if digests[hex] then return fail.new("INVALID", "%s: same sha256 as grant %q", where, digests[hex]) end
    digests[hex] = g.name
    local digest = hex:gsub("%x%x", function(h) return string.char(tonumber(h, 16)) end)
    if type(g.scopes) ~= "table" or #g.scopes == 0 then
      return fail.new("INVALID", "%s: \"scopes\" must be a non-empty array of upload, download, delete, metrics",
        where)
    end
    local scopes = {}
    for _, s in ipairs(g.scopes) do
      if not M.scopes[s] then
        return fail.new("INVALID", "%s: unknown scope %q (upload, download, delete, metrics)", where, tostring(s))
      end
      scopes[s] = true
    end
    local apps = {}
    if g.apps ~= nil and (type(g.apps) ~= "table" or (next(g.apps) ~= nil and #g.apps == 0)) then
      return fail.new("INVALID", "%s: \"apps\" must be an array of patterns such as \"*\" or \"payments-*\"", where)
    end
    for _, p in ipairs(g.apps or {}) do
      local pat, perr = compile_pattern(p)
      if not pat then return fail.new("INVALID", "%s: %s", where, perr) end
      apps[#apps + 1] = pat
    end
    grants[#grants + 1] = { name = g.name, digest = digest, scopes = scopes, apps = apps }
  end
  return grants
end

--- Reads and parses an auth file. Returns the grants or nil, err, code (IO or INVALID).
function M.load(path)
  local f, err = io.open(path, "rb")
  if not f then return fail.new("IO", "cannot read the auth file: %s", tostring(err)) end
  local text = f:read("a")
  f:close()
  return M.parse(text or "", path)
end

--- The grant a token text belongs to, or nil. The token's SHA-256 is compared with every grant's
-- digest in constant time, all of them every time, so the answer's timing says nothing about which
-- digest came close.
function M.find(grants, token)
  local digest = crypto.digest("sha256", token)
  local found
  for _, g in ipairs(grants) do
    if crypto.equal(digest, g.digest) and not found then found = g end
  end
  return found
end

--- Whether grant g holds `scope` for `app` (nil app: for some app, as for the listing).
function M.allows(g, scope, app)
  if not g.scopes[scope] then return false end
  if app == nil or scope == "metrics" then return true end
  for _, pat in ipairs(g.apps) do
    if app:find(pat) then return true end
  end
  return false
end

--- Whether the request's token may use `scope` on `app`: always when the listener has no auth
-- file (req.grant is nil), else what its grant allows.
function M.may(req, scope, app)
  if not req.grant then return true end
  return M.allows(req.grant, scope, app)
end

-- Hosts -----------------------------------------------------------------------------------------

-- The host part of an authority ("h:port", "[v6]:port"), lower case, and its port (or nil).
local function split_authority(a)
  a = a:lower()
  local v6, port = a:match("^%[([^%]]*)%]:?(%d*)$")
  if v6 then return "[" .. v6 .. "]", port ~= "" and port or nil end
  local host, p = a:match("^([^:]*):?(%d*)$")
  if not host then return a, nil end
  return host, p ~= "" and p or nil
end

local function is_loopback_host(h)
  if h == "localhost" or h:match("%.localhost$") or h == "[::1]" or h == "::1" then return true end
  local a, b, c, d = h:match("^(%d+)%.(%d+)%.(%d+)%.(%d+)$")
  return a == "127" and tonumber(b) < 256 and tonumber(c) < 256 and tonumber(d) < 256
end

--- Whether a listen address keeps the listener on this machine (127.0.0.0/8, ::1, localhost).
function M.is_loopback(host)
  return type(host) == "string" and is_loopback_host(host:lower():gsub("^%[(.*)%]$", "[%1]"))
end

local default_ports = { http = "80", https = "443" }

-- "scheme://host:port" with the default port made explicit and lower case, or nil.
local function normal_origin(o)
  local scheme, authority = o:lower():match("^(https?)://([^/]+)/?$")
  if not scheme then return nil end
  local host, port = split_authority(authority)
  return ("%s://%s:%s"):format(scheme, host, port or default_ports[scheme]), scheme, host, port
end

-- Guards ----------------------------------------------------------------------------------------

local Guard = {}
Guard.__index = Guard

--- A guard for one listener. o: auth_file (path; nil: no tokens, the API is open), host (the listen
-- address; loopback turns on the Host check), allowed_origins (list of "scheme://host[:port]" that
-- may send state-changing requests besides the listener's own), name (for logs).
-- Returns the guard, or nil, err, code when the auth file cannot be read at start (a server must
-- not start open because its file has a typo).
function M.guard(o)
  o = o or {}
  local self = setmetatable({ file = o.auth_file, name = o.name or "server", origins = {},
    loopback = M.is_loopback(o.host), reloads = 0 }, Guard)
  for _, origin in ipairs(o.allowed_origins or {}) do
    local n = origin == "*" and "*" or normal_origin(origin)
    if not n then
      return fail.new("INVALID", "allowed origin %q: must be scheme://host[:port] (http or https) or *", origin)
    end
    self.origins[n] = true
  end
  if self.file then
    local grants, err, code = M.load(self.file)
    if not grants then return nil, err, code end
    self.grants = grants
  end
  return self
end

--- Whether tokens are required (an auth file is configured).
function Guard:enabled()
  return self.grants ~= nil
end

--- Says at start-up how the listener is protected (once): open, or how many grants from which file.
function Guard:announce()
  if self.grants then
    log.info("API access control on: bearer tokens required", "listener", self.name, "auth_file", self.file,
      "grants", #self.grants)
  else
    log.warn("API access control off: anyone who can reach the port may upload, download and delete"
      .. " (give --auth-file to require tokens)", "listener", self.name)
  end
end

--- Reads the auth file again (SIGHUP). A file that cannot be read or parsed keeps the grants in use
-- and logs why. Returns true, or nil, err, code.
function Guard:reload()
  if not self.file then return true end
  local grants, err, code = M.load(self.file)
  if not grants then
    log.error("auth file reload failed; keeping the previous grants", "listener", self.name, "auth_file", self.file,
      "error", fail.message(err))
    return nil, err, code
  end
  self.grants = grants
  self.reloads = self.reloads + 1
  log.info("auth file reloaded", "listener", self.name, "auth_file", self.file, "grants", #grants)
  return true
end

local function refuse(res, status, reason, message, challenge)
  refusals:inc({ status = tostring(status), reason = reason })
  if challenge then res:header("www-authenticate", challenge) end
  return res:error(status, message)
end

local function challenge(err, description, scope)
  local out = ('Bearer realm="%s"'):format(M.realm)
  if err then out = out .. (', error="%s", error_description="%s"'):format(err, description) end
  if scope then out = out .. (', scope="%s"'):format(scope) end
  return out
end

-- The browser rules: false after answering when the request must not go further.
function Guard:check_browser(req, res)
  local host = req.headers.host -- the HTTP/2 :authority too
  if self.loopback and host and not is_loopback_host((split_authority(host))) then
    -- DNS rebinding: a page on evil.example whose name now points at 127.0.0.1
    refuse(res, 421, "host", ("this server is bound to loopback and answers only to a loopback Host, not %q")
      :format(host))
    return false
  end
  local origin = req.headers.origin
  if origin and state_changing[req.method] and not self.origins["*"] then
    local n = normal_origin(origin)
    local own = false
    if n and host then
      local _, scheme = normal_origin(origin)
      local h, p = split_authority(host)
      own = n == ("%s://%s:%s"):format(scheme, h, p or default_ports[scheme])
    end
    if not own and not (n and self.origins[n]) then
      refuse(res, 403, "origin", ("cross-origin %s refused: origin %s is not this server's (see --allowed-origins)")
        :format(req.method, origin))
      return false
    end
  end
  return true
end

--- Admits a request to a route of `access` ("open" or a scope), or answers it (401, 403, 421) and
-- returns false. On success with tokens on, req.grant is the token's grant.
function Guard:check(req, res, access)
  if not self:check_browser(req, res) then return false end
  if access == M.OPEN or not self.grants then return true end
  if not M.scopes[access] then
    log.error("route declares no known access scope; refusing it", "listener", self.name, "path", req.raw_path,
      "access", tostring(access))
    refuse(res, 403, "undeclared", "this endpoint declares no access scope")
    return false
  end
  local auth = req.headers.authorization
  local token = auth and auth:match("^[Bb][Ee][Aa][Rr][Ee][Rr] +([%w%-%._~%+/]+=*)%s*$")
  if not token then
    -- no bearer credentials at all (RFC 6750 3.1: no error code in the challenge)
    refuse(res, 401, "no_token", auth and "a bearer token is required (Authorization: Bearer <token>)"
      or "a bearer token is required", challenge())
    return false
  end
  local g = M.find(self.grants, token)
  if not g then
    refuse(res, 401, "invalid_token", "the token is not valid", challenge("invalid_token", "unknown token"))
    return false
  end
  local app = req.params and req.params.app
  if not M.allows(g, access, app) then
    local why = ("the token does not grant %s"):format(access)
    if g.scopes[access] then why = why .. " for app " .. app end
    refuse(res, 403, "insufficient_scope", why, challenge("insufficient_scope", why, access))
    return false
  end
  req.grant = g
  return true
end

return M
