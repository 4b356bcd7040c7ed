-- The Azure Blob Storage store (block blobs), opened from gocloud.dev azureblob URLs:
-- azblob://container?domain=...&protocol=http|https&cdn=true&localemu=true&storage_account=...
--
-- Credentials, in gocloud's order: AZURE_STORAGE_ACCOUNT + AZURE_STORAGE_KEY (Shared Key),
-- AZURE_STORAGE_SAS_TOKEN, AZURE_STORAGE_CONNECTION_STRING / AZURE_STORAGEBLOB_CONNECTIONSTRING
-- (account key or SAS, with its BlobEndpoint, e.g. Azurite's). AZURE_STORAGE_DOMAIN,
-- AZURE_STORAGE_PROTOCOL, AZURE_STORAGE_IS_CDN and AZURE_STORAGE_IS_LOCAL_EMULATOR give the
-- defaults the URL options override; the service URL is "<protocol>://<account>.<domain>", or
-- "<protocol>://<domain>/<account>" for the emulator (localemu, or a domain starting with
-- localhost or 127.0.0.1), or "<protocol>://<domain>" behind a CDN. Preconditions use the blob
-- ETag (If-Match / If-None-Match: *); bodies above the block size go up as staged blocks
-- committed with one conditional Put Block List.
local fail = require "autopgo.fail"
local url = require "autopgo.url"
local utc = require "autopgo.utc"
local xml = require "autopgo.xml"
local crypto = require("autopgo.core").crypto
local rest = require "autopgo.rest"
local blob = require "autopgo.blob"
local blobrest = require "autopgo.blob.rest"
local keys = require "autopgo.blob.keys"
local sharedkey = require "autopgo.azure.sharedkey"
local sas = require "autopgo.azure.sas"
local connection_string = require "autopgo.azure.connection_string"

local M = {}

M.VERSION = "2021-08-06"
M.BLOCK_SIZE = 16 * 1024 * 1024 -- bodies above this go up in blocks of this size
M.CHUNK_SIZE = 256 * 1024

local KNOWN = { domain = true, protocol = true, cdn = true, localemu = true, storage_account = true }

local Store = {}
Store.__index = Store

local function nonempty(v) return v ~= nil and v ~= "" and v or nil end

local function env_bool(getenv, name)
  local v = rest.parse_bool(name, nonempty(getenv(name)))
  return v == true
end

-- The service URL, gocloud's NewServiceURL.
local function service_url(o)
  local domain = o.domain or "blob.core.windows.net"
  local protocol = o.protocol or "https"
  if protocol ~= "http" and protocol ~= "https" then
    return fail.new("INVALID", "azblob protocol must be http or https, not %q", protocol)
  end
  if domain:match("^127%.0%.0%.1") or domain:match("^localhost") or o.localemu then
    return ("%s://%s/%s"):format(protocol, domain, o.account)
  elseif o.cdn then
    return ("%s://%s"):format(protocol, domain)
  end
  return ("%s://%s.%s"):format(protocol, o.account, domain)
end

--- Opens the store for a parsed azblob:// URL. opts: deadline, block_size, getenv, now, insecure,
-- ca_file, page_size (blobs per list request, 1000).
function M.open(u, opts)
  opts = opts or {}
  local where, err, code = blobrest.parse_url(u, "azblob", KNOWN, "container")
  if not where then return nil, err, code end
  local q = where.query
  local getenv = opts.getenv or os.getenv
  local o = {
    account = nonempty(q.storage_account) or nonempty(getenv("AZURE_STORAGE_ACCOUNT")),
    domain = nonempty(q.domain) or nonempty(getenv("AZURE_STORAGE_DOMAIN")),
    protocol = nonempty(q.protocol) or nonempty(getenv("AZURE_STORAGE_PROTOCOL")),
    cdn = env_bool(getenv, "AZURE_STORAGE_IS_CDN"),
    localemu = env_bool(getenv, "AZURE_STORAGE_IS_LOCAL_EMULATOR"),
  }
  for _, name in ipairs { "cdn", "localemu" } do
    if q[name] ~= nil then
      local v, berr, bcode = rest.parse_bool(name, q[name])
      if v == nil then return nil, berr, bcode end
      o[name] = v
    end
  end
  local key = nonempty(getenv("AZURE_STORAGE_KEY"))
  local token = sas.normalize(nonempty(getenv("AZURE_STORAGE_SAS_TOKEN")))
  local cs = nonempty(getenv("AZURE_STORAGE_CONNECTION_STRING"))
    or nonempty(getenv("AZURE_STORAGEBLOB_CONNECTIONSTRING"))
  local auth, base
  if o.account and key then
    auth = { kind = "sharedkey", account = o.account, key = key }
  elseif token then
    auth = { kind = "sas", token = token }
  elseif cs then
    local c, cerr, ccode = connection_string.parse(cs)
    if not c then return nil, cerr, ccode end
    o.account = o.account or c.account
    base = c.blob_endpoint
    if c.key then
      auth = { kind = "sharedkey", account = c.account, key = c.key }
    elseif c.sas then
      auth = { kind = "sas", token = c.sas }
    else
      return fail.new("INVALID", "the Azure connection string has neither AccountKey nor SharedAccessSignature")
    end
  else
    return fail.new("UNAUTHORIZED", "no Azure storage credentials: set AZURE_STORAGE_ACCOUNT and AZURE_STORAGE_KEY, "
      .. "AZURE_STORAGE_SAS_TOKEN, or AZURE_STORAGE_CONNECTION_STRING (Microsoft Entra ID credentials are not "
      .. "supported)")
  end
  if not base then
    if not o.account then
      return fail.new("INVALID", "azblob needs the storage account: AZURE_STORAGE_ACCOUNT or ?storage_account=")
    end
    base, err, code = service_url(o)
    if not base then return nil, err, code end
  end
  local bu
  bu, err = url.parse(base)
  if not bu then return nil, err, "INVALID" end
  local host = bu.host .. (bu.port and (":" .. bu.port) or "")
  local self = setmetatable({
    name = where.name, container = where.bucket, prefix = where.prefix, key_rule = keys.azure, auth = auth,
    account = o.account or (auth.account),
    scheme = bu.scheme, host = host, base_path = (bu.path or ""):gsub("/+$", ""),
    block_size = opts.block_size or M.BLOCK_SIZE, now = opts.now or os.time,
    insecure = opts.insecure or nil, ca_file = opts.ca_file, page_size = opts.page_size or 1000,
  }, Store)
  self.ctx = { deadline = opts.deadline, name = self.name }
  return self
end

Store.object_key = blobrest.object_key

-- The encoded URL path of a blob (or of the container when key is nil).
function Store:path(key)
  local p = self.base_path .. "/" .. self.container
  if key then p = p .. "/" .. url.escape(key, "/") end
  return p
end

-- A signed request. r = { method, key (already escaped) | nil, query = list, headers, body |
-- body_path | body_producer + body_length, sink, timeout }.
function Store:request(r)
  local path = self:path(r.key)
  local headers = { ["x-ms-date"] = utc.http_date(self.now()), ["x-ms-version"] = M.VERSION }
  for k, v in pairs(r.headers or {}) do headers[k] = v end
  local length = r.body and #r.body or r.body_length
  if r.method == "PUT" or r.method == "POST" then
    headers["content-length"] = tostring(length or 0)
    headers["content-type"] = headers["content-type"] or "application/octet-stream"
  end
  local pairs_list = {}
  for _, kv in ipairs(r.query or {}) do pairs_list[#pairs_list + 1] = url.escape(kv[1]) .. "=" .. url.escape(kv[2]) end
  local query = table.concat(pairs_list, "&")
  if self.auth.kind == "sharedkey" then
    local ok, err, code = sharedkey.sign({ method = r.method, path = path, query = r.query, headers = headers },
      self.auth.account, self.auth.key)
    if not ok then return nil, err, code end
  else
    query = query ~= "" and (query .. "&" .. self.auth.token) or self.auth.token
  end
  return {
    method = r.method, url = ("%s://%s%s%s"):format(self.scheme, self.host, path, query ~= "" and ("?" .. query) or ""),
    headers = headers, body = r.body or ((r.method == "PUT" and not r.body_path and not r.body_producer) and "" or nil),
    body_path = r.body_path, body_producer = r.body_producer, body_length = r.body_length, sink = r.sink,
    timeout = r.timeout or 60, insecure = self.insecure, ca_file = self.ca_file,
  }
end

local NOT_FOUND = { BlobNotFound = true, ContainerNotFound = true, ResourceNotFound = true }
local CONFLICT = { ConditionNotMet = true, BlobAlreadyExists = true, TargetConditionNotMet = true,
  SourceConditionNotMet = true }
local BUSY = { ServerBusy = true, InternalError = true, OperationTimedOut = true }
local AUTH_HINTS = {
  AuthenticationFailed = "the account key or SAS signature does not match",
  AuthorizationFailure = "the credentials are not allowed to do this",
  AuthorizationPermissionMismatch = "the credentials lack a permission for this",
  AuthorizationResourceTypeMismatch = "the SAS does not cover this resource type",
  NoAuthenticationInformation = "the request carried no credentials",
}

function Store:on_error(res, what)
  local scode = res.headers["x-ms-error-code"]
  local doc = res.body and res.body ~= "" and xml.parse(res.body) or nil
  scode = scode or (doc and xml.find_text(doc, "Code"))
  local smsg = doc and xml.find_text(doc, "Message") or ""
  smsg = smsg:match("^([^\n]*)") or smsg
  local code = rest.code_for_status(res.status)
  if NOT_FOUND[scode] then code = "NOT_FOUND"
  elseif CONFLICT[scode] then code = "PRECONDITION_FAILED"
  elseif BUSY[scode] then code = "UNAVAILABLE"
  elseif AUTH_HINTS[scode] then code = "UNAUTHORIZED" end
  local detail = scode and (scode .. (smsg ~= "" and (": " .. smsg) or "")) or ("HTTP " .. res.status)
  if AUTH_HINTS[scode] then detail = detail .. " (" .. AUTH_HINTS[scode] .. ")" end
  if scode == "ContainerNotFound" then detail = ("container %s does not exist (ContainerNotFound)"):format(
    self.container) end
  return ("%s: %s %s: %s"):format(code, self.name, what, detail), code
end

Store.call = blobrest.call

local function conditions(h, opts)
  if opts.if_match then h["if-match"] = opts.if_match end
  if opts.if_none_match then h["if-none-match"] = opts.if_none_match end
  return h
end

-- Sends one piece of a body (the whole of it or one block; autopgo.blob.rest.piece) with a PUT.
function Store:send(what, okey, query, headers, piece)
  local res, err, code = self:call(what, function(_, _, last_err)
    local h = {}
    for k, v in pairs(headers) do h[k] = v end
    local r = { method = "PUT", key = okey, query = query, headers = h,
      timeout = blobrest.transfer_timeout(piece.size) }
    local ok, berr, bcode = blobrest.body(r, piece, last_err, M.CHUNK_SIZE)
    if not ok then return nil, berr, bcode end
    return self:request(r)
  end)
  piece:close()
  return res, err, code
end

--- store:put(key, body, opts) -> { etag, size }
function Store:put(key, body, opts)
  opts = opts or {}
  local okey, err, code = self:object_key(key)
  if not okey then return nil, err, code end
  local src
  src, err, code = blobrest.source(body)
  if not src then return nil, err, code end
  local ctype = opts.content_type or "application/octet-stream"
  local res
  if src.size <= self.block_size then
    res, err, code = self:send("put " .. key, okey, nil, conditions({ ["x-ms-blob-type"] = "BlockBlob",
      ["content-type"] = ctype }, opts), blobrest.piece(src, 0, src.size))
    if not res then return nil, err, code end
    return { etag = res.headers.etag, size = src.size }
  end
  -- staged blocks (uncommitted until the block list is put, with the preconditions)
  local ids, sent = {}, 0
  local run = crypto.hex(crypto.random(8))
  while sent < src.size do
    local n = #ids + 1
    local want = math.min(self.block_size, src.size - sent)
    local id = crypto.base64_encode(("%s-%08d"):format(run, n))
    res, err, code = self:send(("put %s (block %d)"):format(key, n), okey,
      { { "comp", "block" }, { "blockid", id } }, {}, blobrest.piece(src, sent, want))
    if not res then return nil, err, code end
    ids[n] = id
    sent = sent + want
  end
  local list = { '<?xml version="1.0" encoding="utf-8"?><BlockList>' }
  for _, id in ipairs(ids) do list[#list + 1] = "<Latest>" .. id .. "</Latest>" end
  list[#list + 1] = "</BlockList>"
  list = table.concat(list)
  res, err, code = self:call("put " .. key .. " (block list)", function()
    return self:request({ method = "PUT", key = okey, query = { { "comp", "blocklist" } }, body = list,
      headers = conditions({ ["content-type"] = "application/xml", ["x-ms-blob-content-type"] = ctype }, opts) })
  end)
  if not res then return nil, err, code end
  return { etag = res.headers.etag, size = src.size }
end

--- store:get(key, opts) and store:stat(key): see autopgo.blob.rest (Azure takes its ETags as given).
local function as_given(etag) return etag end
function Store:get(key, opts) return blobrest.get(self, key, opts, as_given) end
function Store:stat(key) return blobrest.stat(self, key) end

--- store:delete(key) -> true (NOT_FOUND when absent)
function Store:delete(key)
  local okey, err, code = self:object_key(key)
  if not okey then return nil, err, code end
  local res
  res, err, code = self:call("delete " .. key, function()
    return self:request({ method = "DELETE", key = okey })
  end)
  if not res then return nil, err, code end
  return true
end

-- List results carry ETags without the quotes the ETag header has; callers compare them.
local function quoted(etag)
  if etag and not etag:match('^"') then return '"' .. etag .. '"' end
  return etag
end

--- store:list(prefix, opts) -> entries sorted by key, every page. opts.page_size (maxresults).
function Store:list(prefix, opts)
  opts = opts or {}
  prefix = prefix or ""
  local full = blobrest.list_prefix(self, prefix)
  local entries, marker = {}, nil
  repeat
    local query = { { "restype", "container" }, { "comp", "list" }, { "prefix", full },
      { "maxresults", tostring(opts.page_size or self.page_size) } }
    if marker then query[#query + 1] = { "marker", marker } end
    local res, err, code = self:call("list " .. prefix, function()
      return self:request({ method = "GET", query = query })
    end)
    if not res then return nil, err, code end
    local doc
    doc, err = xml.parse(res.body or "")
    if not doc then return fail.new("INVALID", "%s: unreadable list answer: %s", self.name, err) end
    for _, b in ipairs(xml.children(xml.child(doc, "Blobs"), "Blob")) do
      local k = blobrest.listed_key(self, xml.find_text(b, "Name"))
      if k then
        local p = xml.child(b, "Properties")
        entries[#entries + 1] = { key = k,
          size = tonumber(xml.find_text(p, "Content-Length")) or 0,
          last_modified = utc.parse_http_date(xml.find_text(p, "Last-Modified")),
          etag = quoted(xml.find_text(p, "Etag")) }
      end
    end
    marker = xml.find_text(doc, "NextMarker")
    if marker == "" then marker = nil end
  until not marker
  return blob.window(blobrest.sort_entries(entries), opts)
end

--- store:health() -> true | nil, err, code (Get Container Properties)
function Store:health()
  return blobrest.health(self, { method = "GET", query = { { "restype", "container" } } })
end

--- store:create_container() -> true: not part of the store interface; for tests and setup.
function Store:create_container()
  local res, err, code = self:call("create container", function()
    return self:request({ method = "PUT", query = { { "restype", "container" } } })
  end)
  if not res then
    if err and err:find("ContainerAlreadyExists", 1, true) then return true end
    return nil, err, code
  end
  return true
end

function Store.close(_) end

M.Store = Store
return M
