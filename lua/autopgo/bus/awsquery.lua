-- AWS query-protocol calls for the SQS and SNS buses: a form-encoded POST with Action and
-- Version, SigV4-signed with credentials found the AWS way (autopgo.aws.credentials), an XML
-- answer; throttling and 5xx are retried with jittered backoff (autopgo.rest.call). Also
-- the gocloud.dev URL options the two share (region, endpoint, profile, disable_https, ...).
--
--   local client = awsquery.new { service = "sqs", version = "2012-11-05", endpoint = ep,
--                                 region = "us-east-1", creds = source, name = "awssqs://..." }
--   local doc, err, code = client:call("ReceiveMessage", { { "QueueUrl", q }, ... }, { timeout = 30 })
local fail = require "autopgo.fail"
local crypto = require("autopgo.core").crypto
local events = require "autopgo.events"
local url = require "autopgo.url"
local xml = require "autopgo.xml"
local rest = require "autopgo.rest"
local sigv4 = require "autopgo.aws.sigv4"
local credentials = require "autopgo.aws.credentials"

local M = {}

-- gocloud.dev's AWS URL options (aws.ConfigFromURLParams / V2ConfigFromURLParams).
-- anonymous=true sends requests unsigned; s3ForcePathStyle only concerns S3 and is accepted (and
-- checked) so that one set of options works on every AWS URL, as in gocloud.
M.URL_OPTIONS = {
  region = true, endpoint = true, profile = true, disable_https = true, disableSSL = true, awssdk = true,
  dualstack = true, fips = true, hostname_immutable = true, rate_limiter_capacity = true, anonymous = true,
  s3ForcePathStyle = true,
}

-- The message attribute that carries the ordering key (the app).
M.KEY_ATTRIBUTE = "autopgo-key"

local Client = {}
Client.__index = Client

--- Parses the shared URL options: returns { region, endpoint (URL or nil), scheme, creds (a
-- credentials source), flags (the boolean options; flags.anonymous: do not sign) } or nil, err,
-- code. env_endpoint: the service's AWS_ENDPOINT_URL_<X> variable.
function M.options(q, opts, env_endpoint)
  local getenv = opts.getenv or os.getenv
  local flags = {}
  for _, name in ipairs { "disable_https", "disableSSL", "dualstack", "fips", "hostname_immutable", "anonymous",
    "s3ForcePathStyle" } do
    local v, err, code = rest.parse_bool(name, q[name])
    if v == nil then return nil, err, code end
    flags[name] = v
  end
  local creds = opts.credentials or credentials.new({ profile = q.profile, region = q.region, getenv = getenv,
    home = opts.home })
  local region = q.region
  if not region or region == "" then
    region = creds:region() or credentials.region({ getenv = getenv, home = opts.home }) or "us-east-1"
  end
  local endpoint = q.endpoint
  if not endpoint or endpoint == "" then endpoint = getenv(env_endpoint) or getenv("AWS_ENDPOINT_URL") end
  if endpoint == "" then endpoint = nil end
  local scheme = (flags.disable_https or flags.disableSSL) and "http" or "https"
  if endpoint and not endpoint:match("^%a[%w+.-]*://") then endpoint = scheme .. "://" .. endpoint end
  return { region = region, endpoint = endpoint, scheme = scheme, creds = creds, flags = flags }
end

--- The parameters of one message as SQS's SendMessage and SNS's Publish take it, which name them
-- differently: names = { target = { "QueueUrl", url } | { "TopicArn", arn }, body = "MessageBody" |
-- "Message", attribute = "MessageAttribute.%d" | "MessageAttributes.entry.%d" }. The key goes as
-- the autopgo-key attribute and, when `fifo`, as the MessageGroupId, with the envelope id (or the
-- body's SHA-256) as the MessageDeduplicationId.
function M.message_params(names, fifo, body, opts)
  local params = { names.target }
  local n = 0
  local function attribute(name, value)
    n = n + 1
    local prefix = names.attribute:format(n)
    params[#params + 1] = { prefix .. ".Name", name }
    params[#params + 1] = { prefix .. ".Value.DataType", "String" }
    params[#params + 1] = { prefix .. ".Value.StringValue", value }
  end
  if not utf8.len(body) then
    -- SQS and SNS carry text only: non-UTF-8 bodies go as base64, flagged the way gocloud does
    body = crypto.base64_encode(body)
    attribute("base64encoded", "true")
  end
  params[#params + 1] = { names.body, body }
  local key = opts and opts.key
  if key and key ~= "" then attribute(M.KEY_ATTRIBUTE, key) end
  if fifo then
    params[#params + 1] = { "MessageGroupId", (key and key ~= "") and key or "autopgo" }
    local id = (opts and opts.id) or events.id_of(body) or crypto.hex(crypto.digest("sha256", body))
    params[#params + 1] = { "MessageDeduplicationId", id:sub(1, 128) }
  end
  return params
end

--- The default endpoint of `service` in `region`.
function M.default_endpoint(service, region, scheme, flags)
  local suffix = region:match("^cn%-") and "amazonaws.com.cn" or "amazonaws.com"
  local host = ("%s%s.%s%s.%s"):format(service, flags and flags.fips and "-fips" or "",
    flags and flags.dualstack and "dualstack." or "", region, suffix)
  return (scheme or "https") .. "://" .. host
end

function M.new(o)
  local u, err, code = url.parse(o.endpoint)
  if not u or u.host == "" then
    return nil, err or ("INVALID: bad %s endpoint %q"):format(o.service, tostring(o.endpoint)), code or "INVALID"
  end
  local host = u.host:find(":", 1, true) and ("[" .. u.host .. "]") or u.host
  return setmetatable({
    service = o.service, version = o.version, region = o.region, creds = o.creds, name = o.name,
    anonymous = o.anonymous,
    scheme = u.scheme, host = host .. (u.port and (":" .. u.port) or ""),
    path = (u.path and u.path ~= "") and u.path or "/",
    insecure = o.insecure, ca_file = o.ca_file, deadline = o.deadline or 30, now = o.now or os.time,
  }, Client)
end

local function encode_params(action, version, params)
  local parts = { "Action=" .. url.escape(action), "Version=" .. url.escape(version) }
  for _, kv in ipairs(params) do parts[#parts + 1] = url.escape(kv[1]) .. "=" .. url.escape(tostring(kv[2])) end
  return table.concat(parts, "&")
end

local AUTH_CODES = {
  SignatureDoesNotMatch = true, InvalidClientTokenId = true, UnrecognizedClientException = true,
  AccessDenied = true, AccessDeniedException = true, AuthorizationError = true, ExpiredToken = true,
  InvalidSecurity = true, MissingAuthenticationToken = true, IncompleteSignature = true,
}
local NOT_FOUND_CODES = {
  ["AWS.SimpleQueueService.NonExistentQueue"] = true, QueueDoesNotExist = true, NotFound = true,
  NotFoundException = true,
}
local RETRY_CODES = {
  Throttling = true, ThrottlingException = true, RequestThrottled = true, ThrottledException = true,
  ServiceUnavailable = true, InternalError = true, InternalFailure = true, KMSThrottlingException = true,
}

function Client:on_error(res)
  local doc = res.body and res.body ~= "" and xml.parse(res.body) or nil
  local acode = doc and (xml.find_text(doc, "Error/Code") or xml.find_text(doc, "Code"))
  local amsg = doc and (xml.find_text(doc, "Error/Message") or xml.find_text(doc, "Message")) or ""
  local code = rest.code_for_status(res.status)
  if acode and NOT_FOUND_CODES[acode] then
    code = "NOT_FOUND"
  elseif acode and AUTH_CODES[acode] then
    code = "UNAUTHORIZED"
  elseif acode and RETRY_CODES[acode] then
    code = "UNAVAILABLE"
  elseif res.status == 400 and code ~= "UNAUTHORIZED" then
    code = "INVALID"
  end
  local detail = acode and (acode .. (amsg ~= "" and (": " .. amsg) or "")) or ("HTTP " .. res.status)
  return ("%s: %s: %s"):format(code, self.name, detail), code
end

--- Calls `action` with params (a list of { name, value }); returns the parsed XML answer or
-- nil, err, code. opts.timeout: seconds for one attempt (long polls need more than the default);
-- opts.cancel: an autopgo.http canceler (a reader's close stops its long poll with it).
function Client:call(action, params, opts)
  opts = opts or {}
  local body = encode_params(action, self.version, params or {})
  local res, err, code = rest.call({ deadline = opts.deadline or self.deadline, name = self.name }, function()
    local headers = {
      host = self.host,
      ["content-type"] = "application/x-www-form-urlencoded; charset=utf-8",
    }
    if not self.anonymous then
      local creds, cerr, ccode = self.creds:get()
      if not creds then return nil, cerr, ccode end
      sigv4.sign({ method = "POST", path = self.path, query = {}, headers = headers,
        payload_hash = sigv4.sha256_hex(body) }, creds, { region = self.region, service = self.service,
        time = self.now() })
    end
    return {
      method = "POST", url = ("%s://%s%s"):format(self.scheme, self.host, self.path), headers = headers,
      body = body, timeout = opts.timeout or 30, insecure = self.insecure, ca_file = self.ca_file,
      cancel = opts.cancel,
    }
  end, function(r) return self:on_error(r) end)
  if not res then return nil, err, code end
  local doc, perr = xml.parse(res.body or "")
  if not doc then
    return fail.new("UNAVAILABLE", "%s: unreadable answer: %s", self.name, tostring(perr))
  end
  return doc
end

return M
