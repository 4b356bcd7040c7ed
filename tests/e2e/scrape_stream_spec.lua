-- End-to-end: a target serving a 200 MB body slowly; the scraper forwards all of it to the real
-- server (whose upload limit is raised so that it reads everything) while its own peak resident
-- memory stays under 64 MB: the profile streams through and is never held whole.
local async = require "autopgo.async"
local support = require "tests.lua.support"
local fixture = require "tests.lua.http_fixture"
local e2e = require "tests.e2e.scrape_support"

local run = support.run

describe("autopgo scrape streaming", function()
  local dir, server, scraper, target
  before_each(function() dir = support.tmpdir() end)
  after_each(function()
    run(function()
      if scraper then e2e.stop(scraper.proc) end
      if server then e2e.stop(server.proc) end
    end)
    if target then target.close() end
    scraper, server, target = nil, nil, nil
    support.rm_rf(dir)
  end)

  it("forwards a 200 MB profile with a peak RSS under 64 MB", function()
    local total = 200 * 1024 * 1024
    local sent, requests = 0, 0
    target = fixture.start(function(req, conn)
      requests = requests + 1
      if requests > 1 then return conn:respond(503, nil, "busy") end -- one transfer is enough
      assert(req.path == "/debug/pprof/profile")
      conn:write(("HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n")
        :format(total))
      local chunk = ("\31\139"):rep(128 * 1024) -- 256 KiB
      while sent < total do
        if not conn:write(chunk) then return end
        sent = sent + #chunk
        if sent % (4 * 1024 * 1024) == 0 then async.sleep(40) end -- about 100 MB/s at most
      end
    end)
    run(function()
      server = e2e.start_server(dir, { "--max-upload-size", "256MiB" })
      support.write_file(dir .. "/targets.json", ('[{"address": "%s"}]'):format(target.url))
      scraper = e2e.start_scraper({ "--api-url", server.url, "--app", "big", "-s", "1", "-f", "500ms", "-d", "1s",
        dir .. "/targets.json" })
      local line = e2e.wait_for(function()
        return e2e.log_lines(scraper.proc, "bytes=" .. total)[1]
      end, 240000, "the whole body to go through the scraper")
      assert.equals(total, sent)
      -- not a profile, so the server refuses it once it has read it all
      assert.matches("failed to upload profile", line)
      local peak = e2e.peak_rss_kib(scraper.proc.pid)
      assert.is_not_nil(peak)
      assert.is_true(peak < 64 * 1024, ("the scraper's peak RSS was %d KiB"):format(peak))
    end, 300000)
  end)
end)
