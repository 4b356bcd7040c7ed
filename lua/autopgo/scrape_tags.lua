-- The labels, annotations and tags that mark scrape targets in the kube, nomad and consul
-- discovery modes, and turning what they say into a target. Each setting has two accepted
-- names: the `autopgo.scrape.*` form the original implementation reads (first) and the shorter
-- form the seed README's examples show (`autopgo.app`, `autopgo.port`, ...).
local M = {}

M.scrape = "autopgo.scrape"

M.names = {
  app = { "autopgo.scrape.app", "autopgo.app" },
  port = { "autopgo.scrape.port", "autopgo.port" },
  path = { "autopgo.scrape.path", "autopgo.path" },
  scheme = { "autopgo.scrape.scheme", "autopgo.scheme" },
}

--- The value of `setting` (app, port, path or scheme) in a map of labels, annotations or parsed
-- tags: the first of its names with a non-empty value, or nil.
function M.lookup(map, setting)
  if type(map) ~= "table" then return nil end
  for _, name in ipairs(M.names[setting]) do
    local v = map[name]
    if type(v) == "string" and v ~= "" then return v end
  end
  return nil
end

--- A list of "key=value" tags (Nomad, Consul) as a map of the autopgo ones; later tags win,
-- tags without "=" are ignored.
function M.parse_tags(tags)
  local out = {}
  if type(tags) ~= "table" then return out end
  for _, tag in ipairs(tags) do
    if type(tag) == "string" and tag:sub(1, 7) == "autopgo" then
      local k, v = tag:match("^([^=]*)=(.*)$")
      if k then out[k] = v end
    end
  end
  return out
end

--- Quotes a string for a HashiCorp filter expression (go-bexpr): "..." with \ and " escaped.
function M.quote(s)
  return '"' .. s:gsub('[\\"]', "\\%0") .. '"'
end

--- The go-bexpr filter that selects the registrations of `app` through tags held in the field
-- `field` ("Tags" for Nomad, "ServiceTags" for Consul), accepting both names of the app tag.
function M.filter(field, app)
  local alts = {}
  for _, name in ipairs(M.names.app) do
    alts[#alts + 1] = ("%s contains %s"):format(field, M.quote(name .. "=" .. app))
  end
  return ("%s contains %s and (%s)"):format(field, M.quote(M.scrape .. "=true"), table.concat(alts, " or "))
end

--- A target from a host (IP or name), a port (number or string) and a map holding the scheme
-- and path settings. Returns { address, path } or nil and why the instance cannot be scraped.
function M.target(host, port, settings)
  if type(host) ~= "string" or host == "" then return nil, "it has no address" end
  -- JSON numbers arrive as floats (21500.0); annotations and tags as strings ("8080")
  local n
  if type(port) == "number" then
    n = math.tointeger(port)
  elseif type(port) == "string" and port:match("^%s*%d+%s*$") then
    n = math.tointeger(tonumber(port))
  end
  if not n or n < 1 or n > 65535 then
    return nil, ("its port %s is not a port number"):format(type(port) == "string" and ("%q"):format(port)
      or tostring(math.tointeger(port) or port))
  end
  local scheme = (M.lookup(settings, "scheme") or "http"):lower()
  if scheme ~= "http" and scheme ~= "https" then
    return nil, ("its scheme %q is neither http nor https"):format(scheme)
  end
  local path = M.lookup(settings, "path")
  if path and path:sub(1, 1) ~= "/" then
    return nil, ("its path %q does not start with /"):format(path)
  end
  if host:find(":", 1, true) and host:sub(1, 1) ~= "[" then host = "[" .. host .. "]" end
  return { address = ("%s://%s:%d"):format(scheme, host, n), path = path }
end

return M
