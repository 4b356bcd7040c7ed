-- Loads a Lua config file (a file that returns a table) and validates it once against the
-- option schema: unknown keys and wrong types are errors naming the key.
local fail = require "autopgo.fail"
local keys_mod = require "autopgo.keys"
local options = require "autopgo.options"

local M = {}

--- Loads and validates `path`; returns a table of typed values keyed by option name, or
-- fail.new("INVALID", "message").
function M.load(path)
  -- The file gets its own environment: it can read the standard library but cannot set
  -- globals in the process.
  local env = setmetatable({}, { __index = _G })
  local chunk, err = loadfile(path, "t", env)
  if not chunk then
    return fail.new("INVALID", "cannot load config file %s: %s", path, err)
  end
  local ok, result = pcall(chunk)
  if not ok then
    return fail.new("INVALID", "config file %s failed: %s", path, tostring(result))
  end
  if type(result) ~= "table" then
    return fail.new("INVALID", "config file %s must return a table, got %s", path, type(result))
  end
  return M.validate(result, path)
end

--- Validates a config table; returns typed values or fail.new("INVALID", "message").
function M.validate(t, origin)
  origin = origin or "config"
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = tostring(k) end
  table.sort(keys)
  local out = {}
  for _, k in ipairs(keys) do
    local o = options.by_name[k]
    if not o or not o.config then
      local hint = ""
      local dashed = type(k) == "string" and options.by_name[k:gsub("-", "_")]
      if dashed and dashed.config then hint = (" (did you mean %q?)"):format(dashed.name) end
      return fail.new("INVALID", "%s: unknown key %q%s", origin, k, hint)
    end
    local v, why = options.coerce(o, t[k])
    if v == nil then
      return fail.new("INVALID", "%s: key %q %s", origin, k, why)
    end
    out[k] = v
  end
  if out.policy then
    local ok, why = M.validate_policy(out.policy)
    if not ok then return fail.new("INVALID", "%s: key \"policy\" %s", origin, why) end
  end
  return out
end

--- policy = { [app] = { prune = { { drop = "re", keep = "re" }, ... }, hook = function } }
function M.validate_policy(policy)
  for app, p in pairs(policy) do
    local where = ("[%q]"):format(tostring(app))
    if type(app) ~= "string" or not (app == "*" or keys_mod.is_app_name(app)) then
      return nil, ("has an invalid application name %s (a-z, 0-9, '-' or \"*\")"):format(where)
    end
    if type(p) ~= "table" then return nil, ("%s must be a table"):format(where) end
    for k, v in pairs(p) do
      if k == "prune" then
        if type(v) ~= "table" then return nil, ("%s.prune must be a list of rules"):format(where) end
        for i, rule in ipairs(v) do
          if type(rule) ~= "table" or type(rule.drop) ~= "string" or
              (rule.keep ~= nil and type(rule.keep) ~= "string") then
            return nil, ("%s.prune[%d] must be { drop = \"regex\", keep = \"regex\" (optional) }"):format(where, i)
          end
        end
      elseif k == "hook" then
        if type(v) ~= "function" then return nil, ("%s.hook must be a function"):format(where) end
      else
        return nil, ("%s has unknown key %q (want prune or hook)"):format(where, tostring(k))
      end
    end
  end
  return true
end

return M
