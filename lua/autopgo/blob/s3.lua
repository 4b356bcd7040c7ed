-- The S3 blob store (AWS S3 and S3-compatible servers such as Ceph RGW and MinIO), opened from
-- gocloud.dev s3blob URLs: s3://bucket?region=...&endpoint=...&use_path_style=true&...
--
-- Query options (as gocloud documents them): region, endpoint (a URL, or a host for which
-- disable_https / disableSSL picks http), use_path_style / s3ForcePathStyle, hostname_immutable,
-- profile, anonymous, dualstack, fips, accelerate, ssetype, kmskeyid, prefix; awssdk,
-- rate_limiter_capacity, request_checksum_calculation and response_checksum_validation are
-- accepted for compatibility and change nothing here. Credentials: autopgo.aws.credentials.
-- Requests are SigV4-signed: bodies in memory with their SHA-256, streamed bodies (files,
-- producers) in signed aws-chunked framing, so nothing is held to be hashed. Bodies above the
-- part size go up as a multipart upload, unless the write is conditional (If-Match /
-- If-None-Match), which goes up as one PUT (up to 5 GiB) so that every server checks it.
local fail = require "autopgo.fail"
local crypto = require("autopgo.core").crypto
local async = require "autopgo.async"
local url = require "autopgo.url"
local utc = require "autopgo.utc"
local xml = require "autopgo.xml"
local rest = require "autopgo.rest"
local blob = require "autopgo.blob"
local blobrest = require "autopgo.blob.rest"
local keys = require "autopgo.blob.keys"
local sigv4 = require "autopgo.aws.sigv4"
local credentials = require "autopgo.aws.credentials"

local M = {}

M.PART_SIZE = 16 * 1024 * 1024 -- bodies above this go up in parts of this size
M.CHUNK_SIZE = 64 * 1024 -- aws-chunked framing of streamed bodies
M.SMALL_FILE = 8 * 1024 * 1024 -- files up to this are hashed first and sent plain
M.MAX_SINGLE_PUT = 5 * 1024 * 1024 * 1024 -- S3's limit for one PUT

local KNOWN = {
  region = true, endpoint = true, disable_https = true, disableSSL = true, use_path_style = true,
  s3ForcePathStyle = true, hostname_immutable = true, profile = true, anonymous = true, dualstack = true,
  fips = true, accelerate = true, ssetype = true, kmskeyid = true, awssdk = true, rate_limiter_capacity = true,
  request_checksum_calculation = true, response_checksum_validation = true,
}

local Store = {}
Store.__index = Store

local function bools(q, names)
  local out = {}
  for _, name in ipairs(names) do
    local v, err, code = rest.parse_bool(name, q[name])
    if v == nil then return nil, err, code end
    out[name] = v
  end
  return out
end

-- Where requests go: { scheme, host (with port), path_style }.
local function endpoint_of(bucket, q, flags, region, getenv)
  local ep = q.endpoint
  if not ep or ep == "" then ep = getenv("AWS_ENDPOINT_URL_S3") or getenv("AWS_ENDPOINT_URL") end
  if ep == "" then ep = nil end
  local insecure = flags.disable_https or flags.disableSSL
  local path_style = flags.use_path_style or flags.s3ForcePathStyle or flags.hostname_immutable
  if ep then
    if not ep:match("^%a[%w+.-]*://") then ep = (insecure and "http://" or "https://") .. ep end
    local u, err = url.parse(ep)
    if not u or u.host == "" then return nil, err or ("INVALID: bad S3 endpoint %q"):format(ep), "INVALID" end
    local host = u.host:find(":", 1, true) and ("[" .. u.host .. "]") or u.host
    -- an IP address or localhost cannot carry the bucket as a subdomain
    if u.host:match("^[%d.]+$") or u.host:find(":", 1, true) or u.host == "localhost" then path_style = true end
    return { scheme = u.scheme, host = host .. (u.port and (":" .. u.port) or ""),
      base_path = (u.path or ""):gsub("/+$", ""), path_style = path_style }
  end
  local suffix = region:match("^cn%-") and "amazonaws.com.cn" or "amazonaws.com"
  local scheme = insecure and "http" or "https"
  if flags.accelerate then
    return { scheme = scheme, host = (flags.dualstack and "s3-accelerate.dualstack." or "s3-accelerate.") .. suffix,
      base_path = "", path_style = false }
  end
  local host = ("s3%s.%s%s.%s"):format(flags.fips and "-fips" or "", flags.dualstack and "dualstack." or "",
    region, suffix)
  -- a bucket with dots cannot be a TLS-valid virtual host
  if bucket:find(".", 1, true) and scheme == "https" then path_style = true end
  return { scheme = scheme, host = host, base_path = "", path_style = path_style }
end

--- Opens the store for a parsed s3:// URL. opts: deadline (s), part_size, getenv, home, now,
-- credentials (a source from autopgo.aws.credentials, for tests and sharing), insecure (skip
-- TLS verification), ca_file (default AWS_CA_BUNDLE), page_size (keys per list request, 1000).
function M.open(u, opts)
  opts = opts or {}
  local where, err, code = blobrest.parse_url(u, "s3", KNOWN, "bucket")
  if not where then return nil, err, code end
  local q, bucket = where.query, where.bucket
  local flags
  flags, err, code = bools(q, { "disable_https", "disableSSL", "use_path_style", "s3ForcePathStyle",
    "hostname_immutable", "anonymous", "dualstack", "fips", "accelerate" })
  if not flags then return nil, err, code end
  if q.ssetype and not ({ AES256 = true, ["aws:kms"] = true, ["aws:kms:dsse"] = true })[q.ssetype] then
    return fail.new("INVALID", "ssetype must be AES256, aws:kms or aws:kms:dsse, not %q", q.ssetype)
  end
  local getenv = opts.getenv or os.getenv
  local creds = opts.credentials
  if not creds and not flags.anonymous then
    creds = credentials.new({ profile = q.profile, region = q.region, getenv = getenv, home = opts.home,
      now = opts.now })
  end
  local region = q.region
  if not region or region == "" then
    region = (creds and creds:region()) or credentials.region({ getenv = getenv, home = opts.home }) or "us-east-1"
  end
  local ep
  ep, err, code = endpoint_of(bucket, q, flags, region, getenv)
  if not ep then return nil, err, code end
  local part_size = opts.part_size or M.PART_SIZE
  local self = setmetatable({
    name = where.name, bucket = bucket, prefix = where.prefix, key_rule = keys.s3, region = region, endpoint = ep,
    creds = creds,
    anonymous = flags.anonymous, part_size = part_size, deadline = opts.deadline, now = opts.now or os.time,
    sse = q.ssetype, kms_key = q.kmskeyid,
    insecure = opts.insecure or nil, ca_file = opts.ca_file or getenv("AWS_CA_BUNDLE"),
    page_size = opts.page_size or 1000,
  }, Store)
  self.ctx = { deadline = opts.deadline, name = self.name }
  return self
end

-- URL path and Host for a key ("" addresses the bucket).
function Store:locate(key)
  local ep = self.endpoint
  local escaped = key and key ~= "" and sigv4.uri_encode(key, true) or ""
  if ep.path_style then
    return ep.base_path .. "/" .. self.bucket .. (escaped ~= "" and ("/" .. escaped) or ""), ep.host
  end
  return ep.base_path .. "/" .. escaped, self.bucket .. "." .. ep.host
end

Store.object_key = blobrest.object_key

-- Builds a signed request. r = { method, key, query = list, headers, body | body_path |
-- body_producer+body_length, payload_hash, sink, timeout }.
function Store:request(r)
  local path, host = self:locate(r.key)
  local headers = { host = host }
  for k, v in pairs(r.headers or {}) do headers[k] = v end
  local query = sigv4.canonical_query(r.query)
  local target = ("%s://%s%s%s"):format(self.endpoint.scheme, host, path, query ~= "" and ("?" .. query) or "")
  local info, c
  if not self.anonymous then
    local err, code
    c, err, code = self.creds:get()
    if not c then return nil, err, code end
    info = sigv4.sign({ method = r.method, path = path, query = r.query, headers = headers,
      payload_hash = r.payload_hash or sigv4.EMPTY_SHA256 }, c,
      { region = self.region, service = "s3", time = self.now() })
  end
  return {
    method = r.method, url = target, headers = headers, body = r.body, body_path = r.body_path,
    body_producer = r.body_producer, body_length = r.body_length, sink = r.sink,
    timeout = r.timeout or 60, max_body = r.max_body, insecure = self.insecure, ca_file = self.ca_file,
  }, info, c
end

local AUTH_HINTS = {
  SignatureDoesNotMatch = "the secret access key does not match the access key id",
  InvalidAccessKeyId = "the access key id is not known to the service",
  AccessDenied = "the credentials are not allowed to do this",
  ExpiredToken = "the session token has expired",
  InvalidToken = "the session token is not valid",
  RequestTimeTooSkewed = "this machine's clock differs too much from the service's",
}

-- Turns an S3 error response into the house convention.
function Store:on_error(res, what)
  local doc = res.body and res.body ~= "" and xml.parse(res.body) or nil
  local scode = doc and xml.find_text(doc, "Code")
  local smsg = doc and xml.find_text(doc, "Message") or ""
  local code = rest.code_for_status(res.status)
  local hint
  if scode == "NoSuchKey" or scode == "NoSuchBucket" or scode == "NotFound" then
    code = "NOT_FOUND"
  elseif scode == "PreconditionFailed" or scode == "ConditionalRequestConflict" then
    code = "PRECONDITION_FAILED"
  elseif scode == "SlowDown" or scode == "RequestTimeout" or scode == "InternalError"
      or scode == "ServiceUnavailable" or scode == "OperationAborted" then
    code = "UNAVAILABLE"
  elseif scode == "ExpiredToken" or scode == "RequestExpired" then
    code = "UNAUTHORIZED"
    if self.creds and not self.retried_auth then
      -- refreshed credentials may fix it: one more attempt
      self.creds:invalidate()
      self.retried_auth = true
      hint = "retry"
    end
  elseif AUTH_HINTS[scode] or res.status == 401 or res.status == 403 then
    code = "UNAUTHORIZED"
  end
  if res.status == 409 and code == "INVALID" then code = "PRECONDITION_FAILED" end
  local detail = scode and (scode .. (smsg ~= "" and (": " .. smsg) or "")) or ("HTTP " .. res.status)
  if not scode and code == "UNAUTHORIZED" then
    detail = detail .. " (no error code in the answer: a wrong secret, an unknown key or a missing permission)"
  end
  if AUTH_HINTS[scode] then detail = detail .. " (" .. AUTH_HINTS[scode] .. ")" end
  if code == "NOT_FOUND" and (scode == "NoSuchBucket") then
    detail = ("bucket %s does not exist (NoSuchBucket)"):format(self.bucket)
  end
  return ("%s: %s %s: %s"):format(code, self.name, what, detail), code, nil, hint
end

Store.call = blobrest.call

-- If-Match for writes carries the ETag without its quotes: S3 accepts both forms, and Ceph RGW
-- (Pacific) compares the unquoted form only.
local function if_match_value(etag)
  return (etag:gsub('^W/', ''):gsub('^"(.*)"$', "%1"))
end

local function common_put_headers(self, opts)
  local h = { ["content-type"] = opts.content_type or "application/octet-stream" }
  if opts.if_match then h["if-match"] = if_match_value(opts.if_match) end
  if opts.if_none_match then h["if-none-match"] = opts.if_none_match end
  if self.sse then h["x-amz-server-side-encryption"] = self.sse end
  if self.kms_key then h["x-amz-server-side-encryption-aws-kms-key-id"] = self.kms_key end
  return h
end

-- Sends one piece (a whole object or a part; autopgo.blob.rest.piece) with a PUT: in memory,
-- signed with its SHA-256 and resent freely; else streamed from its reader in signed
-- aws-chunked framing, so it never has to be held or hashed in advance. Returns the response.
function Store:send_piece(what, okey, query, headers, piece)
  local res, err, code = self:call(what, function(_, _, last_err)
    local h = {}
    for k, v in pairs(headers) do h[k] = v end
    local timeout = blobrest.transfer_timeout(piece.size)
    if piece.data then
      return self:request({ method = "PUT", key = okey, query = query, headers = h, body = piece.data,
        payload_hash = sigv4.sha256_hex(piece.data), timeout = timeout })
    end
    local reader, rerr, rcode = piece:open(last_err)
    if not reader then return nil, rerr, rcode end
    local encoded
    if not self.anonymous then encoded = sigv4.streaming_headers(h, piece.size, M.CHUNK_SIZE) end
    local req, info, creds = self:request({ method = "PUT", key = okey, query = query, headers = h,
      payload_hash = self.anonymous and sigv4.UNSIGNED or sigv4.STREAMING, timeout = timeout })
    if not req then return nil, info, creds end
    local encode = info and sigv4.chunk_encoder(creds, info, { region = self.region, service = "s3" })
      or function(d) return d end
    local next_chunk, finished = blobrest.chunks(reader, piece.size, M.CHUNK_SIZE), false
    req.body_length = encoded or piece.size
    req.body_producer = function()
      if finished then return nil end
      local data, e = next_chunk()
      if data then return encode(data) end
      if e then return nil, e end
      finished = true
      if info then return encode("") end -- the final chunk of the framing
      return nil
    end
    return req
  end)
  piece:close()
  return res, err, code
end

local function put_single(self, key, src, opts, okey)
  local headers = common_put_headers(self, opts)
  local res, err, code
  if src.kind == "path" and src.size <= M.SMALL_FILE then
    -- small files: hashed on the thread pool, then streamed from disk (and resent freely)
    local digest
    digest, err, code = async.await(crypto.digest_file, "sha256", src.path)
    if not digest then return nil, err, code end
    res, err, code = self:call("put " .. key, function()
      return self:request({ method = "PUT", key = okey, headers = headers, body_path = src.path,
        payload_hash = crypto.hex(digest), timeout = blobrest.transfer_timeout(src.size) })
    end)
  else
    res, err, code = self:send_piece("put " .. key, okey, nil, headers, blobrest.piece(src, 0, src.size))
  end
  if not res then return nil, err, code end
  return { etag = res.headers.etag, size = src.size }
end

-- The ETag S3 gives a multipart object: MD5 of the parts' binary MD5s, "-", the part count.
-- Used when a server leaves it out of CompleteMultipartUpload's answer (Ceph RGW Pacific does).
local function multipart_etag(parts)
  local md5s = {}
  for i, etag in ipairs(parts) do
    local hex = etag:gsub('"', "")
    if not hex:match("^%x+$") or #hex ~= 32 then return nil end
    md5s[i] = hex:gsub("%x%x", function(b) return string.char(tonumber(b, 16)) end)
  end
  return ('"%s-%d"'):format(crypto.hex(crypto.digest("md5", table.concat(md5s))), #parts)
end

local function put_multipart(self, key, src, opts, okey)
  if opts.if_match or opts.if_none_match then
    -- checked before and sent again with the completion (see Store:put)
    local st, err, code = self:stat(key)
    if opts.if_none_match and st then
      return fail.new("PRECONDITION_FAILED", "%s put %s: the key exists", self.name, key)
    end
    if opts.if_match and not st then
      return nil, err, code == "NOT_FOUND" and "PRECONDITION_FAILED" or code
    end
    if opts.if_match and if_match_value(st.etag) ~= if_match_value(opts.if_match) then
      return fail.new("PRECONDITION_FAILED", "%s put %s: the etag is %s, not %s", self.name, key, st.etag,
        opts.if_match)
    end
  end
  local headers = common_put_headers(self, {
    content_type = opts.content_type,
  })
  local res, err, code = self:call("put " .. key .. " (start multipart upload)", function()
    return self:request({ method = "POST", key = okey, query = { { "uploads", "" } }, headers = headers })
  end)
  if not res then return nil, err, code end
  local doc = xml.parse(res.body or "")
  local upload_id = doc and xml.find_text(doc, "UploadId")
  if not upload_id then return fail.new("INVALID", "%s: no UploadId in the answer to CreateMultipartUpload",
    self.name) end
  local function abort()
    self:call("abort multipart upload of " .. key, function()
      return self:request({ method = "DELETE", key = okey, query = { { "uploadId", upload_id } } })
    end)
  end
  local parts, sent, n = {}, 0, 0
  while sent < src.size do
    n = n + 1
    local want = math.min(self.part_size, src.size - sent)
    res, err, code = self:send_piece(("put %s (part %d)"):format(key, n), okey,
      { { "partNumber", tostring(n) }, { "uploadId", upload_id } }, {}, blobrest.piece(src, sent, want))
    if not res then
      abort()
      return nil, err, code
    end
    parts[n] = res.headers.etag
    sent = sent + want
  end
  local body = { "<CompleteMultipartUpload>" }
  for i, etag in ipairs(parts) do
    body[#body + 1] = ("<Part><PartNumber>%d</PartNumber><ETag>%s</ETag></Part>"):format(i, xml.escape(etag))
  end
  body[#body + 1] = "</CompleteMultipartUpload>"
  body = table.concat(body)
  local hash = sigv4.sha256_hex(body)
  local complete_headers = { ["content-type"] = "application/xml" }
  if opts.if_match then complete_headers["if-match"] = if_match_value(opts.if_match) end
  if opts.if_none_match then complete_headers["if-none-match"] = opts.if_none_match end
  res, err, code = self:call("put " .. key .. " (complete multipart upload)", function()
    return self:request({ method = "POST", key = okey, query = { { "uploadId", upload_id } },
      headers = complete_headers, body = body, payload_hash = hash, timeout = 300 })
  end)
  if res then
    -- S3 may answer 200 with an error document once the response has started
    local cdoc = xml.parse(res.body or "")
    if cdoc and cdoc.tag == "Error" then
      res.status = 500
      err, code = self:on_error(res, "put " .. key .. " (complete multipart upload)")
      res = nil
    end
  end
  if not res then
    abort()
    return nil, err, code
  end
  local cdoc = xml.parse(res.body or "")
  local etag = cdoc and xml.find_text(cdoc, "ETag")
  if not etag or etag == "" then etag = res.headers.etag end
  if not etag or etag == "" then etag = multipart_etag(parts) end
  return { etag = etag, size = src.size }
end

--- store:put(key, body, opts) -> { etag, size }
function Store:put(key, body, opts)
  opts = opts or {}
  local okey, err, code = self:object_key(key)
  if not okey then return nil, err, code end
  local src
  src, err, code = blobrest.source(body)
  if not src then return nil, err, code end
  -- A conditional write goes up as one (streamed) PUT, where every S3 server checks the
  -- precondition atomically; not all check it on CompleteMultipartUpload (Ceph RGW Pacific
  -- ignores it there). Only bodies over 5 GiB must be multipart.
  local conditional = opts.if_match or opts.if_none_match
  if src.size > self.part_size and (not conditional or src.size > M.MAX_SINGLE_PUT) then
    return put_multipart(self, key, src, opts, okey)
  end
  return put_single(self, key, src, opts, okey)
end

--- store:get(key, opts) and store:stat(key): see autopgo.blob.rest.
function Store:get(key, opts) return blobrest.get(self, key, opts, if_match_value) end
function Store:stat(key) return blobrest.stat(self, key) end

--- store:delete(key) -> true (NOT_FOUND when absent: S3 itself does not say, so it is checked)
function Store:delete(key)
  local st, err, code = self:stat(key)
  if not st then return nil, err, code end
  local okey = self:object_key(key)
  local res
  res, err, code = self:call("delete " .. key, function()
    return self:request({ method = "DELETE", key = okey })
  end)
  if not res then return nil, err, code end
  return true
end

--- store:list(prefix, opts) -> entries sorted by key; every page (ListObjectsV2).
-- opts.page_size (default: the store's) is the page size asked for.
function Store:list(prefix, opts)
  opts = opts or {}
  prefix = prefix or ""
  local full = blobrest.list_prefix(self, prefix)
  local entries, token = {}, nil
  repeat
    local query = { { "list-type", "2" }, { "prefix", full },
      { "max-keys", tostring(opts.page_size or self.page_size) } }
    if token then query[#query + 1] = { "continuation-token", token } end
    local res, err, code = self:call("list " .. prefix, function()
      return self:request({ method = "GET", key = "", query = query })
    end)
    if not res then return nil, err, code end
    local doc
    doc, err = xml.parse(res.body or "")
    if not doc then return fail.new("INVALID", "%s: unreadable list answer: %s", self.name, err) end
    for _, c in ipairs(xml.children(doc, "Contents")) do
      local k = blobrest.listed_key(self, xml.find_text(c, "Key"))
      if k then
        entries[#entries + 1] = { key = k, size = tonumber(xml.find_text(c, "Size")) or 0,
          last_modified = utc.parse_iso8601(xml.find_text(c, "LastModified")), etag = xml.find_text(c, "ETag") }
      end
    end
    local truncated = xml.find_text(doc, "IsTruncated") == "true"
    token = truncated and xml.find_text(doc, "NextContinuationToken") or nil
    if truncated and not token then
      return fail.new("INVALID", "%s: a truncated list without NextContinuationToken", self.name)
    end
  until not token
  return blob.window(blobrest.sort_entries(entries), opts)
end

--- store:health() -> true | nil, err, code (a one-key list of the bucket, whose errors say why)
function Store:health()
  return blobrest.health(self, { method = "GET", key = "", query = { { "list-type", "2" }, { "max-keys", "1" } } })
end

--- store:create_bucket() -> true: not part of the store interface; for tests and setup tools.
-- An existing bucket owned by the caller is fine.
function Store:create_bucket()
  local body = ""
  if self.region ~= "us-east-1" and not self.endpoint.host:match("^127%.") then
    body = ("<CreateBucketConfiguration><LocationConstraint>%s</LocationConstraint></CreateBucketConfiguration>")
      :format(xml.escape(self.region))
  end
  local res, err, code = self:call("create bucket", function()
    return self:request({ method = "PUT", key = "", body = body, payload_hash = sigv4.sha256_hex(body) })
  end)
  if not res then
    if err and err:find("BucketAlreadyOwnedByYou", 1, true) then return true end
    return nil, err, code
  end
  return true
end

function Store.close(_) end

M.Store = Store
return M
