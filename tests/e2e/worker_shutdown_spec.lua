-- Shutdown of the worker (standalone, and embedded in the server): on SIGTERM it finishes the
-- merge pass in progress and exits promptly, leaving what is staged for the next start, which
-- merges it: nothing lost, nothing counted twice.
local support = require "tests.lua.support"
local profiles = require "tests.lua.profiles"
local serverproc = require "tests.e2e.serverproc"
local uv = require "luv"

local run = support.run

local TOTAL = 1500

describe("a worker stopped with SIGTERM while a backlog is staged", function()
  local dir, bodies
  setup(function()
    bodies = {}
    for i = 1, TOTAL do bodies[i] = profiles.variant(i) end
  end)
  before_each(function() dir = support.tmpdir() end)
  after_each(function()
    support.run(serverproc.cleanup)
    support.rm_rf(dir)
  end)

  for _, role in ipairs { "server", "worker" } do
    it(("finishes the pass in progress and leaves the rest staged (%s)"):format(role), function()
      run(function()
        local data = dir .. "/autopgo-data"
        os.execute(("mkdir -p '%s/app/staging'"):format(data))
        for i = 1, TOTAL do
          support.write_file(("%s/app/staging/%d"):format(data, 1700000000000000000 + i), bodies[i])
        end
        local s = serverproc.start_role(role, dir)
        serverproc.wait_until("a first merge pass", function()
          return support.read_file(data .. "/app/default.pgo") ~= nil
        end, 60000)
        local t0 = uv.hrtime()
        local code, err = serverproc.stop(s)
        local secs = (uv.hrtime() - t0) / 1e9
        assert.equals(0, code, err)
        assert.is_true(secs < 10, ("the %s took %.1f s to stop"):format(role, secs))
        assert.matches("finishing the merge pass in progress", err)
        -- staged objects are never lost (each upload is in the base or still staged; a pass
        -- deletes what it merged); most were not merged yet
        local staged = {}
        for _, name in ipairs(serverproc.files(s, "app/staging")) do staged[name:match("(%d+)$")] = true end
        local before = profiles.counts(assert(support.read_file(data .. "/app/default.pgo")))
        local merged = 0
        for i = 1, TOTAL do
          if before[i] then merged = merged + 1 end
          assert.is_true(before[i] == 1 or staged[tostring(1700000000000000000 + i)] == true,
            ("upload %d is neither in the base nor staged"):format(i))
        end
        assert.is_true(merged < TOTAL / 2, ("%d of %d were merged before stopping"):format(merged, TOTAL))

        local again = serverproc.start_role(role, dir)
        serverproc.wait_until("everything staged is merged after the restart", function()
          return #serverproc.files(again, "app/staging") == 0
        end, 300000)
        assert.equals(0, (serverproc.stop(again)))
        local counts = profiles.counts(assert(support.read_file(data .. "/app/default.pgo")))
        for i = 1, TOTAL do
          assert.equals(1, counts[i], ("upload %d is counted %s times"):format(i, tostring(counts[i])))
        end
        assert.same({}, serverproc.files(again, "app/rejected"))
      end, 600000)
    end)
  end
end)
