-- Stable serving (policy stable = true): after each merge the worker decides whether the minimal
-- profile served for an app changes (only when the compiler's decisions do) and counts it; the API
-- serves the recorded bytes ({app}/pgo/served.pgo) while they give the current profile's decisions.
local log = require "autopgo.log"
local keys = require "autopgo.keys"
local metrics = require "autopgo.metrics"
local pgo = require "autopgo.pgo"

local M = {}

local m = {
  changes = metrics.counter("autopgo_pgo_decision_changes_total",
    "Merges that changed the compiler's decisions (hot call sites, hot functions, devirtualization targets), by app.",
    { "app" }),
  kept = metrics.counter("autopgo_pgo_stable_kept_total",
    "Merges after which the previous minimal profile was kept (stable = true: same decisions), by app.", { "app" }),
}

-- How many times a decision is taken again when another worker recorded one meanwhile.
local ATTEMPTS = 5

-- The recorded minimal profile of app: { body, etag } with the signature of its decisions, false
-- when there is none, or nil, err, code.
local function recorded(store, app)
  local old, err, code = store:get(keys.pgo_served(app))
  if not old then
    if code == "NOT_FOUND" then return false end
    return nil, err, code
  end
  local r = pgo.shape(old.body, { decisions = true, decisions_limit = 1 })
  old.signature = r and r.decisions and pgo.signature(r.decisions) or ""
  return old
end

--- The worker's decision after committing `bytes` as app's merged profile (policy: the config's
-- policy table): keeps the recorded minimal profile when its decisions are the new one's, else
-- records the new one (counted as a change when one was recorded before). Failures are logged:
-- the merge stands, and the API serves the new profile's own minimal form meanwhile.
-- Returns "kept", "changed", "recorded" or nil (not stable, unusable, or failed).
function M.after_merge(store, policy, app, bytes)
  local pol = pgo.app_policy(policy, app)
  if not pol.stable then return nil end
  local r, err, code = pgo.shape(bytes, { format = "pgo", decisions = true, decisions_limit = 1,
    no_inline = pol.no_inline })
  if not r or not r.info.usable then
    -- a profile go build -pgo cannot use has no minimal form: nothing to decide
    if not r and code ~= "INVALID" then
      log.warn("cannot shape the merged profile for stable serving", "app", app, "error", err)
    end
    return nil
  end
  local signature = pgo.signature(r.decisions)
  for _ = 1, ATTEMPTS do
    local old, gerr = recorded(store, app)
    if old == nil then
      log.warn("cannot read the served minimal profile; deciding at the next merge", "app", app, "error", gerr)
      return nil
    end
    if old and old.signature == signature then
      m.kept:inc({ app = app })
      return "kept"
    end
    local ok, perr, pcode = store:put(keys.pgo_served(app), r.bytes,
      old and { if_match = old.etag } or { if_none_match = "*" })
    if ok then
      if old then m.changes:inc({ app = app }) end
      return old and "changed" or "recorded"
    end
    if pcode ~= "PRECONDITION_FAILED" then
      log.warn("cannot record the served minimal profile", "app", app, "error", perr)
      return nil
    end
  end
  log.warn("the served minimal profile kept changing; deciding at the next merge", "app", app)
  return nil
end

--- The API's side: the bytes to serve for app's current minimal profile `fresh` whose decisions
-- have `signature`: the recorded ones when they give the same decisions, else fresh (the worker
-- has not decided on this merge yet, or could not).
function M.pick(store, app, fresh, signature)
  local old, err = recorded(store, app)
  if old == nil then
    log.warn("cannot read the served minimal profile; serving the new one", "app", app, "error", err)
  end
  if old and old.signature == signature then return old.body end
  return fresh
end

return M
