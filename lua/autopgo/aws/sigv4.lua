-- AWS Signature Version 4: canonical requests, the derived signing key, the Authorization header
-- and presigned query strings, as the SigV4 documentation and its published test suite define
-- them. S3 signs the path as sent; every other service encodes it a second time.
--
--   local info = sigv4.sign(req, creds, { region = "us-east-1", service = "s3", time = os.time() })
--   req = { method = "PUT", path = "/bucket/key%20x", query = { { "uploads", "" } },
--           headers = { host = "s3.amazonaws.com", ... }, payload_hash = "<hex>" | sigv4.UNSIGNED }
--   creds = { access_key_id, secret_access_key, session_token? }
-- sign() adds x-amz-date, x-amz-security-token (with a session token), x-amz-content-sha256
-- (for S3) and Authorization to req.headers, and returns the intermediate strings for debugging.
local crypto = require("autopgo.core").crypto
local utc = require "autopgo.utc"

local M = {}

M.ALGORITHM = "AWS4-HMAC-SHA256"
M.UNSIGNED = "UNSIGNED-PAYLOAD"
M.EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
M.STREAMING = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"

-- Headers that proxies and HTTP stacks may change or drop; signing them would break requests.
local UNSIGNED_HEADERS = {
  authorization = true, ["user-agent"] = true, expect = true, connection = true,
  ["transfer-encoding"] = true, ["content-length"] = true, ["x-amzn-trace-id"] = true,
}

--- RFC 3986 percent-encoding with upper-case hex, as SigV4 requires; "/" kept if keep_slash.
function M.uri_encode(s, keep_slash)
  local pattern = keep_slash and "[^%w%-%._~/]" or "[^%w%-%._~]"
  return (tostring(s):gsub(pattern, function(c) return ("%%%02X"):format(c:byte()) end))
end

--- Lower-case hex SHA-256 of a string.
function M.sha256_hex(s) return crypto.hex(crypto.digest("sha256", s)) end

--- The canonical URI of an already-encoded request path. double_encode (all services but S3)
-- encodes each segment once more.
function M.canonical_uri(path, double_encode)
  if path == nil or path == "" then return "/" end
  if double_encode then return M.uri_encode(path, true) end
  return path
end

local function query_pairs(query)
  local pairs_list = {}
  if type(query) == "string" then
    local url = require "autopgo.url"
    for pair in query:gmatch("[^&]+") do
      local k, v = pair:match("^([^=]*)=?(.*)$")
      pairs_list[#pairs_list + 1] = { url.unescape(k), url.unescape(v) }
    end
  elseif query and query[1] ~= nil then
    for _, kv in ipairs(query) do pairs_list[#pairs_list + 1] = { kv[1], kv[2] or "" } end
  elseif query then
    for k, v in pairs(query) do pairs_list[#pairs_list + 1] = { k, v } end
  end
  return pairs_list
end

--- The canonical query string of a query given as a list of { name, value } (decoded), a map,
-- or a raw query string. It is also a correct query string to put on the wire.
function M.canonical_query(query)
  local enc = {}
  for _, kv in ipairs(query_pairs(query)) do
    enc[#enc + 1] = { M.uri_encode(kv[1]), M.uri_encode(tostring(kv[2])) }
  end
  table.sort(enc, function(a, b)
    if a[1] ~= b[1] then return a[1] < b[1] end
    return a[2] < b[2]
  end)
  local out = {}
  for i, kv in ipairs(enc) do out[i] = kv[1] .. "=" .. kv[2] end
  return table.concat(out, "&")
end

local function trim_value(v)
  return (tostring(v):gsub("^%s+", ""):gsub("%s+$", ""):gsub("%s+", " "))
end

--- Canonical headers and the signed-headers list of a header map (name -> value or list).
-- sign_length signs Content-Length too (streaming uploads, where it is fixed in advance).
function M.canonical_headers(headers, sign_length)
  local by_name = {}
  local names = {}
  for name, value in pairs(headers) do
    local lname = name:lower()
    if not UNSIGNED_HEADERS[lname] or (sign_length and lname == "content-length") then
      if not by_name[lname] then
        by_name[lname] = {}
        names[#names + 1] = lname
      end
      local values = type(value) == "table" and value or { value }
      for _, v in ipairs(values) do table.insert(by_name[lname], trim_value(v)) end
    end
  end
  table.sort(names)
  local lines = {}
  for i, name in ipairs(names) do lines[i] = name .. ":" .. table.concat(by_name[name], ",") .. "\n" end
  return table.concat(lines), table.concat(names, ";")
end

--- The canonical request string and the signed-headers list.
function M.canonical_request(req, double_encode, sign_length)
  local headers, signed = M.canonical_headers(req.headers or {}, sign_length)
  return table.concat({
    req.method:upper(),
    M.canonical_uri(req.path, double_encode),
    M.canonical_query(req.query),
    headers,
    signed,
    req.payload_hash or M.EMPTY_SHA256,
  }, "\n"), signed
end

-- Derived keys change once a day per region and service; keep the few in use.
local key_cache, key_count = {}, 0

--- The derived signing key kSigning = HMAC chain over date, region, service, "aws4_request".
function M.signing_key(secret, date, region, service)
  local cache_key = table.concat({ secret, date, region, service }, "\0")
  local k = key_cache[cache_key]
  if k then return k end
  k = crypto.hmac("sha256", "AWS4" .. secret, date)
  k = crypto.hmac("sha256", k, region)
  k = crypto.hmac("sha256", k, service)
  k = crypto.hmac("sha256", k, "aws4_request")
  if key_count >= 32 then key_cache, key_count = {}, 0 end
  key_cache[cache_key], key_count = k, key_count + 1
  return k
end

--- Signs a canonical request: returns signature (hex), string_to_sign, credential scope.
function M.signature(secret, amz_date, region, service, canonical_request)
  local date = amz_date:sub(1, 8)
  local scope = ("%s/%s/%s/aws4_request"):format(date, region, service)
  local sts = table.concat({ M.ALGORITHM, amz_date, scope, M.sha256_hex(canonical_request) }, "\n")
  local sig = crypto.hex(crypto.hmac("sha256", M.signing_key(secret, date, region, service), sts))
  return sig, sts, scope
end

local function header_key(headers, name)
  for k in pairs(headers) do
    if k:lower() == name then return k end
  end
end

local function set_header(headers, name, value)
  local existing = header_key(headers, name)
  if existing then headers[existing] = nil end
  headers[name] = value
end

local function amz_date_of(opts)
  return opts.amz_date or utc.amz_date(opts.time or os.time())
end

--- Signs req in place with an Authorization header (see the file comment).
-- opts: region, service, time (Unix seconds) or amz_date, double_encode (default: service ~= "s3").
function M.sign(req, creds, opts)
  assert(opts.region and opts.service, "sigv4.sign: opts.region and opts.service are required")
  local headers = req.headers or {}
  req.headers = headers
  local amz_date = amz_date_of(opts)
  set_header(headers, "x-amz-date", amz_date)
  if creds.session_token and creds.session_token ~= "" then
    set_header(headers, "x-amz-security-token", creds.session_token)
  end
  if opts.service == "s3" then
    set_header(headers, "x-amz-content-sha256", req.payload_hash or M.EMPTY_SHA256)
  end
  local double = opts.double_encode
  if double == nil then double = opts.service ~= "s3" end
  local creq, signed = M.canonical_request(req, double, req.payload_hash == M.STREAMING)
  local sig, sts, scope = M.signature(creds.secret_access_key, amz_date, opts.region, opts.service, creq)
  local authorization = ("%s Credential=%s/%s, SignedHeaders=%s, Signature=%s"):format(
    M.ALGORITHM, creds.access_key_id, scope, signed, sig)
  set_header(headers, "authorization", authorization)
  return { canonical_request = creq, string_to_sign = sts, signature = sig, authorization = authorization,
    signed_headers = signed, amz_date = amz_date }
end

-- Streaming uploads ("aws-chunked", STREAMING-AWS4-HMAC-SHA256-PAYLOAD): the body goes out in
-- chunks that each carry a signature chained from the request's own, so a body can be signed
-- as it streams, without knowing its hash in advance.

local CHUNK_OVERHEAD = #";chunk-signature=" + 64 + 4 -- plus the hex size and the data

--- The encoded length of `decoded` bytes sent in chunks of `chunk_size` (all full but the last,
-- then the empty final chunk): the Content-Length of a streaming upload.
function M.chunked_length(decoded, chunk_size)
  local full, rem = decoded // chunk_size, decoded % chunk_size
  local n = full * (#("%x"):format(chunk_size) + CHUNK_OVERHEAD + chunk_size)
  if rem > 0 then n = n + #("%x"):format(rem) + CHUNK_OVERHEAD + rem end
  return n + 1 + CHUNK_OVERHEAD
end

--- Headers a streaming upload of `decoded` bytes needs before sign(); payload_hash must be
-- sigv4.STREAMING. Returns the encoded length.
function M.streaming_headers(headers, decoded, chunk_size)
  local encoded = M.chunked_length(decoded, chunk_size)
  set_header(headers, "content-encoding", "aws-chunked")
  set_header(headers, "x-amz-decoded-content-length", tostring(decoded))
  set_header(headers, "content-length", tostring(encoded))
  return encoded
end

--- A chunk encoder for a streaming upload: encode(data) returns the framed, signed chunk; call
-- it once more with "" for the final chunk. `info` is what sign() returned for the request.
function M.chunk_encoder(creds, info, opts)
  local amz_date = info.amz_date
  local date = amz_date:sub(1, 8)
  local scope = ("%s/%s/%s/aws4_request"):format(date, opts.region, opts.service)
  local key = M.signing_key(creds.secret_access_key, date, opts.region, opts.service)
  local prev = info.signature
  return function(data)
    local sts = table.concat({ "AWS4-HMAC-SHA256-PAYLOAD", amz_date, scope, prev, M.EMPTY_SHA256,
      M.sha256_hex(data) }, "\n")
    prev = crypto.hex(crypto.hmac("sha256", key, sts))
    return ("%x;chunk-signature=%s\r\n"):format(#data, prev) .. data .. "\r\n"
  end
end

--- A presigned URL's query string (SigV4 query authentication). req.headers must hold host;
-- opts as for sign() plus expires (seconds, default 900). The payload is UNSIGNED-PAYLOAD for S3.
function M.presign(req, creds, opts)
  local amz_date = amz_date_of(opts)
  local scope = ("%s/%s/%s/aws4_request"):format(amz_date:sub(1, 8), opts.region, opts.service)
  local _, signed = M.canonical_headers(req.headers or {})
  local query = query_pairs(req.query)
  local function add(k, v) query[#query + 1] = { k, v } end
  add("X-Amz-Algorithm", M.ALGORITHM)
  add("X-Amz-Credential", creds.access_key_id .. "/" .. scope)
  add("X-Amz-Date", amz_date)
  add("X-Amz-Expires", tostring(opts.expires or 900))
  add("X-Amz-SignedHeaders", signed)
  if creds.session_token and creds.session_token ~= "" then add("X-Amz-Security-Token", creds.session_token) end
  local double = opts.double_encode
  if double == nil then double = opts.service ~= "s3" end
  local creq = M.canonical_request({
    method = req.method, path = req.path, query = query, headers = req.headers,
    payload_hash = opts.service == "s3" and M.UNSIGNED or (req.payload_hash or M.EMPTY_SHA256),
  }, double)
  local sig = M.signature(creds.secret_access_key, amz_date, opts.region, opts.service, creq)
  return M.canonical_query(query) .. "&X-Amz-Signature=" .. sig, sig
end

return M
