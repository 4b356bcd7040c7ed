-- End-to-end abuse of the real `autopgo server` on its default budgets: 200 concurrent 10 MB
-- uploads, eight gzip bombs and 16 stalled large bodies at once, while a normal client uploads
-- real profiles and /api/health is polled. Every request gets 201 or 4xx/503 (never a reset or a
-- hang), health stays 200 throughout, and the server's resident memory stays under
-- M.rss_bound; the normal client's latency is reported, not asserted tightly. Then 1,500 idle
-- connections must not stop the server answering. Figures from a run are in README "TLS and
-- budgets".
local uv = require "luv"
local async = require "autopgo.async"
local http = require "autopgo.http"
local support = require "tests.lua.support"
local httpc = require "tests.lua.httpc"
local e2e = require "tests.e2e.scrape_support"

local run = support.run

-- 512 MiB of buffered uploads + 512 MiB of validation reservations (each decoded at most 4x) is
-- the budgets' worst case; in practice the bodies fail fast. The bound leaves room for the
-- allocator keeping freed memory.
local RSS_BOUND = 1024 * 1024 * 1024

local function rss(pid)
  local text = support.read_file(("/proc/%d/status"):format(pid)) or ""
  local kb = text:match("VmRSS:%s+(%d+)")
  return kb and tonumber(kb) * 1024 or 0
end

local function percentile(list, p)
  if #list == 0 then return 0 end
  table.sort(list)
  return list[math.max(1, math.ceil(#list * p))]
end

describe("autopgo server under abuse (end to end)", function()
  local dir, server
  before_each(function() dir = support.tmpdir() end)
  after_each(function()
    run(function() if server then e2e.stop(server.proc) end end)
    server = nil
    support.rm_rf(dir)
  end)

  it("keeps memory bounded, answers everyone and stays healthy", function()
    run(function()
      -- the ammunition: 10 MB that is not a profile (400 once validated), a bomb (300 MiB of zeros
      -- gzipped, past the default 256 MiB per upload: 413) and a real profile for the normal client
      local big, bomb = dir .. "/big.bin", dir .. "/bomb.gz"
      assert(os.execute(("head -c 10000000 /dev/urandom > %s"):format(big)))
      assert(os.execute(("head -c 314572800 /dev/zero | gzip -1 > %s"):format(bomb)))
      local good = support.testdata .. "/goapp-go123-cpu-1.pb.gz"
      server = e2e.start_server(dir, { "--request-timeout", "20s" })
      local pid = server.proc.pid
      local url = server.url

      local peak, stop_sampling = 0, false
      async.spawn(function()
        while not stop_sampling do
          peak = math.max(peak, rss(pid))
          async.sleep(50)
        end
      end)
      -- the health probe and the normal client are curl in loops of their own (other processes), so
      -- what they measure is the server, not this busy test process
      local stop_file = dir .. "/stop"
      local function loop(body)
        return support.spawn("sh", { "-c", ("while [ ! -e %s ]; do %s; done"):format(stop_file, body) })
      end
      local prober = loop(("curl -s -o /dev/null --max-time 10 -w '%%{http_code} %%{time_total}\\n' %s/api/health; " ..
        "sleep 0.1"):format(url))
      local normal = loop(("curl -s -o /dev/null --max-time 60 -w '%%{http_code} %%{time_total}\\n' " ..
        "-H 'content-type: application/octet-stream' --data-binary @%s %s/api/profile/normal"):format(good, url))

      local statuses, failures = {}, {}
      local function upload(path, app, what)
        local res, err = http.request { method = "POST", url = url .. "/api/profile/" .. app, body_path = path,
          timeout = 60, headers = { ["content-type"] = "application/octet-stream" } }
        local key = what .. " " .. (res and res.status or "error")
        statuses[key] = (statuses[key] or 0) + 1
        if not res then failures[#failures + 1] = what .. ": " .. tostring(err) end
        return res
      end

      local tasks = {}
      for i = 1, 200 do tasks[#tasks + 1] = function() upload(big, "big-" .. (i % 10), "big") end end
      for i = 1, 8 do tasks[#tasks + 1] = function() upload(bomb, "bomb-" .. i, "bomb") end end
      -- stalled: 60 MiB announced, 4 MiB sent, then nothing
      for _ = 1, 16 do
        tasks[#tasks + 1] = function()
          local ok, c = pcall(httpc.connect, server.port)
          if not ok then
            failures[#failures + 1] = "stalled connect: " .. tostring(c)
            return
          end
          pcall(c.send, c, ("POST /api/profile/stalled HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n")
            :format(60 * 1024 * 1024))
          local chunk = string.rep("s", 256 * 1024)
          for _ = 1, 16 do
            if c.eof or not pcall(c.send, c, chunk) then break end
          end
          c:wait_for(function() return false end, 40000)
          local status = tonumber(c.buf:match("^HTTP/1.1 (%d+)"))
          local key = "stalled " .. (status or "closed")
          statuses[key] = (statuses[key] or 0) + 1
          c:close()
        end
      end
      local started = uv.hrtime()
      local all_done = async.event()
      local remaining = #tasks
      for _, fn in ipairs(tasks) do
        async.spawn(function()
          fn()
          remaining = remaining - 1
          if remaining == 0 then all_done.set() end
        end)
      end
      all_done.wait(80000)
      local took = (uv.hrtime() - started) / 1e9
      support.write_file(stop_file, "")
      local _, _, probes = prober:wait(20000)
      local _, _, normals = normal:wait(70000)
      stop_sampling = true
      local health_bad, health_n, latencies, health_ms = {}, 0, {}, {}
      for code, secs in probes:gmatch("(%d+) ([%d.]+)") do
        health_n = health_n + 1
        health_ms[#health_ms + 1] = tonumber(secs) * 1000
        if code ~= "200" then health_bad[#health_bad + 1] = code .. " after " .. secs .. "s" end
      end
      for code, secs in normals:gmatch("(%d+) ([%d.]+)") do
        local key = "normal " .. (code == "000" and "error" or code)
        statuses[key] = (statuses[key] or 0) + 1
        latencies[#latencies + 1] = tonumber(secs) * 1000
      end

      local summary = {}
      for k, n in pairs(statuses) do summary[#summary + 1] = k .. "=" .. n end
      table.sort(summary)
      local p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)
      print(("\nload: %.1fs, peak RSS %.0f MiB (bound %d MiB), normal uploads %d p50 %.0f ms p99 %.0f ms, " ..
        "health polls %d (p50 %.0f ms, max %.0f ms); %s"):format(took, peak / 2 ^ 20, RSS_BOUND // 2 ^ 20,
        #latencies, p50, p99, health_n, percentile(health_ms, 0.5), percentile(health_ms, 1),
        table.concat(summary, " ")))

      assert.equals(0, remaining, "some requests never finished")
      assert.same({}, failures)
      for k in pairs(statuses) do
        local status = tonumber(k:match(" (%d+)$"))
        assert.is_truthy(status == 201 or status == 503 or (status and status >= 400 and status < 500)
          or k == "stalled closed", "unexpected outcome " .. k)
      end
      assert.is_nil(statuses["normal error"])
      assert.is_truthy((statuses["normal 201"] or 0) > 0, "the normal client never got an upload in")
      assert.equals(8, (statuses["bomb 413"] or 0) + (statuses["bomb 503"] or 0))
      assert.same({}, health_bad)
      assert.is_true(p99 < 30000, "normal uploads took up to " .. p99 .. " ms")
      if not support.sanitized() then assert.is_true(peak < RSS_BOUND, "peak RSS " .. peak) end
    end, 120000)
  end)

  it("answers while 1,500 idle connections are open", function()
    run(function()
      -- this process holds the 1,500 client ends: its own soft limit may be 1024
      local limit = require("autopgo.httpd").raise_fd_limit() -- -1: unlimited
      assert.is_true(limit == -1 or limit > 1600, "the hard limit on open files is too low: " .. limit)
      server = e2e.start_server(dir)
      local conns = {}
      for i = 1, 1500 do
        local tcp = uv.new_tcp()
        local _, err = async.await(function(cb) tcp:connect("127.0.0.1", server.port, cb) end)
        conns[i] = tcp
        assert.is_nil(err)
      end
      local res = assert(http.request { url = server.url .. "/api/health", timeout = 10 })
      assert.equals(200, res.status)
      res = assert(http.request { method = "POST", url = server.url .. "/api/profile/idle-test",
        body_path = support.testdata .. "/goapp-go123-cpu-1.pb.gz", timeout = 10 })
      assert.equals(201, res.status)
      for _, tcp in ipairs(conns) do tcp:close() end
    end, 60000)
  end)
end)
