-- Specs for lua/discovery/consul.lua against the recorded-response Consul agent
-- (tests/fakes/consul.js), which checks the catalog paths, the filter expression, the ns and
-- partition parameters, the X-Consul-Token it is sent and client certificates on its TLS
-- listener.
local discovery = require "autopgo.discovery"
local support = require "tests.lua.support"
local fake = require "tests.fakes.fake"

local run = support.run

local filter = 'ServiceTags contains "autopgo.scrape=true" and (ServiceTags contains "autopgo.scrape.app=checkout" '
  .. 'or ServiceTags contains "autopgo.app=checkout")'

local everything = {
  { address = "http://10.0.0.11:8080", path = "/debug/pprof/profile" },
  { address = "https://172.17.0.5:8443", path = "/debug/pprof/profile" },
}

describe("consul discovery", function()
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

  local function env(vars)
    if restore then restore() end
    restore = fake.setenv(vars, { "CONSUL_" })
  end

  local function start(config, vars)
    config.api = "consul"
    config.auth = config.auth or { tokens = { "c0ffee00-1111-2222-3333-444455556666" } }
    srv = fake.start(config, dir)
    local all = { CONSUL_HTTP_ADDR = srv.url:gsub("^http://", ""),
      CONSUL_HTTP_TOKEN = "c0ffee00-1111-2222-3333-444455556666" }
    for k, v in pairs(vars or {}) do all[k] = v end
    env(all)
  end

  local function open(log)
    local src = assert(discovery.open("consul", nil, { app = "checkout", log = log or fake.log() }))
    assert(src:start())
    return src
  end

  it("lists the tagged instances, using the node's address when the service has none", function()
    run(function()
      start {}
      local log = fake.log()
      local src = open(log)
      assert.same(everything, fake.sorted(src.targets))
      local reqs = srv:requests()
      assert.equals("/v1/catalog/services", reqs[1].path)
      local paths = {}
      for _, r in ipairs(reqs) do
        assert.same({ filter = filter }, r.query)
        assert.equals("c0ffee00-1111-2222-3333-444455556666", r.headers["x-consul-token"])
        assert.equals(200, r.status)
        paths[#paths + 1] = r.path
      end
      assert.same({ "/v1/catalog/services", "/v1/catalog/service/checkout", "/v1/catalog/service/checkout-sidecar" },
        paths)
      local warned = log.find("warn", "skipping a Consul service instance")
      assert.equals(1, #warned)
      assert.matches("its port 0 is not a port number", warned[1].msg)
      assert.same({ "service", "checkout-sidecar", "node", "web-3" }, { table.unpack(warned[1].fields, 1, 4) })
    end)
  end)

  it("reads the token from CONSUL_HTTP_TOKEN_FILE before CONSUL_HTTP_TOKEN", function()
    run(function()
      support.write_file(dir .. "/token", "c0ffee00-1111-2222-3333-444455556666\n")
      start({}, { CONSUL_HTTP_TOKEN = "not-this-one", CONSUL_HTTP_TOKEN_FILE = dir .. "/token" })
      assert.same(everything, fake.sorted(open().targets))
      for _, r in ipairs(srv:requests()) do
        assert.equals("c0ffee00-1111-2222-3333-444455556666", r.headers["x-consul-token"])
      end
    end)
  end)

  it("reports an unknown token, and warns when ACLs filter a token-less query to nothing", function()
    run(function()
      start({}, { CONSUL_HTTP_TOKEN = "deadbeef-0000-0000-0000-000000000000" })
      local src = open()
      local targets, err = src:list()
      assert.same({}, targets)
      assert.matches("^FORBIDDEN: GET http://127%.0%.0%.1:%d+/v1/catalog/services: the server answered 403: "
        .. "ACL not found$", err)
      local ok, herr = src:health()
      assert.is_nil(ok)
      assert.matches("ACL not found", herr)

      env { CONSUL_HTTP_ADDR = srv.url }
      local log = fake.log()
      src = open(log)
      assert.same({}, src.targets)
      assert.equals(1, #log.find("warn", "Consul filtered the catalog by ACLs"))
      src:list()
      assert.equals(1, #log.find("warn", "Consul filtered the catalog by ACLs"), "warned once, not every round")
    end)
  end)

  it("asks within CONSUL_NAMESPACE and CONSUL_PARTITION", function()
    run(function()
      start({}, { CONSUL_NAMESPACE = "team-a", CONSUL_PARTITION = "default" })
      assert.same({ { address = "http://10.0.0.14:7070", path = "/debug/pprof/profile" } }, fake.sorted(open().targets))
      for _, r in ipairs(srv:requests()) do
        assert.same({ filter = filter, ns = "team-a", partition = "default" }, r.query)
      end
    end)
  end)

  it("keeps the last targets while the agent fails and reports it in health", function()
    run(function()
      start {}
      local src = open()
      assert.is_true(src:health())
      srv:fail(500, nil, "rpc error making call: No cluster leader")
      local targets, err = src:list()
      assert.same(everything, fake.sorted(targets))
      assert.matches("^SERVER: .*500: rpc error making call: No cluster leader", err)
      assert.is_nil((src:health()))
      srv:heal()
      srv:put("/entries", { fake.fixture("consul_catalog.json").entries[2] })
      targets, err = src:list()
      assert.is_nil(err)
      assert.same({ everything[2] }, fake.sorted(targets))
    end)
  end)

  it("speaks TLS with CONSUL_HTTP_SSL, a CA and a client certificate", function()
    run(function()
      start { tls = { cert = certs.server_cert, key = certs.server_key, ca = certs.ca, client_certs = "require" } }
      -- a bare host:port with CONSUL_HTTP_SSL=true
      env { CONSUL_HTTP_ADDR = srv.url:gsub("^https://", ""), CONSUL_HTTP_SSL = "true", CONSUL_CACERT = certs.ca,
        CONSUL_CLIENT_CERT = certs.client_cert, CONSUL_CLIENT_KEY = certs.client_key,
        CONSUL_HTTP_TOKEN = "c0ffee00-1111-2222-3333-444455556666" }
      assert.same(everything, fake.sorted(open().targets))
      for _, r in ipairs(srv:requests()) do assert.equals("autopgo-scraper", r.clientCert) end

      -- an https:// address needs no CONSUL_HTTP_SSL; CONSUL_HTTP_SSL_VERIFY=false trusts any CA
      env { CONSUL_HTTP_ADDR = srv.url, CONSUL_HTTP_SSL_VERIFY = "false", CONSUL_CLIENT_CERT = certs.client_cert,
        CONSUL_CLIENT_KEY = certs.client_key, CONSUL_HTTP_TOKEN = "c0ffee00-1111-2222-3333-444455556666" }
      assert.same(everything, fake.sorted(open().targets))

      -- verification is on by default
      env { CONSUL_HTTP_ADDR = srv.url, CONSUL_CLIENT_CERT = certs.client_cert, CONSUL_CLIENT_KEY = certs.client_key }
      local _, err = open():list()
      assert.matches("^TLS: GET https://", err)

      -- and the agent wants a certificate its CA signed
      env { CONSUL_HTTP_ADDR = srv.url, CONSUL_CACERT = certs.ca, CONSUL_CLIENT_CERT = certs.stranger_cert,
        CONSUL_CLIENT_KEY = certs.stranger_key }
      _, err = open():list()
      assert.matches("^[%u_]+: GET https://127%.0%.0%.1:%d+/v1/catalog/services: ", err)
      assert.is_falsy(err:find("^SERVER"))
    end)
  end)

  it("checks the agent's certificate against CONSUL_TLS_SERVER_NAME when it is set", function()
    run(function()
      start { tls = { cert = certs.named_cert, key = certs.named_key } }
      env { CONSUL_HTTP_ADDR = srv.url, CONSUL_CACERT = certs.ca, CONSUL_TLS_SERVER_NAME = "api.cluster.internal",
        CONSUL_HTTP_TOKEN = "c0ffee00-1111-2222-3333-444455556666" }
      assert.same(everything, fake.sorted(open().targets))
      for _, r in ipairs(srv:requests()) do
        assert.equals("api.cluster.internal", r.servername)
        assert.equals("127.0.0.1:" .. srv.port, r.headers.host)
      end
      env { CONSUL_HTTP_ADDR = srv.url, CONSUL_CACERT = certs.ca, CONSUL_TLS_SERVER_NAME = "other.internal" }
      local _, err = open():list()
      assert.matches("^TLS: GET https://127%.0%.0%.1:%d+/v1/catalog/services: ", err)
    end)
  end)

  it("refuses to start on a bad configuration", function()
    run(function()
      for vars, why in pairs {
        [{ CONSUL_HTTP_SSL = "yes" }] = 'CONSUL_HTTP_SSL="yes" is not a boolean',
        [{ CONSUL_HTTP_SSL_VERIFY = "nope" }] = "CONSUL_HTTP_SSL_VERIFY",
        [{ CONSUL_HTTP_ADDR = "unix:///tmp/consul.sock" }] = "unix sockets are not supported",
        [{ CONSUL_HTTP_TOKEN_FILE = dir .. "/no-token" }] = "CONSUL_HTTP_TOKEN_FILE: .*no%-token",
        [{ CONSUL_CAPATH = dir .. "/no-cas" }] = "cannot read the CA directory",
        [{ CONSUL_CLIENT_KEY = certs.client_key }] = "CONSUL_CLIENT_CERT and CONSUL_CLIENT_KEY must be set together",
      } do
        env(vars)
        local src = assert(discovery.open("consul", nil, { app = "checkout", log = fake.log() }))
        local ok, err = src:start()
        assert.is_nil(ok)
        assert.matches("^INVALID: .*" .. why, err)
      end
    end)
  end)
end)
