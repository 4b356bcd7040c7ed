-- What `go build -pgo` reads from a profile, for the API and the CLI: the served formats (the full
-- pprof, the minimal pprof holding exactly the compiler's edge map, GO PREPROFILE V1), the
-- decisions view and the diff of two, and the per-app policy options serve, stable and no_inline.
-- The computation is C (autopgo.core.pgo, on the thread pool); this is the policy and the words.
local async = require "autopgo.async"
local fail = require "autopgo.fail"
local json = require "autopgo.json"
local core = require "autopgo.core"
local cpgo = core.pgo

local M = {}

--- The formats a profile is served in, with their content types.
M.formats = {
  pprof = "application/x-gzip",
  pgo = "application/x-gzip",
  preprofile = "text/plain; charset=utf-8",
}
M.format_names = { "pprof", "pgo", "preprofile" }

--- Go's default CDF threshold for hot call sites (-d=pgoinlinecdfthreshold).
M.threshold = 99

-- core/pprof codes -> the Lua vocabulary (autopgo.fail).
local codes = { MALFORMED = "INVALID", INVALID_ARGUMENT = "INVALID", TOO_LARGE = "TOO_LARGE", IO = "IO",
  NOMEM = "INTERNAL" }

--- Runs the C job: input is profile bytes (pprof, gzip'd or not, or GO PREPROFILE V1 text) or
-- {file = path}; opts as autopgo.core.pgo.shape's (format, no_inline, decisions, edges, limits).
-- Returns the result table or a failure. Must run in a coroutine.
function M.shape(input, opts)
  local r, err = async.await(cpgo.shape_async, input, opts or {})
  if not r then
    local code = fail.code(err)
    return fail.new(codes[code] or "INVALID", fail.message(err))
  end
  return r
end

-- ---- policy ----

--- Why a policy entry's pgo options are wrong (nil when they are fine): serve = "pprof"|"pgo",
-- stable = boolean, no_inline = list of function names.
function M.policy_problem(entry)
  if entry.serve ~= nil and entry.serve ~= "pprof" and entry.serve ~= "pgo" then
    return "serve must be \"pprof\" or \"pgo\""
  end
  if entry.stable ~= nil and type(entry.stable) ~= "boolean" then return "stable must be true or false" end
  if entry.no_inline ~= nil then
    if type(entry.no_inline) ~= "table" then return "no_inline must be a list of function names" end
    for i, name in ipairs(entry.no_inline) do
      if type(name) ~= "string" or name == "" then
        return ("no_inline[%d] must be a function name (a linker symbol such as runtime.gopark)"):format(i)
      end
    end
  end
  return nil
end

--- The pgo options of app from a config policy table ({ [app] = {...}, ["*"] = {...} }).
function M.app_policy(policy, app)
  local e = policy and (policy[app] or policy["*"]) or {}
  return { serve = e.serve or "pprof", stable = e.stable == true, no_inline = e.no_inline or {} }
end

-- ---- decisions ----

local function site_key(caller, offset) return caller .. "\0" .. tostring(offset) end

--- The identity of the decisions the compiler takes from a profile: the hot call sites, the hot
-- callees and the devirtualization target of every call site. Equal signatures, equal decisions
-- (and equal binaries when nothing else changed). Bounded decisions (shape's decisions_limit)
-- carry theirs, computed in C from the full lists.
function M.signature(d)
  if d.signature then return d.signature end
  local lines = {}
  for _, e in ipairs(d.hot) do lines[#lines + 1] = "S\t" .. site_key(e.caller, e.offset) end
  for _, f in ipairs(d.hot_functions) do lines[#lines + 1] = "C\t" .. f end
  -- with a tie the compiler prefers a callee it has the body of, so a new tie may change its choice
  for _, s in ipairs(d.sites) do
    lines[#lines + 1] = "T\t" .. site_key(s.caller, s.offset) .. "\0" .. s.callee .. "\0" .. (s.ties or 1)
  end
  table.sort(lines)
  local h = core.crypto.hasher("sha256")
  for i, l in ipairs(lines) do
    if i == 1 or lines[i - 1] ~= l then h:update(l .. "\n") end
  end
  return core.crypto.hex(h:digest())
end

--- What GET /api/profile/{app}/decisions lists of each list by default (?limit=, 0: all): the
-- heaviest hot call sites and devirtualization targets. A flat profile of 50 MB has 235 703 hot
-- call sites (the 99 % CDF bounds their weight, not their number): 57 MB of JSON unbounded.
M.decisions_limit = 500

--- The ?limit= of a request's query (a decisions list or a diff): pgo.decisions_limit when absent,
-- 0 for all; or nil and a message for a 400.
function M.limit_param(q)
  local s = q and q.limit
  if s == nil or s == "" then return M.decisions_limit end
  local n = math.tointeger(tonumber(s))
  if not n or n < 0 then return nil, "limit must be an integer from 0 (0: all)" end
  return n
end

local function pct(x) return ("%.2f%%"):format(x) end

local function share(w, total)
  if total == 0 then return "-" end
  return pct(100 * w / total)
end

local function site_name(caller, offset) return ("%s +%d"):format(caller, offset) end

--- The decisions view as text (autopgo inspect --pgo). opts.limit bounds each list (0: all).
function M.render(info, d, opts)
  local limit = opts and opts.limit or 0
  local out = {}
  local function add(fmt, ...) out[#out + 1] = fmt:format(...) end
  local function capped(list, each)
    local n = #list
    if limit > 0 and n > limit then n = limit end
    for i = 1, n do each(list[i], i) end
    if n < #list then add("  ... %d more", #list - n) end
  end
  add("Edges:          %d call edges, total weight %d (%s)", d.edges, d.total_weight, info.sample_type)
  add("Hot call sites: %d of %d edges, the heaviest up to the one taking the total past %s (inline budget 2000)",
    #d.hot, d.edges, pct(d.threshold))
  if #d.hot > 0 then
    add("  %10s %8s %8s  %s", "weight", "share", "cum", "call site -> callee")
    capped(d.hot, function(e)
      add("  %10d %8s %8s  %s -> %s", e.weight, share(e.weight, d.total_weight), pct(e.cum),
        site_name(e.caller, e.offset), e.callee)
    end)
  end
  local b = d.boundary
  if b.last_hot then
    add("Boundary:       edge #%d is the last hot one: %s before it, %s with it (threshold %s, %.2f points past it)",
      b.last_hot.index, pct(b.last_hot.cum_before), pct(b.last_hot.cum), pct(d.threshold), b.last_hot.cum - d.threshold)
  end
  if b.first_cold then
    add("                edge #%d is the first cold one (%s of the weight): %s -> %s", b.first_cold.index,
      share(b.first_cold.weight, d.total_weight), site_name(b.first_cold.caller, b.first_cold.offset),
      b.first_cold.callee)
  end
  add("Hot functions:  %d (their inline budget is 2000; hot-block alignment on amd64)", #d.hot_functions)
  capped(d.hot_functions, function(f) add("  %s", f) end)
  local multi = {}
  for _, s in ipairs(d.sites) do
    if s.callees > 1 then multi[#multi + 1] = s end
  end
  add("Devirtualization: %d call sites, %d with more than one callee (the heaviest one is the target):",
    #d.sites, #multi)
  capped(multi, function(s)
    add("  %s -> %s (%s of the site's weight, %d callees)", site_name(s.caller, s.offset), s.callee,
      share(s.weight, s.site_weight), s.callees)
  end)
  return table.concat(out, "\n") .. "\n"
end

-- ---- diff ----

--- What changed from profile a to profile b (each bytes or {file = path}, as shape's input), the
-- whole diff computed by one C job on the pool: call sites that became hot or cold, functions
-- that became hot or cold, devirtualization targets that changed (sites in both), each list cut
-- to its first `limit` (nil or 0: all) with "counts" of the full ones, and whether the compiler
-- would decide the same (equal signatures). Fails INVALID ("a: ..." or "b: ...") when go could
-- not use a side. Must run in a coroutine.
function M.diff(a, b, limit, limits)
  local r, err = async.await(cpgo.diff_async, a, b, { limit = limit or 0, limits = limits })
  if not r then
    local code = fail.code(err)
    return fail.new(codes[code] or "INVALID", fail.message(err))
  end
  return r
end

--- The diff (M.diff's result) as JSON (autopgo diff --json, GET /api/profile/{app}/diff): limit
-- (nil or 0: all) cuts each list to its first entries; "counts" has their full lengths. extra: more
-- {key, value, ...} pairs at the end.
function M.diff_doc(r, limit, extra)
  local function upto(n) return (limit and limit > 0) and math.min(n, limit) or n end
  local function sites(list)
    local out = json.array()
    for i = 1, upto(#list) do
      local e = list[i]
      out[i] = json.object("caller", e.caller, "offset", e.offset, "callee", e.callee)
    end
    return out
  end
  local function names(list)
    local out = json.array()
    for i = 1, upto(#list) do out[i] = list[i] end
    return out
  end
  local c = r.counts
  local changed = json.array()
  for i = 1, upto(#r.targets_changed) do
    local t = r.targets_changed[i]
    changed[i] = json.object("caller", t.caller, "offset", t.offset, "from", t.from, "to", t.to)
  end
  local fields = { "same", r.same, "becameHot", sites(r.hot_added), "becameCold", sites(r.hot_removed),
    "functionsHot", names(r.functions_added), "functionsCold", names(r.functions_removed),
    "targetsChanged", changed, "sitesAdded", r.sites_added, "sitesRemoved", r.sites_removed,
    "totalWeight", json.array { r.total_weight[1], r.total_weight[2] },
    "counts", json.object("becameHot", c.hot_added, "becameCold", c.hot_removed,
      "functionsHot", c.functions_added, "functionsCold", c.functions_removed,
      "targetsChanged", c.targets_changed) }
  for _, x in ipairs(extra or {}) do fields[#fields + 1] = x end
  return json.object(table.unpack(fields))
end

--- The diff as text (autopgo diff).
function M.render_diff(r, name_a, name_b)
  local out = {}
  local function add(fmt, ...) out[#out + 1] = fmt:format(...) end
  add("--- %s (total weight %d)", name_a, r.total_weight[1])
  add("+++ %s (total weight %d)", name_b, r.total_weight[2])
  if r.same then add("The compiler takes the same decisions from both.") end
  add("Call sites that became hot: %d", #r.hot_added)
  for _, e in ipairs(r.hot_added) do add("+ %s -> %s", site_name(e.caller, e.offset), e.callee) end
  add("Call sites that became cold: %d", #r.hot_removed)
  for _, e in ipairs(r.hot_removed) do add("- %s -> %s", site_name(e.caller, e.offset), e.callee) end
  add("Functions that became hot: %d", #r.functions_added)
  for _, f in ipairs(r.functions_added) do add("+ %s", f) end
  add("Functions that became cold: %d", #r.functions_removed)
  for _, f in ipairs(r.functions_removed) do add("- %s", f) end
  add("Devirtualization targets that changed: %d (call sites new: %d, gone: %d)", #r.targets_changed,
    r.sites_added, r.sites_removed)
  for _, t in ipairs(r.targets_changed) do
    add("~ %s: %s (weight %d) -> %s (weight %d)", site_name(t.caller, t.offset), t.from, t.from_weight, t.to,
      t.to_weight)
  end
  return table.concat(out, "\n") .. "\n"
end

return M
