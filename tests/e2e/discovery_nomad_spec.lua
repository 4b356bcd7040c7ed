-- End-to-end: `autopgo scrape --mode nomad` configured by NOMAD_ADDR and NOMAD_TOKEN, against the
-- recorded-response Nomad services API whose registrations (in two namespaces, with both tag
-- spellings) point at real Go services on loopback; profiles arrive at a real embedded
-- `autopgo server`. An API outage keeps the scraper profiling its last targets and shows in
-- /api/health.
local cjson = require "cjson.safe"
local support = require "tests.lua.support"
local fake = require "tests.fakes.fake"
local e2e = require "tests.e2e.scrape_support"
local ds = require "tests.e2e.discovery_support"

local run = support.run

describe("autopgo scrape --mode nomad (end to end)", function()
  local dir, services, server, scraper, api

  before_each(function() dir = support.tmpdir() end)
  after_each(function()
    run(function()
      if scraper then e2e.stop(scraper.proc) end
      if server then e2e.stop(server.proc) end
      if api then api:stop() end
      for _, s in ipairs(services or {}) do e2e.stop(s.proc) end
    end)
    scraper, server, api, services = nil, nil, nil, nil
    support.rm_rf(dir)
  end)

  it("profiles the tagged registrations across namespaces and rides out an API outage", function()
    run(function()
      services = e2e.start_goservices(2, dir)
      server = e2e.start_server(dir)
      local regs = fake.fixture("nomad_services.json").registrations
      regs[1].Address, regs[1].Port = "127.0.0.1", services[1].port -- default namespace, autopgo.scrape.* tags
      regs[3].Address, regs[3].Port = "127.0.0.1", services[2].port -- payments, short tags
      regs[3].Tags = { "autopgo.scrape=true", "autopgo.app=checkout", "autopgo.scheme=http" }
      table.remove(regs, 2) -- a registration at an address that does not exist here
      local fixtures = support.write_file(dir .. "/services.json", cjson.encode { registrations = regs })
      api = fake.start({ api = "nomad", fixtures = fixtures,
        auth = { tokens = { ["nomad-secret"] = { "default", "payments" } } } }, dir)

      scraper = e2e.start_scraper({ "--api-url", server.url, "--app", "checkout", "--sample-size", "2",
        "--frequency", "1s", "--duration", "1s", "--mode", "nomad" },
        { "NOMAD_ADDR=" .. api.url, "NOMAD_TOKEN=nomad-secret", "NOMAD_REGION=global" })
      ds.wait_forwarded(scraper, { services[1].url, services[2].url })
      assert.equals(1, #e2e.log_lines(scraper.proc, "skipping a Nomad service registration: it has no address"))
      local seen = {}
      for _, r in ipairs(api:requests()) do
        assert.equals("nomad-secret", r.headers["x-nomad-token"])
        assert.equals("global", r.query.region)
        seen[r.path .. "?namespace=" .. r.query.namespace] = true
      end
      assert.is_true(seen["/v1/services?namespace=*"])
      assert.is_true(seen["/v1/service/checkout?namespace=default"])
      assert.is_true(seen["/v1/service/checkout-pprof?namespace=payments"])

      ds.check_resilience(scraper, "nomad", { services[1].url, services[2].url },
        function() api:fail(500, nil, "rpc error: No cluster leader") end, function() api:heal() end)

      ds.assert_merged(server, "checkout", dir)
      assert.equals(0, e2e.stop(scraper.proc))
      scraper = nil
    end, 300000)
  end)
end)
