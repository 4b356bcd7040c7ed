-- Specs for the pprof binding (core/lua/pprof.c): sync and thread-pool forms, the failure
-- convention, profile objects and their editing API, and busy/closed profiles.
local pprof = require("autopgo.core").pprof
local async = require "autopgo.async"
local support = require "tests.lua.support"
local profiles = require "tests.lua.profiles"

local function data(rel)
  return (assert(support.read_file(support.testdata .. "/" .. rel), rel))
end

-- Cumulative weight of a function (0 when it is gone).
local function cum(p, name)
  for _, t in ipairs(p:top(100000, { by = "cum" })) do
    if t.name == name then return t.cum end
  end
  return 0
end

-- merge_async with every callback value kept (await keeps only the error on failure).
local function merge_async(inputs, opts)
  return support.run(function()
    local co = coroutine.running()
    pprof.merge_async(inputs, opts, function(...) async.resume(co, ...) end)
    return coroutine.yield()
  end)
end

describe("pprof", function()
  local cpu1, cpu2, go123

  setup(function()
    cpu1 = data("goapp-cpu-1.pb.gz")
    cpu2 = data("goapp-cpu-2.pb.gz")
    go123 = data("goapp-go123-cpu-1.pb.gz")
  end)

  it("decodes a profile and describes it", function()
    local p = assert(pprof.decode(go123))
    local info = p:info()
    assert.equals(914, info.samples)
    assert.equals(2, #info.sample_types)
    assert.same({ "samples", "count" }, { info.sample_types[1].type, info.sample_types[1].unit })
    assert.equals(info.sample_types[1].total * info.period, info.sample_types[2].total)
    assert.equals(2, info.default_index)
    assert.equals("cpu", info.period_type.type)
    assert.is_true(info.gzipped)
    assert.equals(#go123, info.size)
    assert.is_true(info.decompressed_size > info.size)
    assert.matches("914 samples", tostring(p))
    local top = p:top(3)
    assert.equals(3, #top)
    assert.equals("regexp.(*machine).add", top[1].name)
    assert.equals(910000000, top[1].flat)
    local by_cum = p:top(1, { by = "cum", sample_type = "samples" })
    assert.equals("net/http.(*conn).serve", by_cum[1].name)
    assert.has_error(function() p:top(1, { by = "nope" }) end)
    assert.has_error(function() p:top(1, { sample_type = "heap" }) end)
    p:close()
  end)

  it("fails with the house convention on bad input", function()
    local p, err, code = pprof.decode(data("bad/dangling-function-id.pb.gz"))
    assert.is_nil(p)
    assert.equals("MALFORMED", code)
    assert.equals("MALFORMED: malformed profile: location id 6: line 0: function id 77 not found", err)
    local _, e2, c2 = pprof.decode(cpu1, { max_decompressed = 1000 })
    assert.equals("TOO_LARGE", c2)
    assert.matches("limit of 1000 bytes", e2)
    assert.has_error(function() pprof.decode({}) end)
    assert.has_error(function() pprof.decode(cpu1, { max_memory = -1 }) end)
  end)

  it("rejects every file of the bad corpus", function()
    for _, name in ipairs { "bad-wire-type.pb.gz", "concatenated.pb", "dangling-location-id.pb.gz",
      "duplicate-function-id.pb.gz", "empty", "empty-gzip.pb.gz", "gzip-garbage.pb.gz", "gzip-text.pb.gz",
      "location-id-zero.pb.gz", "overlong-field.pb.gz", "random.bin", "string-index-out-of-range.pb.gz",
      "string0-not-empty.pb.gz", "truncated-goapp.pb.gz", "truncated-header.pb.gz", "truncated.pb.gz",
      "value-count-mismatch.pb.gz" } do
      local info, err, code = pprof.validate(data("bad/" .. name))
      assert.is_nil(info, name)
      assert.equals("MALFORMED", code, name .. ": " .. tostring(err))
    end
  end)

  it("says first what Go's profile.Parse says of each bad file, then where", function()
    for _, name in ipairs(profiles.bad_files()) do
      local words = profiles.go_parse_errors[name]
      assert.is_string(words, name .. " has no expected message in tests/lua/profiles.lua")
      local _, err = pprof.validate(data(name))
      assert.equals("MALFORMED: " .. words, err:sub(1, #words + 11), name)
      assert.is_true(#err > #words + 11 + 3, name .. ": no detail after Go's words: " .. err)
    end
  end)

  it("validates on the thread pool, with the PGO decision", function()
    local info = support.run(function() return async.await(pprof.validate_async, go123, nil) end)
    assert.is_true(info.pgo.usable)
    assert.is_false(info.pgo.empty)
    assert.equals(301, info.pgo.edges)
    assert.equals(1, info.pgo.sample_type)
    local old = support.run(function() return async.await(pprof.validate_async, cpu1, {}) end)
    assert.is_false(old.pgo.usable)
    assert.matches("start_line", old.pgo.reason)
    local heap = pprof.validate(data("edge/heap-sample-types.pb.gz"))
    assert.is_false(heap.pgo.usable)
    assert.matches("cpu/nanoseconds", heap.pgo.reason)
    local none = pprof.validate(data("edge/no-samples.pb.gz"))
    assert.is_true(none.pgo.usable and none.pgo.empty)
    local v, err, code = support.run(function() return async.await(pprof.validate_async, "junk", nil) end)
    assert.is_nil(v)
    assert.equals("MALFORMED", code)
    assert.matches("^MALFORMED: ", err)
  end)

  it("merges encoded inputs, with a summary and the sha256 of the output", function()
    local out, sum = pprof.merge({ cpu1, cpu2 })
    assert.is_string(out)
    assert.equals(require("autopgo.core").crypto.hex(require("autopgo.core").crypto.digest("sha256", out)), sum.sha256)
    assert.is_nil(select(2, pprof.merge({ cpu1 }, { output = "profile" })).sha256)
    assert.equals(2, sum.inputs)
    assert.equals(945 + 935, sum.samples_in)
    assert.equals(#out, sum.bytes_out)
    assert.equals(#cpu1 + #cpu2, sum.bytes_in)
    local p = assert(pprof.decode(out))
    assert.equals(sum.samples, p:info().samples)
    -- Deterministic: the same inputs give the same bytes.
    assert.equals(out, (pprof.merge({ cpu1, cpu2 })))
    assert.equals(0x1f, out:byte(1))
    local raw = pprof.merge({ cpu1, cpu2 }, { raw = true })
    assert.not_equals(0x1f, raw:byte(1))
  end)

  it("tells what each input said of itself, as decoded, when asked (facts)", function()
    local p2 = assert(pprof.decode(cpu2))
    local inputs = { cpu1, p2, go123 }
    local _, sum = assert(pprof.merge(inputs, { facts = true, output = "profile" }))
    assert.equals(3, #sum.facts)
    for i, input in ipairs(inputs) do
      local info = type(input) == "string" and assert(pprof.decode(input)):info() or input:info()
      local f = sum.facts[i]
      assert.same({ info.time_nanos, info.duration_nanos, info.samples, info.sample_types[1].total },
        { f.time_nanos, f.duration_nanos, f.samples, f.first_total })
    end
    assert.is_nil(select(2, pprof.merge({ cpu1, cpu2 })).facts)
    -- a failed merge gives no summary: the caller learns the inputs' facts some other way
    assert.is_nil(pprof.merge({ cpu1, "junk" }, { facts = true }))
  end)

  it("names the input that failed, in a structured failure", function()
    local v, err, code, failure = pprof.merge({ cpu1, data("bad/truncated.pb.gz"), cpu2 })
    assert.is_nil(v)
    assert.equals("MALFORMED", code)
    assert.matches("^MALFORMED: input 2: decompressing profile: unexpected EOF", err)
    assert.same({ code = "MALFORMED", input = 2 },
      { code = failure.code, input = failure.input, other = failure.other })
    assert.matches("^decompressing profile: unexpected EOF", failure.message)
    -- the callback: err, out, summary, failure (each position means one thing)
    local e2, out, sum, f2 = merge_async({ cpu1, cpu2, data("edge/heap-sample-types.pb.gz") })
    assert.is_nil(out)
    assert.is_nil(sum)
    assert.same({ code = "INCOMPATIBLE", input = 3, other = 1,
      message = "no sample type is common to every profile" }, f2)
    assert.matches("^INCOMPATIBLE: input 3 is incompatible with input 1: no sample type is common", e2)
    local _, _, c3 = pprof.merge({})
    assert.equals("INVALID_ARGUMENT", c3)
    assert.has_error(function() pprof.merge({ cpu1, 42 }) end)
    assert.has_error(function() pprof.merge({ cpu1 }, { output = "file" }) end)
  end)

  it("merges, prunes and encodes in one pool job", function()
    local rules = { { drop = "runtime\\.", keep = "runtime\\.main" }, { drop = "^main\\.labeled$" } }
    local err, out, sum, failure = merge_async({ cpu1, cpu2, go123 }, { prune = rules })
    assert.is_nil(err)
    assert.is_nil(failure)
    assert.equals(3, sum.inputs)
    -- compacted after the prune: merging the result alone changes nothing
    assert.equals(out, (pprof.merge({ out })))
    local p = assert(pprof.decode(out))
    local whole = assert(pprof.decode((pprof.merge({ cpu1, cpu2, go123 }))))
    -- main.labeled and what it calls are gone; the total weight stays.
    assert.is_true(cum(whole, "main.labeled") > 0)
    assert.equals(0, cum(p, "main.labeled"))
    assert.equals(0, cum(p, "runtime/pprof.Do"))
    assert.equals(whole:info().sample_types[2].total, p:info().sample_types[2].total)
  end)

  it("reports a bad pattern without queueing work", function()
    local ok, err, code = pprof.merge_async({ cpu1 }, { prune = { { drop = "ok" }, { drop = "x", keep = "[" } } },
      function() error("must not be called") end)
    assert.is_nil(ok)
    assert.equals("BAD_PATTERN", code)
    assert.matches("rule 2: keep pattern", err)
    assert.is_true(pprof.check_rules({ { drop = "a", keep = "b" } }))
    assert.equals("BAD_PATTERN", select(3, pprof.check_rules({ { drop = "(?<" } })))
    assert.has_error(function() pprof.check_rules({ { keep = "b" } }) end)
  end)

  it("reads files on the pool", function()
    local path = support.testdata .. "/goapp-cpu-2.pb.gz"
    local out, sum = pprof.merge({ cpu1, { file = path } })
    assert.equals((pprof.merge({ cpu1, cpu2 })), out)
    assert.equals(#cpu1 + #cpu2, sum.bytes_in)
    local v, err, code, failure = pprof.merge({ cpu1, { file = "/nonexistent/x.pb.gz" } })
    assert.is_nil(v)
    assert.equals("IO", code)
    assert.equals(2, failure.input)
    assert.matches("cannot open /nonexistent/x.pb.gz", err)
    assert.has_error(function() pprof.merge({ { path = "x" } }) end)
  end)

  it("merges profile objects into a profile object", function()
    local a = assert(pprof.decode(cpu1))
    local err, m, sum = merge_async({ a, cpu2 }, { output = "profile" })
    assert.is_nil(err)
    assert.equals(sum.samples, m:info().samples)
    -- Compaction is a merge of one.
    local _, c = merge_async({ m }, { output = "profile" })
    assert.equals(m:info().samples, c:info().samples)
    local bytes = support.run(function() return async.await(m.encode_async, m, { level = 9 }) end)
    assert.equals(m:info().samples, pprof.decode(bytes):info().samples)
    assert.equals(bytes, m:encode({ level = 9 }))
    a:close()
    m:close()
    c:close()
  end)

  it("edits profiles for policy hooks", function()
    local p = assert(pprof.decode(go123))
    local calls = 0
    local n = p:rename_functions(function(name)
      calls = calls + 1
      if name:match("^runtime%.") then return "rt." .. name:sub(9) end
    end)
    assert.is_true(n > 0)
    assert.equals(p:info().functions, calls)
    assert.is_true(cum(p, "rt.memmove") > 0)
    assert.equals(0, cum(p, "runtime.memmove"))
    assert.is_true(p:drop_labels("handler", "tenant") > 0)
    assert.equals(0, p:drop_labels("handler"))
    assert.has_error(function() p:rename_functions(function() return 42 end) end)
    assert.has_error(function() p:rename_functions(function() error("boom") end) end, "boom")
    assert.is_true(p:prune({ { drop = "^regexp" } }))
    local _, err, code = p:prune({ { drop = "(" } })
    assert.equals("BAD_PATTERN", code)
    assert.matches("rule 1", err)
    local ok = support.run(function() return async.await(p.prune_async, p, { { drop = "^sort" } }) end)
    assert.is_true(ok)
    -- The edits survive encoding, and the result merges.
    local out = pprof.merge({ p:encode() })
    assert.is_string(out)
    p:close()
  end)

  it("keeps a profile safe while a job uses it", function()
    local p = assert(pprof.decode(go123))
    support.run(function()
      local done = async.event()
      assert.is_true(p:prune_async({ { drop = "x" } }, function(err) done.set(err) end))
      -- While the prune runs, nothing else may touch the profile.
      local v, _, code = p:info()
      assert.is_nil(v)
      assert.equals("BUSY", code)
      assert.equals("BUSY", select(3, p:drop_labels("x")))
      assert.equals("BUSY", select(3, pprof.merge({ p })))
      -- close() while busy frees it when the job ends.
      assert.is_true(p:close())
      assert.is_nil(done.wait())
    end)
    local v, err, code = p:info()
    assert.is_nil(v)
    assert.equals("CLOSED", code)
    assert.matches("closed", err)
    assert.equals("CLOSED", select(3, pprof.merge({ p })))
    assert.matches("closed", tostring(p))
    do
      local q <close> = assert(pprof.decode(cpu1))
      assert.equals(945, q:info().samples)
    end
  end)

  it("simplifies function names as Prune does", function()
    assert.equals("foo", pprof.simplify_func("foo(int)"))
    assert.equals("(anonymous namespace)::bar", pprof.simplify_func(".(anonymous namespace)::bar(x)"))
    assert.equals("A::operator()", pprof.simplify_func("A::operator()(int) const"))
  end)

  it("exposes its default limits", function()
    assert.equals(512 * 1024 * 1024, pprof.default_limits.max_decompressed)
    assert.is_true(pprof.default_limits.max_memory > 0)
  end)

  it("folds uploads into a folder: the merge's totals, only changed segments deflated again", function()
    support.run(function()
      local folder = assert(async.await(pprof.folder_async, cpu1, { level = 1 }))
      assert.matches("autopgo.folder", tostring(folder))
      local p2 = assert(pprof.decode(cpu2))
      local err, out, sum = merge_async({ p2, go123 }, { folder = folder, level = 1 })
      assert.is_nil(err)
      assert.equals(64, #sum.sha256)
      assert.is_true(sum.fold.segments > 1 and sum.fold.rewritten <= sum.fold.segments)
      -- what the one merge of the same inputs gives, as a profile (the tables in another order)
      local _, full = merge_async({ cpu1, cpu2, go123 }, { output = "profile" })
      local folded = assert(pprof.decode(out))
      local a, b = folded:info(), full:info()
      assert.same({ a.samples, a.locations, a.functions, a.duration_nanos, a.time_nanos },
        { b.samples, b.locations, b.functions, b.duration_nanos, b.time_nanos })
      assert.same(full:top(5), folded:top(5))
      -- one job at a time; a failed fold spends the folder
      assert.is_true(pprof.merge_async({ cpu2 }, { folder = folder }, function() end))
      local ok, _, code = pprof.merge_async({ cpu2 }, { folder = folder }, function() end)
      assert.is_nil(ok)
      assert.equals("BUSY", code)
      async.sleep(200)
      local ferr, _, _, failure = merge_async({ "garbage" }, { folder = folder })
      assert.equals("MALFORMED", failure.code)
      assert.matches("input 1", ferr)
      local _, _, closed = pprof.merge_async({ cpu2 }, { folder = folder }, function() end)
      assert.equals("CLOSED", closed)
      assert.has_error(function() pprof.merge_async({ cpu2 }, { folder = p2 }, function() end) end)
      p2:close()
      folded:close()
      full:close()
    end)
  end)

  it("folds scaled uploads as the merge scales them (Go's Profile.Scale)", function()
    support.run(function()
      local folder = assert(async.await(pprof.folder_async, cpu1, { level = 1 }))
      local err, out = merge_async({ cpu2, go123 }, { folder = folder, scales = { 0.37, 2.5 } })
      assert.is_nil(err)
      local _, full = merge_async({ cpu1, cpu2, go123 }, { output = "profile", scales = { 1, 0.37, 2.5 } })
      local folded = assert(pprof.decode(out))
      assert.equals(full:info().samples, folded:info().samples)
      assert.same(full:top(20), folded:top(20))
      folded:close()
      full:close()
      folder:close()
    end)
  end)
end)
