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
    -- the worker's merge, byte for byte (same call, same gzip level)
    local expect = pprof.merge({ support.read_file(data .. "/goapp-cpu-1.pb.gz"),
      support.read_file(data .. "/goapp-cpu-2.pb.gz") }, { level = require("autopgo.merging").GZIP_LEVEL })
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
    assert.matches("INCOMPATIBLE: .*heap%-sample%-types%.pb%.gz is incompatible with .*minimal.pb.gz: "
      .. "no sample type is common to every profile", err)
  end)

  it("prunes and compacts exactly as the worker does", function()
    local rules = support.write_file(dir .. "/rules.json",
      '[{"app": "svc", "rules": [{"drop": "^regexp\\\\.", "keep": "^regexp\\\\.\\\\(\\\\*machine\\\\)\\\\.add$"}]}]')
    local out = dir .. "/out.pgo"
    local files = { data .. "/goapp-go123-cpu-1.pb.gz", data .. "/goapp-go123-cpu-2.pb.gz" }
    local code, _, err = support.run(function()
      return support.autopgo { "merge", "-o", out, "--prune", rules, "--app", "svc", files[1], files[2] }
    end)
    assert.equals(0, code, err)
    local got = support.read_file(out)
    -- the worker's pass over the same uploads, with the same rules
    local blob = require "autopgo.blob"
    local bus = require "autopgo.bus"
    local policy = require "autopgo.policy"
    local worker = require "autopgo.worker"
    local want
    support.run(function()
      local url = "mem://merge-cli-" .. require("autopgo.core").crypto.hex(require("autopgo.core").crypto.random(4))
      local store = assert(blob.open(url))
      local w = worker.new { store = store, writer = assert(bus.writer(url)),
        policy = assert(policy.new { prune = rules }) }
      for i, f in ipairs(files) do assert(store:put(("svc/staging/%d"):format(i), support.read_file(f))) end
      assert(w:merge_app("svc"))
      want = assert(store:get("svc/default.pgo")).body
    end)
    assert.equals(want, got)
    -- compacted: no two samples left with the same stack
    local p = assert(pprof.decode(got))
    local again = assert(pprof.merge({ p }, { output = "profile" }))
    assert.equals(p:info().samples, again:info().samples)
  end)

  it("refuses to replace an existing ./default.pgo unless -o names it or --force is given", function()
    local file = data .. "/edge/minimal.pb.gz"
    local target = dir .. "/default.pgo"
    support.write_file(target, "keep me")
    local code, _, err = support.run(function()
      return support.autopgo({ "merge", file }, { cwd = dir })
    end)
    assert.equals(1, code)
    assert.matches("default.pgo already exists; name it with %-o default.pgo to replace it, or pass %-%-force", err)
    assert.equals("keep me", support.read_file(target))
    code, _, err = support.run(function()
      return support.autopgo({ "merge", "--force", file }, { cwd = dir })
    end)
    assert.equals(0, code, err)
    assert.equals(3, pprof.decode(support.read_file(target)):info().samples)
    support.write_file(target, "keep me")
    code, _, err = support.run(function()
      return support.autopgo({ "merge", "-o", "default.pgo", file }, { cwd = dir })
    end)
    assert.equals(0, code, err)
    assert.equals(3, pprof.decode(support.read_file(target)):info().samples)
    os.remove(target)
    code, _, err = support.run(function()
      return support.autopgo({ "merge", file }, { cwd = dir })
    end)
    assert.equals(0, code, err)
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
