-- End-to-end specs of the host binary: help and usage errors, logging, `run` with the loop,
-- script errors in callbacks, and the --lua-path override.
local support = require "tests.lua.support"
local async = require "autopgo.async"

local run, autopgo = support.run, support.autopgo

describe("autopgo binary", function()
  local dir
  before_each(function() dir = support.tmpdir() end)
  after_each(function() support.rm_rf(dir) end)

  it("prints the commands with --help and exits 0", function()
    run(function()
      local code, out = autopgo { "--help" }
      assert.equals(0, code)
      for _, c in ipairs { "server", "worker", "scrape", "upload", "download", "list", "delete",
        "clean", "run", "merge", "version", "help" } do
        assert.matches("\n  " .. c .. " ", out)
      end
    end)
  end)

  it("prints a command's flags with `help CMD` and `CMD --help`", function()
    run(function()
      local c1, a = autopgo { "help", "upload" }
      local c2, b = autopgo { "upload", "--help" }
      assert.equals(0, c1)
      assert.equals(0, c2)
      assert.equals(a, b)
      assert.matches("AUTOPGO_API_URL", a)
    end)
  end)

  it("exits 2 with one line for an unknown flag", function()
    run(function()
      local code, out, err = autopgo { "upload", "--bogus" }
      assert.equals(2, code)
      assert.equals("", out)
      assert.equals("autopgo upload: unknown flag --bogus (see autopgo upload --help)\n", err)
    end)
  end)

  it("exits 2 for an unknown command and for no command", function()
    run(function()
      local code, _, err = autopgo { "frobnicate" }
      assert.equals(2, code)
      assert.matches("unknown command \"frobnicate\"", err)
      code, _, err = autopgo {}
      assert.equals(2, code)
      assert.equals("autopgo: missing command (autopgo help lists them)\n", err) -- one line, no help dump
    end)
  end)

  it("logs at debug level when AUTOPGO_LOG_LEVEL=debug", function()
    run(function()
      local code, out, err = autopgo({ "version" }, { env = { "AUTOPGO_LOG_LEVEL=debug" } })
      assert.equals(0, code)
      assert.matches("^autopgo %d+%.%d+%.%d+", out)
      assert.matches("level=debug", err)
      assert.matches("log_level=\"debug %(env%)\"", err)
      local _, _, quiet = autopgo { "version" }
      assert.equals("", quiet)
    end)
  end)

  it("writes JSON log lines with AUTOPGO_LOG_FORMAT=json", function()
    run(function()
      local _, _, err = autopgo({ "version", "-l", "debug" }, { env = { "AUTOPGO_LOG_FORMAT=json" } })
      local cjson = require "cjson"
      local first = assert(err:match("^[^\n]+"))
      local rec = cjson.decode(first)
      assert.equals("debug", rec.level)
      assert.equals("options resolved", rec.msg)
      assert.is_string(rec.time)
    end)
  end)

  it("runs a script that awaits a luv timer in a coroutine, with arg set", function()
    local script = support.write_file(dir .. "/t.lua", [[
      local uv = require "luv"
      local async = require "autopgo.async"
      local t0 = uv.now()
      local v = async.await(function(cb)
        local t = uv.new_timer()
        t:start(30, 0, function() t:close(); cb(nil, "fired") end)
      end)
      print(v, uv.now() - t0 >= 30, arg[0], ...)
      return 0
    ]])
    run(function()
      local code, out = autopgo { "run", script, "x", "--y" }
      assert.equals(0, code)
      assert.equals("fired\ttrue\t" .. script .. "\tx\t--y\n", out)
    end)
  end)

  it("exits with the script's status and reports a script error with a traceback", function()
    run(function()
      assert.equals(7, (autopgo { "run", support.write_file(dir .. "/s.lua", "return 7") }))
      local code, _, err = autopgo { "run", support.write_file(dir .. "/e.lua", "local x = nil; return x.y") }
      assert.equals(1, code)
      assert.matches("script failed", err)
      assert.matches("stack traceback", err)
      local missing = autopgo { "run", dir .. "/nope.lua" }
      assert.equals(1, missing)
    end)
  end)

  it("keeps a long-running process alive when a timer callback raises", function()
    local script = support.write_file(dir .. "/daemon.lua", [[
      local uv = require "luv"
      local n = 0
      local t = uv.new_timer()
      t:start(5, 5, function()
        n = n + 1
        if n <= 3 then error("tick " .. n .. " failed") end
        if n == 10 then
          t:close()
          print("still running after", n, "ticks; errors:", require("autopgo.core").callback_errors())
        end
      end)
    ]])
    run(function()
      local code, out, err = autopgo { "run", script }
      assert.equals(0, code)
      assert.equals("still running after\t10\tticks; errors:\t3\n", out)
      local _, count = err:gsub("lua callback failed", "")
      assert.equals(3, count)
      assert.matches("tick 1 failed", err)
      assert.matches("stack traceback", err)
    end)
  end)

  it("stops a process waiting on a signal handler when sent SIGTERM", function()
    local script = support.write_file(dir .. "/sig.lua", [[
      local uv = require "luv"
      local s = uv.new_signal()
      s:start("sigterm", function() print("bye"); s:close() end)
      print("ready")
      io.stdout:flush()
    ]])
    run(function()
      local proc = support.spawn(support.bin, { "run", script })
      local ready = async.event()
      proc.on_output = function(d) if d:find("ready") then ready.set() end end
      assert(ready.wait(10000))
      proc:kill("sigterm")
      local code, _, out = proc:wait()
      assert.equals(0, code)
      assert.equals("ready\nbye\n", out)
    end)
  end)

  it("prefers modules and scripts from --lua-path / AUTOPGO_LUA_PATH", function()
    os.execute("mkdir -p " .. dir .. "/lua/autopgo " .. dir .. "/lua/roles")
    support.write_file(dir .. "/lua/autopgo/units.lua", "return { overridden = true }")
    support.write_file(dir .. "/lua/roles/hello.lua", "print('hello from override', ...)")
    local probe = support.write_file(dir .. "/probe.lua",
      "print(require('autopgo.units').overridden, require('autopgo.log') ~= nil)")
    run(function()
      local _, out = autopgo { "run", "--lua-path", dir .. "/lua", probe }
      assert.equals("true\ttrue\n", out)
      local _, out2 = autopgo({ "run", probe }, { env = { "AUTOPGO_LUA_PATH=" .. dir .. "/lua" } })
      assert.equals("true\ttrue\n", out2)
      local _, plain = autopgo { "run", probe }
      assert.equals("nil\ttrue\n", plain)
      local _, hello = autopgo { "run", "--lua-path=" .. dir .. "/lua", "roles/hello.lua", "a" }
      assert.equals("hello from override\ta\n", hello)
    end)
  end)
end)
