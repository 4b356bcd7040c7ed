-- Specs of lua/autopgo/pgo.lua and the autopgo.core.pgo binding (core/lua/pgo.c): formats,
-- decisions, the no-inline list, the diff, the policy options. Exactness against the real Go
-- toolchain is tests/pgo/run.sh.
local support = require "tests.lua.support"
local profiles = require "tests.lua.profiles"
local pgo = require "autopgo.pgo"
local config = require "autopgo.config"
local cpgo = require("autopgo.core").pgo
local pprof = require("autopgo.core").pprof

local run = support.run

local function preprofile_of(bytes)
  return assert(cpgo.shape(bytes, { format = "preprofile" })).bytes
end

-- The decisions' JSON document as the Lua of the first release built it from full decisions (for
-- json.encode): the oracle core/pprof/decisions_json.c is held to, byte for byte.
local function reference_doc(info, d, extra, limit)
  local json = require "autopgo.json"
  local function upto(n) return (limit and limit > 0) and math.min(n, limit) or n end
  local function edge_doc(e, more)
    local t = { "caller", e.caller, "callee", e.callee, "offset", e.offset, "weight", e.weight }
    for i = 1, #(more or {}), 2 do
      t[#t + 1] = more[i]
      t[#t + 1] = more[i + 1]
    end
    return json.object(table.unpack(t))
  end
  local hot, sites, funcs, cdf = json.array(), json.array(), json.array(), json.array()
  for i = 1, upto(#d.hot) do hot[i] = edge_doc(d.hot[i], { "cumulative", d.hot[i].cum }) end
  for i = 1, upto(#d.sites) do
    local x = d.sites[i]
    sites[i] = json.object("caller", x.caller, "offset", x.offset, "callee", x.callee,
      "weight", x.weight, "siteWeight", x.site_weight, "callees", x.callees, "ties", x.ties)
  end
  for i = 1, upto(#d.hot_functions) do funcs[i] = d.hot_functions[i] end
  local n = #d.hot
  local step = math.max(1, math.ceil(n / 256))
  for i = step, n, step do cdf[#cdf + 1] = json.array { i, d.hot[i].cum } end
  if n > 0 and n % step ~= 0 then cdf[#cdf + 1] = json.array { n, d.hot[n].cum } end
  local b = d.boundary
  local boundary = json.object(
    "lastHot", b.last_hot and edge_doc(b.last_hot, { "index", b.last_hot.index, "cumulativeBefore",
      b.last_hot.cum_before, "cumulative", b.last_hot.cum }) or json.null,
    "firstCold", b.first_cold and edge_doc(b.first_cold, { "index", b.first_cold.index,
      "cumulative", b.first_cold.cum }) or json.null)
  local fields = { "sampleType", info.sample_type, "totalWeight", d.total_weight, "edges", d.edges,
    "threshold", d.threshold, "thresholdFromCDF", d.threshold_from_cdf, "hotCallSites", hot,
    "hotFunctions", funcs, "devirtualization", sites,
    "counts", json.object("hotCallSites", #d.hot, "hotFunctions", #d.hot_functions, "devirtualization", #d.sites),
    "limit", (limit and limit > 0) and limit or 0, "cdf", cdf, "boundary", boundary, "signature", pgo.signature(d) }
  for _, x in ipairs(extra or {}) do fields[#fields + 1] = x end
  return json.encode(json.object(table.unpack(fields)))
end

describe("autopgo.core.pgo", function()
  it("writes GO PREPROFILE V1 sorted by weight, and a minimal pprof that reads back the same", function()
    local full = profiles.file("goapp-go123-cpu-1.pb.gz")
    local r = assert(cpgo.shape(full, { format = "preprofile", edges = true }))
    assert.equals("pprof", r.info.source)
    assert.equals("samples/count", r.info.sample_type)
    assert.equals(301, r.info.edges)
    assert.equals(301, #r.edges)
    assert.equals("GO PREPROFILE V1\n", r.bytes:sub(1, 17))
    local total = 0
    for i, e in ipairs(r.edges) do
      total = total + e.weight
      if i > 1 then assert.is_true(e.weight <= r.edges[i - 1].weight) end
    end
    assert.equals(r.info.total_weight, total)
    local first = r.edges[1]
    assert.equals(("GO PREPROFILE V1\n%s\n%s\n%d %d\n"):format(first.caller, first.callee, first.offset, first.weight),
      r.bytes:sub(1, 17 + #first.caller + #first.callee + 3 + #tostring(first.offset) + #tostring(first.weight) + 1))
    local m = assert(cpgo.shape(full, { format = "pgo" }))
    assert.is_true(#m.bytes * 3 < #full)
    assert.equals(r.bytes, preprofile_of(m.bytes))
    -- byte-deterministic, and a plain valid pprof CPU profile
    assert.equals(m.bytes, assert(cpgo.shape(full, { format = "pgo" })).bytes)
    local p = assert(pprof.decode(m.bytes))
    local info = p:info()
    assert.equals(1, #info.sample_types)
    assert.equals(0, info.mappings)
    assert.is_true(p:pgo().usable)
    p:close()
    -- preprofile text in, the same out
    assert.equals(r.bytes, preprofile_of(r.bytes))
    assert.equals("preprofile", assert(cpgo.shape(r.bytes)).info.source)
  end)

  it("reads files on the thread pool", function()
    run(function()
      local r = assert(pgo.shape({ file = support.testdata .. "/autopgo/default.pgo" }, { decisions = true }))
      assert.equals(1247, r.info.edges)
      assert.is_true(#r.decisions.hot > 0)
      local _, err, code = pgo.shape({ file = support.testdata .. "/missing" })
      assert.equals("IO", code)
      assert.matches("missing", err)
    end)
  end)

  it("says why a profile cannot be used, and fails on a broken one", function()
    local r = assert(cpgo.shape(profiles.file("goapp-cpu-1.pb.gz"), { decisions = true }))
    assert.is_false(r.info.usable)
    assert.matches("start_line", r.info.reason)
    assert.is_nil(r.decisions)
    local _, err, code = cpgo.shape(profiles.file("goapp-cpu-1.pb.gz"), { format = "pgo" })
    assert.equals("INVALID_ARGUMENT", code)
    assert.matches("cannot be used by go build %-pgo", err)
    _, err, code = cpgo.shape("GO PREPROFILE V1\nonly a caller\n")
    assert.equals("MALFORMED", code)
    assert.matches("missing callee", err)
    run(function()
      local _, _, c = pgo.shape("GO PREPROFILE V1\nx\ny\n1 2\nx\ny\n1 3\n")
      assert.equals("INVALID", c)
    end)
    assert.has_error(function() cpgo.shape("x", { format = "svg" }) end)
    assert.has_error(function() cpgo.shape("x", { no_inline = { 1 } }) end)
    assert.has_error(function() cpgo.shape("x", { decisions = 101 }) end)
    -- an empty file is an empty profile, as for the compiler
    r = assert(cpgo.shape("", { format = "preprofile" }))
    assert.is_true(r.info.empty)
    assert.equals("GO PREPROFILE V1\n", r.bytes)
  end)

  it("computes the 99 % CDF hot set, hot functions and devirtualization targets", function()
    local t = "GO PREPROFILE V1\nm.a\nm.b\n3 600\nm.a\nm.c\n3 300\nm.d\nm.b\n1 95\nm.d\nm.e\n1 5\n"
    local d = assert(cpgo.shape(t, { decisions = true })).decisions
    assert.equals(1000, d.total_weight)
    assert.equals(3, #d.hot)
    assert.equals(9.5, d.threshold_from_cdf)
    assert.equals(99.5, d.hot[3].cum)
    assert.same({ "m.b", "m.c" }, d.hot_functions)
    assert.equals(2, #d.sites)
    assert.same({ caller = "m.a", callee = "m.b", offset = 3, weight = 600, site_weight = 900, callees = 2, ties = 1 },
      d.sites[1])
    assert.equals(3, d.boundary.last_hot.index)
    assert.equals(90, d.boundary.last_hot.cum_before)
    assert.equals(4, d.boundary.first_cold.index)
    -- another threshold (Go's -d=pgoinlinecdfthreshold)
    assert.equals(1, #assert(cpgo.shape(t, { decisions = 50 })).decisions.hot)
  end)

  it("keeps no_inline callees out of the hot functions, with the total and the order unchanged", function()
    local t = "GO PREPROFILE V1\nm.a\nruntime.gopark\n3 600\nm.a\nm.c\n3 300\n"
      .. "m.d\nruntime.gopark\n1 95\nm.d\nm.e\n1 5\n"
    local r = assert(cpgo.shape(t, { decisions = true, no_inline = { "runtime.gopark" }, format = "preprofile" }))
    assert.equals(2, r.renamed)
    assert.same({ "runtime.gopark" .. cpgo.no_inline_suffix, "m.c" }, r.decisions.hot_functions)
    assert.equals(1000, r.decisions.total_weight)
    assert.equals(3, #r.decisions.hot)
    assert.equals("GO PREPROFILE V1\nm.a\nruntime.gopark (autopgo: no_inline)\n3 600\nm.a\nm.c\n3 300\n"
      .. "m.d\nruntime.gopark (autopgo: no_inline)\n1 95\nm.d\nm.e\n1 5\n", r.bytes)
  end)
end)

describe("autopgo.pgo", function()
  it("checks and reads the policy options", function()
    assert.is_nil(pgo.policy_problem({ serve = "pgo", stable = true, no_inline = { "runtime.gopark" } }))
    assert.matches("serve", pgo.policy_problem({ serve = "svg" }))
    assert.matches("stable", pgo.policy_problem({ stable = "yes" }))
    assert.matches("no_inline%[1%]", pgo.policy_problem({ no_inline = { "" } }))
    assert.same({ serve = "pprof", stable = false, no_inline = {} }, pgo.app_policy(nil, "a"))
    local pol = { ["*"] = { serve = "pgo" }, b = { stable = true, no_inline = { "x.y" } } }
    assert.same({ serve = "pgo", stable = false, no_inline = {} }, pgo.app_policy(pol, "a"))
    assert.same({ serve = "pprof", stable = true, no_inline = { "x.y" } }, pgo.app_policy(pol, "b"))
    assert.is_true(config.validate_policy({ a = { serve = "pgo", stable = false, no_inline = { "runtime.gopark" } } }))
    local ok, why = config.validate_policy({ a = { serve = "gz" } })
    assert.is_nil(ok)
    assert.matches('%["a"%]%.serve must be', why)
  end)

  -- The diff as the Lua of the first release computed it from two full decisions: the oracle the
  -- C job (autopgo.core.pgo.diff) is held to.
  local function reference_diff(a, b)
    local function key(caller, offset) return caller .. "\0" .. tostring(offset) end
    local function sorted(t)
      local ks = {}
      for k in pairs(t) do ks[#ks + 1] = k end
      table.sort(ks)
      return ks
    end
    local function index(d)
      local sites, funcs, targets = {}, {}, {}
      for _, e in ipairs(d.hot) do
        local k = key(e.caller, e.offset)
        if not sites[k] then
          sites[k] = { caller = e.caller, offset = e.offset, callee = e.callee, weight = e.weight }
        end
      end
      for _, f in ipairs(d.hot_functions) do funcs[f] = true end
      for _, x in ipairs(d.sites) do targets[key(x.caller, x.offset)] = x end
      return sites, funcs, targets
    end
    local sa, fa, ta = index(a)
    local sb, fb, tb = index(b)
    local r = { hot_added = {}, hot_removed = {}, functions_added = {}, functions_removed = {},
      targets_changed = {}, sites_added = 0, sites_removed = 0 }
    for _, k in ipairs(sorted(sb)) do if not sa[k] then r.hot_added[#r.hot_added + 1] = sb[k] end end
    for _, k in ipairs(sorted(sa)) do if not sb[k] then r.hot_removed[#r.hot_removed + 1] = sa[k] end end
    for _, f in ipairs(sorted(fb)) do if not fa[f] then r.functions_added[#r.functions_added + 1] = f end end
    for _, f in ipairs(sorted(fa)) do if not fb[f] then r.functions_removed[#r.functions_removed + 1] = f end end
    for _, k in ipairs(sorted(tb)) do
      local x, y = ta[k], tb[k]
      if not x then
        r.sites_added = r.sites_added + 1
      elseif x.callee ~= y.callee then
        r.targets_changed[#r.targets_changed + 1] = { caller = y.caller, offset = y.offset, from = x.callee,
          to = y.callee, from_weight = x.weight, to_weight = y.weight }
      end
    end
    for k in pairs(ta) do if not tb[k] then r.sites_removed = r.sites_removed + 1 end end
    return r
  end

  local function check_against_reference(a, b)
    local function decide(x) return assert(cpgo.shape(x, { decisions = true })).decisions end
    local da, db = decide(a), decide(b)
    local r = assert(cpgo.diff(a, b))
    local want = reference_diff(da, db)
    for _, list in ipairs { "hot_added", "hot_removed", "functions_added", "functions_removed", "targets_changed" } do
      assert.same(want[list], r[list], list)
      assert.equals(#want[list], r.counts[list], list)
    end
    assert.equals(want.sites_added, r.sites_added)
    assert.equals(want.sites_removed, r.sites_removed)
    assert.same({ da.total_weight, db.total_weight }, r.total_weight)
    assert.same({ pgo.signature(da), pgo.signature(db) }, r.signatures)
    assert.equals(pgo.signature(da) == pgo.signature(db), r.same)
    return r
  end

  it("diffs the decisions of two profiles in C exactly as the reference, and signs them", function()
    local one, two = profiles.file("goapp-go123-cpu-1.pb.gz"), profiles.file("goapp-go123-cpu-2.pb.gz")
    local same = check_against_reference(one, one)
    assert.is_true(same.same)
    assert.same({}, same.hot_added)
    assert.same({}, same.targets_changed)
    local r = check_against_reference(one, two)
    assert.is_false(r.same)
    assert.is_true(#r.hot_added + #r.hot_removed > 0)
    check_against_reference(two, one)
    local text = pgo.render_diff(r, "a", "b")
    assert.matches("Call sites that became hot: " .. #r.hot_added, text, 1, true)
    -- limit cuts the lists, not the counts
    local cut = assert(cpgo.diff(one, two, { limit = 1 }))
    assert.equals(math.min(1, #r.hot_added), #cut.hot_added)
    assert.same(r.counts, cut.counts)
    assert.same(r.hot_added[1], cut.hot_added[1])
    -- doubling every weight changes nothing the compiler decides
    local twice = assert(pprof.merge({ one, one }))
    local d = check_against_reference(one, twice)
    assert.is_true(d.same)
    assert.equals(2 * r.total_weight[1], d.total_weight[2])
    -- site keys order as Lua orders "caller\0offset": 10 before 9, "m.f" before "m.fg"
    local x = "GO PREPROFILE V1\nm.f\nm.A.M\n4 10\nm.f\nm.B.M\n4 5\nm.f\nm.C\n9 3\nm.fg\nm.C\n1 3\n"
    local y = "GO PREPROFILE V1\nm.f\nm.B.M\n4 10\nm.f\nm.A.M\n4 5\nm.f\nm.D\n10 3\nm.fg\nm.D\n2 3\n"
    check_against_reference(x, y)
    check_against_reference(y, x)
    -- a changed devirtualization target
    local t = assert(cpgo.diff(x, y)).targets_changed
    assert.same({ { caller = "m.f", offset = 4, from = "m.A.M", to = "m.B.M", from_weight = 10, to_weight = 10 } }, t)
    -- a new tie leaves our target but may change the compiler's (it prefers a callee with IR)
    local tie = "GO PREPROFILE V1\nm.f\nm.A.M\n4 10\nm.f\nm.B.M\n4 10\n"
    local dt = assert(cpgo.shape(tie, { decisions = true })).decisions
    assert.equals("m.A.M", dt.sites[1].callee)
    assert.equals(2, dt.sites[1].ties)
    assert.is_false(check_against_reference(x, tie).same)
  end)

  it("runs the diff on the pool and names the side that fails", function()
    run(function()
      local one = profiles.file("goapp-go123-cpu-1.pb.gz")
      local _, err, code = pgo.diff(one, { file = "/nonexistent/profile" })
      assert.equals("IO", code)
      assert.matches("^b: ", require("autopgo.fail").message(err))
      local ok = assert(pgo.diff(one, one, 5))
      assert.is_true(ok.same)
      local _, err2, code2 = pgo.diff("not a profile", one)
      assert.equals("INVALID", code2)
      assert.matches("^a: ", require("autopgo.fail").message(err2))
    end)
  end)

  it("renders the decisions view and its JSON document", function()
    local r = assert(cpgo.shape(profiles.file("goapp-go123-cpu-1.pb.gz"), { decisions = true }))
    local text = pgo.render(r.info, r.decisions, { limit = 5 })
    assert.matches("Edges:%s+301 call edges", text)
    assert.matches("Hot call sites: " .. #r.decisions.hot .. " of 301 edges", text, 1, true)
    assert.matches("slices.pdqsortOrdered[go.shape.int] +53 -> slices.partitionOrdered[go.shape.int]", text, 1, true)
    assert.matches("Boundary:", text)
    local doc = assert(cpgo.shape(profiles.file("goapp-go123-cpu-1.pb.gz"), { decisions_json = 0 })).decisions_json
    assert.matches('^{"sampleType":"samples/count","totalWeight":1121,"edges":301,"threshold":99,', doc)
    assert.matches('"hotCallSites":[{"caller":"slices.pdqsortOrdered[go.shape.int]"', doc, 1, true)
    assert.matches('"signature":"' .. pgo.signature(r.decisions) .. '"', doc, 1, true)
  end)

  it("writes the decisions' JSON document on the pool byte for byte as the reference encodes it", function()
    local json = require "autopgo.json"
    local odd = "GO PREPROFILE V1\nm.<f>&\"q\"\\\nm.A\226\128\168M\n4 10\nm.\255f\1\nm.B\226\128\169M\n4 10\n"
      .. "m.\192\175g\nm.\237\160\128C\n-3 7\nm.f\nm.\240\159\152\128\n4 1\n"
    local cases = { profiles.file("goapp-go123-cpu-1.pb.gz"), profiles.file("goapp-go123-cpu-2.pb.gz"), odd,
      "GO PREPROFILE V1\nm.f\nm.g\n1 1\n", "GO PREPROFILE V1\n" }
    local extra = ',"etag":' .. json.encode('"sha256:x"')
    for _, input in ipairs(cases) do
      local full = assert(cpgo.shape(input, { decisions = true }))
      if full.info.usable then
        for _, limit in ipairs { 0, 1, 3, 500 } do
          local r = assert(cpgo.shape(input, { decisions_json = limit, json_extra = extra }))
          assert.is_nil(r.decisions)
          assert.equals(reference_doc(full.info, full.decisions, { "etag", '"sha256:x"' }, limit), r.decisions_json)
        end
        local all = assert(cpgo.shape(input, { decisions_json = 0 })).decisions_json
        assert.equals(reference_doc(full.info, full.decisions), all)
      end
    end
    assert.matches("\\u003cf\\u003e\\u0026\\\"q\\\"", assert(cpgo.shape(odd, { decisions_json = 0 })).decisions_json)
    assert.has_error(function() cpgo.shape(odd, { decisions_json = -1 }) end)
    assert.has_error(function() cpgo.shape(odd, { decisions_json = 0, json_extra = {} }) end)
  end)

  it("cuts the decisions on the pool with the same counts and signature as the full ones", function()
    local tie = "GO PREPROFILE V1\nm.f\nm.A.M\n4 10\nm.f\nm.B.M\n4 10\nm.g\nm.A.M\n-3 7\nm.f\nm.C.M\n4 1\n"
    local cases = { profiles.file("goapp-go123-cpu-1.pb.gz"), profiles.file("goapp-go123-cpu-2.pb.gz"), tie }
    for _, input in ipairs(cases) do
      local full = assert(cpgo.shape(input, { decisions = true }))
      local d = full.decisions
      for _, limit in ipairs { 1, 3, 500, 0 } do
        local cut = assert(cpgo.shape(input, { decisions = true, decisions_limit = limit })).decisions
        -- the signature computed in C is the one pgo.signature computes from the full lists in Lua
        assert.equals(pgo.signature(d), cut.signature)
        assert.same({ hot = #d.hot, hot_functions = #d.hot_functions, sites = #d.sites }, cut.counts)
        local n = limit == 0 and #d.hot or math.min(limit, #d.hot)
        assert.equals(n, #cut.hot)
        if n > 0 then assert.same(d.hot[n], cut.hot[n]) end
        local m = limit == 0 and #d.sites or math.min(limit, #d.sites)
        assert.equals(m, #cut.sites)
        if m > 0 then assert.same(d.sites[m], cut.sites[m]) end
      end
    end
    -- the preprofile written with the minimal pprof is the one read back from it
    local r = assert(cpgo.shape(cases[1], { format = "pgo", preprofile = true }))
    assert.equals(preprofile_of(r.bytes), r.preprofile)
    assert.has_error(function() cpgo.shape(tie, { decisions = true, decisions_limit = -1 }) end)
  end)
end)
