-- End-to-end specs of the server's API hygiene on the embedded default: /api/health's disk check,
-- error bodies without internals, and what a client is told about an app's uploads.
local support = require "tests.lua.support"
local httpc = require "tests.lua.httpc"
local serverproc = require "tests.e2e.serverproc"
local async = require "autopgo.async"
local json = require "autopgo.json"

local run = support.run

describe("autopgo server API (embedded default)", function()
  local dir, proc
  before_each(function() dir = support.tmpdir() end)
  after_each(function()
    run(serverproc.cleanup)
    if proc and proc.code == nil then
      proc:kill("sigkill")
      run(function() proc:wait(10000) end)
    end
    proc = nil
    support.rm_rf(dir)
  end)

  it("turns /api/health unhealthy when the data directory's disk is below --min-free-space", function()
    run(function()
      -- not serverproc.start: it waits for /api/ready, which reports the same checks
      local port = support.free_port()
      proc = support.spawn(support.bin, { "server", "--port", tostring(port), "--min-free-space", "999999GiB" },
        { cwd = dir })
      local h
      for _ = 1, 400 do
        local ok, res = pcall(httpc.request, port, "GET", "/api/health")
        if ok and res then
          h = res
          break
        end
        async.sleep(25)
      end
      assert.is_table(h, "the server did not answer")
      assert.equals(503, h.status)
      local doc = json.decode(h.body)
      assert.equals("unhealthy", doc.status)
      local disk
      for _, d in ipairs(doc.dependencies) do
        if d.name == "disk" then disk = d end
      end
      assert.is_table(disk, h.body)
      assert.equals("unhealthy", disk.status)
      assert.matches("below the minimum of 976.6 TiB %(%-%-min%-free%-space%)", disk.message)
      assert.is_nil(h.body:find(dir, 1, true), "no path in the answer")
      proc:kill("sigterm")
      assert.equals(0, (proc:wait(30000)))
    end, 120000)
  end)

  it("answers a 256-character app name with a 400 that says why and no path", function()
    run(function()
      local s = serverproc.start(dir)
      local r = httpc.request(s.port, "POST", "/api/profile/" .. ("a"):rep(256), { body = "x" })
      assert.equals(400, r.status)
      assert.equals('{"message":"invalid app name: an application name has at most 128 characters, got 256",'
        .. '"code":400}\n', r.body)
      assert.equals(0, serverproc.stop(s))
    end, 120000)
  end)
end)
