-- Specs for `autopgo merge` (lua/autopgo/commands/merge.lua), run as the real binary.
local pprof = require("autopgo.core").pprof
local support = require "tests.lua.support"

local data = support.testdata

describe("autopgo merge", function()
  local dir
  before_each(function() dir = support.tmpdir() end)
  after_each(function() support.rm_rf(dir) end)

  it("merges files in order and writes a gzip'd profile", function()
    local out = dir .. "/out.pgo"
    local code, _, err = support.run(function()
      return support.autopgo { "merge", "-o", out, data .. "/goapp-cpu-1.pb.gz", data .. "/goapp-cpu-2.pb.gz" }
    end)
    assert.equals(0, code, err)
    assert.matches("merged profiles", err)
    local bytes = support.read_file(out)
    assert.equals(0x1f, bytes:byte(1))
    local expect = pprof.merge { support.read_file(data .. "/goapp-cpu-1.pb.gz"),
      support.read_file(data .. "/goapp-cpu-2.pb.gz") }
    assert.equals(expect, bytes)
  end)

  it("prunes with an app's rules", function()
    local rules = support.write_file(dir .. "/rules.json",
      '[{"app": "svc", "rules": [{"drop": "^main\\\\.labeled$"}]}]')
    local out = dir .. "/out.pgo"
    local code, _, err = support.run(function()
      return support.autopgo { "merge", "-o", out, "--prune", rules, "--app", "svc",
        data .. "/goapp-go123-cpu-1.pb.gz" }
    end)
    assert.equals(0, code, err)
    local p = assert(pprof.decode(support.read_file(out)))
    for _, t in ipairs(p:top(1000, { by = "cum" })) do assert.not_equals("main.labeled", t.name) end
    code, _, err = support.run(function()
      return support.autopgo { "merge", "-o", out, "--prune", rules, data .. "/goapp-go123-cpu-1.pb.gz" }
    end)
    assert.equals(2, code)
    assert.matches("%-%-prune needs %-%-app", err)
  end)

  it("names the file that failed and leaves no output behind", function()
    local out = dir .. "/out.pgo"
    local bad = data .. "/bad/truncated.pb.gz"
    local code, _, err = support.run(function()
      return support.autopgo { "merge", "-o", out, data .. "/goapp-cpu-1.pb.gz", bad }
    end)
    assert.equals(1, code)
    assert.matches(bad, err, 1, true)
    assert.matches("MALFORMED: decompressing profile: unexpected EOF", err, 1, true)
    assert.is_nil(support.read_file(out))
    code, _, err = support.run(function()
      return support.autopgo { "merge", "-o", out, data .. "/edge/minimal.pb.gz",
        data .. "/edge/heap-sample-types.pb.gz" }
    end)
    assert.equals(1, code)
    assert.matches("heap%-sample%-types.pb.gz is incompatible with .*minimal.pb.gz: incompatible period types", err)
  end)

  it("says when a file cannot be read", function()
    local code, _, err = support.run(function()
      return support.autopgo { "merge", "-o", dir .. "/out.pgo", data .. "/edge/minimal.pb.gz", dir .. "/missing" }
    end)
    assert.equals(1, code)
    assert.matches("IO: cannot open .*/missing: No such file or directory", err)
  end)

  it("reads stdin and writes stdout with -", function()
    local code, out, err = support.run(function()
      return support.autopgo({ "merge", "-o", "-", "-" }, { stdin = support.read_file(data .. "/edge/minimal.pb.gz") })
    end)
    assert.equals(0, code, err)
    assert.equals(3, pprof.decode(out):info().samples)
  end)
end)
