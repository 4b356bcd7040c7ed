-- The Google Cloud Storage store over the JSON API, opened from gocloud.dev gcsblob URLs:
-- gs://bucket (options: anonymous=true; access_id and private_key_path are accepted and only
-- matter for signed URLs, which autopgo does not make; access_id=- also means anonymous).
--
-- STORAGE_EMULATOR_HOST ("host:port" or a URL) sends requests to an emulator without
-- credentials, as Google's libraries do; otherwise tokens come from autopgo.gcp.auth. The
-- store's etag is the object's generation, so preconditions are generation matches
-- (ifGenerationMatch=<generation>; if_none_match = "*" is ifGenerationMatch=0) and checked by
-- the service atomically. Bodies are streamed in one media upload.
local fail = require "autopgo.fail"
local cjson = require "cjson.safe"
local url = require "autopgo.url"
local utc = require "autopgo.utc"
local rest = require "autopgo.rest"
local blob = require "autopgo.blob"
local blobrest = require "autopgo.blob.rest"
local keys = require "autopgo.blob.keys"
local auth = require "autopgo.gcp.auth"

local M = {}

M.CHUNK_SIZE = 256 * 1024

local KNOWN = { anonymous = true, access_id = true, private_key_path = true }

local Store = {}
Store.__index = Store

local function nonempty(v) return v ~= nil and v ~= "" and v or nil end

--- Opens the store for a parsed gs:// URL. opts: deadline, getenv, home, now, token_source,
-- endpoint (another API base URL, e.g. a Private Service Connect endpoint), insecure, ca_file,
-- page_size (objects per list request, 1000).
function M.open(u, opts)
  opts = opts or {}
  local where, err, code = blobrest.parse_url(u, "gs", KNOWN, "bucket")
  if not where then return nil, err, code end
  local q, bucket = where.query, where.bucket
  local anonymous
  anonymous, err, code = rest.parse_bool("anonymous", q.anonymous)
  if anonymous == nil then return nil, err, code end
  if q.access_id == "-" then anonymous = true end
  local getenv = opts.getenv or os.getenv
  local emulator = nonempty(getenv("STORAGE_EMULATOR_HOST"))
  local base = opts.endpoint and opts.endpoint:gsub("/+$", "") or "https://storage.googleapis.com"
  if emulator then
    base = emulator:match("^%a[%w+.-]*://") and emulator:gsub("/+$", "") or ("http://" .. emulator)
    anonymous = true
  end
  local tokens = opts.token_source
  if not anonymous and not tokens then
    tokens = auth.new({ getenv = getenv, home = opts.home, now = opts.now })
  end
  local self = setmetatable({
    name = where.name, bucket = bucket, prefix = where.prefix, key_rule = keys.gcs, base = base,
    anonymous = anonymous, tokens = tokens,
    emulator = emulator ~= nil, insecure = opts.insecure or nil, ca_file = opts.ca_file,
    page_size = opts.page_size or 1000,
  }, Store)
  self.ctx = { deadline = opts.deadline, name = self.name }
  return self
end

Store.object_key = blobrest.object_key

local function query_string(list)
  local out = {}
  for _, kv in ipairs(list or {}) do out[#out + 1] = url.escape(kv[1]) .. "=" .. url.escape(tostring(kv[2])) end
  return table.concat(out, "&")
end

-- A request with a bearer token. r = { method, path, query = list, headers, body | body_path |
-- body_producer + body_length, sink, timeout }.
function Store:request(r)
  local headers = {}
  for k, v in pairs(r.headers or {}) do headers[k] = v end
  if not self.anonymous then
    local token, err, code = self.tokens:token()
    if not token then return nil, err, code end
    headers.authorization = "Bearer " .. token
  end
  local q = query_string(r.query)
  return {
    method = r.method, url = self.base .. r.path .. (q ~= "" and ("?" .. q) or ""), headers = headers,
    body = r.body, body_path = r.body_path, body_producer = r.body_producer, body_length = r.body_length,
    sink = r.sink, timeout = r.timeout or 60, insecure = self.insecure, ca_file = self.ca_file,
  }
end

function Store:object_path(okey)
  return ("/storage/v1/b/%s/o/%s"):format(url.escape(self.bucket), url.escape(okey))
end

local REASONS = { notFound = "NOT_FOUND", conditionNotMet = "PRECONDITION_FAILED", rateLimitExceeded = "UNAVAILABLE",
  backendError = "UNAVAILABLE", authError = "UNAUTHORIZED", forbidden = "UNAUTHORIZED" }

function Store:on_error(res, what)
  local doc = cjson.decode(res.body or "")
  local e = type(doc) == "table" and type(doc.error) == "table" and doc.error or nil
  local reason = e and type(e.errors) == "table" and type(e.errors[1]) == "table" and e.errors[1].reason or nil
  local code = REASONS[reason] or rest.code_for_status(res.status)
  local hint
  if res.status == 401 and self.tokens and not self.retried_auth then
    -- the token may have been revoked or expired early: fetch a new one, once
    self.tokens:invalidate()
    self.retried_auth = true
    hint = "retry"
  end
  local msg = e and e.message or (res.body or ""):sub(1, 200)
  if msg == "" then msg = "HTTP " .. res.status end
  return ("%s: %s %s: %s%s"):format(code, self.name, what, reason and (reason .. ": ") or "", msg), code, nil, hint
end

Store.call = blobrest.call

local function object_attrs(doc)
  return { etag = tostring(doc.generation), size = math.tointeger(tonumber(doc.size)) or 0,
    last_modified = utc.parse_iso8601(doc.updated) }
end

--- store:put(key, body, opts) -> { etag = generation, size }
function Store:put(key, body, opts)
  opts = opts or {}
  local okey, err, code = self:object_key(key)
  if not okey then return nil, err, code end
  local src
  src, err, code = blobrest.source(body)
  if not src then return nil, err, code end
  local query = { { "uploadType", "media" }, { "name", okey } }
  if opts.if_none_match then
    query[#query + 1] = { "ifGenerationMatch", "0" }
  elseif opts.if_match then
    if not tostring(opts.if_match):match("^%d+$") then
      return fail.new("PRECONDITION_FAILED", "%s put %s: %q is not a generation", self.name, key, opts.if_match)
    end
    query[#query + 1] = { "ifGenerationMatch", tostring(opts.if_match) }
  end
  local piece = blobrest.piece(src, 0, src.size)
  local res
  res, err, code = self:call("put " .. key, function(_, _, last_err)
    local r = { method = "POST", path = ("/upload/storage/v1/b/%s/o"):format(url.escape(self.bucket)), query = query,
      headers = { ["content-type"] = opts.content_type or "application/octet-stream" },
      timeout = blobrest.transfer_timeout(src.size) }
    local ok, berr, bcode = blobrest.body(r, piece, last_err, M.CHUNK_SIZE)
    if not ok then return nil, berr, bcode end
    return self:request(r)
  end)
  if not res then return nil, err, code end
  local doc = cjson.decode(res.body or "")
  if type(doc) ~= "table" or doc.generation == nil then
    return fail.new("INVALID", "%s put %s: no object metadata in the answer", self.name, key)
  end
  return { etag = tostring(doc.generation), size = src.size }
end

--- store:stat(key) -> { etag = generation, size, last_modified }
function Store:stat(key)
  local okey, err, code = self:object_key(key)
  if not okey then return nil, err, code end
  local res
  res, err, code = self:call("stat " .. key, function()
    return self:request({ method = "GET", path = self:object_path(okey) })
  end)
  if not res then return nil, err, code end
  local doc = cjson.decode(res.body or "")
  if type(doc) ~= "table" then return fail.new("INVALID", "%s stat %s: no JSON", self.name, key) end
  return object_attrs(doc)
end

--- store:get(key, opts) -> { body | nil with opts.sink, etag = generation, size, last_modified };
-- opts.if_match = generation reads only that generation (PRECONDITION_FAILED otherwise).
-- A streamed download that breaks off resumes where it stopped (Range, the same generation).
function Store:get(key, opts)
  opts = opts or {}
  local okey, err, code = self:object_key(key)
  if not okey then return nil, err, code end
  local res
  res, err, code = self:call("get " .. key, function(_, resume)
    local query, headers = { { "alt", "media" } }, nil
    if resume then
      -- the rest of the same generation (412 if it was replaced meanwhile)
      query[2] = { "ifGenerationMatch", resume.version }
      headers = { range = ("bytes=%d-"):format(resume.offset) }
    elseif opts.if_match then
      query[2] = { "ifGenerationMatch", tostring(opts.if_match) }
    end
    return self:request({ method = "GET", path = self:object_path(okey), query = query, headers = headers,
      sink = opts.sink, timeout = opts.timeout or 3600 })
  end, nil, opts.sink and function(r) return r.headers["x-goog-generation"] end)
  if not res then return nil, err, code end
  local h = res.headers
  local out = blobrest.downloaded({ etag = h["x-goog-generation"],
    last_modified = utc.parse_http_date(h["last-modified"]) }, res, opts)
  if not out.last_modified or not out.etag or not out.size then
    -- some servers (the emulator) leave these out of media downloads: ask for this generation
    local q = out.etag and { { "generation", out.etag } } or nil
    local meta
    meta, err, code = self:call("stat " .. key, function()
      return self:request({ method = "GET", path = self:object_path(okey), query = q })
    end)
    if not meta then return nil, err, code end
    local attrs = object_attrs(cjson.decode(meta.body or "") or {})
    out.etag = out.etag or attrs.etag
    out.size = out.size or attrs.size
    out.last_modified = out.last_modified or attrs.last_modified
  end
  return out
end

--- store:delete(key) -> true (NOT_FOUND when absent)
function Store:delete(key)
  local okey, err, code = self:object_key(key)
  if not okey then return nil, err, code end
  local res
  res, err, code = self:call("delete " .. key, function()
    return self:request({ method = "DELETE", path = self:object_path(okey) })
  end)
  if not res then return nil, err, code end
  return true
end

--- store:list(prefix, opts) -> entries sorted by key, every page. opts.page_size (maxResults).
function Store:list(prefix, opts)
  opts = opts or {}
  prefix = prefix or ""
  local full = blobrest.list_prefix(self, prefix)
  local entries, token = {}, nil
  repeat
    local query = { { "prefix", full }, { "maxResults", tostring(opts.page_size or self.page_size) } }
    if token then query[#query + 1] = { "pageToken", token } end
    local res, err, code = self:call("list " .. prefix, function()
      return self:request({ method = "GET", path = ("/storage/v1/b/%s/o"):format(url.escape(self.bucket)),
        query = query })
    end)
    if not res then return nil, err, code end
    local doc = cjson.decode(res.body or "")
    if type(doc) ~= "table" then return fail.new("INVALID", "%s: unreadable list answer", self.name) end
    for _, item in ipairs(type(doc.items) == "table" and doc.items or {}) do
      local k = blobrest.listed_key(self, item.name)
      if k then
        local a = object_attrs(item)
        a.key = k
        entries[#entries + 1] = a
      end
    end
    token = type(doc.nextPageToken) == "string" and doc.nextPageToken ~= "" and doc.nextPageToken or nil
  until not token
  return blob.window(blobrest.sort_entries(entries), opts)
end

--- store:health() -> true | nil, err, code (a one-item list of the bucket)
function Store:health()
  local ok, err, code = blobrest.health(self, { method = "GET",
    path = ("/storage/v1/b/%s/o"):format(url.escape(self.bucket)), query = { { "maxResults", "1" } } })
  if code == "NOT_FOUND" then
    return fail.new("NOT_FOUND", "%s: bucket %s does not exist", self.name, self.bucket)
  end
  return ok, err, code
end

function Store.close(_) end

M.Store = Store
return M
