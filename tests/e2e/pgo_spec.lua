-- End-to-end: the compiler's view through a running `autopgo server` (embedded default) with a
-- config policy: `autopgo download --format pgo|preprofile|pprof`, serve = "pgo" for a plain
-- download, no_inline, /decisions, and 304s on the minimal form. The exactness against the Go
-- toolchain itself is tests/pgo/run.sh.
local http = require "autopgo.http"
local cjson = require "cjson"
local support = require "tests.lua.support"
local e2e = require "tests.e2e.scrape_support"
local cpgo = require("autopgo.core").pgo

local run = support.run
local corpus = support.root .. "/tests/testdata/pprof"
local profile = corpus .. "/goapp-go123-cpu-1.pb.gz"

local function preprofile_of(bytes)
  return assert(cpgo.shape(bytes, { format = "preprofile" })).bytes
end

describe("the compiler's view (end to end)", function()
  local dir, server

  local function cli(args)
    local all = { table.unpack(args) }
    all[#all + 1] = "--api-url"
    all[#all + 1] = server.url
    return support.autopgo(all)
  end

  local function upload_and_merge(app)
    local code, _, err = cli { "upload", "--app", app, profile }
    assert.equals(0, code, err)
    e2e.wait_for(function()
      local res = http.request { url = server.url .. "/api/profile/" .. app .. "?format=pprof" }
      return res and res.status == 200
    end, 30000, "the merge of " .. app)
  end

  setup(function()
    dir = support.tmpdir()
    support.write_file(dir .. "/config.lua", [[return { policy = {
      minimal = { serve = "pgo" },
      noinl = { no_inline = { "regexp.(*machine).step" } },
    } }]])
    run(function() server = e2e.start_server(dir, { "--config", dir .. "/config.lua" }) end)
  end)
  teardown(function()
    run(function() e2e.stop(server.proc) end)
    support.rm_rf(dir)
  end)

  it("downloads each format; the minimal one holds exactly the merged profile's edges", function()
    run(function()
      upload_and_merge("full")
      local full = assert(http.request { url = server.url .. "/api/profile/full" }).body
      local code, _, err = cli { "download", "full", "--format", "pgo", "-o", dir .. "/min.pgo" }
      assert.equals(0, code, err)
      local min = support.read_file(dir .. "/min.pgo")
      assert.is_true(#min * 3 < #full)
      assert.equals(preprofile_of(full), preprofile_of(min))
      -- again: 304, the file untouched
      code, _, err = cli { "download", "full", "--format", "pgo", "-o", dir .. "/min.pgo" }
      assert.equals(0, code, err)
      assert.matches("profile unchanged", err)
      code, _, err = cli { "download", "full", "--format", "preprofile", "-o", dir .. "/pp.txt" }
      assert.equals(0, code, err)
      assert.matches("go build %-pgo does not read it", err)
      assert.equals(preprofile_of(full), support.read_file(dir .. "/pp.txt"))
      code = cli { "download", "full", "--format", "pprof", "-o", dir .. "/full.pgo" }
      assert.equals(0, code)
      assert.is_true(support.read_file(dir .. "/full.pgo") == full)
      code, _, err = cli { "download", "full", "--format", "svg", "-o", dir .. "/x" }
      assert.equals(2, code)
      assert.matches("invalid value for %-%-format", err)
    end)
  end)

  it("serves the minimal form by default under serve = \"pgo\", and applies no_inline", function()
    run(function()
      upload_and_merge("minimal")
      local code, _, err = cli { "download", "minimal", "-o", dir .. "/default.pgo" }
      assert.equals(0, code, err)
      local full = assert(http.request { url = server.url .. "/api/profile/minimal?format=pprof" }).body
      assert.equals(preprofile_of(full), preprofile_of(support.read_file(dir .. "/default.pgo")))
      upload_and_merge("noinl")
      local res = assert(http.request { url = server.url .. "/api/profile/noinl/decisions" })
      assert.equals(200, res.status)
      local doc = cjson.decode(res.body)
      for _, f in ipairs(doc.hotFunctions) do assert.not_equals("regexp.(*machine).step", f) end
      assert.equals(1121, doc.totalWeight)
      local out
      code, out, err = cli { "diff", "app:full", "app:noinl" }
      assert.equals(0, code, err)
      assert.matches("Functions that became cold: 1\n%- regexp.%(%*machine%).step\n", out)
    end)
  end)
end)
