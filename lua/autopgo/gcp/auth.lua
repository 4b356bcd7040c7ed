-- Google Cloud OAuth2 access tokens the way Google's client libraries find credentials
-- (Application Default Credentials):
--   1. GOOGLE_APPLICATION_CREDENTIALS names a JSON file: a service account key (an RS256-signed
--      JWT exchanged at its token_uri, the OAuth2 JWT bearer flow) or an authorized user
--      (refresh token);
--   2. gcloud's application_default_credentials.json (CLOUDSDK_CONFIG or ~/.config/gcloud);
--   3. the GCE/GKE metadata server (GCE_METADATA_HOST, default 169.254.169.254).
-- Tokens are cached until `margin` seconds before they expire; one refresh at a time.
--
--   local source = auth.new { scope = auth.SCOPE_RW }
--   local token, err, code = source:token()   -- in a coroutine
local fail = require "autopgo.fail"
local uv = require "luv"
local cjson = require "cjson.safe"
local crypto = require("autopgo.core").crypto
local async = require "autopgo.async"
local retry = require "autopgo.retry"
local url = require "autopgo.url"

local M = {}

M.SCOPE_RW = "https://www.googleapis.com/auth/devstorage.read_write"
M.TOKEN_URI = "https://oauth2.googleapis.com/token"
M.REFRESH_MARGIN = 300

local function http() return require "autopgo.http" end

local function nonempty(v) return v ~= nil and v ~= "" and v or nil end

local function b64url(s) return crypto.base64_encode(s, true) end

--- A signed JWT assertion for a service account key (a decoded JSON key file table).
function M.jwt(key, scope, now)
  local header = cjson.encode({ alg = "RS256", typ = "JWT", kid = key.private_key_id })
  local claims = cjson.encode({ iss = key.client_email, scope = scope, aud = key.token_uri or M.TOKEN_URI,
    iat = math.floor(now), exp = math.floor(now) + 3600 })
  local input = b64url(header) .. "." .. b64url(claims)
  local sig, err, code = crypto.sign_sha256(key.private_key, input)
  if not sig then return nil, err, code end
  return input .. "." .. b64url(sig)
end

-- POSTs a form to a token endpoint and reads { access_token, expires_in }.
local function token_request(ctx, endpoint, form, what)
  local res, err, code = retry.run(function()
    local r, e, c = http().request({ method = "POST", url = endpoint, body = url.encode_query(form),
      headers = { ["content-type"] = "application/x-www-form-urlencoded", accept = "application/json" },
      timeout = ctx.timeout })
    if not r then return nil, e, c end
    if r.status >= 500 or r.status == 429 then
      return fail.new("UNAVAILABLE", "%s: token endpoint %s answered HTTP %d", what, endpoint, r.status)
    end
    return r
  end, { deadline = ctx.deadline or 10, base = 0.1, cap = 1 })
  if not res then return nil, ("%s (%s token from %s)"):format(err, what, endpoint), code end
  local doc = cjson.decode(res.body or "")
  if res.status ~= 200 or type(doc) ~= "table" or type(doc.access_token) ~= "string" then
    local reason = type(doc) == "table" and (tostring(doc.error or "") .. " " .. tostring(doc.error_description or ""))
      or (res.body or ""):sub(1, 200)
    return fail.new("UNAUTHORIZED", "%s: token endpoint %s refused: HTTP %d %s", what, endpoint, res.status, reason)
  end
  return { token = doc.access_token, expires = ctx.now() + (tonumber(doc.expires_in) or 3600) }
end

local function service_account(ctx, key, path)
  for _, f in ipairs { "client_email", "private_key" } do
    if not nonempty(key[f]) then
      return fail.new("INVALID", "the service account key %s has no %s", path, f)
    end
  end
  return function()
    local assertion, err, code = M.jwt(key, ctx.scope, ctx.now())
    if not assertion then return nil, ("%s (service account key %s)"):format(err, path), code end
    return token_request(ctx, key.token_uri or M.TOKEN_URI, {
      grant_type = "urn:ietf:params:oauth:grant-type:jwt-bearer", assertion = assertion,
    }, "service account " .. key.client_email)
  end, "service account " .. key.client_email
end

local function authorized_user(ctx, key, path)
  for _, f in ipairs { "client_id", "client_secret", "refresh_token" } do
    if not nonempty(key[f]) then return fail.new("INVALID", "the credentials file %s has no %s", path, f) end
  end
  return function()
    return token_request(ctx, key.token_uri or M.TOKEN_URI, { grant_type = "refresh_token",
      client_id = key.client_id, client_secret = key.client_secret, refresh_token = key.refresh_token },
      "authorized user")
  end, "authorized user (" .. path .. ")"
end

local function from_file(ctx, path)
  local f, oerr = io.open(path, "rb")
  if not f then return fail.new("UNAUTHORIZED", "cannot read Google credentials %s: %s", path, tostring(oerr)) end
  local text = f:read("a")
  f:close()
  local key = cjson.decode(text)
  if type(key) ~= "table" then return fail.new("INVALID", "Google credentials %s are not JSON", path) end
  if key.type == "service_account" then return service_account(ctx, key, path) end
  if key.type == "authorized_user" then return authorized_user(ctx, key, path) end
  return fail.new("UNAUTHORIZED", "Google credentials %s have type %q, which autopgo does not support "
    .. "(service_account and authorized_user are)", path, tostring(key.type))
end

local function metadata(ctx)
  local host = nonempty(ctx.getenv("GCE_METADATA_HOST")) or nonempty(ctx.getenv("GCE_METADATA_ROOT"))
    or "169.254.169.254"
  local endpoint = ("http://%s/computeMetadata/v1/instance/service-accounts/default/token"):format(host)
  return function()
    local res, err, code = retry.run(function()
      local r, e, c = http().request({ method = "GET", url = endpoint .. "?scopes=" .. url.escape(ctx.scope),
        headers = { ["metadata-flavor"] = "Google" }, timeout = 3, connect_timeout = 1 })
      if not r then return nil, e, c end
      if r.status >= 500 then return fail.new("UNAVAILABLE", "metadata server answered HTTP %d", r.status) end
      return r
    end, { deadline = 4, base = 0.1, cap = 1 })
    if not res then return nil, ("%s (GCE metadata server %s)"):format(err, host), code end
    local doc = cjson.decode(res.body or "")
    if res.status ~= 200 or type(doc) ~= "table" or type(doc.access_token) ~= "string" then
      return fail.new("UNAUTHORIZED", "the GCE metadata server %s gave no token: HTTP %d %s", host, res.status,
        (res.body or ""):sub(1, 200))
    end
    return { token = doc.access_token, expires = ctx.now() + (tonumber(doc.expires_in) or 3600) }
  end, "GCE metadata server"
end

local NONE = "no Google credentials found: set GOOGLE_APPLICATION_CREDENTIALS to a service account key file, "
  .. "run `gcloud auth application-default login`, or run on GCE/GKE with a service account"

local function resolve(ctx)
  local path = nonempty(ctx.getenv("GOOGLE_APPLICATION_CREDENTIALS"))
  if path then return from_file(ctx, path) end
  local config = nonempty(ctx.getenv("CLOUDSDK_CONFIG")) or (ctx.home and (ctx.home .. "/.config/gcloud"))
  local adc = config and (config .. "/application_default_credentials.json")
  if adc and uv.fs_stat(adc) then return from_file(ctx, adc) end
  return metadata(ctx)
end

local Source = {}
Source.__index = Source

--- A token source. opts: scope, getenv, home, now, margin, timeout.
function M.new(opts)
  opts = opts or {}
  local ctx = { getenv = opts.getenv or os.getenv, now = opts.now or os.time, scope = opts.scope or M.SCOPE_RW,
    timeout = opts.timeout or 10 }
  ctx.home = opts.home or nonempty(ctx.getenv("HOME")) or uv.os_homedir()
  return setmetatable({ ctx = ctx, margin = opts.margin or M.REFRESH_MARGIN }, Source)
end

--- The current access token (cached; refreshed before expiry). Runs in a coroutine.
function Source:token()
  local now = self.ctx.now()
  local c = self.cached
  if c and now < c.expires - self.margin then return c.token end
  if self.refreshing then
    self.refreshing.wait()
    c = self.cached
    if c and self.ctx.now() < c.expires then return c.token end
    return nil, self.last_err, self.last_code
  end
  if not self.fetch then
    local fetch, name = resolve(self.ctx)
    if not fetch then return nil, name, async.error_code(name) end
    self.fetch, self.name = fetch, name
  end
  local ev = async.event()
  self.refreshing = ev
  local fresh, err, code = self.fetch()
  self.refreshing = nil
  if fresh then self.cached = fresh else self.last_err, self.last_code = err, code end
  ev.set()
  if fresh then return fresh.token end
  if self.name == "GCE metadata server" and not c then
    self.fetch = nil
    return fail.new("UNAUTHORIZED", "%s (%s)", NONE, tostring(err))
  end
  if c and now < c.expires then return c.token end
  return nil, err, code
end

--- Forgets the cached token (after the service refused it).
function Source:invalidate() self.cached = nil end

return M
