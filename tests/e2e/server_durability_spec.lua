-- Durability of the embedded default: `kill -9` the server while 100 uploads are in flight
-- (twice: early, with nearly all 100 still in flight, and later); after a restart every upload
-- that got a 201 is in the merged profile exactly once, and none is there twice.
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
      local total = 200
      local bodies = {}
      for i = 1, total do bodies[i] = profiles.variant(i) end
      local created = {}

      -- Uploads from..to all at once (one client each); kills the server once `kill_after` got a
      -- 201. Returns how many got a 201 and how many were still in flight at the kill.
      local function round(from, to, kill_after)
        local s = serverproc.start(dir)
        local ok_count, in_flight, in_flight_at_kill, killed = 0, 0, nil, false
        local clients = {}
        for i = from, to do
          clients[#clients + 1] = function()
            in_flight = in_flight + 1
            local ok, res = pcall(httpc.request, s.port, "POST", "/api/profile/app",
              { body = bodies[i], timeout = 20000 })
            in_flight = in_flight - 1
            if ok and res and res.status == 201 and not killed then
              created[i] = true
              ok_count = ok_count + 1
              if ok_count == kill_after then
                killed, in_flight_at_kill = true, in_flight
                serverproc.kill(s)
              end
            end
          end
        end
        async.all(clients)
        if not killed then serverproc.kill(s) end
        return ok_count, in_flight_at_kill or 0
      end

      local acked, flying = round(1, 100, 5)
      assert.is_true(acked >= 5)
      assert.is_true(flying >= 50, ("only %d uploads were in flight at the kill"):format(flying))
      acked, flying = round(101, 200, 60)
      assert.is_true(acked >= 60)
      assert.is_true(flying >= 1, "the second kill came after every upload was answered")

      local s = serverproc.start(dir)
      serverproc.wait_until("every staged upload is merged after the restart", function()
        return #serverproc.files(s, "app/staging") == 0
      end, 120000)
      local base = httpc.request(s.port, "GET", "/api/profile/app")
      assert.equals(200, base.status)
      local counts = profiles.counts(base.body)
      local acknowledged = 0
      for i = 1, total do
        if created[i] then
          acknowledged = acknowledged + 1
          assert.equals(1, counts[i], ("upload %d got a 201 and is counted %s times"):format(i, tostring(counts[i])))
        else
          -- no 201: the client cannot know; stored (once) or not at all are both fine
          assert.is_true(counts[i] == nil or counts[i] == 1,
            ("upload %d counted %s times"):format(i, tostring(counts[i])))
        end
      end
      assert.is_true(acknowledged >= 65)
      assert.same({}, serverproc.files(s, "app/rejected"))
      assert.equals(0, (serverproc.stop(s)))
    end, 600000)
  end)
end)
