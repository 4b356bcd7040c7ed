-- The merge policy of each application: prune rules from --prune (the seed's JSON file) and from
-- the config file's `policy` table ({ [app] = { prune = {...}, hook = fn } }, "*" for apps without
-- an entry of their own), plus the optional Lua hook that may edit each uploaded profile before it
-- is merged (drop labels, rename functions, prune). Changing it needs no rebuild.
local prune = require "autopgo.prune"
local config = require "autopgo.config"
local log = require "autopgo.log"
local pprof = require("autopgo.core").pprof

local M = {}

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

--- Runs app's hook on a decoded profile (it may edit it in place or return a replacement).
-- Returns the profile to merge, or nil, "POLICY: ...", "POLICY" when the hook failed.
function Policy:apply_hook(app, profile)
  local hook = self:hook_for(app)
  if not hook then return profile end
  local ok, res = pcall(hook, profile, app)
  if not ok then return nil, ("POLICY: the policy hook of %s failed: %s"):format(app, tostring(res)), "POLICY" end
  if res == nil then return profile end
  if type(res) ~= "userdata" then
    return nil, ("POLICY: the policy hook of %s returned a %s, not a profile"):format(app, type(res)), "POLICY"
  end
  return res
end

--- Builds the policy from role options: opts.prune (a path) and opts.policy (the config table).
-- Returns it, or nil, "CODE: message", "CODE" for a bad file, rule or table. As in the original, a
-- --prune file that does not exist only earns a warning.
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
    local ok, why = config.validate_policy(opts.policy)
    if not ok then return nil, "POLICY: policy " .. why, "POLICY" end
    for app, entry in pairs(opts.policy) do
      if entry.prune then
        local cok, err, code = pprof.check_rules(entry.prune)
        if not cok then return nil, ("%s: policy [%q].prune: %s"):format(code, app, err:gsub("^[%u_]+: ", "")), code end
      end
    end
    self.table = opts.policy
  end
  if not self.file_rules and not next(self.table) then log.warn("worker starting with no prune rules") end
  return self
end

return M
