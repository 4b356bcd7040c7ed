-- The merge policy of each application: prune rules from --prune (the seed's JSON file) and from
-- the config file's `policy` table ({ [app] = { prune = {...}, hook = fn } }, "*" for apps without
-- an entry of their own), plus the optional Lua hook that may edit each uploaded profile before it
-- is merged (drop labels, rename functions, prune). Changing it needs no rebuild. The schema of
-- the policy table lives here (policy.validate); config.lua checks config files with it.
-- With history (README "Time model"): what default.pgo is (default = "all", window = "168h" or
-- half_life = "72h") and how each upload is weighted before it is merged (normalize).
local fail = require "autopgo.fail"
local keys = require "autopgo.keys"
local log = require "autopgo.log"
local prune = require "autopgo.prune"
local pprof = require("autopgo.core").pprof
local units = require "autopgo.units"

local M = {}

--- The schema: policy = { [app or "*"] = { prune = { { drop = "re", keep = "re" }, ... },
-- hook = function(profile, app), serve = "pprof"|"pgo", stable = bool, no_inline = { names },
-- default = "all", window = "168h" | half_life = "72h", normalize = "none" | "duration" | "equal" } }.
-- Returns true, or nil and what is wrong (for a message).
function M.validate(policy)
  if type(policy) ~= "table" then return nil, "must be a table of per-app entries" end
  for app, p in pairs(policy) do
    local where = ("[%q]"):format(tostring(app))
    if type(app) ~= "string" or not (app == "*" or keys.is_app_name(app)) then
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
        -- the compiler's view (autopgo.pgo owns these three)
        local why = require("autopgo.pgo").policy_problem(p)
        if why then return nil, ("%s.%s"):format(where, why) end
      elseif k == "default" then
        if v ~= "all" then return nil, ("%s.default must be \"all\" (or set window or half_life)"):format(where) end
      elseif k == "window" or k == "half_life" then
        local secs = type(v) == "string" and units.parse_duration(v)
        if not secs or secs <= 0 then
          return nil, ("%s.%s must be a duration such as \"168h\""):format(where, k)
        end
      elseif k == "normalize" then
        if v ~= "none" and v ~= "duration" and v ~= "equal" then
          return nil, ("%s.normalize must be \"none\", \"duration\" or \"equal\""):format(where)
        end
      else
        return nil, ("%s has unknown key %q (want prune, hook, serve, stable, no_inline, default, window, "
          .. "half_life or normalize)"):format(where, tostring(k))
      end
    end
    if (p.window and p.half_life) or (p.default and (p.window or p.half_life)) then
      return nil, ("%s: give one of default = \"all\", window or half_life"):format(where)
    end
  end
  return true
end

local Policy = {}
Policy.__index = Policy

--- The prune rules for app, in the order they apply: the --prune file's entry for the app (the
-- first naming it, as in the original), then the config policy's.
function Policy:rules_for(app)
  local out = {}
  for _, r in ipairs(prune.rules_for(self.file_rules, app) or {}) do out[#out + 1] = r end
  local entry = self:entry(app)
  for _, r in ipairs(entry and entry.prune or {}) do out[#out + 1] = { drop = r.drop, keep = r.keep } end
  return out
end

--- The config policy entry for app (its own or "*"), or nil.
function Policy:entry(app)
  return self.table[app] or self.table["*"]
end

--- The hook for app, or nil.
function Policy:hook_for(app)
  local entry = self:entry(app)
  return entry and entry.hook
end

--- What default.pgo of app is: { kind = "all" }, { kind = "window", seconds = n } or
-- { kind = "decay", half_life = seconds }.
function Policy:view_for(app)
  local entry = self:entry(app)
  if entry and entry.window then return { kind = "window", seconds = units.parse_duration(entry.window) } end
  if entry and entry.half_life then return { kind = "decay", half_life = units.parse_duration(entry.half_life) } end
  return { kind = "all" }
end

--- How app's uploads are weighted before they are merged: "none", "duration" or "equal".
function Policy:normalize_for(app)
  local entry = self:entry(app)
  return entry and entry.normalize or "none"
end

--- Whether any entry asks for something only history can give (a view other than "all").
function Policy:needs_history()
  for _, entry in pairs(self.table) do
    if entry.window or entry.half_life then return true end
  end
  return false
end

--- Runs app's hook on a decoded profile (it may edit it in place or return a replacement).
-- Returns the profile to merge, or nil, "POLICY: ...", "POLICY" when the hook failed.
function Policy:apply_hook(app, profile)
  local hook = self:hook_for(app)
  if not hook then return profile end
  local ok, res = pcall(hook, profile, app)
  if not ok then return fail.new("POLICY", "the policy hook of %s failed: %s", app, tostring(res)) end
  if res == nil then return profile end
  if type(res) ~= "userdata" then
    return fail.new("POLICY", "the policy hook of %s returned a %s, not a profile", app, type(res))
  end
  return res
end

--- Builds the policy from role options: opts.prune (a path) and opts.policy (the config table).
-- Returns it, or a failure for a bad file, rule or table. As in the original, a --prune file that
-- does not exist only earns a warning.
function M.new(opts)
  opts = opts or {}
  local self = setmetatable({ file_rules = nil, table = {} }, Policy)
  if opts.prune and opts.prune ~= "" then
    local rules, err, code = prune.load(opts.prune)
    if rules then
      self.file_rules = rules
    elseif code == "NOT_FOUND" then
      log.warn("the prune configuration does not exist, merging without it", "path", opts.prune)
    else
      return nil, err, code
    end
  end
  if opts.policy then
    local ok, why = M.validate(opts.policy)
    if not ok then return fail.new("POLICY", "policy %s", why) end
    for app, entry in pairs(opts.policy) do
      if entry.prune then
        local cok, err = pprof.check_rules(entry.prune)
        if not cok then return fail.new("POLICY", "policy [%q].prune: %s", app, fail.message(err)) end
      end
    end
    self.table = opts.policy
  end
  if not self.file_rules and not next(self.table) then log.warn("worker starting with no prune rules") end
  return self
end

return M
