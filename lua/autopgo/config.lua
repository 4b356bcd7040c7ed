-- Loads a Lua config file (a file that returns a table) and validates it once against the
-- option schema: unknown keys and wrong types are errors naming the key.
local options = require "autopgo.options"

local M = {}

--- Loads and validates `path`; returns a table of typed values keyed by option name, or
-- nil, "CONFIG: message", "CONFIG".
function M.load(path)
  -- The file gets its own environment: it can read the standard library but cannot set
  -- globals in the process.
  local env = setmetatable({}, { __index = _G })
  local chunk, err = loadfile(path, "t", env)
  if not chunk then
    return nil, ("CONFIG: cannot load config file %s: %s"):format(path, err), "CONFIG"
  end
  local ok, result = pcall(chunk)
  if not ok then
    return nil, ("CONFIG: config file %s failed: %s"):format(path, tostring(result)), "CONFIG"
  end
  if type(result) ~= "table" then
    return nil, ("CONFIG: config file %s must return a table, got %s"):format(path, type(result)), "CONFIG"
  end
  return M.validate(result, path)
end

--- Validates a config table; returns typed values or nil, "CONFIG: message", "CONFIG".
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
      return nil, ("CONFIG: %s: unknown key %q%s"):format(origin, k, hint), "CONFIG"
    end
    local v, why = options.coerce(o, t[k])
    if v == nil then
      return nil, ("CONFIG: %s: key %q %s"):format(origin, k, why), "CONFIG"
    end
    out[k] = v
  end
  if out.policy then
    local ok, why = M.validate_policy(out.policy)
    if not ok then return nil, ("CONFIG: %s: key \"policy\" %s"):format(origin, why), "CONFIG" end
  end
  return out
end

--- policy = { [app] = { prune = { { drop = "re", keep = "re" }, ... }, hook = function } }
function M.validate_policy(policy)
  for app, p in pairs(policy) do
    local where = ("[%q]"):format(tostring(app))
    if type(app) ~= "string" or not (app == "*" or options.is_app_name(app)) then
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
      elseif k == "serve" or k == "stable" or k == "no_inline" then
        local why = require("autopgo.pgo").policy_problem(p)
        if why then return nil, ("%s.%s"):format(where, why) end
      else
        return nil, ("%s has unknown key %q (want prune, hook, serve, stable or no_inline)"):format(where, tostring(k))
      end
    end
  end
  return true
end

return M
