-- Specs for scripts/test.sh, the runner behind `make test`: what did not run is a failure (a
-- pending spec other than the Pub/Sub emulator's named skip, a tool that is missing or exits
-- non-zero although its output looks clean), and the summary lines add up. Each case runs the
-- real script on scratch specs, with its own log directory.
local support = require "tests.lua.support"

local run = support.run

describe("scripts/test.sh", function()
  local dir
  before_each(function() dir = support.tmpdir() end)
  after_each(function() support.rm_rf(dir) end)

  local function runner(args, env)
    local all = { "AUTOPGO_TEST_LOGS=" .. dir .. "/logs" }
    for _, e in ipairs(env or {}) do all[#all + 1] = e end
    local proc = support.spawn(support.root .. "/scripts/test.sh", args, { cwd = support.root, env = all })
    local code, _, out = proc:wait(300000)
    return code, out
  end

  local function last_line(out)
    return out:match("([^\n]+)\n?$")
  end

  it("counts a pending spec as a failure, and every failure in the last line", function()
    run(function()
      local spec = support.write_file(dir .. "/scratch_spec.lua", [[
        describe("scratch", function()
          it("passes", function() assert.is_true(true) end)
          pending("not written yet")
          it("fails", function() assert.is_true(false) end)
        end)
      ]])
      local code, out = runner { "e2e", "--", spec }
      assert.equals(1, code, out)
      assert.matches("e2e: PENDING counts as a failure: scratch not written yet", out, 1, true)
      assert.matches("== e2e: 1 passed, 2 failed (1 pending counted as failed)", out, 1, true)
      assert.matches("behaviour (C, Lua, end-to-end, extra suites): 1 passed, 2 failed", out, 1, true)
      assert.equals("1 passed, 2 failed", last_line(out))
    end, 320000)
  end)

  it("fails a suite whose process exits non-zero after a clean summary", function()
    run(function()
      local spec = support.write_file(dir .. "/dies_spec.lua", [[
        local uv = require "luv"
        -- once busted has printed its summary, the process dies
        require("busted").subscribe({ "exit" }, function()
          io.stdout:flush()
          uv.kill(uv.os_getpid(), "sigkill")
        end)
        describe("scratch", function() it("passes", function() assert.is_true(true) end) end)
      ]])
      local code, out = runner { "e2e", "--", spec }
      assert.equals(1, code, out)
      assert.matches("e2e: busted exited 137 though every spec passed", out, 1, true)
      assert.equals("1 passed, 1 failed", last_line(out))
    end, 320000)
  end)

  it("fails lint when luacheck is missing or exits non-zero, and reports lint on its own line", function()
    run(function()
      local bin = dir .. "/bin"
      assert(os.execute("mkdir -p " .. bin))
      support.write_file(bin .. "/luacheck", "#!/bin/sh\necho 'luacheck: not found' >&2\nexit 127\n")
      assert(os.execute("chmod +x " .. bin .. "/luacheck"))
      local path = "PATH=" .. bin .. ":" .. os.getenv("PATH")
      local code, out = runner({ "luacheck" }, { path })
      assert.equals(1, code, out)
      assert.matches("luacheck: checked nothing (exit 127)", out, 1, true)
      assert.matches("lint (format and luacheck, one per file): 0 passed, 1 failed", out, 1, true)
      assert.equals("0 passed, 1 failed", last_line(out))
      support.write_file(bin .. "/luacheck", "#!/bin/sh\necho 'Checking lua/x.lua     OK'\nexit 3\n")
      code, out = runner({ "luacheck" }, { path })
      assert.equals(1, code, out)
      assert.matches("luacheck: exited 3 with every file OK", out, 1, true)
      assert.equals("1 passed, 1 failed", last_line(out))
    end, 320000)
  end)
end)
