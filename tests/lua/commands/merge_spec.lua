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

  describe("--from / --to", function()
    local profiles = require "tests.lua.profiles"
    local utc = require "autopgo.utc"
    local files

    -- variant n of the corpus profile, captured at `at` (RFC 3339; nil: no time_nanos)
    local function captured(n, at)
      local path = ("%s/v%d.pb"):format(dir, n)
      support.write_file(path, profiles.with_time(profiles.variant(n), at and utc.parse_rfc3339_nanos(at) or 0))
      return path
    end

    before_each(function()
      files = {
        captured(1, "2024-10-28T10:00:00Z"),
        captured(2, "2024-10-28T11:00:00Z"),
        captured(3, "2024-10-28T12:00:00Z"),
        captured(4, nil),
        captured(5, "2024-10-28T12:59:59.999999999Z"),
      }
    end)

    -- merges the files with `flags`; returns the exit code, the variants counted, stderr
    local function merge(flags)
      local out = dir .. "/out.pgo"
      os.remove(out)
      local args = { "merge", "-o", out }
      for _, f in ipairs(flags) do args[#args + 1] = f end
      for _, f in ipairs(files) do args[#args + 1] = f end
      local code, _, err = support.run(function() return support.autopgo(args) end)
      local bytes = support.read_file(out)
      return code, bytes and profiles.counts(bytes), err
    end

    it("keeps the profiles captured in [from, to), to the nanosecond", function()
      assert.equals(1730109600000000000, assert(pprof.validate(support.read_file(files[1]))).time_nanos)
      local code, counts, err = merge { "--from", "2024-10-28T11:00:00Z", "--to", "2024-10-28T13:00:00Z" }
      assert.equals(0, code, err)
      assert.same({ [2] = 1, [3] = 1, [5] = 1 }, counts)
      assert.matches("selected=3", err)
      code, counts, err = merge { "--to", "2024-10-28T11:00:00Z" }
      assert.equals(0, code, err)
      assert.same({ [1] = 1 }, counts)
      code, counts, err = merge { "--from", "2024-10-28T12:00:00+00:00", "--to", "2024-10-28T12:59:59.999999999Z" }
      assert.equals(0, code, err)
      assert.same({ [3] = 1 }, counts)
      code, counts, err = merge { "--from", "2024-10-28T14:59:59.999999999+02:00" }
      assert.equals(0, code, err)
      assert.same({ [5] = 1 }, counts)
      -- with no bound every profile counts, those without time_nanos too
      code, counts, err = merge {}
      assert.equals(0, code, err)
      assert.same({ [1] = 1, [2] = 1, [3] = 1, [4] = 1, [5] = 1 }, counts)
    end)

    it("says how many profiles it skipped for having no capture time, and why", function()
      local code, _, err = merge { "--from", "2024-10-28T00:00:00Z" }
      assert.equals(0, code, err)
      assert.matches("skipped profiles without a capture time: they have no time_nanos", err, 1, true)
      assert.matches("skipped=1", err, 1, true)
      assert.matches("v4.pb", err, 1, true)
    end)

    it("writes nothing when no profile was captured in the range", function()
      local code, counts, err = merge { "--from", "2030-01-01T00:00:00Z" }
      assert.equals(1, code)
      assert.is_nil(counts)
      assert.matches("autopgo merge: none of the 5 profiles was captured in [2030-01-01T00:00:00Z, +inf) "
        .. "(4 outside it, 1 without time_nanos); nothing written", err, 1, true)
    end)

    it("refuses a range that is empty or not RFC 3339, and names a file it cannot read", function()
      local code, _, err = merge { "--from", "2024-10-28T12:00:00Z", "--to", "2024-10-28T12:00:00Z" }
      assert.equals(2, code)
      assert.matches("--from 2024-10-28T12:00:00Z is not before --to 2024-10-28T12:00:00Z", err, 1, true)
      code, _, err = merge { "--to", "noon" }
      assert.equals(2, code)
      assert.matches("is not RFC 3339", err, 1, true)
      files[#files + 1] = data .. "/bad/truncated.pb.gz"
      code, _, err = merge { "--to", "2024-10-28T12:00:00Z" }
      assert.equals(1, code)
      assert.matches("autopgo merge: " .. data .. "/bad/truncated.pb.gz: MALFORMED: ", err, 1, true)
    end)
  end)
end)
