-- URL parsing and escaping for HTTP URLs and gocloud.dev-style blob and bus URLs
-- ("s3://bucket?region=x", "gcppubsub://projects/p/topics/t", "file:///var/data").
local fail = require "autopgo.fail"
local M = {}

--- Percent-decodes a string ("+" is left alone: only query parsing treats it as a space).
function M.unescape(s)
  return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

--- Percent-encodes everything but RFC 3986 unreserved characters; `keep` adds more (e.g. "/").
function M.escape(s, keep)
  local pattern = "[^%w%-%._~" .. (keep and keep:gsub("%p", "%%%0") or "") .. "]"
  return (s:gsub(pattern, function(c) return ("%%%02X"):format(c:byte()) end))
end

--- Parses a query string into a map (last value wins) and an ordered list of { key, value }.
function M.parse_query(q)
  local map, list = {}, {}
  for pair in (q or ""):gmatch("[^&]+") do
    local k, v = pair:match("^([^=]*)=?(.*)$")
    k, v = M.unescape((k:gsub("%+", " "))), M.unescape((v:gsub("%+", " ")))
    map[k] = v
    list[#list + 1] = { k, v }
  end
  return map, list
end

--- Encodes a map as a query string with sorted keys (stable, as signatures need).
function M.encode_query(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys)
  local out = {}
  for _, k in ipairs(keys) do out[#out + 1] = M.escape(k) .. "=" .. M.escape(tostring(t[k])) end
  return table.concat(out, "&")
end

--- Parses "scheme://[user[:password]@]host[:port][/path][?query][#fragment]".
-- Returns { scheme, user, password, host, port (number|nil), path ("" or "/..."), query (map),
-- query_list, raw_query, raw } or fail.new("INVALID", "...").
function M.parse(s)
  if type(s) ~= "string" then return fail.new("INVALID", "URL must be a string") end
  local scheme, rest = s:match("^(%a[%w+.-]*)://(.*)$")
  if not scheme then return fail.new("INVALID", "%q is not a URL (want scheme://...)", s) end
  rest = rest:gsub("#.*$", "")
  local raw_query = rest:match("%?(.*)$")
  rest = rest:gsub("%?.*$", "")
  local authority, path = rest:match("^([^/]*)(.*)$")
  local userinfo, hostport = authority:match("^(.*)@(.*)$")
  hostport = hostport or authority
  local user, password
  if userinfo then
    user, password = userinfo:match("^([^:]*):?(.*)$")
    user, password = M.unescape(user), password ~= "" and M.unescape(password) or nil
  end
  local host, port = hostport:match("^%[([^%]]+)%]:?(%d*)$") -- [ipv6]:port
  if not host then host, port = hostport:match("^([^:]*):?(%d*)$") end
  if not host then return fail.new("INVALID", "bad host in URL %q", s) end
  local query, list = M.parse_query(raw_query)
  return {
    scheme = scheme:lower(), user = user, password = password, host = host,
    port = port ~= "" and tonumber(port) or nil, path = path, query = query, query_list = list,
    raw_query = raw_query, raw = s,
  }
end

return M
