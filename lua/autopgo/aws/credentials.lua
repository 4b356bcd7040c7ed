-- AWS credentials found the way the AWS CLI and SDKs find them, in this order:
--   1. AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (/ AWS_SESSION_TOKEN) in the environment;
--   2. AWS_WEB_IDENTITY_TOKEN_FILE + AWS_ROLE_ARN: STS AssumeRoleWithWebIdentity (Kubernetes IRSA);
--   3. the shared credentials/config files, profile AWS_PROFILE (or the URL's profile=, or
--      "default"): static keys, role_arn with web_identity_token_file, source_profile or
--      credential_source, and credential_process;
--   4. the ECS container endpoint (AWS_CONTAINER_CREDENTIALS_RELATIVE_URI / _FULL_URI, with
--      AWS_CONTAINER_AUTHORIZATION_TOKEN[_FILE]);
--   5. EC2 instance metadata, IMDSv2 (AWS_EC2_METADATA_SERVICE_ENDPOINT, AWS_EC2_METADATA_DISABLED).
-- The first source that is configured is the one used; its failure is reported, not skipped.
-- Temporary credentials are cached and refreshed `margin` seconds before they expire (one
-- refresh at a time; callers wait for it). STS endpoints: AWS_ENDPOINT_URL_STS or
-- AWS_ENDPOINT_URL, else https://sts.<region>.amazonaws.com.
--
--   local source = credentials.new { profile = "x", getenv = os.getenv }
--   local creds, err, code = source:get()   -- in a coroutine
--   -- creds = { access_key_id, secret_access_key, session_token?, expires? (Unix s), source }
local fail = require "autopgo.fail"
local uv = require "luv"
local cjson = require "cjson.safe"
local async = require "autopgo.async"
local log = require "autopgo.log"
local retry = require "autopgo.retry"
local url = require "autopgo.url"
local utc = require "autopgo.utc"
local xml = require "autopgo.xml"
local sigv4 = require "autopgo.aws.sigv4"
local shared_config = require "autopgo.aws.shared_config"

local M = {}

M.REFRESH_MARGIN = 300

local function http() return require "autopgo.http" end

local function nonempty(v) return v ~= nil and v ~= "" and v or nil end

local function read_file(path)
  local f, err = io.open(path, "rb")
  if not f then return nil, err end
  local data = f:read("a")
  f:close()
  return data
end

-- One HTTP call with a short retry loop for transient failures (metadata services and STS are
-- occasionally slow or throttled).
local function request(ctx, req)
  req.timeout = req.timeout or ctx.timeout
  return retry.run(function()
    local res, err, code = http().request(req)
    if not res then return nil, err, code end
    if res.status == 429 or res.status >= 500 then
      return fail.new("UNAVAILABLE", "%s %s answered HTTP %d", req.method or "GET", req.url, res.status)
    end
    return res
  end, { deadline = ctx.deadline or 10, base = 0.1, cap = 1 })
end

local function from_json_document(doc, source)
  local id = nonempty(doc.AccessKeyId)
  local secret = nonempty(doc.SecretAccessKey)
  if not id or not secret then return fail.new("INVALID", "%s returned no AccessKeyId/SecretAccessKey", source) end
  local expires = doc.Expiration and utc.parse_iso8601(doc.Expiration)
  return { access_key_id = id, secret_access_key = secret,
    session_token = nonempty(doc.Token) or nonempty(doc.SessionToken), expires = expires, source = source }
end

-- STS ---------------------------------------------------------------------------------------

local function sts_endpoint(ctx)
  local ep = nonempty(ctx.getenv("AWS_ENDPOINT_URL_STS")) or nonempty(ctx.getenv("AWS_ENDPOINT_URL"))
  if ep then return ep end
  local region = M.region(ctx)
  if region then return ("https://sts.%s.amazonaws.com/"):format(region) end
  return "https://sts.amazonaws.com/"
end

local STS_AUTH_ERRORS = {
  AccessDenied = true, InvalidIdentityToken = true, ExpiredTokenException = true, ExpiredToken = true,
  InvalidClientTokenId = true, SignatureDoesNotMatch = true, IncompleteSignature = true,
}

--- Calls an STS action (form POST); signed with `signer` creds when given. Returns the parsed
-- credentials of <action>Result/Credentials.
local function sts_call(ctx, action, params, signer)
  local endpoint = sts_endpoint(ctx)
  local u, perr = url.parse(endpoint)
  if not u then return nil, perr, "INVALID" end
  params.Action, params.Version = action, "2011-06-15"
  local body = url.encode_query(params)
  local host = u.host .. (u.port and (":" .. u.port) or "")
  local headers = { host = host, ["content-type"] = "application/x-www-form-urlencoded; charset=utf-8",
    accept = "application/xml" }
  if signer then
    local path = u.path ~= "" and u.path or "/"
    sigv4.sign({ method = "POST", path = path, headers = headers, payload_hash = sigv4.sha256_hex(body) },
      signer, { region = M.region(ctx) or "us-east-1", service = "sts", time = ctx.now() })
  end
  local res, err, code = request(ctx, { method = "POST", url = endpoint, headers = headers, body = body })
  if not res then return nil, ("%s (STS %s at %s)"):format(err, action, endpoint), code end
  local doc = xml.parse(res.body or "")
  if res.status ~= 200 then
    local ecode = doc and xml.find_text(doc, "Error/Code") or ("HTTP " .. res.status)
    local emsg = doc and xml.find_text(doc, "Error/Message") or ""
    local c = STS_AUTH_ERRORS[ecode] and "UNAUTHORIZED" or (res.status >= 500 and "UNAVAILABLE" or "INVALID")
    return fail.new(c, "STS %s at %s failed: %s %s", action, endpoint, ecode, emsg)
  end
  local c = doc and xml.find(doc, action .. "Result/Credentials")
  if not c then return fail.new("INVALID", "STS %s at %s: no Credentials in the answer", action, endpoint) end
  return {
    access_key_id = xml.find_text(c, "AccessKeyId"), secret_access_key = xml.find_text(c, "SecretAccessKey"),
    session_token = xml.find_text(c, "SessionToken"), expires = utc.parse_iso8601(xml.find_text(c, "Expiration")),
  }
end

local function session_name(ctx, configured)
  return nonempty(configured) or ("autopgo-%d"):format(math.floor(ctx.now()))
end

local function web_identity(ctx, role_arn, token_file, name, source)
  return function()
    local token, err = read_file(token_file)
    if not token then return fail.new("UNAUTHORIZED", "cannot read the web identity token %s: %s", token_file, err) end
    local creds, serr, code = sts_call(ctx, "AssumeRoleWithWebIdentity", {
      RoleArn = role_arn, RoleSessionName = session_name(ctx, name), WebIdentityToken = token:gsub("%s+$", ""),
    })
    if not creds then return nil, serr, code end
    creds.source = source
    return creds
  end
end

local function assume_role(ctx, role_arn, base_fetch, profile, source)
  return function()
    local base, err, code = base_fetch()
    if not base then return nil, err, code end
    local params = { RoleArn = role_arn, RoleSessionName = session_name(ctx, profile.role_session_name) }
    if nonempty(profile.external_id) then params.ExternalId = profile.external_id end
    if nonempty(profile.duration_seconds) then params.DurationSeconds = profile.duration_seconds end
    local creds, serr, scode = sts_call(ctx, "AssumeRole", params, base)
    if not creds then return nil, serr, scode end
    creds.source = source
    return creds
  end
end

-- Environment -------------------------------------------------------------------------------

local function env_static(ctx)
  local id = nonempty(ctx.getenv("AWS_ACCESS_KEY_ID")) or nonempty(ctx.getenv("AWS_ACCESS_KEY"))
  local secret = nonempty(ctx.getenv("AWS_SECRET_ACCESS_KEY")) or nonempty(ctx.getenv("AWS_SECRET_KEY"))
  if not id and not secret then return nil end
  return function()
    if not id or not secret then
      return fail.new("UNAUTHORIZED", "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY must both be set")
    end
    return { access_key_id = id, secret_access_key = secret,
      session_token = nonempty(ctx.getenv("AWS_SESSION_TOKEN")), source = "environment" }
  end
end

local function env_web_identity(ctx)
  local file = nonempty(ctx.getenv("AWS_WEB_IDENTITY_TOKEN_FILE"))
  local role = nonempty(ctx.getenv("AWS_ROLE_ARN"))
  if not file or not role then return nil end
  return web_identity(ctx, role, file, ctx.getenv("AWS_ROLE_SESSION_NAME"), "web identity (" .. role .. ")")
end

-- ECS container endpoint --------------------------------------------------------------------

local ECS_HOST = "http://169.254.170.2"
local ALLOWED_HTTP_HOSTS = { ["127.0.0.1"] = true, localhost = true, ["::1"] = true,
  ["169.254.170.2"] = true, ["169.254.170.23"] = true, ["fd00:ec2::23"] = true }

local function ecs(ctx)
  local rel = nonempty(ctx.getenv("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"))
  local full = nonempty(ctx.getenv("AWS_CONTAINER_CREDENTIALS_FULL_URI"))
  if not rel and not full then return nil end
  local endpoint = rel and (ECS_HOST .. rel) or full
  return function()
    local u = url.parse(endpoint)
    if not u or (u.scheme ~= "https" and not (u.scheme == "http" and
        (ALLOWED_HTTP_HOSTS[u.host] or u.host:match("^127%.")))) then
      return fail.new("INVALID", "AWS_CONTAINER_CREDENTIALS_FULL_URI %s must be https or a loopback/ECS address",
        endpoint)
    end
    local headers = { accept = "application/json" }
    local token_file = nonempty(ctx.getenv("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"))
    local token = nonempty(ctx.getenv("AWS_CONTAINER_AUTHORIZATION_TOKEN"))
    if token_file then
      local t, err = read_file(token_file)
      if not t then return fail.new("UNAUTHORIZED", "cannot read %s: %s", token_file, err) end
      token = t:gsub("%s+$", "")
    end
    if token then headers.authorization = token end
    local res, err, code = request(ctx, { method = "GET", url = endpoint, headers = headers, timeout = 5,
      connect_timeout = 2 })
    if not res then return nil, err .. " (ECS container credentials endpoint)", code end
    if res.status ~= 200 then
      return fail.new((res.status == 401 or res.status == 403) and "UNAUTHORIZED" or "UNAVAILABLE",
        "the container credentials endpoint %s answered HTTP %d: %s", endpoint, res.status,
        (res.body or ""):sub(1, 200))
    end
    local doc = cjson.decode(res.body or "")
    if type(doc) ~= "table" then return fail.new("INVALID", "the container credentials endpoint returned no JSON") end
    return from_json_document(doc, "ECS container endpoint")
  end
end

-- EC2 instance metadata (IMDSv2) -----------------------------------------------------------

local function imds(ctx)
  local disabled = (ctx.getenv("AWS_EC2_METADATA_DISABLED") or ""):lower()
  if disabled == "true" then return nil end
  local base = (nonempty(ctx.getenv("AWS_EC2_METADATA_SERVICE_ENDPOINT")) or "http://169.254.169.254"):gsub("/+$", "")
  return function()
    local common = { timeout = 2, connect_timeout = 1 }
    local function call(method, path, headers)
      local req = { method = method, url = base .. path, headers = headers }
      for k, v in pairs(common) do req[k] = v end
      return request({ timeout = ctx.timeout, deadline = 4 }, req)
    end
    local res, err, code = call("PUT", "/latest/api/token", { ["x-aws-ec2-metadata-token-ttl-seconds"] = "21600" })
    if not res then return nil, err .. " (EC2 instance metadata)", code end
    if res.status ~= 200 then
      return fail.new("UNAVAILABLE", "EC2 instance metadata %s refused a session token: HTTP %d", base, res.status)
    end
    local auth = { ["x-aws-ec2-metadata-token"] = res.body }
    res, err, code = call("GET", "/latest/meta-data/iam/security-credentials/", auth)
    if not res then return nil, err .. " (EC2 instance metadata)", code end
    if res.status == 404 then return fail.new("UNAUTHORIZED", "this EC2 instance has no IAM role attached") end
    if res.status ~= 200 then return fail.new("UNAVAILABLE", "EC2 instance metadata answered HTTP %d", res.status) end
    local role = (res.body or ""):match("^%s*([^\r\n]+)")
    if not role then return fail.new("UNAUTHORIZED", "this EC2 instance has no IAM role attached") end
    res, err, code = call("GET", "/latest/meta-data/iam/security-credentials/" .. url.escape(role), auth)
    if not res then return nil, err .. " (EC2 instance metadata)", code end
    if res.status ~= 200 then
      return fail.new("UNAVAILABLE", "EC2 instance metadata: role %s answered HTTP %d", role, res.status)
    end
    local doc = cjson.decode(res.body or "")
    if type(doc) ~= "table" then return fail.new("INVALID", "EC2 instance metadata returned no JSON for %s", role) end
    if doc.Code and doc.Code ~= "Success" then
      return fail.new("UNAUTHORIZED", "EC2 instance metadata: %s %s", doc.Code, tostring(doc.Message or ""))
    end
    return from_json_document(doc, "EC2 instance metadata (" .. role .. ")")
  end
end

-- credential_process ------------------------------------------------------------------------

local function run_process(command, timeout_ms)
  local stdout, stderr = uv.new_pipe(), uv.new_pipe()
  local out, errout = {}, {}
  local exited, closed = async.event(), 0
  local streams = async.event()
  local handle, pid = uv.spawn("/bin/sh", { args = { "-c", command }, stdio = { nil, stdout, stderr } },
    function(code) exited.set(code) end)
  if not handle then
    stdout:close(); stderr:close()
    return nil, tostring(pid)
  end
  local function reader(buf)
    return function(_, data)
      if data then buf[#buf + 1] = data else
        closed = closed + 1
        if closed == 2 then streams.set() end
      end
    end
  end
  stdout:read_start(reader(out))
  stderr:read_start(reader(errout))
  local code = exited.wait(timeout_ms)
  if not code then uv.kill(pid, "sigkill"); exited.wait(2000) end
  streams.wait(2000)
  for _, h in ipairs { stdout, stderr, handle } do
    if not h:is_closing() then h:close() end
  end
  if not code then return nil, "timed out" end
  if code ~= 0 then return nil, ("exited with %d: %s"):format(code, table.concat(errout):sub(1, 300)) end
  return table.concat(out)
end

local function credential_process(command, profile_name)
  return function()
    local out, err = run_process(command, 60000)
    if not out then return fail.new("UNAUTHORIZED", "credential_process of profile %s: %s", profile_name, err) end
    local doc = cjson.decode(out)
    if type(doc) ~= "table" then
      return fail.new("INVALID", "credential_process of profile %s printed no JSON", profile_name)
    end
    if doc.Version ~= nil and math.tointeger(doc.Version) ~= 1 then
      return fail.new("INVALID", "credential_process of profile %s: unsupported Version %s", profile_name,
        tostring(doc.Version))
    end
    return from_json_document(doc, "credential_process (profile " .. profile_name .. ")")
  end
end

-- Shared files -------------------------------------------------------------------------------

local function profile_provider(ctx, name, explicit, seen)
  seen = seen or {}
  if seen[name] then return fail.new("INVALID", "profile %s: source_profile loop", name) end
  seen[name] = true
  local p = shared_config.profile(ctx.files(), name)
  if not p then
    if explicit then
      return fail.new("INVALID", "AWS profile %q not found in %s or %s", name,
        tostring(ctx.files().credentials_path), tostring(ctx.files().config_path))
    end
    return nil
  end
  local label = "profile " .. name
  if nonempty(p.role_arn) then
    if nonempty(p.web_identity_token_file) then
      return web_identity(ctx, p.role_arn, shared_config.expand(p.web_identity_token_file, ctx.home),
        p.role_session_name, label .. " (web identity)")
    end
    local base
    if nonempty(p.source_profile) then
      if p.source_profile == name then
        -- a profile that is its own source uses its static keys to assume the role
        base = function()
          if not nonempty(p.aws_access_key_id) then
            return fail.new("UNAUTHORIZED", "profile %s is its own source_profile but has no keys", name)
          end
          return { access_key_id = p.aws_access_key_id, secret_access_key = p.aws_secret_access_key,
            session_token = nonempty(p.aws_session_token) }
        end
      else
        local inner, ierr = profile_provider(ctx, p.source_profile, true, seen)
        if not inner then return nil, ierr end
        base = inner
      end
    elseif nonempty(p.credential_source) then
      local cs = p.credential_source
      base = cs == "Environment" and env_static(ctx) or cs == "EcsContainer" and ecs(ctx)
        or cs == "Ec2InstanceMetadata" and imds(ctx) or nil
      if not base then
        return fail.new("INVALID", "profile %s: credential_source %s is not available", name, cs)
      end
    else
      return fail.new("INVALID", "profile %s has role_arn but no source_profile, credential_source or "
        .. "web_identity_token_file", name)
    end
    return assume_role(ctx, p.role_arn, base, p, label .. " (assume role " .. p.role_arn .. ")")
  end
  if nonempty(p.aws_access_key_id) then
    return function()
      if not nonempty(p.aws_secret_access_key) then
        return fail.new("UNAUTHORIZED", "profile %s has aws_access_key_id but no aws_secret_access_key", name)
      end
      return { access_key_id = p.aws_access_key_id, secret_access_key = p.aws_secret_access_key,
        session_token = nonempty(p.aws_session_token), source = label }
    end
  end
  if nonempty(p.credential_process) then return credential_process(p.credential_process, name) end
  if nonempty(p.sso_start_url) or nonempty(p.sso_session) then
    return fail.new("UNAUTHORIZED", "profile %s uses AWS SSO, which autopgo does not support; export "
      .. "credentials (aws configure export-credentials) or use another profile", name)
  end
  if explicit then return fail.new("UNAUTHORIZED", "profile %s has no credentials", name) end
  return nil
end

-- The source ---------------------------------------------------------------------------------

local function make_ctx(opts)
  local ctx = {
    getenv = opts.getenv or os.getenv,
    home = opts.home,
    now = opts.now or os.time,
    timeout = opts.timeout or 10,
  }
  if not ctx.home then ctx.home = nonempty(ctx.getenv("HOME")) or uv.os_homedir() end
  ctx.profile_name = nonempty(opts.profile) or nonempty(ctx.getenv("AWS_PROFILE"))
    or nonempty(ctx.getenv("AWS_DEFAULT_PROFILE"))
  ctx.explicit_profile = ctx.profile_name ~= nil
  ctx.profile_name = ctx.profile_name or "default"
  ctx.region_override = opts.region
  local files
  ctx.files = function()
    files = files or shared_config.load(ctx.getenv, ctx.home)
    return files
  end
  return ctx
end

--- The region to use: explicit, AWS_REGION, AWS_DEFAULT_REGION, then the profile's region.
function M.region(opts)
  local ctx = opts.files and opts or make_ctx(opts)
  local r = nonempty(ctx.region_override) or nonempty(ctx.getenv("AWS_REGION"))
    or nonempty(ctx.getenv("AWS_DEFAULT_REGION"))
  if r then return r end
  local p = shared_config.profile(ctx.files(), ctx.profile_name)
  return p and nonempty(p.region)
end

-- Picks the provider: the first configured source in the documented order.
local function resolve(ctx)
  local p = env_static(ctx)
  if p then return p, "environment" end
  p = env_web_identity(ctx)
  if p then return p, "web identity" end
  local perr
  p, perr = profile_provider(ctx, ctx.profile_name, ctx.explicit_profile)
  if p then return p, "profile " .. ctx.profile_name end
  if perr then return nil, perr end
  p = ecs(ctx)
  if p then return p, "ECS container endpoint" end
  p = imds(ctx)
  if p then return p, "EC2 instance metadata" end
  return nil
end

local Source = {}
Source.__index = Source

--- A credential source (see the file comment). opts: profile, region, getenv, home, now,
-- margin (seconds before expiry to refresh, default 300), timeout, static = { access_key_id,
-- secret_access_key, session_token } (skips the chain).
function M.new(opts)
  opts = opts or {}
  local ctx = make_ctx(opts)
  local self = setmetatable({ ctx = ctx, margin = opts.margin or M.REFRESH_MARGIN }, Source)
  if opts.static then
    local s = opts.static
    self.fetch = function()
      return { access_key_id = s.access_key_id, secret_access_key = s.secret_access_key,
        session_token = s.session_token, source = "static" }
    end
    self.name = "static"
  end
  return self
end

--- The region for this source (see M.region).
function Source:region() return M.region(self.ctx) end

local NONE_FOUND = "no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE "
  .. "(shared config files), AWS_WEB_IDENTITY_TOKEN_FILE and AWS_ROLE_ARN, or run with an ECS task role or "
  .. "an EC2 instance profile"

--- Current credentials (cached; refreshed before expiry). Runs in a coroutine.
function Source:get()
  local now = self.ctx.now()
  local c = self.cached
  if c and (not c.expires or now < c.expires - self.margin) then return c end
  if self.refreshing then
    self.refreshing.wait()
    c = self.cached
    if c and (not c.expires or self.ctx.now() < c.expires) then return c end
    return nil, self.last_err, self.last_code
  end
  if not self.fetch then
    local fetch, name_or_err = resolve(self.ctx)
    if not fetch then
      if name_or_err then return nil, name_or_err, async.error_code(name_or_err) end
      return fail.new("UNAUTHORIZED", NONE_FOUND)
    end
    self.fetch, self.name = fetch, name_or_err
  end
  local ev = async.event()
  self.refreshing = ev
  local ok, fresh, err, code = pcall(self.fetch)
  self.refreshing = nil
  if not ok then fresh, err, code = fail.new("INVALID", tostring(fresh)) end
  if fresh then
    self.cached = fresh
  else
    self.last_err, self.last_code = err, code
  end
  ev.set()
  if fresh then return fresh end
  if self.fetch and self.name == "EC2 instance metadata" and not c then
    -- nothing else was configured and there is no instance metadata either
    err = ("UNAUTHORIZED: %s (instance metadata: %s)"):format(NONE_FOUND, tostring(err))
    code = "UNAUTHORIZED"
    self.fetch, self.name = nil, nil
  end
  if c and c.expires and now < c.expires then
    log.warn("aws credentials: refresh failed, using the current ones until they expire",
      "source", c.source, "error", err)
    return c
  end
  return nil, err, code
end

--- Forgets the cached credentials (e.g. after the service said they expired).
function Source:invalidate()
  self.cached = nil
end

return M
