-- The one way autopgo merges profiles, used alike by the worker and `autopgo merge` so their
-- outputs agree by construction: one C call (decode, CompatibilizeSampleTypes, Merge, Prune,
-- Compact when pruned, encode, sha256) on the thread pool, under the shared limits. Its
-- incremental form, the fold, gives the same profile at the cost of the uploads (see M.fold).
local async = require "autopgo.async"
local fail = require "autopgo.fail"
local limits = require "autopgo.limits"
local pprof = require("autopgo.core").pprof

local M = {}

-- The output is compressed again at every merge: gzip level 1 costs half the merge time of the
-- default level for a file some 7 % larger, which any gzip reader (go build -pgo) takes alike.
M.GZIP_LEVEL = 1

-- The one C call on the thread pool: the result, or nil, err, code, failure.
local function run(inputs, opts)
  local err, out, summary, failure = async.await(function(cb)
    local ok, e, c = pprof.merge_async(inputs, opts, function(...) cb(nil, ...) end)
    -- Refused before any work (a closed or busy profile or folder, a bad rule): no callback comes.
    if not ok then cb(nil, e, nil, nil, { code = c, message = fail.message(e) }) end
  end)
  if err then return nil, err, failure and failure.code or async.error_code(err), failure end
  if opts.output == "profile" then return { profile = out, summary = summary } end
  return { bytes = out, sha256 = summary.sha256, summary = summary }
end

--- Merges inputs (encoded strings, {file = path} or profile objects, in order) and prunes with
-- rules (a list of {drop=, keep=}, may be nil or empty); scales (optional, one number per input)
-- scales each input first exactly as Go's Profile.Scale. Returns the result { bytes, sha256,
-- summary }, or nil, err, code, failure where failure is { code, message, input, other } with
-- 1-based input indices (input is absent when no input is to blame). With as_profile the result
-- is { profile (a decoded profile object, not encoded: the caller closes it), summary } instead,
-- for a merge whose output only feeds other merges. With facts, summary.facts[i] is what input i
-- said of itself once decoded ({ time_nanos, duration_nanos, samples, first_total }), for a
-- caller that merges bodies it did not decode.
function M.merge(inputs, rules, scales, as_profile, facts)
  local opts = { level = M.GZIP_LEVEL, limits = limits.profile, output = as_profile and "profile" or nil,
    facts = facts or nil }
  if rules and #rules > 0 then opts.prune = rules end
  if scales then opts.scales = scales end
  return run(inputs, opts)
end

--- A folder over base (the encoded bytes of a merged profile, any layout) pruned with rules: what
-- M.fold folds uploads into, kept between merges (it holds an index of the merged profile: its
-- tables but the samples, a digest per sample; its output as separately deflated segments, with
-- the values, is in a temp file, unlinked at once). Returns the folder, or nil, err, code.
function M.folder(base, rules)
  local opts = { level = M.GZIP_LEVEL, limits = limits.profile }
  if rules and #rules > 0 then opts.prune = rules end
  return async.await(function(cb)
    local ok, e = pprof.folder_async(base, opts, cb)
    if not ok then cb(e) end
  end)
end

--- Folds inputs (uploads: encoded strings or profile objects, in order; scales as in M.merge) into
-- folder, made with the same rules: the result equals M.merge({base, inputs...}, rules, scales)
-- up to the order of the profile's tables (one sample per stack, each upload pruned once), and
-- costs about what was uploaded: only the parts of the output that changed are compressed again.
-- Returns the result of M.merge (summary.fold telling what was compressed again), or nil, err,
-- code when the inputs need a full merge (other sample types, a sum cancelling out, a malformed
-- input): the folder is then spent, merge in full with M.merge (which tells which input is bad).
function M.fold(folder, inputs, rules, scales)
  local opts = { level = M.GZIP_LEVEL, limits = limits.profile, folder = folder }
  if rules and #rules > 0 then opts.prune = rules end
  if scales then opts.scales = scales end
  return run(inputs, opts)
end

return M
