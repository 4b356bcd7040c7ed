-- Specs for lua/discovery/nomad.lua against the recorded-response Nomad server
-- (tests/fakes/nomad.js), which checks the paths, namespace and region parameters, the filter
-- expression and the X-Nomad-Token it is sent, and client certificates on its TLS listener.
local discovery = require "autopgo.discovery"
local support = require "tests.lua.support"
local fake = require "tests.fakes.fake"

local run = support.run

local filter = 'Tags contains "autopgo.scrape=true" and (Tags contains "autopgo.scrape.app=checkout" '
  .. 'or Tags contains "autopgo.app=checkout")'

local everything = {
  { address = "http://10.0.1.5:21500", path = "/debug/pprof/profile" },
  { address = "http://10.0.1.6:25854", path = "/debug/pprof/profile" },
  { address = "https://10.0.2.9:30001", path = "/internal/pprof/profile" },
}

describe("nomad discovery", function()
  local dir, srv, restore, certs

  setup(function()
    dir = support.tmpdir()
    certs = fake.certs(dir)
  end)
  teardown(function() support.rm_rf(dir) end)

  after_each(function()
    if restore then restore() end
    restore = nil
    if srv then run(function() srv:stop() end) end
    srv = nil
  end)

  local function start(config, env)
    config.api = "nomad"
    config.auth = config.auth or { tokens = { ["secret-checkout"] = { "default", "payments" } } }
    srv = fake.start(config, dir)
    local vars = { NOMAD_ADDR = srv.url, NOMAD_TOKEN = "secret-checkout" }
    for k, v in pairs(env or {}) do vars[k] = v end
    restore = fake.setenv(vars, { "NOMAD_" })
  end

  local function open(log)
    local src = assert(discovery.open("nomad", nil, { app = "checkout", log = log or fake.log() }))
    assert(src:start())
    return src
  end

  it("lists the tagged registrations of the app across the namespaces the token may read", function()
    run(function()
      start {}
      local log = fake.log()
      local src = open(log)
      assert.same(everything, fake.sorted(src.targets))

      local reqs = srv:requests()
      assert.equals("/v1/services", reqs[1].path)
      assert.same({ namespace = "*", filter = filter }, reqs[1].query)
      local reads = {}
      for i = 2, #reqs do
        local r = reqs[i]
        assert.equals(filter, r.query.filter)
        reads[#reads + 1] = r.path .. "?namespace=" .. r.query.namespace
      end
      table.sort(reads)
      assert.same({ "/v1/service/checkout-pprof?namespace=payments", "/v1/service/checkout?namespace=default",
        "/v1/service/checkout?namespace=payments" }, reads)
      for _, r in ipairs(reqs) do
        assert.equals("secret-checkout", r.headers["x-nomad-token"])
        assert.equals(200, r.status)
      end

      -- the registration with no address is skipped with a warning naming it, once
      local warned = log.find("warn", "skipping a Nomad service registration")
      assert.equals(1, #warned)
      assert.matches("it has no address", warned[1].msg)
      assert.same({ "service", "checkout", "namespace", "payments" }, { table.unpack(warned[1].fields, 1, 4) })
      src:list()
      assert.equals(1, #log.find("warn", "skipping a Nomad service registration"))
    end)
  end)

  it("keeps to NOMAD_NAMESPACE and sends NOMAD_REGION", function()
    run(function()
      start({}, { NOMAD_NAMESPACE = "payments", NOMAD_REGION = "global" })
      local src = open()
      assert.same({ { address = "https://10.0.2.9:30001", path = "/internal/pprof/profile" } },
        fake.sorted(src.targets))
      for _, r in ipairs(srv:requests()) do
        assert.equals("payments", r.query.namespace)
        assert.equals("global", r.query.region)
      end
    end)
  end)

  it("reports the agent's refusals: unknown token, forbidden namespace, unknown region", function()
    run(function()
      start({}, { NOMAD_TOKEN = "stolen" })
      local src = open()
      local targets, err = src:list()
      local _
      assert.same({}, targets)
      assert.matches("^FORBIDDEN: GET http://127%.0%.0%.1:%d+/v1/services: the server answered 403: ACL token not "
        .. "found$", err)
      local ok, herr = src:health()
      assert.is_nil(ok)
      assert.matches("ACL token not found", herr)
      restore()

      restore = fake.setenv({ NOMAD_ADDR = srv.url, NOMAD_TOKEN = "secret-checkout", NOMAD_NAMESPACE = "ops" },
        { "NOMAD_" })
      _, err = open():list()
      assert.matches("403: Permission denied", err)
      restore()

      restore = fake.setenv({ NOMAD_ADDR = srv.url, NOMAD_TOKEN = "secret-checkout", NOMAD_REGION = "mars" },
        { "NOMAD_" })
      _, err = open():list()
      assert.matches("^SERVER: .*500: No path to region", err)
    end)
  end)

  it("keeps the last targets while the API fails and reports it in health", function()
    run(function()
      start {}
      local src = open()
      assert.equals(3, #src.targets)
      assert.is_true(src:health())
      srv:fail(503, nil, "No cluster leader")
      local targets, err = src:list()
      assert.same(everything, fake.sorted(targets))
      assert.matches("^SERVER: .*503: No cluster leader", err)
      local ok, herr = src:health()
      assert.is_nil(ok)
      assert.matches("No cluster leader", herr)
      srv:heal()
      srv:put("/registrations", { fake.fixture("nomad_services.json").registrations[1] })
      targets, err = src:list()
      assert.is_nil(err)
      assert.same({ everything[1] }, fake.sorted(targets))
    end)
  end)

  it("speaks TLS with NOMAD_CACERT or NOMAD_CAPATH and a client certificate", function()
    run(function()
      start({ tls = { cert = certs.server_cert, key = certs.server_key, ca = certs.ca, client_certs = "require" } },
        { NOMAD_CACERT = certs.ca, NOMAD_CLIENT_CERT = certs.client_cert, NOMAD_CLIENT_KEY = certs.client_key })
      assert.matches("^https://", srv.url)
      local src = open()
      assert.same(everything, fake.sorted(src.targets))
      for _, r in ipairs(srv:requests()) do assert.equals("autopgo-scraper", r.clientCert) end
      restore()

      -- a directory of CA certificates, as Go's rootcerts reads it
      local capath = dir .. "/cas"
      os.execute("mkdir -p " .. capath .. " && cp " .. certs.ca .. " " .. capath .. "/ca.pem")
      restore = fake.setenv({ NOMAD_ADDR = srv.url, NOMAD_TOKEN = "secret-checkout", NOMAD_CAPATH = capath,
        NOMAD_CLIENT_CERT = certs.client_cert, NOMAD_CLIENT_KEY = certs.client_key }, { "NOMAD_" })
      assert.equals(3, #open().targets)
      restore()

      -- without a client certificate the handshake fails
      restore = fake.setenv({ NOMAD_ADDR = srv.url, NOMAD_TOKEN = "secret-checkout", NOMAD_CACERT = certs.ca },
        { "NOMAD_" })
      local _, err = open():list()
      assert.matches("^[%u_]+: GET https://127%.0%.0%.1:%d+/v1/services: ", err)
      assert.is_falsy(err:find("^SERVER"))
      restore()
      -- nor with one the agent's CA did not sign
      restore = fake.setenv({ NOMAD_ADDR = srv.url, NOMAD_TOKEN = "secret-checkout", NOMAD_CACERT = certs.ca,
        NOMAD_CLIENT_CERT = certs.stranger_cert, NOMAD_CLIENT_KEY = certs.stranger_key }, { "NOMAD_" })
      _, err = open():list()
      assert.matches("^[%u_]+: GET https://127%.0%.0%.1:%d+/v1/services: ", err)
      assert.is_falsy(err:find("^SERVER"))
      restore()

      -- an unknown CA is refused unless NOMAD_SKIP_VERIFY
      restore = fake.setenv({ NOMAD_ADDR = srv.url, NOMAD_TOKEN = "secret-checkout",
        NOMAD_CLIENT_CERT = certs.client_cert, NOMAD_CLIENT_KEY = certs.client_key }, { "NOMAD_" })
      _, err = open():list()
      assert.matches("^TLS: ", err)
      restore()
      restore = fake.setenv({ NOMAD_ADDR = srv.url, NOMAD_TOKEN = "secret-checkout", NOMAD_SKIP_VERIFY = "true",
        NOMAD_CLIENT_CERT = certs.client_cert, NOMAD_CLIENT_KEY = certs.client_key }, { "NOMAD_" })
      assert.equals(3, #open().targets)
    end)
  end)

  it("checks the agent's certificate against NOMAD_TLS_SERVER_NAME when it is set", function()
    run(function()
      -- the certificate names api.cluster.internal only; NOMAD_ADDR names 127.0.0.1
      start({ tls = { cert = certs.named_cert, key = certs.named_key } }, { NOMAD_CACERT = certs.ca })
      local _, err = open():list()
      assert.matches("^TLS: GET https://127%.0%.0%.1:%d+/v1/services: ", err)
      restore()
      restore = fake.setenv({ NOMAD_ADDR = srv.url, NOMAD_TOKEN = "secret-checkout", NOMAD_CACERT = certs.ca,
        NOMAD_TLS_SERVER_NAME = "api.cluster.internal" }, { "NOMAD_" })
      assert.same(everything, fake.sorted(open().targets))
      local req = srv:requests_to("/v1/services")[1]
      assert.equals("api.cluster.internal", req.servername)
      assert.equals("127.0.0.1:" .. srv.port, req.headers.host)
    end)
  end)

  it("refuses to start on a bad configuration", function()
    run(function()
      for vars, why in pairs {
        [{ NOMAD_ADDR = "unix:///var/run/nomad.sock" }] = "unix sockets are not supported",
        [{ NOMAD_ADDR = "ftp://nomad:4646" }] = "the scheme must be http or https",
        [{ NOMAD_SKIP_VERIFY = "maybe" }] = 'NOMAD_SKIP_VERIFY="maybe" is not a boolean',
        [{ NOMAD_CACERT = dir .. "/missing.pem" }] = "NOMAD_CACERT: .*missing%.pem",
        [{ NOMAD_CLIENT_CERT = certs.client_cert }] = "NOMAD_CLIENT_CERT and NOMAD_CLIENT_KEY must be set together",
      } do
        restore = fake.setenv(vars, { "NOMAD_" })
        local src = assert(discovery.open("nomad", nil, { app = "checkout", log = fake.log() }))
        local ok, err = src:start()
        assert.is_nil(ok)
        assert.matches("^INVALID: .*" .. why, err)
        restore()
        restore = nil
      end
    end)
  end)
end)
