-- The seed's prune configuration: a JSON list of { "app": name, "rules": [{ "drop": re,
-- "keep": re }] } read as the original worker reads it, with every pattern compiled up front.
local fail = require "autopgo.fail"
local cjson = require "cjson.safe"
local pprof = require("autopgo.core").pprof

local M = {}

-- A JSON array decodes to a sequence (or an empty table); an object has other keys.
local function is_list(t)
  return type(t) == "table" and (next(t) == nil or t[1] ~= nil)
end

--- Checks a decoded configuration (or JSON text); returns a list of { app = name, rules =
-- { { drop = re, keep = re|nil }, ... } } or nil, err, code. As in the original, "keep" may
-- be missing or null (no keep pattern) and unknown fields are ignored; unlike it, a rule
-- without "drop" is an error here rather than a crash at the first merge.
function M.parse(config, source)
  source = source or "prune configuration"
  if type(config) == "string" then
    local decoded, err = cjson.decode(config)
    if decoded == nil then return fail.new("INVALID", "%s: invalid JSON: %s", source, err) end
    config = decoded
  end
  if not is_list(config) then
    return fail.new("INVALID", "%s: expected a JSON list of {\"app\": ..., \"rules\": [...]}", source)
  end
  local out = {}
  for i, entry in ipairs(config) do
    if type(entry) ~= "table" then return fail.new("INVALID", "%s: entry %d is not an object", source, i) end
    local app = entry.app
    if app == nil or app == cjson.null then app = "" end
    if type(app) ~= "string" then return fail.new("INVALID", "%s: entry %d: \"app\" must be a string", source, i) end
    local rules = {}
    local list = entry.rules
    if list ~= nil and list ~= cjson.null then
      if not is_list(list) then return fail.new("INVALID", "%s: app %q: \"rules\" must be a list", source, app) end
      for j, r in ipairs(list) do
        if type(r) ~= "table" then
          return fail.new("INVALID", "%s: app %q: rule %d is not an object", source, app, j)
        end
        if type(r.drop) ~= "string" then
          return fail.new("INVALID", "%s: app %q: rule %d: \"drop\" must be a string", source, app, j)
        end
        local keep = r.keep
        if keep == cjson.null then keep = nil end
        if keep ~= nil and type(keep) ~= "string" then
          return fail.new("INVALID", "%s: app %q: rule %d: \"keep\" must be a string or null", source, app, j)
        end
        rules[j] = { drop = r.drop, keep = keep }
      end
    end
    local ok, err, code = pprof.check_rules(rules)
    if not ok then
      return fail.new(code, "%s: app %q: %s", source, app, fail.message(err))
    end
    out[#out + 1] = { app = app, rules = rules }
  end
  return out
end

--- Reads and checks a configuration file. A missing file is nil, "NOT_FOUND: ...": the
-- original worker silently ignored one, callers decide.
function M.load(path)
  local f, err = io.open(path, "rb")
  if not f then
    local code = err and err:find("No such file", 1, true) and "NOT_FOUND" or "IO"
    return fail.new(code, "%s", err)
  end
  local text = f:read("a")
  f:close()
  return M.parse(text, path)
end

--- The rules for an app: those of the first entry naming it (the original stops there), or
-- nil when there is none.
function M.rules_for(config, app)
  for _, entry in ipairs(config or {}) do
    if entry.app == app then return entry.rules end
  end
  return nil
end

return M
