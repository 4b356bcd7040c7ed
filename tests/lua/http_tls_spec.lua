-- TLS specs for autopgo.http against OpenSSL's own test server (openssl s_server -www):
-- verification on by default, --insecure, a CA from a file or from memory, client
-- certificates from files or from memory (as kube configs carry them), and a server name other
-- than the URL's host (kubeconfig's tls-server-name).
local uv = require "luv"
local async = require "autopgo.async"
local http = require "autopgo.http"
local support = require "tests.lua.support"

local run = support.run

local function sh(cmd)
  local ok = os.execute(cmd .. " >/dev/null 2>&1")
  assert(ok, "failed: " .. cmd)
end

local function wait_port(port)
  for _ = 1, 200 do
    local tcp = uv.new_tcp()
    local result = async.event()
    tcp:connect("127.0.0.1", port, function(err) result.set(not err) end)
    local connected = result.wait()
    tcp:close()
    if connected then return end
    async.sleep(25)
  end
  error("nothing listens on port " .. port)
end

describe("autopgo.http over TLS", function()
  local dir, servers, plain, mutual, named

  setup(function()
    dir = support.tmpdir()
    sh(("cd %s && openssl req -x509 -newkey rsa:2048 -nodes -keyout server.key -out server.crt -days 2 " ..
      "-subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1"):format(dir))
    sh(("cd %s && openssl req -x509 -newkey rsa:2048 -nodes -keyout client.key -out client.crt -days 2 " ..
      "-subj /CN=autopgo-client"):format(dir))
    sh(("cd %s && openssl req -x509 -newkey rsa:2048 -nodes -keyout named.key -out named.crt -days 2 " ..
      "-subj /CN=api.cluster.internal -addext subjectAltName=DNS:api.cluster.internal"):format(dir))
    servers = {}
    run(function()
      local function start(extra, name)
        local port = support.free_port()
        name = name or "server"
        local args = { "s_server", "-accept", "127.0.0.1:" .. port, "-cert", dir .. "/" .. name .. ".crt",
          "-key", dir .. "/" .. name .. ".key", "-www", "-quiet" }
        for _, a in ipairs(extra) do args[#args + 1] = a end
        servers[#servers + 1] = support.spawn("openssl", args)
        wait_port(port)
        return "https://127.0.0.1:" .. port .. "/"
      end
      plain = start {}
      mutual = start { "-Verify", "1", "-CAfile", dir .. "/client.crt" }
      named = start({}, "named")
    end)
  end)

  teardown(function()
    run(function()
      for _, p in ipairs(servers or {}) do
        p:kill()
        p:wait(5000)
      end
    end)
    support.rm_rf(dir)
  end)

  it("verifies certificates by default and fails with TLS", function()
    run(function()
      local _, err, code = http.request { url = plain }
      assert.equals("TLS", code)
      assert.matches("^TLS: GET https://127%.0%.0%.1:%d+/", err)
    end)
  end)

  it("skips verification with insecure", function()
    run(function()
      local res = assert(http.request { url = plain, insecure = true })
      assert.equals(200, res.status)
    end)
  end)

  it("trusts a CA given as a file or as PEM text", function()
    run(function()
      local res = assert(http.request { url = plain, ca_file = dir .. "/server.crt" })
      assert.equals(200, res.status)
      res = assert(http.request { url = plain, ca_pem = support.read_file(dir .. "/server.crt") })
      assert.equals(200, res.status)
      local _, _, code = http.request { url = plain, ca_pem = support.read_file(dir .. "/client.crt") }
      assert.equals("TLS", code)
    end)
  end)

  it("presents a client certificate from files or from PEM text", function()
    run(function()
      local res, err = http.request { url = mutual, ca_file = dir .. "/server.crt" }
      assert.is_nil(res, "the server must refuse a client without a certificate")
      assert.is_string(err)
      res = assert(http.request { url = mutual, ca_file = dir .. "/server.crt",
        client_cert = dir .. "/client.crt", client_key = dir .. "/client.key" })
      assert.equals(200, res.status)
      res = assert(http.request { url = mutual, ca_file = dir .. "/server.crt",
        client_cert_pem = support.read_file(dir .. "/client.crt"),
        client_key_pem = support.read_file(dir .. "/client.key") })
      assert.equals(200, res.status)
    end)
  end)

  it("verifies against tls_server_name instead of the URL's host when given one", function()
    run(function()
      local ca = dir .. "/named.crt"
      local _, err, code = http.request { url = named, ca_file = ca }
      assert.equals("TLS", code, err)
      local res = assert(http.request { url = named, ca_file = ca, tls_server_name = "api.cluster.internal" })
      assert.equals(200, res.status)
      -- s_server -www echoes nothing of the request, but the handshake only succeeds when the
      -- certificate was checked against the name; a wrong name still fails
      _, err, code = http.request { url = named, ca_file = ca, tls_server_name = "other.internal" }
      assert.equals("TLS", code, err)
      assert.matches("^TLS: GET https://127%.0%.0%.1:%d+/", err) -- messages name the real URL
      _, err, code = http.request { url = named, tls_server_name = "bad name/x" }
      assert.equals("INVALID", code)
      assert.matches('invalid TLS server name "bad name/x"', err)
    end)
  end)
end)
