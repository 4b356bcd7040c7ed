-- Durability of the embedded default: `kill -9` the server while uploads are in flight (twice);
-- after a restart every upload that got a 201 is in the merged profile exactly once, and none is
-- there twice.
local support = require "tests.lua.support"
local httpc = require "tests.lua.httpc"
local profiles = require "tests.lua.profiles"
local serverproc = require "tests.e2e.serverproc"
local async = require "autopgo.async"

local run = support.run

describe("autopgo server killed with -9 during uploads", function()
  local dir
  before_each(function() dir = support.tmpdir() end)
  after_each(function()
    support.run(serverproc.cleanup)
    support.rm_rf(dir)
  end)

  it("counts every acknowledged upload exactly once after a restart", function()
    run(function()
      local bodies = {}
      for i = 1, 100 do bodies[i] = profiles.variant(i) end
      local created = {}

      -- Uploads from..to with `parallel` clients; kills the server once `kill_after` got a 201.
      local function round(from, to, kill_after)
        local s = serverproc.start(dir)
        local next_i, ok_count, killed = from, 0, false
        local function client()
          while next_i <= to and not killed do
            local i = next_i
            next_i = next_i + 1
            local ok, res = pcall(httpc.request, s.port, "POST", "/api/profile/app",
              { body = bodies[i], timeout = 10000 })
            if ok and res and res.status == 201 then
              created[i] = true
              ok_count = ok_count + 1
              if ok_count == kill_after and not killed then
                killed = true
                serverproc.kill(s)
              end
            end
          end
        end
        local clients = {}
        for c = 1, 16 do clients[c] = client end
        async.all(clients)
        if not killed then serverproc.kill(s) end
        return ok_count
      end

      assert.is_true(round(1, 50, 25) >= 25)
      assert.is_true(round(51, 100, 25) >= 25)

      local s = serverproc.start(dir)
      serverproc.wait_until("every staged upload is merged after the restart", function()
        return #serverproc.files(s, "app/staging") == 0
      end, 120000)
      local base = httpc.request(s.port, "GET", "/api/profile/app")
      assert.equals(200, base.status)
      local counts = profiles.counts(base.body)
      local acknowledged = 0
      for i = 1, 100 do
        if created[i] then
          acknowledged = acknowledged + 1
          assert.equals(1, counts[i], ("upload %d got a 201 and is counted %s times"):format(i, tostring(counts[i])))
        else
          -- no 201: the client cannot know; stored (once) or not at all are both fine
          assert.is_true(counts[i] == nil or counts[i] == 1,
            ("upload %d counted %s times"):format(i, tostring(counts[i])))
        end
      end
      assert.is_true(acknowledged >= 50)
      assert.same({}, serverproc.files(s, "app/rejected"))
      assert.equals(0, (serverproc.stop(s)))
    end, 600000)
  end)
end)
