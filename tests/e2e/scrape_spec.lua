-- End-to-end: three instances of a real Go service (tests/goservice, built with Go 1.23), the
-- real `autopgo server` on the embedded default and `autopgo scrape --mode file`; the merged
-- profile must name the service's own functions with start_line set. Also the scraper's
-- health, readiness and metrics endpoints, and a clean SIGTERM.
local http = require "autopgo.http"
local support = require "tests.lua.support"
local e2e = require "tests.e2e.scrape_support"
local fixture = require "tests.lua.http_fixture"

local run = support.run

describe("autopgo scrape (end to end)", function()
  local dir, services, server, scraper
  before_each(function() dir = support.tmpdir() end)
  after_each(function()
    run(function()
      if scraper then e2e.stop(scraper.proc) end
      if server then e2e.stop(server.proc) end
      for _, s in ipairs(services or {}) do e2e.stop(s.proc) end
    end)
    scraper, server, services = nil, nil, nil
    support.rm_rf(dir)
  end)

  it("profiles three Go services and the merged profile names their functions with start_line", function()
    run(function()
      services = e2e.start_goservices(3, dir)
      server = e2e.start_server(dir)
      local targets = {}
      for _, s in ipairs(services) do targets[#targets + 1] = ('{"address": "%s"}'):format(s.url) end
      support.write_file(dir .. "/targets.json", "[" .. table.concat(targets, ", ") .. "]")
      scraper = e2e.start_scraper({ "--api-url", server.url, "--app", "goservice", "--sample-size", "3",
        "--frequency", "1s", "--duration", "1s", "--mode", "file", dir .. "/targets.json" })

      -- every instance's profile reaches the server
      e2e.wait_for(function()
        for _, s in ipairs(services) do
          if #e2e.log_lines(scraper.proc, "target=" .. s.url .. "/debug/pprof/profile") == 0 then return false end
        end
        return true
      end, 60000, "a profile from each instance")
      for _, line in ipairs(e2e.log_lines(scraper.proc, "level=error")) do error("scraper error: " .. line) end
      for _, line in ipairs(e2e.log_lines(scraper.proc, "profile forwarded")) do
        assert.matches('key=goservice/staging/%d+', line)
      end

      -- the scraper's own endpoints
      local res = assert(http.request { url = scraper.url .. "/api/health" })
      assert.equals(200, res.status)
      assert.matches('"status":"healthy"', res.body)
      res = assert(http.request { url = scraper.url .. "/api/ready" })
      assert.equals(200, res.status)
      res = assert(http.request { url = scraper.url .. "/metrics" })
      assert.matches('autopgo_scrapes_total{result="success"} %d+', res.body)
      assert.matches("autopgo_scrape_bytes_total %d+", res.body)

      -- the merged profile, downloaded with the CLI and read with Go's own pprof, names the three
      -- functions with their start lines (merges go on, so wait until it has samples of all three)
      local out = dir .. "/default.pgo"
      local functions = { "main.burnFibonacci", "main.burnHashing", "main.burnSorting" }
      local raw, missing
      e2e.wait_for(function()
        local code = support.autopgo { "download", "goservice", "-o", out, "--api-url", server.url }
        if code ~= 0 then return false end
        local gcode, text, gerr = e2e.go_tool({ "tool", "pprof", "-raw", out })
        assert.equals(0, gcode, gerr)
        raw, missing = text, nil
        for _, fn in ipairs(functions) do
          if not text:find(fn .. " ", 1, true) then missing = fn end
        end
        return missing == nil
      end, 90000, "a merged profile with samples of all three functions")
      for _, fn in ipairs(functions) do
        for start_line in raw:gmatch(fn:gsub("%.", "%%.") .. " [^\n]*main%.go:%d+[:%d]* s=(%d+)") do
          assert.is_true(tonumber(start_line) > 0, fn .. " has no start_line")
        end
        assert.matches(fn:gsub("%.", "%%.") .. " [^\n]*main%.go:%d+[:%d]* s=[1-9]%d*", raw)
      end
      -- and Go's PGO loader takes it
      local pcode, _, perr = e2e.go_tool({ "tool", "preprofile", "-i", out, "-o", dir .. "/pgo.txt" })
      assert.equals(0, pcode, perr)

      local exit = e2e.stop(scraper.proc)
      assert.equals(0, exit)
      assert.equals(1, #e2e.log_lines(scraper.proc, "scraper stopped"))
      scraper = nil
    end, 240000)
  end)

  it("exits 0 on SIGTERM in the middle of a round, aborting the scrape in flight", function()
    run(function()
      services = e2e.start_goservices(1, dir)
      server = e2e.start_server(dir)
      support.write_file(dir .. "/targets.json", ('[{"address": "%s"}]'):format(services[1].url))
      scraper = e2e.start_scraper({ "--api-url", server.url, "--app", "goservice", "--sample-size", "1",
        "--frequency", "100ms", "--duration", "30s", dir .. "/targets.json" })
      e2e.wait_for(function()
        local res = http.request { url = scraper.url .. "/metrics", timeout = 2 }
        return res and res.status == 200 and res.body:match("autopgo_scrape_rounds_total 1")
      end, 30000, "the first round")
      local code = e2e.stop(scraper.proc)
      assert.equals(0, code)
      assert.equals(1, #e2e.log_lines(scraper.proc, "scrape aborted"))
      assert.equals(0, #e2e.log_lines(scraper.proc, "profile forwarded"))
      scraper = nil
    end, 120000)
  end)

  it("logs its schedule at the start and after every round, and skips a profile without samples", function()
    local corpus = support.root .. "/tests/testdata/pprof/"
    local idle = support.read_file(corpus .. "edge/no-samples.pb.gz")
    local busy = support.read_file(corpus .. "goapp-go123-cpu-1.pb.gz")
    local served = 0
    local target = fixture.start(function(_, conn)
      served = served + 1
      conn:respond(200, { { "Content-Type", "application/octet-stream" } }, served == 1 and idle or busy)
    end)
    run(function()
      server = e2e.start_server(dir)
      support.write_file(dir .. "/targets.json", ('[{"address": "%s"}]'):format(target.url))
      scraper = e2e.start_scraper({ "--api-url", server.url, "--app", "sched", "-s", "1", "-f", "1s", "-d", "1s",
        dir .. "/targets.json" })
      e2e.wait_for(function() return #e2e.log_lines(scraper.proc, "scrape round finished") >= 2 end, 60000,
        "two rounds")
      local name = target.url .. "/debug/pprof/profile"
      local schedule = e2e.log_lines(scraper.proc, "scrape schedule")
      assert.equals(1, #schedule)
      assert.matches("first_round_in=1s every=1s sample_size=1 duration=1s", schedule[1], 1, true)
      local started = e2e.log_lines(scraper.proc, "scrape round started")
      assert.matches("round=1 known=1 picked=1 targets=" .. name, started[1], 1, true)
      assert.matches("round=2 known=1 picked=1 targets=" .. name, started[2], 1, true)
      local skipped = e2e.log_lines(scraper.proc, "profile skipped")
      assert.equals(1, #skipped)
      assert.matches('reason="the profile has no samples (the target was idle)" target=' .. name, skipped[1], 1, true)
      local finished = e2e.log_lines(scraper.proc, "scrape round finished")
      assert.matches("round=1 forwarded=0 skipped_empty=1 failed=0 next_round_in=%d+m?s", finished[1])
      assert.matches("round=2 forwarded=1 skipped_empty=0 failed=0 next_round_in=%d+m?s", finished[2])
      assert.equals(1, #e2e.log_lines(scraper.proc, "profile forwarded"))
    end, 120000)
    target.close()
  end)

  it("refuses to start without a usable targets file or discovery module", function()
    run(function()
      local code, _, err = support.autopgo { "scrape", "--app", "a", "-s", "1", dir .. "/missing.json" }
      assert.equals(1, code)
      assert.matches("autopgo scrape: cannot read the targets file", err)
      -- a bad --mode and a missing argument are usage errors: one line, status 2
      code, _, err = support.autopgo { "scrape", "--app", "a", "-s", "1", "--mode", "nope" }
      assert.equals(2, code)
      assert.equals('autopgo scrape: unknown discovery mode "nope" (a module in lua/discovery/ or a path to a .lua '
        .. "file)\n", err)
      code, _, err = support.autopgo { "scrape", "--app", "a", "-s", "1" }
      assert.equals(2, code)
      assert.equals("autopgo scrape: file mode needs the path of a JSON targets file as its argument\n", err)
      code, _, err = support.autopgo { "scrape", "--app", "a" }
      assert.equals(2, code)
      assert.matches("%-%-sample%-size is required", err)
      code, _, err = support.autopgo { "scrape", "--app", "a", "-s", "0" }
      assert.equals(2, code)
      assert.matches("must be at least 1", err)
      -- the role script is the command
      local code2, _, err2 = support.autopgo { "run", "roles/scraper.lua", "--app", "a" }
      assert.equals(2, code2)
      assert.equals(select(3, support.autopgo { "scrape", "--app", "a" }), err2)
    end)
  end)

  it("loads a custom discovery module by path, and the dns example by name", function()
    run(function()
      services = e2e.start_goservices(1, dir)
      server = e2e.start_server(dir)
      support.write_file(dir .. "/mine.lua", ([[
        return { list = function(ctx, arg) return { { address = arg } } end }
      ]]))
      scraper = e2e.start_scraper({ "--api-url", server.url, "--app", "custom", "-s", "1", "-f", "500ms",
        "-d", "1s", "--mode", dir .. "/mine.lua", services[1].url })
      e2e.wait_for(function() return #e2e.log_lines(scraper.proc, "profile forwarded") > 0 end, 60000,
        "a profile found through the custom module")
      assert.equals(0, e2e.stop(scraper.proc))
      scraper = e2e.start_scraper({ "--api-url", server.url, "--app", "custom", "-s", "1", "-f", "500ms",
        "-d", "1s", "--mode", "dns", services[1].url .. "/debug/pprof/profile" })
      e2e.wait_for(function() return #e2e.log_lines(scraper.proc, "profile forwarded") > 0 end, 60000,
        "a profile found through the dns mode")
      assert.equals(1, #e2e.log_lines(scraper.proc, "target=" .. services[1].url .. "/debug/pprof/profile"))
    end, 120000)
  end)
end)
