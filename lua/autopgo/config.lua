-- Loads a Lua config file (a file that returns a table) and validates it once against the
-- option schema: unknown keys and wrong types are errors naming the key.
local fail = require "autopgo.fail"
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

--- The policy table's schema is autopgo.policy's (policy.validate).
function M.validate_policy(policy)
  return require("autopgo.policy").validate(policy)
end

return M
