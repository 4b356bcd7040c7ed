-- End-to-end: `autopgo scrape --mode kube kubeconfig.yaml` against the recorded-response
-- Kubernetes API server (TLS, bearer token) whose pods point at real Go services on loopback;
-- profiles arrive at a real embedded `autopgo server`. Covers both label spellings, a pod skipped
-- for want of a port annotation, a pod added while the scraper runs (through the watch), an API
-- outage during which the scraper keeps profiling its last targets and reports the outage in
-- /api/health, and a clean SIGTERM with the watch open.
local cjson = require "cjson.safe"
local support = require "tests.lua.support"
local fake = require "tests.fakes.fake"
local e2e = require "tests.e2e.scrape_support"
local ds = require "tests.e2e.discovery_support"

local run = support.run

describe("autopgo scrape --mode kube (end to end)", function()
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

  it("profiles the pods the API lists and watches, and rides out an API outage", function()
    run(function()
      local certs = fake.certs(dir)
      services = e2e.start_goservices(3, dir)
      server = e2e.start_server(dir)

      local pods = {}
      for _, p in ipairs(fake.fixture("kube_pods.json").items) do pods[p.metadata.name] = p end
      local long = pods["checkout-7d9f8b6c4-x2k9p"]
      long.status.podIP, long.status.podIPs = "127.0.0.1", { { ip = "127.0.0.1" } }
      long.metadata.annotations["autopgo.scrape.port"] = tostring(services[1].port)
      local short = pods["checkout-7d9f8b6c4-m4q7z"]
      short.status.podIP, short.status.podIPs = "127.0.0.1", { { ip = "127.0.0.1" } }
      short.metadata.annotations = { ["autopgo.port"] = tostring(services[2].port), ["autopgo.scheme"] = "http" }
      local items = {}
      for _, p in pairs(pods) do items[#items + 1] = p end
      local fixtures = support.write_file(dir .. "/pods.json", cjson.encode { kind = "PodList", apiVersion = "v1",
        metadata = { resourceVersion = "1" }, items = items })
      api = fake.start({ api = "kube", fixtures = fixtures, auth = { tokens = { "scraper-token" } },
        tls = { cert = certs.server_cert, key = certs.server_key, ca = certs.ca } }, dir)

      local kc = support.write_file(dir .. "/kubeconfig.yaml", ([[
apiVersion: v1
kind: Config
clusters:
- name: fake
  cluster:
    server: %s
    certificate-authority-data: %s
users:
- name: scraper
  user:
    token: scraper-token
contexts:
- name: fake
  context:
    cluster: fake
    user: scraper
current-context: fake
]]):format(api.url, require("autopgo.core").crypto.base64_encode(support.read_file(certs.ca))))

      scraper = e2e.start_scraper { "--api-url", server.url, "--app", "checkout", "--sample-size", "3",
        "--frequency", "1s", "--duration", "1s", "--mode", "kube", kc }
      ds.wait_forwarded(scraper, { services[1].url, services[2].url })
      assert.equals(1, #e2e.log_lines(scraper.proc, "skipping pod payments/checkout-7d9f8b6c4-r8w2c: it has no "
        .. "autopgo.scrape.port or autopgo.port annotation"))
      assert.equals(1, #e2e.log_lines(scraper.proc, "skipping pod default/checkout-canary-0: it has no pod IP"))

      -- a new pod arrives through the watch
      local added = cjson.decode(cjson.encode(long))
      added.metadata.name, added.metadata.uid = "checkout-7d9f8b6c4-z9y8x", nil
      added.metadata.annotations["autopgo.scrape.port"] = tostring(services[3].port)
      api:put("/pods", added)
      ds.wait_forwarded(scraper, { services[3].url })
      local lists = 0
      for _, r in ipairs(api:requests_to("/api/v1/pods")) do
        assert.equals("Bearer scraper-token", r.headers.authorization)
        if r.query.watch == nil then lists = lists + 1 end
      end
      assert.equals(2, lists, "one list per label selector, then the watch")

      local urls = { services[1].url, services[2].url, services[3].url }
      ds.check_resilience(scraper, "kube", urls, function()
        api:fail(503, nil, cjson.encode { kind = "Status", apiVersion = "v1", status = "Failure",
          message = "the API server is restarting", reason = "ServiceUnavailable", code = 503 })
        api:call("POST", "/close-watches")
      end, function() api:heal() end)

      ds.assert_merged(server, "checkout", dir)
      assert.equals(0, e2e.stop(scraper.proc))
      assert.equals(1, #e2e.log_lines(scraper.proc, "scraper stopped"))
      scraper = nil
    end, 300000)
  end)

  it("refuses to start on an unusable kubeconfig", function()
    run(function()
      support.write_file(dir .. "/kc.yaml", "apiVersion: v1\nclusters: []\ncurrent-context: nowhere\n")
      local code, _, err = support.autopgo { "scrape", "--app", "checkout", "-s", "1", "--mode", "kube",
        dir .. "/kc.yaml" }
      assert.equals(1, code)
      assert.matches('autopgo scrape: kubeconfig .*kc%.yaml: the current context "nowhere" is not defined', err)
    end)
  end)
end)
