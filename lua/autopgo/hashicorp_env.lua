-- Client settings from environment variables the way HashiCorp's Go API clients read them, for
-- the nomad and consul discovery modes: the agent address, booleans as Go's strconv.ParseBool
-- reads them, basic auth, and TLS files (a CA file or directory, a client certificate and key);
-- the GET requests to the agent's JSON API made with them, and the start both modes share.
local fail = require "autopgo.fail"
local uv = require "luv"
local crypto = require("autopgo.core").crypto
local json_api = require "autopgo.json_api"
local url = require "autopgo.url"
local tags = require "autopgo.scrape_tags"

local M = {}

local bools = { ["1"] = true, t = true, T = true, TRUE = true, ["true"] = true, True = true,
  ["0"] = false, f = false, F = false, FALSE = false, ["false"] = false, False = false }

--- The boolean in variable `name` (nil when unset or empty), or nil, "INVALID: ..." when it is
-- not one Go accepts.
function M.bool(getenv, name)
  local v = getenv(name)
  if v == nil or v == "" then return nil end
  local b = bools[v]
  if b == nil then
    return fail.new("INVALID", "%s=%q is not a boolean (true, false, 1, 0, t, f)", name, v)
  end
  return b
end

--- A non-empty variable or nil.
function M.get(getenv, name)
  local v = getenv(name)
  if v == nil or v == "" then return nil end
  return v
end

--- "scheme://host:port" from an address variable that may or may not carry a scheme;
-- `https` (a boolean) picks the scheme of a bare host:port. unix:// sockets are refused: the
-- HTTP client speaks TCP only.
function M.base_url(name, addr, https)
  if addr:match("^unix://") then
    return fail.new("INVALID", "%s=%s: unix sockets are not supported, give http(s)://host:port", name, addr)
  end
  local scheme, rest = addr:match("^(%a[%w+.-]*)://(.*)$")
  if scheme then
    scheme = scheme:lower()
    if scheme ~= "http" and scheme ~= "https" then
      return fail.new("INVALID", "%s=%s: the scheme must be http or https", name, addr)
    end
  else
    scheme, rest = https and "https" or "http", addr
  end
  rest = rest:gsub("/+$", "")
  if rest == "" or rest:find("[%s/?#]") then
    return fail.new("INVALID", "%s=%s is not an address such as http://127.0.0.1:8500", name, addr)
  end
  return scheme .. "://" .. rest
end

--- The Authorization header value for "user[:password]".
function M.basic_auth(userpass)
  if not userpass:find(":", 1, true) then userpass = userpass .. ":" end
  return "Basic " .. crypto.base64_encode(userpass)
end

-- Every certificate in the files of a directory, as one PEM bundle (what Go's rootcerts does for
-- a CA path).
local function read_ca_dir(dir)
  local req, err = uv.fs_scandir(dir)
  if not req then return fail.new("INVALID", "cannot read the CA directory %s: %s", dir, tostring(err)) end
  local names = {}
  while true do
    local name, kind = uv.fs_scandir_next(req)
    if not name then break end
    if kind == "file" or kind == "link" then names[#names + 1] = name end
  end
  table.sort(names)
  local pems = {}
  for _, name in ipairs(names) do
    local f = io.open(dir .. "/" .. name, "rb")
    if f then
      local text = f:read("a") or ""
      f:close()
      if text:find("-----BEGIN CERTIFICATE-----", 1, true) then pems[#pems + 1] = text end
    end
  end
  if #pems == 0 then return fail.new("INVALID", "the CA directory %s holds no PEM certificates", dir) end
  return table.concat(pems, "\n")
end

local function readable(name, path)
  local f, err = io.open(path, "rb")
  if not f then return fail.new("INVALID", "%s: %s", name, err) end
  f:close()
  return true
end

--- TLS options for autopgo.http from the variables named in `names` (cacert, capath,
-- client_cert, client_key, server_name, skip_verify; skip_verify_inverted for Consul's
-- *_SSL_VERIFY). Returns a table { ca_file, ca_pem, client_cert, client_key, tls_server_name,
-- insecure } or nil, err.
function M.tls(getenv, names)
  local out = {}
  local cacert, capath = M.get(getenv, names.cacert), M.get(getenv, names.capath)
  if cacert then
    local ok, err = readable(names.cacert, cacert)
    if not ok then return nil, err end
    out.ca_file = cacert
  elseif capath then
    local pem, err = read_ca_dir(capath)
    if not pem then return nil, err end
    out.ca_pem = pem
  end
  local cert, key = M.get(getenv, names.client_cert), M.get(getenv, names.client_key)
  if (cert == nil) ~= (key == nil) then
    return fail.new("INVALID", "%s and %s must be set together", names.client_cert, names.client_key)
  end
  for _, pair in ipairs { { names.client_cert, cert }, { names.client_key, key } } do
    if pair[2] then
      local ok, err = readable(pair[1], pair[2])
      if not ok then return nil, err end
    end
  end
  out.client_cert, out.client_key = cert, key
  out.tls_server_name = M.get(getenv, names.server_name)
  local flag, err = M.bool(getenv, names.skip_verify)
  if err then return nil, err end
  if flag ~= nil then
    if names.skip_verify_inverted then flag = not flag end
    out.insecure = flag
  end
  return out
end

--- GET `path` with `query` (a table; nil values are left out) from the agent that `cfg`
-- describes ({ base, headers, tls }), decoding the JSON answer: doc, res or nil, err, code[, status].
function M.get_json(cfg, path, query)
  local opts = { url = cfg.base .. path .. "?" .. url.encode_query(query), headers = {} }
  for k, v in pairs(cfg.headers) do opts.headers[k] = v end
  for k, v in pairs(cfg.tls) do opts[k] = v end
  return json_api.get(opts)
end

--- A discovery mode's start: its settings from `config()` (nil, err stops the scraper) and the
-- tag filter on the API's tag field `field` ("Tags", "ServiceTags").
function M.start(ctx, config, field)
  local cfg, err = config()
  if not cfg then return nil, err end
  ctx.state.cfg, ctx.state.filter, ctx.state.warned = cfg, tags.filter(field, ctx.app), {}
  return true
end

return M
