-- Durability of the embedded default: `kill -9` the server while 100 uploads are in flight
-- (twice: early, with nearly all 100 still in flight, and later), then a third time at a moment
-- chosen so that a merge has committed and its staged uploads are not deleted yet (the server is
-- frozen with SIGSTOP while this is checked), which only the ledger keeps from being counted
-- twice; after a restart every upload that got a 201 is in the merged profile exactly once, and
-- none is there twice.
local support = require "tests.lua.support"
local httpc = require "tests.lua.httpc"
local profiles = require "tests.lua.profiles"
local serverproc = require "tests.e2e.serverproc"
local async = require "autopgo.async"
local json = require "autopgo.json"
local uv = require "luv"
local crypto = require("autopgo.core").crypto

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
      local total = 400
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

      -- Whether the base's ledger lists a staged upload that is still there: merged, not deleted.
      local function merged_not_deleted(data)
        local base = support.read_file(data .. "/app/default.pgo")
        if not base then return false end
        local ledger = support.read_file(("%s/app/ledger/%s.json"):format(data,
          crypto.hex(crypto.digest("sha256", base))))
        if not ledger then return false end
        for _, key in ipairs(json.decode(ledger).merged) do
          if uv.fs_stat(data .. "/" .. key) then return true end
        end
        return false
      end

      -- Whether the process is stopped (SIGSTOP delivered).
      local function stopped(pid)
        local stat = support.read_file(("/proc/%d/stat"):format(pid))
        return stat ~= nil and stat:match("^%d+ %b() (%a)") == "T"
      end

      -- Uploads from..to, 16 at a time, while watching for a merge whose staged uploads are not
      -- deleted yet; then freezes the server, checks again, and kills it. Returns whether it did.
      local function round_at_commit(from, to)
        local s = serverproc.start(dir)
        local next_i, done, caught = from, false, false
        local uploads = {}
        for _ = 1, 16 do
          uploads[#uploads + 1] = function()
            while not caught and next_i <= to do
              local i = next_i
              next_i = next_i + 1
              local ok, res = pcall(httpc.request, s.port, "POST", "/api/profile/app",
                { body = bodies[i], timeout = 20000 })
              if ok and res and res.status == 201 and not caught then created[i] = true end
            end
          end
        end
        async.all {
          function()
            async.all(uploads)
            done = true
          end,
          function()
            -- Freeze the server as soon as a new base is renamed into place (inotify), then look:
            -- at a moment caught between a merge's commit and the deletion of its staged
            -- uploads, kill it; otherwise let it go on until the next commit.
            while not uv.fs_stat(s.data .. "/app") do async.sleep(5) end
            local watch, frozen = uv.new_fs_event(), async.event()
            watch:start(s.data .. "/app", {}, function(_, name)
              if name == "default.pgo" and not frozen.is_set then
                s.proc:kill("sigstop")
                frozen.set()
              end
            end)
            -- (merges go on after the last upload is answered: watch until nothing is staged)
            local deadline = uv.now() + 120000
            while not caught and uv.now() < deadline
              and (not done or #serverproc.files(s, "app/staging") > 0) do
              if frozen.wait(100) then
                for _ = 1, 100 do
                  if stopped(s.proc.pid) then break end
                  async.sleep(1)
                end
                if merged_not_deleted(s.data) then
                  caught = true
                  serverproc.kill(s)
                else
                  frozen = async.event()
                  s.proc:kill("sigcont")
                end
              end
            end
            watch:stop()
            watch:close()
          end,
        }
        if not caught then serverproc.kill(s) end
        return caught
      end

      local acked, flying = round(1, 100, 5)
      assert.is_true(acked >= 5)
      assert.is_true(flying >= 50, ("only %d uploads were in flight at the kill"):format(flying))
      acked, flying = round(101, 200, 60)
      assert.is_true(acked >= 60)
      assert.is_true(flying >= 1, "the second kill came after every upload was answered")
      assert.is_true(round_at_commit(201, 400), "never saw a merge whose staged uploads were not deleted yet")

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
      -- the restarted worker folded batches into the base (merge_pass's fold), not only full merges
      local folded = 0
      for n in httpc.request(s.port, "GET", "/metrics").body:gmatch("autopgo_merges_folded_total{[^}]*} (%d+)") do
        folded = folded + tonumber(n)
      end
      assert.is_true(folded > 0, "no batch was folded")
      assert.equals(0, (serverproc.stop(s)))
    end, 600000)
  end)
end)
