-- End-to-end: SIGHUP makes `autopgo scrape --mode file` re-read its targets file: an added
-- target is scraped, a removed one no longer is, and a broken file is logged while the previous
-- targets stay in use. Real Go services and the real server.
local http = require "autopgo.http"
local uv = require "luv"
local support = require "tests.lua.support"
local e2e = require "tests.e2e.scrape_support"

local run = support.run

describe("autopgo scrape --mode file with SIGHUP", function()
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

  it("adds, removes and keeps targets across reloads", function()
    run(function()
      services = e2e.start_goservices(2, dir)
      local a, b = services[1].url, services[2].url
      server = e2e.start_server(dir)
      local file = dir .. "/targets.json"
      local function targets(...)
        local list = {}
        for _, u in ipairs { ... } do list[#list + 1] = ('{"address": "%s"}'):format(u) end
        -- written whole, then renamed, as an editor or a config manager would
        support.write_file(file .. ".new", "[" .. table.concat(list, ", ") .. "]")
        assert(uv.fs_rename(file .. ".new", file))
      end
      local function forwarded(url)
        return #e2e.log_lines(scraper.proc, "target=" .. url .. "/debug/pprof/profile")
      end
      local function reloads(text) return #e2e.log_lines(scraper.proc, text) end

      targets(a)
      scraper = e2e.start_scraper({ "--api-url", server.url, "--app", "reload", "-s", "5", "-f", "200ms",
        "-d", "1s", file })
      e2e.wait_for(function() return forwarded(a) > 0 end, 60000, "a profile from A")
      assert.equals(0, forwarded(b))

      -- add B
      targets(a, b)
      scraper.proc:kill("sighup")
      e2e.wait_for(function() return reloads("discovery reloaded") == 1 end, 10000, "the first reload")
      e2e.wait_for(function() return forwarded(b) > 0 end, 60000, "a profile from B")

      -- remove A: after the round in flight, A is never asked again
      targets(b)
      scraper.proc:kill("sighup")
      e2e.wait_for(function() return reloads("discovery reloaded") == 2 end, 10000, "the second reload")
      local nb = forwarded(b)
      e2e.wait_for(function() return forwarded(b) >= nb + 2 end, 60000, "two more rounds")
      local na = forwarded(a)
      nb = forwarded(b)
      e2e.wait_for(function() return forwarded(b) >= nb + 2 end, 60000, "two more rounds")
      assert.equals(na, forwarded(a))

      -- a broken file keeps B
      support.write_file(file, '[{"address": ')
      scraper.proc:kill("sighup")
      e2e.wait_for(function() return reloads("discovery reload failed; keeping the previous targets") == 1 end,
        10000, "the failed reload")
      nb = forwarded(b)
      e2e.wait_for(function() return forwarded(b) >= nb + 2 end, 60000, "rounds after the failed reload")
      assert.equals(na, forwarded(a))
      assert.equals(0, #e2e.log_lines(scraper.proc, "failed to"))

      local res = assert(http.request { url = scraper.url .. "/metrics" })
      assert.matches('autopgo_discovery_reloads_total{result="success"} 2', res.body, 1, true)
      assert.matches('autopgo_discovery_reloads_total{result="error"} 1', res.body, 1, true)
    end, 300000)
  end)
end)
