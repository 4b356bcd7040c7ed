-- The autopgo server's REST API seen from a client (the CLI utilities and the scraper): upload,
-- download, list and delete, as the original's pkg/client. Failures follow the house
-- convention; when the server answered, the message is the server's own with its HTTP status,
-- "invalid app name (400)", and a fourth value carries that status:
--   fail.new("INVALID", "invalid app name (400)"), 400
-- Transport failures keep the HTTP client's codes (UNAVAILABLE, TIMEOUT, TLS, ...).
local fail = require "autopgo.fail"
local http = require "autopgo.http"
local url = require "autopgo.url"
local cjson = require "cjson.safe"

local M = {}

local Client = {}
Client.__index = Client

--- A client for the server at `base_url`. opts: insecure, ca_cert (PEM file of the CAs that
-- verify an https:// server; default the system's), client_cert and client_key (PEM files, for a
-- server that requires client certificates), timeout (seconds, default 60), cancel (an
-- http.canceler), token (sent as Authorization: Bearer; only to this server).
function M.new(base_url, opts)
  opts = opts or {}
  local token = opts.token
  assert(token == nil or (type(token) == "string" and not token:find("[%c ]")),
    "client token must be a string without spaces or control characters")
  return setmetatable({
    base = (base_url:gsub("/+$", "")),
    insecure = opts.insecure or false,
    ca_cert = opts.ca_cert, client_cert = opts.client_cert, client_key = opts.client_key,
    timeout = opts.timeout or 60,
    cancel = opts.cancel,
    authorization = token and ("Bearer " .. token),
  }, Client)
end

--- client.new's options from a command's resolved options (api_url aside): the TLS settings
-- (--insecure, --ca-cert, --client-cert, --client-key) and the token, plus `extra` (timeout, cancel).
function M.options(opts, extra)
  local o = {}
  for k, v in pairs(extra or {}) do o[k] = v end
  o.insecure, o.token = opts.insecure, opts.token
  o.ca_cert, o.client_cert, o.client_key = opts.ca_cert, opts.client_cert, opts.client_key
  return o
end

local codes = { [400] = "INVALID", [401] = "UNAUTHORIZED", [403] = "FORBIDDEN", [404] = "NOT_FOUND",
  [409] = "CONFLICT", [412] = "PRECONDITION_FAILED", [413] = "TOO_LARGE" }

--- The error for a response the caller did not want: the server's JSON {message, code} when it
-- sent one, else the status and the start of the body.
function M.response_error(res)
  local code = codes[res.status] or (res.status >= 500 and "SERVER" or "HTTP")
  local doc = res.body and cjson.decode(res.body)
  local msg
  if type(doc) == "table" and type(doc.message) == "string" then
    msg = ("%s (%d)"):format(doc.message, math.tointeger(doc.code) or res.status)
  else
    local text = (res.body or ""):gsub("%s+", " "):gsub("^ ", ""):gsub(" $", ""):sub(1, 200)
    msg = ("the server answered %d%s"):format(res.status, text ~= "" and (": " .. text) or "")
  end
  return nil, code .. ": " .. msg, code, res.status
end

--- The message of an error without its code when the server produced it (what a person wants
-- to read), or the whole error for transport failures.
function M.message(err, status)
  if status then return fail.message(err) end
  return err
end

function Client:profile_url(app)
  if app then return self.base .. "/api/profile/" .. url.escape(app) end
  return self.base .. "/api/profile"
end

-- One request with the client's settings; opts as http.request's.
function Client:request(opts)
  if self.authorization then
    opts.headers = opts.headers or {}
    opts.headers.authorization = self.authorization
  end
  opts.insecure = self.insecure
  opts.ca_file, opts.client_cert, opts.client_key = self.ca_cert, self.client_cert, self.client_key
  opts.timeout = opts.timeout or self.timeout
  opts.cancel = opts.cancel or self.cancel
  return http.request(opts)
end

--- Stages a profile for merging. `body` is { body = string } | { body_path = path } |
-- { body_producer = fn, body_length = n }, plus optionally source (sent as X-Autopgo-Source: where
-- the profile comes from, shown by the history). Returns the staged key.
function Client:upload(app, body)
  local opts = { method = "POST", url = self:profile_url(app),
    headers = { ["content-type"] = "application/octet-stream", ["x-autopgo-source"] = body.source },
    body = body.body, body_path = body.body_path, body_producer = body.body_producer,
    body_length = body.body_length, timeout = body.timeout }
  local res, err, code = self:request(opts)
  if not res then return nil, err, code end
  if res.status ~= 201 and res.status ~= 200 then return M.response_error(res) end
  local doc = cjson.decode(res.body or "")
  if type(doc) ~= "table" or type(doc.key) ~= "string" then
    local _, err_msg, err_code = fail.new("SERVER", "the server accepted the profile but sent no key")
    return nil, err_msg, err_code, res.status
  end
  return doc.key
end

--- Downloads an application's merged profile. opts.sink streams the body (else it is
-- buffered); opts.etag sends If-None-Match; opts.query (a map, e.g. { window = "72h0m0s" } or
-- { from = ..., to = ... }) asks for a time window instead. Returns the response (status 200,
-- or 304 when the etag still matches); anything else is an error.
function Client:download(app, opts)
  opts = opts or {}
  local headers = {}
  if opts.etag then headers["if-none-match"] = opts.etag end
  local sink, errdoc = nil, {}
  if opts.sink then
    sink = function(chunk, r)
      if r.status == 200 then return opts.sink(chunk, r) end
      -- an error document: kept for the message, never handed to the caller's sink
      errdoc[#errdoc + 1] = chunk
      if #errdoc > 16 then return false, "the server's error document is too large" end
    end
  end
  local target = self:profile_url(app)
  if opts.query and next(opts.query) then target = target .. "?" .. url.encode_query(opts.query) end
  local res, err, code = self:request { url = target, headers = headers, sink = sink, timeout = opts.timeout }
  if not res then return nil, err, code end
  if sink and res.status ~= 200 then res.body = table.concat(errdoc) end
  if res.status ~= 200 and res.status ~= 304 then return M.response_error(res) end
  return res
end

--- The merged profiles: a list of { key, size, lastModified } as the server sent them, and the
-- raw response body.
function Client:list()
  local res, err, code = self:request { url = self:profile_url() }
  if not res then return nil, err, code end
  if res.status ~= 200 then return M.response_error(res) end
  local doc = cjson.decode(res.body or "")
  if type(doc) ~= "table" or (doc.profiles ~= nil and type(doc.profiles) ~= "table") then
    local _, err_msg, err_code = fail.new("SERVER", "the server sent a list that is not {\"profiles\": [...]}")
    return nil, err_msg, err_code, res.status
  end
  local list = {}
  for _, p in ipairs(doc.profiles or {}) do
    if type(p) == "table" and type(p.key) == "string" then list[#list + 1] = p end
  end
  return list, res.body
end

--- What became of an application's uploads: the server's {app, merged, staged = [{key, size,
-- lastModified}], rejected = [{key, reason, lastModified}]} decoded, and the raw response body.
function Client:uploads(app)
  local res, err, code = self:request { url = self:profile_url(app) .. "/uploads" }
  if not res then return nil, err, code end
  if res.status ~= 200 then return M.response_error(res) end
  local doc = cjson.decode(res.body or "")
  if type(doc) ~= "table" or type(doc.staged) ~= "table" or type(doc.rejected) ~= "table" then
    local _, ferr, fcode = fail.new("SERVER", "the server sent no {staged, rejected} lists of uploads "
      .. "(an older server?)")
    return nil, ferr, fcode, res.status
  end
  return doc, res.body
end

--- An application's profile history: the server's {app, segment, segments = [{start, end,
-- uploads, samples, bytes}], uploads = [{key, captured, duration, size, source, segment}]}
-- decoded, and the raw response body.
function Client:history(app)
  local res, err, code = self:request { url = self:profile_url(app) .. "/history" }
  if not res then return nil, err, code end
  if res.status ~= 200 then return M.response_error(res) end
  local doc = cjson.decode(res.body or "")
  if type(doc) ~= "table" or type(doc.segments) ~= "table" or type(doc.uploads) ~= "table" then
    local _, herr, hcode = fail.new("SERVER", "the server sent no {segments, uploads} history (an older server?)")
    return nil, herr, hcode, res.status
  end
  return doc, res.body
end

--- Deletes an application's merged and pending profiles.
function Client:delete(app)
  local res, err, code = self:request { method = "DELETE", url = self:profile_url(app) }
  if not res then return nil, err, code end
  if res.status ~= 200 and res.status ~= 204 and res.status ~= 202 then return M.response_error(res) end
  return true
end

return M
