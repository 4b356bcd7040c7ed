-- Azure Storage Shared Key authorization for the Blob and Queue services (version 2015-02-21 and
-- later): the string to sign, its HMAC-SHA256 with the base64 account key, and the
-- "Authorization: SharedKey account:signature" header.
--
--   sharedkey.sign(req, account, key)
--   req = { method, path = "/container/blob%20name" (as sent, percent-encoded),
--           query = { { "comp", "list" }, ... } (decoded) | map, headers = { name -> value } }
-- The caller sets x-ms-date and x-ms-version; sign() only adds Authorization.
local fail = require "autopgo.fail"
local crypto = require("autopgo.core").crypto

local M = {}

local STANDARD = { "content-encoding", "content-language", "content-length", "content-md5", "content-type",
  "date", "if-modified-since", "if-match", "if-none-match", "if-unmodified-since", "range" }

local function lower_map(headers)
  local out = {}
  for k, v in pairs(headers or {}) do out[k:lower()] = v end
  return out
end

local function query_list(query)
  local list = {}
  if query and query[1] ~= nil then
    for _, kv in ipairs(query) do list[#list + 1] = { kv[1], kv[2] or "" } end
  elseif query then
    for k, v in pairs(query) do list[#list + 1] = { k, v } end
  end
  return list
end

--- The canonicalized x-ms-* headers (each "name:value\n").
function M.canonical_headers(headers)
  local h = lower_map(headers)
  local names = {}
  for name in pairs(h) do
    if name:sub(1, 5) == "x-ms-" then names[#names + 1] = name end
  end
  table.sort(names)
  local out = {}
  for _, name in ipairs(names) do
    local v = tostring(h[name]):gsub("%s+", " "):gsub("^ ", ""):gsub(" $", "")
    out[#out + 1] = name .. ":" .. v .. "\n"
  end
  return table.concat(out)
end

--- The canonicalized resource: "/account/path" then "\nname:v1,v2" per query parameter.
function M.canonical_resource(account, path, query)
  local parts = { "/" .. account .. ((path == nil or path == "") and "/" or path) }
  local by_name, names = {}, {}
  for _, kv in ipairs(query_list(query)) do
    local name = kv[1]:lower()
    if not by_name[name] then
      by_name[name] = {}
      names[#names + 1] = name
    end
    table.insert(by_name[name], tostring(kv[2]))
  end
  table.sort(names)
  for _, name in ipairs(names) do
    local values = by_name[name]
    table.sort(values)
    parts[#parts + 1] = name .. ":" .. table.concat(values, ",")
  end
  return table.concat(parts, "\n")
end

--- The string to sign of a request.
function M.string_to_sign(req, account)
  local h = lower_map(req.headers)
  local lines = { req.method:upper() }
  for _, name in ipairs(STANDARD) do
    local v = h[name]
    if v == nil or (name == "content-length" and tostring(v) == "0") then v = "" end
    if name == "date" and h["x-ms-date"] then v = "" end
    lines[#lines + 1] = tostring(v)
  end
  return table.concat(lines, "\n") .. "\n" .. M.canonical_headers(req.headers)
    .. M.canonical_resource(account, req.path, req.query)
end

--- Base64 HMAC-SHA256 of `text` with the base64-encoded account key; nil, err for a bad key.
function M.hmac(key_b64, text)
  local key, err = crypto.base64_decode(key_b64)
  if not key then
    return fail.new("INVALID", "the Azure storage account key is not base64 (%s)", tostring(err))
  end
  return crypto.base64_encode(crypto.hmac("sha256", key, text))
end

--- Adds the Authorization header to req.headers; returns the string to sign, or nil, err, code.
function M.sign(req, account, key_b64)
  local sts = M.string_to_sign(req, account)
  local sig, err = M.hmac(key_b64, sts)
  if not sig then return nil, err, "INVALID" end
  for k in pairs(req.headers) do
    if k:lower() == "authorization" then req.headers[k] = nil end
  end
  req.headers.authorization = ("SharedKey %s:%s"):format(account, sig)
  return sts
end

return M
