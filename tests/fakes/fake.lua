-- Spec helpers for the recorded-response control-plane server (tests/fakes/control_plane.js):
-- start one for kube, nomad or consul (plain HTTP or TLS with client certificates), read the
-- requests it recorded, change its objects and make it fail through its control listener;
-- generate a throwaway CA with server and client certificates with openssl; set environment
-- variables for the length of a spec.
local uv = require "luv"
local cjson = require "cjson.safe"
local async = require "autopgo.async"
local http = require "autopgo.http"
local support = require "tests.lua.support"

local M = {}

M.dir = support.root .. "/tests/fakes"
M.fixtures = M.dir .. "/fixtures"
M.node = os.getenv("AUTOPGO_NODE") or "node"

local Fake = {}
Fake.__index = Fake

--- Starts a server. config: { api = "kube"|"nomad"|"consul", fixtures = path (default: the
-- API's fixture), tls = { cert, key, ca, client_certs = "require"|"request" }, auth = {...} }.
-- `dir` holds its config file. Returns a fake: url, control, proc. Call from a coroutine.
function M.start(config, dir)
  local fixtures = { kube = "kube_pods.json", nomad = "nomad_services.json", consul = "consul_catalog.json" }
  if config.fixtures == nil then config.fixtures = M.fixtures .. "/" .. fixtures[config.api] end
  local path = ("%s/fake-%s-%s.json"):format(dir, config.api, uv.hrtime())
  support.write_file(path, cjson.encode(config))
  local proc = support.spawn(M.node, { M.dir .. "/control_plane.js", path })
  local line
  local deadline = uv.now() + 15000
  while not line do
    local out, err = proc.output()
    line = out:match("^([^\n]*)\n")
    if proc.code then error("the fake " .. config.api .. " server exited: " .. err) end
    if uv.now() > deadline then error("the fake " .. config.api .. " server did not start: " .. err) end
    if not line then async.sleep(20) end
  end
  local ports = assert(cjson.decode(line), line)
  local scheme = config.tls and "https" or "http"
  return setmetatable({
    proc = proc, port = math.tointeger(ports.port), url = ("%s://127.0.0.1:%d"):format(scheme, ports.port),
    control = ("http://127.0.0.1:%d"):format(ports.control), api = config.api,
    proxy = ("http://127.0.0.1:%d"):format(ports.proxy),
  }, Fake)
end

function Fake:call(method, path, doc)
  local res = assert(http.request { method = method, url = self.control .. path, timeout = 10,
    headers = { ["content-type"] = "application/json" }, body = doc ~= nil and cjson.encode(doc) or nil })
  assert(res.status == 200, ("control %s %s answered %d: %s"):format(method, path, res.status, res.body))
  return cjson.decode(res.body)
end

--- Every request the API listener got since the last clear(), oldest first: { method, path,
-- query (map), raw_query, headers (lower-case names), servername (TLS SNI or nil), clientCert
-- (CN or nil), status }.
function Fake:requests()
  return self:call("GET", "/requests")
end

--- What the fake's proxy (at fake.proxy) was asked for, oldest first: "CONNECT host:port" or
-- "GET http://...".
function Fake:proxied()
  return self:call("GET", "/proxied")
end

--- The recorded requests whose path is `path`.
function Fake:requests_to(path)
  local out = {}
  for _, r in ipairs(self:requests()) do
    if r.path == path then out[#out + 1] = r end
  end
  return out
end

function Fake:clear()
  return self:call("DELETE", "/requests")
end

--- Makes the next `count` API requests (all while count is nil) answer `status` with `body`.
function Fake:fail(status, count, body)
  return self:call("POST", "/fail", { status = status, count = count or -1, body = body })
end

function Fake:heal()
  return self:call("DELETE", "/fail")
end

function Fake:set_auth(auth)
  return self:call("PUT", "/auth", auth)
end

function Fake:put(path, doc)
  return self:call("PUT", path, doc)
end

function Fake:stop()
  if self.proc.code == nil then
    self.proc:kill("sigterm")
    self.proc:wait(10000)
  end
end

--- The decoded fixture file of an API.
function M.fixture(name)
  return assert(cjson.decode(assert(support.read_file(M.fixtures .. "/" .. name))))
end

local function sh(cmd)
  local ok = os.execute("(" .. cmd .. ") >/dev/null 2>&1")
  assert(ok, "failed: " .. cmd)
end

--- A CA, a server certificate for 127.0.0.1 and localhost, one that names only
-- api.cluster.internal (for TLS server-name overrides), a client certificate it signed (CN
-- autopgo-scraper) and one it did not (a stranger's), in `dir`. Returns their paths.
function M.certs(dir)
  local ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
  local run = function(fmt, ...) sh(("cd %s && " .. fmt):format(dir, ...)) end
  run("openssl req -x509 %s -keyout ca.key -out ca.crt -days 2 -subj /CN=autopgo-test-ca "
    .. "-addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign", ec)
  support.write_file(dir .. "/server.ext", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
  support.write_file(dir .. "/client.ext", "extendedKeyUsage=clientAuth\n")
  run("openssl req %s -keyout server.key -out server.csr -subj /CN=127.0.0.1", ec)
  run("openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt -days 2 "
    .. "-extfile server.ext")
  support.write_file(dir .. "/named.ext", "subjectAltName=DNS:api.cluster.internal\nextendedKeyUsage=serverAuth\n")
  run("openssl req %s -keyout named.key -out named.csr -subj /CN=api.cluster.internal", ec)
  run("openssl x509 -req -in named.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out named.crt -days 2 "
    .. "-extfile named.ext")
  run("openssl req %s -keyout client.key -out client.csr -subj /O=autopgo/CN=autopgo-scraper", ec)
  run("openssl x509 -req -in client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out client.crt -days 2 "
    .. "-extfile client.ext")
  run("openssl req -x509 %s -keyout stranger.key -out stranger.crt -days 2 -subj /CN=stranger", ec)
  local p = function(f) return dir .. "/" .. f end
  return { ca = p "ca.crt", server_cert = p "server.crt", server_key = p "server.key", named_cert = p "named.crt",
    named_key = p "named.key", client_cert = p "client.crt",
    client_key = p "client.key", stranger_cert = p "stranger.crt", stranger_key = p "stranger.key" }
end

--- Sets environment variables (a map; false unsets) and returns a function restoring them.
-- Variables starting with any of `clear_prefixes` are unset first.
function M.setenv(vars, clear_prefixes)
  local saved = {}
  local function remember(k)
    if saved[k] == nil then saved[k] = os.getenv(k) or false end
  end
  for k in pairs(uv.os_environ()) do
    for _, prefix in ipairs(clear_prefixes or {}) do
      if k:sub(1, #prefix) == prefix then
        remember(k)
        uv.os_unsetenv(k)
      end
    end
  end
  for k, v in pairs(vars) do
    remember(k)
    if v == false then uv.os_unsetenv(k) else uv.os_setenv(k, v) end
  end
  return function()
    for k, v in pairs(saved) do
      if v == false then uv.os_unsetenv(k) else uv.os_setenv(k, v) end
    end
  end
end

--- A log that records what the modes say, for assertions: log.lines = { { level, msg, fields } }.
function M.log()
  local log = { lines = {} }
  for _, level in ipairs { "debug", "info", "warn", "error" } do
    log[level] = function(msg, ...)
      log.lines[#log.lines + 1] = { level = level, msg = msg, fields = table.pack(...) }
    end
  end
  function log.find(level, pattern)
    local out = {}
    for _, l in ipairs(log.lines) do
      if l.level == level and l.msg:find(pattern) then out[#out + 1] = l end
    end
    return out
  end
  return log
end

--- Waits until fn() returns a truthy value (returned), polling; fails after timeout_ms (default
-- 15 s) saying what it waited for. Never a timing assertion: only a bound on a hang.
function M.wait_for(fn, what, timeout_ms)
  local deadline = uv.now() + (timeout_ms or 15000)
  while true do
    local v = fn()
    if v then return v end
    if uv.now() > deadline then error("timed out waiting for " .. (what or "a condition"), 2) end
    async.sleep(20)
  end
end

--- Targets sorted by address then path, for order-free comparison.
function M.sorted(targets)
  local copy = {}
  for i, t in ipairs(targets or {}) do copy[i] = { address = t.address, path = t.path } end
  table.sort(copy, function(a, b) return a.address .. a.path < b.address .. b.path end)
  return copy
end

return M
