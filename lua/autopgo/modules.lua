-- Loading the library's optional modules: a CLI command's module by name, a blob store or an
-- event bus by the scheme of its URL (a table { scheme = "module.name" } per kind). A module
-- that is not there is "not built yet"; any other error loading one is raised.
local fail = require "autopgo.fail"
local url = require "autopgo.url"

local M = {}

--- require(name), or nil when no module `name` exists. Raises any other error loading it.
function M.require(name)
  local ok, mod = pcall(require, name)
  if ok then return mod end
  if tostring(mod):find("module '" .. name .. "' not found", 1, true) then return nil end
  error(mod, 0)
end

--- Parses `raw_url` and requires the module `schemes` names for its scheme; `kind` says what is
-- being chosen in messages ("blob store", "event bus"). Returns the module and the parsed URL, or
-- fail.new("CODE", "message"): INVALID for a bad URL or an unknown scheme, UNSUPPORTED for a
-- module that is not built.
function M.by_scheme(schemes, raw_url, kind)
  local u, err, code = url.parse(raw_url)
  if not u then return nil, err, code end
  local name = schemes[u.scheme]
  if not name then
    local known = {}
    for s in pairs(schemes) do known[#known + 1] = s .. "://" end
    table.sort(known)
    return fail.new("INVALID", "unsupported %s scheme %q (supported: %s)", kind, u.scheme,
      table.concat(known, ", "))
  end
  local mod = M.require(name)
  if not mod then
    return fail.new("UNSUPPORTED", "the %s:// %s is not built yet", u.scheme, kind)
  end
  return mod, u
end

return M
