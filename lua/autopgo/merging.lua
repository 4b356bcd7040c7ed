-- The one way autopgo merges profiles, used alike by the worker and `autopgo merge` so their
-- outputs agree by construction: one C call (decode, CompatibilizeSampleTypes, Merge, Prune,
-- Compact when pruned, encode, sha256) on the thread pool, under the shared limits.
local async = require "autopgo.async"
local fail = require "autopgo.fail"
local limits = require "autopgo.limits"
local pprof = require("autopgo.core").pprof

local M = {}

-- The output is compressed again at every merge: gzip level 1 costs half the merge time of the
-- default level for a file some 7 % larger, which any gzip reader (go build -pgo) takes alike.
M.GZIP_LEVEL = 1

--- Merges inputs (encoded strings, {file = path} or profile objects, in order) and prunes with
-- rules (a list of {drop=, keep=}, may be nil or empty); scales (optional, one number per input)
-- scales each input first exactly as Go's Profile.Scale. Returns the result { bytes, sha256,
-- summary }, or nil, err, code, failure where failure is { code, message, input, other } with
-- 1-based input indices (input is absent when no input is to blame). With as_profile the result
-- is { profile (a decoded profile object, not encoded: the caller closes it), summary } instead,
-- for a merge whose output only feeds other merges.
function M.merge(inputs, rules, scales, as_profile)
  local opts = { level = M.GZIP_LEVEL, limits = limits.profile, output = as_profile and "profile" or nil }
  if rules and #rules > 0 then opts.prune = rules end
  if scales then opts.scales = scales end
  local err, out, summary, failure = async.await(function(cb)
    local ok, e, c = pprof.merge_async(inputs, opts, function(...) cb(nil, ...) end)
    -- Refused before any work (a closed or busy profile, a bad rule): no callback comes.
    if not ok then cb(nil, e, nil, nil, { code = c, message = fail.message(e) }) end
  end)
  if err then return nil, err, failure and failure.code or async.error_code(err), failure end
  if as_profile then return { profile = out, summary = summary } end
  return { bytes = out, sha256 = summary.sha256, summary = summary }
end

return M
