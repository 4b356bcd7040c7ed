-- Requests to a Kubernetes API server with the credentials of an autopgo.kube.config: a static
-- token, a token file re-read before every request (service account tokens rotate), basic auth,
-- client certificates, or an exec plugin whose credential is cached until its
-- expirationTimestamp. A 401 drops a cached exec credential and the request is sent once more.
local fail = require "autopgo.fail"
local http = require "autopgo.http"
local json_api = require "autopgo.json_api"
local exec_credential = require "autopgo.kube.exec_credential"
local async = require "autopgo.async"
local url = require "autopgo.url"
local crypto = require("autopgo.core").crypto

local M = {}

local Client = {}
Client.__index = Client

--- A client for `cfg` (from autopgo.kube.config). `now` (optional) returns epoch seconds.
function M.new(cfg, now)
  return setmetatable({ cfg = cfg, now = now or os.time, exec_runs = 0 }, Client)
end

local function read_token(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local token = (f:read("a") or ""):match("^%s*(.-)%s*$")
  f:close()
  if token == "" then return nil end
  return token
end

-- The exec plugin's credential: the cached one until it expires, else a fresh run. Concurrent
-- callers share one run.
function Client:exec_credential()
  local cached = self.cached
  if cached and (not cached.expires or self.now() < cached.expires) then return cached end
  if self.running then return self.running.wait() end
  local ev = async.event()
  self.running = ev
  self.exec_runs = self.exec_runs + 1
  local cred, err, code = exec_credential.get(self.cfg.auth.exec, self.cfg.exec_cluster)
  self.running = nil
  if cred then self.cached = cred end
  ev.set(cred, err, code)
  return cred, err, code
end

--- Forgets a cached exec credential (after a 401) so the next request runs the plugin again.
-- Returns true when there was something to forget.
function Client:invalidate()
  if self.cached then
    self.cached = nil
    return true
  end
  return false
end

--- The request options that carry the credentials and TLS settings, or nil, err, code.
function Client:auth_options()
  local cfg = self.cfg
  local opts = { headers = {}, proxy = cfg.proxy }
  for k, v in pairs(cfg.tls) do opts[k] = v end
  local auth = cfg.auth
  local token = auth.token
  if not token and auth.token_file then
    -- re-read every time; a failed read keeps the last token (the kubelet replaces it atomically)
    token = read_token(auth.token_file) or self.last_file_token
    if not token then
      return fail.new("UNAUTHORIZED", "cannot read the token file %s", auth.token_file)
    end
    self.last_file_token = token
  end
  if not token and auth.exec then
    local cred, err, code = self:exec_credential()
    if not cred then return nil, err, code end
    token = cred.token
    if cred.cert_pem then
      opts.client_cert, opts.client_key = nil, nil
      opts.client_cert_pem, opts.client_key_pem = cred.cert_pem, cred.key_pem
    end
  end
  if token then
    opts.headers.authorization = "Bearer " .. token
  elseif auth.basic then
    opts.headers.authorization = "Basic " .. crypto.base64_encode(auth.basic)
  end
  return opts
end

--- The URL of an API path with a query table.
function Client:url(path, query)
  local q = query and url.encode_query(query) or ""
  return self.cfg.server .. path .. (q ~= "" and ("?" .. q) or "")
end

--- Any http.request with the client's credentials (a url from Client:url). Returns what
-- http.request returns, or nil, err, code when no credentials can be had.
function Client:request(opts)
  local auth, err, code = self:auth_options()
  if not auth then return nil, err, code end
  for k, v in pairs(opts.headers or {}) do auth.headers[k] = v end
  opts.headers = auth.headers
  auth.headers = nil
  for k, v in pairs(auth) do opts[k] = v end
  return http.request(opts)
end

--- GET a JSON document: doc, res or nil, err, code[, status]. A 401 answered to an exec
-- credential drops it and asks once more with a fresh one.
function Client:get_json(path, query, opts)
  local function once()
    local o = { url = self:url(path, query), timeout = opts and opts.timeout, cancel = opts and opts.cancel }
    local auth, err, code = self:auth_options()
    if not auth then return nil, err, code end
    for k, v in pairs(auth) do o[k] = v end
    return json_api.get(o)
  end
  local doc, err, code, status = once()
  if not doc and status == 401 and self:invalidate() then
    doc, err, code, status = once()
  end
  return doc, err, code, status
end

return M
