-- Specs for the Go reference's time and scale tools (tests/goref: pprofmerge -scale, pproftime),
-- which history specs lean on: scaling is Go's Profile.Scale (round half away from zero, samples
-- whose values all become 0 dropped), checked against a computation made here from the dumps.
local support = require "tests.lua.support"
local goref = require "tests.e2e.goref"
local pprof = require("autopgo.core").pprof

local run = support.run
local bin = support.root .. "/build/goref/bin/"

-- Go's math.Round: halves away from zero.
local function round(x)
  if x < 0 then return -math.floor(-x + 0.5) end
  return math.floor(x + 0.5)
end

-- The sample lines Go's Merge makes of the samples of a canonical dump (of one unmerged input)
-- after Profile.Scale(ratio): each sample's values rounded, the all-zero ones left out, then
-- the samples of equal stack and labels (equal text after the values) summed.
local function scaled_dump(dump, ratio)
  local sums, order = {}, {}
  for line in dump:gmatch("[^\n]+") do
    local values, rest = line:match("^sample %[([-%d ]+)%](.*)$")
    if values then
      local out, nonzero = {}, false
      for v in values:gmatch("-?%d+") do
        local n = math.tointeger(round(tonumber(v) * ratio))
        out[#out + 1] = n
        nonzero = nonzero or n ~= 0
      end
      if nonzero then
        local sum = sums[rest]
        if not sum then
          sums[rest], order[#order + 1] = out, rest
        else
          for i, n in ipairs(out) do sum[i] = sum[i] + n end
        end
      end
    end
  end
  local samples = {}
  for _, rest in ipairs(order) do
    local v = {}
    for i, n in ipairs(sums[rest]) do v[i] = tostring(n) end
    samples[#samples + 1] = "sample [" .. table.concat(v, " ") .. "]" .. rest
  end
  table.sort(samples)
  return samples
end

-- Equal lists of lines (without printing dumps of thousands of lines when they are not).
local function same(x, y)
  if #x ~= #y then return false end
  for i = 1, #x do
    if x[i] ~= y[i] then return false end
  end
  return true
end

local function split(dump)
  local samples, other = {}, {}
  for line in dump:gmatch("[^\n]+") do
    if line:match("^sample ") then
      samples[#samples + 1] = line
    elseif not line:match("^header counts ") then
      other[#other + 1] = line
    end
  end
  table.sort(samples)
  return samples, other
end

describe("tests/goref time and scale tools", function()
  local dir, a, b, c

  setup(function()
    run(goref.ensure, 600000)
    dir = support.tmpdir()
    -- small counts (1..10 and their multiples of the period) so halves and zeros occur
    a = goref.gen(dir .. "/a.pb.gz", { "-seed", "1", "-samples", "300", "-functions", "50", "-locations", "120" })
    b = goref.gen(dir .. "/b.pb.gz", { "-seed", "2", "-samples", "300", "-functions", "50", "-locations", "120" })
    c = goref.gen(dir .. "/c.pb.gz", { "-seed", "3", "-samples", "300", "-functions", "50", "-locations", "120" })
  end)

  teardown(function() support.rm_rf(dir) end)

  it("scales one input as Profile.Scale does: halves round away from zero", function()
    run(function()
      -- the grouping below is Merge's: without scaling it gives the plain merge's samples
      local plain_s, plain_o = split(goref.canon(goref.merge(dir .. "/a1.pb.gz", { a })))
      assert.is_true(same(scaled_dump(goref.canon(a), 1), plain_s), "grouping the samples is not Merge's")
      local out = goref.merge(dir .. "/half.pb.gz", { a }, { scale = { 0.5 } })
      local got_s, got_o = split(goref.canon(out))
      assert.is_true(same(plain_o, got_o), "the lines other than samples differ")
      assert.is_true(same(scaled_dump(goref.canon(a), 0.5), got_s), "the scaled samples differ")
      -- odd counts exist, so banker's rounding would have given another answer
      assert.truthy(goref.canon(a):find("sample %[[13579] "))
    end)
  end)

  it("drops the samples whose values all become zero", function()
    run(function()
      -- counts below 5 and their cpu values (count x 1e7 ns) both round to 0 at 1e-8
      local out = goref.merge(dir .. "/tiny.pb.gz", { a }, { scale = { 1e-8 } })
      local want_s = scaled_dump(goref.canon(a), 1e-8)
      local all = split(goref.canon(goref.merge(dir .. "/a1.pb.gz", { a })))
      local got_s = split(goref.canon(out))
      assert.is_true(same(want_s, got_s), "the scaled samples differ")
      assert.is_true(#got_s > 0 and #got_s < #all, ("%d of %d samples kept"):format(#got_s, #all))
      assert.truthy(goref.canon(out):find("header counts samples=" .. #got_s .. " ", 1, true))
    end)
  end)

  it("applies one ratio per input before the merge; a ratio of 1 leaves the input as it is", function()
    run(function()
      local got = goref.canon(goref.merge(dir .. "/abc.pb.gz", { a, b, c }, { scale = { 0.5, 1, 0.25 } }))
      local a2 = goref.merge(dir .. "/a2.pb.gz", { a }, { scale = { 0.5 } })
      local c4 = goref.merge(dir .. "/c4.pb.gz", { c }, { scale = { 0.25 } })
      assert.is_true(goref.canon(goref.merge(dir .. "/want.pb.gz", { a2, b, c4 })) == got,
        "scaling in the merge differs from merging the scaled inputs")
      assert.is_false(goref.canon(goref.merge(dir .. "/plain.pb.gz", { a, b, c })) == got, "nothing was scaled")
      assert.is_true(goref.canon(goref.merge(dir .. "/b1.pb.gz", { b })) ==
        goref.canon(goref.merge(dir .. "/b2.pb.gz", { b }, { scale = { 1 } })), "a ratio of 1 changed the input")
    end)
  end)

  it("refuses a ratio count that does not match the inputs, or a ratio that is not a number", function()
    run(function()
      local code, _, _, err = support.spawn(bin .. "pprofmerge", { "-o", dir .. "/x", "-scale", "0.5", a, b }):wait()
      assert.equals(1, code)
      assert.equals("scale: 1 ratios for 2 inputs\n", err)
      code, _, _, err = support.spawn(bin .. "pprofmerge", { "-o", dir .. "/x", "-scale", "half", a }):wait()
      assert.equals(1, code)
      assert.truthy(err:find("^scale: "))
    end)
  end)

  it("sets time_nanos and duration_nanos, from nanoseconds or RFC 3339, and removes time_nanos with 0", function()
    run(function()
      local t1 = goref.retime(dir .. "/t1.pb.gz", a, 1730075435123456789, "45s")
      local info = assert(pprof.validate(support.read_file(t1)))
      assert.equals(1730075435123456789, info.time_nanos)
      assert.equals(45000000000, info.duration_nanos)
      local t2 = goref.retime(dir .. "/t2.pb.gz", a, "2024-10-28T00:30:35Z", 7)
      info = assert(pprof.validate(support.read_file(t2)))
      assert.equals(1730075435000000000, info.time_nanos)
      assert.equals(7, info.duration_nanos)
      local t0 = goref.retime(dir .. "/t0.pb.gz", t1, 0)
      info = assert(pprof.validate(support.read_file(t0)))
      assert.equals(0, info.time_nanos)
      assert.equals(45000000000, info.duration_nanos)
      -- nothing else changes
      local function body(dump) return (dump:gsub("^header sample_types=[^\n]*\n", "")) end
      assert.is_true(body(goref.canon(a)) == body(goref.canon(t1)), "pproftime changed more than the times")
    end)
  end)
end)
