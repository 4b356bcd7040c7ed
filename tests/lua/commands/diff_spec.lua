-- Specs for `autopgo diff` (lua/autopgo/commands/diff.lua) and `autopgo inspect --pgo`, run as the
-- real binary; app:NAME goes through a real server's /decisions.
local support = require "tests.lua.support"
local httpd = require "autopgo.httpd"
local api = require "autopgo.api"
local blob = require "autopgo.blob"
local bus = require "autopgo.bus"
local keys = require "autopgo.keys"
local core = require "autopgo.core"

local data = support.testdata

local function cmd(args)
  return support.run(function() return support.autopgo(args) end)
end

describe("autopgo inspect --pgo", function()
  it("shows the compiler's decisions", function()
    local code, out, err = cmd { "inspect", "--pgo", data .. "/goapp-go123-cpu-1.pb.gz" }
    assert.equals(0, code, err)
    assert.matches("Edges:%s+301 call edges, total weight 1121 %(samples/count%)", out)
    assert.matches("Hot call sites: %d+ of 301 edges", out)
    assert.matches("90%s+8.03%%%s+8.03%%%s+slices.pdqsortOrdered%[go.shape.int%] %+53 %-> slices.partitionOrdered", out)
    assert.matches("Hot functions:", out)
    assert.matches("Devirtualization: %d+ call sites", out)
    code, out = cmd { "inspect", "--pgo", "--json", data .. "/goapp-go123-cpu-1.pb.gz" }
    assert.equals(0, code)
    assert.matches('^{"sampleType":"samples/count","totalWeight":1121,', out)
  end)

  it("reads GO PREPROFILE V1 too, and says when go cannot use a profile", function()
    local dir = support.tmpdir()
    local f = assert(io.open(dir .. "/p.txt", "wb"))
    f:write("GO PREPROFILE V1\nm.a\nm.b\n3 10\n")
    f:close()
    local code, out = cmd { "inspect", "--pgo", dir .. "/p.txt" }
    assert.equals(0, code)
    assert.matches("1 call edges, total weight 10", out)
    local _, err
    code, _, err = cmd { "inspect", "--pgo", data .. "/goapp-cpu-1.pb.gz" }
    assert.equals(1, code)
    assert.matches("not usable by go build %-pgo: .*start_line", err)
  end)
end)

describe("autopgo diff", function()
  it("has help, as inspect has for --pgo", function()
    local code, out, err = cmd { "help", "diff" }
    assert.equals(0, code, err)
    assert.matches("Usage: autopgo diff %[flags%] A B", out)
    code, out, err = cmd { "help", "inspect" }
    assert.equals(0, code, err)
    assert.matches("%-%-pgo", out)
  end)

  it("lists call sites that became hot or cold and changed targets", function()
    local code, out, err = cmd { "diff", data .. "/goapp-go123-cpu-1.pb.gz", data .. "/goapp-go123-cpu-2.pb.gz" }
    assert.equals(0, code, err)
    assert.matches("Call sites that became hot: %d+", out)
    assert.matches("Call sites that became cold: %d+", out)
    assert.matches("Devirtualization targets that changed: %d+", out)
    assert.not_matches("the same decisions", out)
    code, out = cmd { "diff", data .. "/goapp-go123-cpu-1.pb.gz", data .. "/goapp-go123-cpu-1.pb.gz" }
    assert.equals(0, code)
    assert.matches("The compiler takes the same decisions from both.", out, 1, true)
    assert.matches("Call sites that became hot: 0", out)
    code, out = cmd { "diff", "--json", data .. "/goapp-go123-cpu-1.pb.gz", data .. "/goapp-go123-cpu-1.pb.gz" }
    assert.equals(0, code)
    assert.equals('{"same":true,"becameHot":[],"becameCold":[],"functionsHot":[],"functionsCold":[],'
      .. '"targetsChanged":[],"sitesAdded":0,"sitesRemoved":0,"totalWeight":[1121,1121],"counts":{"becameHot":0,'
      .. '"becameCold":0,"functionsHot":0,"functionsCold":0,"targetsChanged":0}}\n', out)
  end)

  it("compares an app's served decisions through the API", function()
    support.run(function()
      local id = core.crypto.hex(core.crypto.random(5))
      local store = assert(blob.open("mem://diff-" .. id))
      local router = httpd.router()
      api.new({ store = store, writer = assert(bus.writer("mem://diff-" .. id)) }):routes(router)
      local srv = assert(httpd.listen { host = "127.0.0.1", port = 0, handler = router })
      assert(store:put(keys.base("app"), support.read_file(data .. "/goapp-go123-cpu-1.pb.gz")))
      local url = "http://127.0.0.1:" .. srv.port
      local code, out, err = support.autopgo { "diff", "-u", url, "app:app", data .. "/goapp-go123-cpu-1.pb.gz" }
      assert.equals(0, code, err)
      assert.matches("The compiler takes the same decisions from both.", out, 1, true)
      local _
      code, _, err = support.autopgo { "diff", "-u", url, "app:nothing", data .. "/goapp-go123-cpu-1.pb.gz" }
      assert.equals(1, code)
      assert.matches("app:nothing", err)
      srv:shutdown()
    end)
  end)
end)
