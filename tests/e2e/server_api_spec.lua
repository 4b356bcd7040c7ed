-- End-to-end specs of the server's API hygiene on the embedded default: /api/health's disk check,
-- error bodies without internals, and what a client is told about an app's uploads.
local support = require "tests.lua.support"
local httpc = require "tests.lua.httpc"
local serverproc = require "tests.e2e.serverproc"
local async = require "autopgo.async"
local json = require "autopgo.json"
local uv = require "luv"
local profiles = require "tests.lua.profiles"

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

  it("tells a user what became of an app's uploads: autopgo status, and download's 404", function()
    run(function()
      local config = support.write_file(dir .. "/config.lua", [[
return { policy = { picky = { hook = function() error("picky refuses every profile", 0) end } } }
]])
      local s = serverproc.start(dir, { "--config", config })
      local upload = support.root .. "/tests/testdata/pprof/" .. profiles.usable[1]
      local function autopgo(args)
        args[#args + 1] = "--api-url"
        args[#args + 1] = s.url
        return support.autopgo(args)
      end
      local code, out, err = autopgo { "download", "picky", "-o", dir .. "/out.pgo" }
      assert.equals(1, code, out)
      assert.equals("autopgo download: no merged profile for app picky yet\n", err)
      for _, app in ipairs { "picky", "fine" } do
        code, out, err = autopgo { "upload", "--app", app, upload }
        assert.equals(0, code, err)
        assert.matches("^" .. app .. "/staging/%d+\n$", out)
      end
      local doc
      serverproc.wait_until("the rejection of picky's upload and the merge of fine's", function()
        local a = json.decode(httpc.request(s.port, "GET", "/api/profile/picky/uploads").body)
        local b = json.decode(httpc.request(s.port, "GET", "/api/profile/fine/uploads").body)
        doc = a
        return #a.rejected == 1 and #a.staged == 0 and type(b.merged) == "table"
      end)
      assert.matches("picky refuses every profile", doc.rejected[1].reason)
      assert.matches("^picky/rejected/", doc.rejected[1].key)
      code, out, err = autopgo { "status", "picky" }
      assert.equals(0, code, err)
      assert.matches("^picky: no merged profile yet\n", out)
      assert.matches("\nno uploads waiting to be merged\n", out)
      assert.matches("\n1 rejected upload:\n  picky/rejected/[^\n]+  %(rejected [^)]+%)\n    [^\n]*picky refuses every "
        .. "profile", out)
      code, out, err = autopgo { "status", "fine" }
      assert.equals(0, code, err)
      assert.matches("^fine: merged profile of [%d.]+ [KM]?i?B, last updated %d%d%d%d%-%d%d%-%d%d ", out)
      assert.matches("\nno rejected uploads\n", out)
      code, out, err = autopgo { "status", "fine", "--json" }
      assert.equals(0, code, err)
      assert.equals("fine", json.decode(out).app)
      code, out, err = autopgo { "status", "Bad_Name" }
      assert.equals(1, code, out)
      assert.matches("^autopgo status: invalid app name: ", err)
      assert.equals(0, serverproc.stop(s))
    end, 120000)
  end)

  it("spools an upload over 32 MiB under its data directory, never in /tmp", function()
    run(function()
      local s = serverproc.start(dir, { "--max-upload-size", "64MiB" })
      local size = 40 * 1024 * 1024
      local c = httpc.connect(s.port)
      c:send(("POST /api/profile/app HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"):format(size))
      -- all but the last byte: the server holds the body, waiting for the rest
      local piece = ("p"):rep(1024 * 1024)
      for _ = 1, 39 do c:send(piece) end
      c:send(piece:sub(2))
      local spooled
      serverproc.wait_until("the body spooled to a file", function()
        spooled = {}
        local req = uv.fs_scandir("/proc/" .. s.proc.pid .. "/fd")
        for name in uv.fs_scandir_next, req do
          local target = uv.fs_readlink("/proc/" .. s.proc.pid .. "/fd/" .. name)
          if target and target:find("h2o.b.", 1, true) then spooled[#spooled + 1] = target end
        end
        return #spooled > 0
      end)
      local data = assert(uv.fs_realpath(s.data))
      for _, target in ipairs(spooled) do
        assert.equals(data .. "/.autopgo/tmp/h2o.b.", target:sub(1, #data + 20), target)
      end
      c:send("p")
      local r = assert(c:read_response(30000))
      assert.equals(400, r.status, "not a profile, but read whole")
      c:close()
      assert.equals(0, serverproc.stop(s))
    end, 120000)
  end)
end)
