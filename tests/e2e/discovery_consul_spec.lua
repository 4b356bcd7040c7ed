-- End-to-end: `autopgo scrape --mode consul` configured by CONSUL_HTTP_ADDR, CONSUL_HTTP_SSL,
-- CONSUL_CACERT, CONSUL_CLIENT_CERT/KEY and CONSUL_HTTP_TOKEN, against the recorded-response
-- Consul catalog on a TLS listener that requires a client certificate; one instance has its own
-- service address, the other uses its node's. Profiles from the real Go services arrive at a
-- real embedded `autopgo server`; an API outage keeps the scraper going and shows in health.
local cjson = require "cjson.safe"
local support = require "tests.lua.support"
local fake = require "tests.fakes.fake"
local e2e = require "tests.e2e.scrape_support"
local ds = require "tests.e2e.discovery_support"

local run = support.run

describe("autopgo scrape --mode consul (end to end)", function()
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

  it("profiles the tagged catalog instances over mutual TLS and rides out an API outage", function()
    run(function()
      local certs = fake.certs(dir)
      services = e2e.start_goservices(2, dir)
      server = e2e.start_server(dir)
      local entries = fake.fixture("consul_catalog.json").entries
      -- web-1: no service address, so the node's address is used
      entries[1].Address, entries[1].ServicePort = "127.0.0.1", services[1].port
      -- web-2: its own service address
      entries[2].ServiceAddress, entries[2].ServicePort = "127.0.0.1", services[2].port
      entries[2].ServiceTags = { "autopgo.scrape=true", "autopgo.app=checkout" }
      local fixtures = support.write_file(dir .. "/catalog.json", cjson.encode { entries = entries })
      api = fake.start({ api = "consul", fixtures = fixtures, auth = { tokens = { "consul-secret" } },
        tls = { cert = certs.server_cert, key = certs.server_key, ca = certs.ca, client_certs = "require" } }, dir)

      scraper = e2e.start_scraper({ "--api-url", server.url, "--app", "checkout", "--sample-size", "2",
        "--frequency", "1s", "--duration", "1s", "--mode", "consul" },
        { "CONSUL_HTTP_ADDR=127.0.0.1:" .. api.port, "CONSUL_HTTP_SSL=true", "CONSUL_CACERT=" .. certs.ca,
          "CONSUL_CLIENT_CERT=" .. certs.client_cert, "CONSUL_CLIENT_KEY=" .. certs.client_key,
          "CONSUL_HTTP_TOKEN=consul-secret" })
      ds.wait_forwarded(scraper, { services[1].url, services[2].url })
      assert.equals(1, #e2e.log_lines(scraper.proc, "skipping a Consul service instance: its port 0"))
      for _, r in ipairs(api:requests()) do
        assert.equals("consul-secret", r.headers["x-consul-token"])
        assert.equals("autopgo-scraper", r.clientCert)
      end

      ds.check_resilience(scraper, "consul", { services[1].url, services[2].url },
        function() api:fail(500, nil, "rpc error making call: No cluster leader") end, function() api:heal() end)

      ds.assert_merged(server, "checkout", dir)
      assert.equals(0, e2e.stop(scraper.proc))
      scraper = nil
    end, 300000)
  end)
end)
