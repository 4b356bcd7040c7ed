-- Specs for `autopgo inspect` (lua/autopgo/commands/inspect.lua), run as the real binary.
local support = require "tests.lua.support"

local data = support.testdata

local function inspect(file)
  return support.run(function() return support.autopgo { "inspect", file } end)
end

describe("autopgo inspect", function()
  it("describes a CPU profile", function()
    local code, out, err = inspect(data .. "/goapp-go123-cpu-1.pb.gz")
    assert.equals(0, code, err)
    assert.matches("Sample types:%s+samples/count, cpu/nanoseconds %[default%]", out)
    assert.matches("Period:%s+10000000 cpu/nanoseconds", out)
    assert.matches("Duration:%s+5.17s", out)
    assert.matches("914 samples, 1103 locations, 494 functions, 3 mappings", out)
    assert.matches("PGO:%s+usable by go build %-pgo %(301 weighted call edges%)", out)
    -- the same numbers as `go tool pprof -top`
    assert.matches("910.00ms%s+9.68%%%s+1.51s%s+16.06%%%s+regexp.%(%*machine%).add", out)
    assert.matches("Top 10 functions by cumulative", out)
    assert.matches("8.59s%s+91.38%%%s+net/http.%(%*conn%).serve", out)
  end)

  it("says why a profile is not usable for PGO", function()
    local _, out = inspect(data .. "/goapp-cpu-1.pb.gz")
    assert.matches("not usable by go build %-pgo: .*start_line", out)
    _, out = inspect(data .. "/edge/heap-sample-types.pb.gz")
    assert.matches("not usable .*cpu/nanoseconds", out)
    _, out = inspect(data .. "/edge/no-samples.pb.gz")
    assert.matches("accepted by go build %-pgo, but", out)
  end)

  it("fails on a bad file", function()
    local code, _, err = inspect(data .. "/bad/dangling-function-id.pb.gz")
    assert.equals(1, code)
    assert.matches("MALFORMED: malformed profile: location id 6: line 0: function id 77 not found", err, 1, true)
    code, _, err = inspect(data .. "/missing")
    assert.equals(1, code)
    assert.matches("cannot read", err)
  end)
end)
