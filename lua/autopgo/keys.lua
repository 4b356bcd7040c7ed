-- Where things live in the blob store, and what an app name is: the one owner of the key layout.
-- {app}/staging/{unix-nanos}   an accepted upload waiting to be merged (the original's layout)
-- {app}/default.pgo            the merged base, served by GET /api/profile/{app}
-- {app}/ledger/{sha256}.json   which staged keys the base of that digest holds
-- {app}/rejected/{name}        a staged upload the worker could not merge
-- {app}/rejected/default.pgo.{sha256}  a base that no longer parsed
-- {app}/rejected/{name}.reason  why (text)
-- {app}/pgo/served.pgo         the minimal PGO profile served under policy stable = true
-- {app}/uploads/{unix-nanos}.json  provenance of the staged upload of that name (API-written)
-- {app}/history/{seglen}/{start}.json         manifest of a time segment (the commit point)
-- {app}/history/{seglen}/{start}.{sha256}.pgo the segment's merged profile (immutable)
-- {app}/history/{seglen}/{start}.part.{sha256}.json  uploads of the segment a manifest names (immutable)
-- {app}/cache/{digest}.pgo, .json             a merged window, by the digest of what it holds
local M = {}

-- App names: a-z, 0-9 and '-', 1..M.max_app_len characters (it becomes a path segment on every
-- store, and a file name on the local one).
M.max_app_len = 128

function M.is_app_name(s)
  return type(s) == "string" and s ~= "" and #s <= M.max_app_len and not s:find("[^a-z0-9%-]")
end

-- Why s is not an app name, for a 400 or a usage error (nil when it is one).
function M.app_name_problem(s)
  if type(s) ~= "string" or s == "" then return "an application name must not be empty" end
  if #s > M.max_app_len then
    return ("an application name has at most %d characters, got %d"):format(M.max_app_len, #s)
  end
  if s:find("[^a-z0-9%-]") then
    return ("an application name is made of a-z, 0-9 and '-', got %q"):format(s)
  end
  return nil
end

function M.app_prefix(app) return app .. "/" end
function M.staging_prefix(app) return app .. "/staging/" end
function M.staging(app, nanos) return ("%s/staging/%d"):format(app, nanos) end
function M.base(app) return app .. "/default.pgo" end
function M.ledger_prefix(app) return app .. "/ledger/" end
function M.ledger(app, digest) return ("%s/ledger/%s.json"):format(app, digest) end
function M.rejected_prefix(app) return app .. "/rejected/" end
function M.rejected(app, name) return ("%s/rejected/%s"):format(app, name) end
-- Where a base that no longer parses is kept (digest: the sha256 of its bytes).
function M.rejected_base(app, digest) return M.rejected(app, "default.pgo." .. digest) end
function M.pgo_served(app) return app .. "/pgo/served.pgo" end
-- The text object beside a rejected one that says why it was rejected.
function M.reason_of(rejected_key) return rejected_key .. ".reason" end

-- Provenance records (written by the API beside each staged upload).
function M.uploads_prefix(app) return app .. "/uploads/" end
function M.upload_record(app, nanos) return ("%s/uploads/%d.json"):format(app, nanos) end
-- The provenance record of a staging key.
function M.record_of(staging_key)
  local app, nanos = M.app_of(staging_key), M.staging_nanos(staging_key)
  if not (app and nanos) then return nil end
  return M.upload_record(app, nanos)
end
-- History: per-time segments of seglen seconds, start in Unix seconds.
function M.history_prefix(app, seglen)
  if seglen then return ("%s/history/%d/"):format(app, seglen) end
  return app .. "/history/"
end
function M.segment_manifest(app, seglen, start) return ("%s/history/%d/%d.json"):format(app, seglen, start) end
function M.segment_object(app, seglen, start, digest)
  return ("%s/history/%d/%d.%s.pgo"):format(app, seglen, start, digest)
end
-- A part of a segment: a list of uploads its manifest names, by the sha256 of the part's body.
function M.segment_part(app, seglen, start, digest)
  return ("%s/history/%d/%d.part.%s.json"):format(app, seglen, start, digest)
end
-- Of a key under history/: seglen, start, the digest (nil for a manifest) and the kind of object:
-- "manifest", "profile" or "part".
function M.parse_history(key)
  local seglen, start, rest = key:match("^[^/]+/history/(%d+)/(%-?%d+)%.(.+)$")
  if not seglen then return nil end
  if rest == "json" then return tonumber(seglen), tonumber(start), nil, "manifest" end
  local digest = rest:match("^(%x+)%.pgo$")
  if digest then return tonumber(seglen), tonumber(start), digest, "profile" end
  digest = rest:match("^part%.(%x+)%.json$")
  if digest then return tonumber(seglen), tonumber(start), digest, "part" end
  return nil
end
-- Cached window merges.
function M.cache_prefix(app) return app .. "/cache/" end
function M.cache(app, digest) return ("%s/cache/%s.pgo"):format(app, digest) end
function M.cache_info(app, digest) return ("%s/cache/%s.json"):format(app, digest) end

-- The app a key belongs to (its first segment, when that is an app name), or nil.
function M.app_of(key)
  local app = type(key) == "string" and key:match("^([^/]+)/") or nil
  if app and M.is_app_name(app) then return app end
  return nil
end

-- What kind of object a key names: "staging", "base", "ledger", "rejected", "pgo", "uploads" (a
-- provenance record), "history", "cache", or nil (unknown).
function M.kind_of(key)
  local app = M.app_of(key)
  if not app then return nil end
  local rest = key:sub(#app + 2)
  if rest == "default.pgo" then return "base", app end
  local kind = rest:match("^([a-z]+)/[^/]+$")
  if kind == "staging" or kind == "ledger" or kind == "rejected" or kind == "pgo" or kind == "uploads"
      or kind == "cache" then
    return kind, app
  end
  if M.parse_history(key) then return "history", app end
  return nil
end

-- Whether key is a staged upload of app.
function M.is_staging_of(app, key)
  return M.kind_of(key) == "staging" and M.app_of(key) == app
end

-- The unix-nanos a staging key was named with, or nil.
function M.staging_nanos(key)
  if M.kind_of(key) ~= "staging" then return nil end
  return tonumber(key:match("/staging/(%d+)$"))
end

return M
