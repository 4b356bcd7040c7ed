-- End-to-end TLS: the real `autopgo server` (and worker) with --tls-cert/--tls-key made by openssl
-- here, spoken to by curl (HTTP/2 and HTTP/1.1), the autopgo client commands (--ca-cert, verified
-- by default), a stock Go net/http client (tests/tlsclient, HTTP/2 by ALPN) and the scraper;
-- certificate reload on SIGHUP (new handshakes get the new certificate, an open connection keeps
-- the old one, a broken file keeps the old one); mutual TLS refusing clients without a certificate.
local uv = require "luv"
local http = require "autopgo.http"
local support = require "tests.lua.support"
local e2e = require "tests.e2e.scrape_support"

local run = support.run

local function sh(cmd)
  local ok = os.execute(cmd .. " >/dev/null 2>&1")
  assert(ok, "failed: " .. cmd)
end

-- Runs a command, returning its exit code, stdout and stderr.
local function cmd(prog, args, opts)
  return e2e.run_cmd(prog, args, opts or { timeout = 60000 })
end

local function copy(from, to)
  support.write_file(to, assert(support.read_file(from)))
end

local dir, profile

-- A CA, two server certificates for 127.0.0.1 signed by it (CN server-one and server-two), and a
-- second CA with a client certificate.
local function make_certs()
  support.write_file(dir .. "/server.ext", "subjectAltName=IP:127.0.0.1\n")
  sh(("cd %s && openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 " ..
    "-subj /CN=autopgo-test-ca"):format(dir))
  for _, name in ipairs { "server-one", "server-two" } do
    sh(("cd %s && openssl req -newkey rsa:2048 -nodes -keyout %s.key -out %s.csr -subj /CN=%s && " ..
      "openssl x509 -req -in %s.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out %s.crt -days 2 " ..
      "-extfile server.ext"):format(dir, name, name, name, name, name))
  end
  sh(("cd %s && openssl req -x509 -newkey rsa:2048 -nodes -keyout clients-ca.key -out clients-ca.crt -days 2 " ..
    "-subj /CN=autopgo-clients-ca"):format(dir))
  sh(("cd %s && openssl req -newkey rsa:2048 -nodes -keyout client.key -out client.csr -subj /CN=scraper && " ..
    "openssl x509 -req -in client.csr -CA clients-ca.crt -CAkey clients-ca.key -CAcreateserial " ..
    "-out client.crt -days 2"):format(dir))
  copy(dir .. "/server-one.crt", dir .. "/tls.crt")
  copy(dir .. "/server-one.key", dir .. "/tls.key")
end

-- Starts `autopgo <role>` with TLS on a free port; waits until /api/ready answers over HTTPS.
local function start(role, extra)
  local port = support.free_port()
  local args = { role, "--host", "127.0.0.1", "--port", tostring(port), "--data-dir", dir .. "/data",
    "--tls-cert", dir .. "/tls.crt", "--tls-key", dir .. "/tls.key" }
  for _, a in ipairs(extra or {}) do args[#args + 1] = a end
  local proc = support.spawn(support.bin, args)
  local url = "https://127.0.0.1:" .. port
  local ok, err = pcall(e2e.wait_for, function()
    if proc.code then error("autopgo " .. role .. " exited: " .. select(2, proc.output())) end
    local res = http.request { url = url .. "/api/ready", timeout = 2, ca_file = dir .. "/ca.crt",
      client_cert = dir .. "/client.crt", client_key = dir .. "/client.key" }
    return res and res.status == 200
  end, 30000, "autopgo " .. role .. " to be ready over TLS")
  if not ok then
    e2e.stop(proc)
    error(err, 0)
  end
  return { proc = proc, port = port, url = url }
end

local function curl(args)
  local all = { "-sS", "--max-time", "30" }
  for _, a in ipairs(args) do all[#all + 1] = a end
  return cmd("curl", all)
end

local tlsclient
local function go_client(args)
  if not tlsclient then
    tlsclient = e2e.gobuild .. "/tlsclient"
    uv.fs_mkdir(e2e.gobuild, 493)
    local code, out, err = e2e.go_tool({ "build", "-o", tlsclient, "." },
      { cwd = support.root .. "/tests/tlsclient", timeout = 300000 })
    assert(code == 0, "go build of tests/tlsclient failed: " .. out .. err)
  end
  return cmd(tlsclient, args)
end

describe("autopgo over TLS (end to end)", function()
  local server

  setup(function()
    dir = support.tmpdir()
    make_certs()
    profile = support.testdata .. "/goapp-go123-cpu-1.pb.gz"
  end)
  teardown(function() support.rm_rf(dir) end)
  after_each(function()
    run(function() if server then e2e.stop(server.proc) end end)
    server = nil
  end)

  it("serves HTTP/2 and HTTP/1.1 over TLS to curl, which verifies the certificate", function()
    run(function()
      server = start("server")
      local ca = dir .. "/ca.crt"
      local code, out, err = curl { "--http2", "--cacert", ca, "-o", "/dev/null", "-w", "%{http_version} %{http_code}",
        server.url .. "/api/health" }
      assert.equals(0, code, err)
      assert.equals("2 200", out)
      code, out, err = curl { "--http2", "--cacert", ca, "-w", " %{http_version} %{http_code}",
        "-H", "content-type: application/octet-stream", "--data-binary", "@" .. profile,
        server.url .. "/api/profile/tls-curl" }
      assert.equals(0, code, err)
      assert.matches('^{"key":"tls%-curl/staging/%d+"}\n 2 201$', out)
      code, out, err = curl { "--http1.1", "--cacert", ca, "-o", "/dev/null", "-w", "%{http_version} %{http_code}",
        server.url .. "/api/profile" }
      assert.equals(0, code, err)
      assert.equals("1.1 200", out)
      -- not trusted without the CA: curl refuses (60: the peer certificate cannot be verified)
      code = curl { "--http2", "-o", "/dev/null", server.url .. "/api/health" }
      assert.equals(60, code)
    end, 60000)
  end)

  it("takes the client commands over TLS with --ca-cert (or AUTOPGO_CA_CERT) and verifies by default", function()
    run(function()
      server = start("server")
      local ca = dir .. "/ca.crt"
      local code, out, err = support.autopgo { "upload", "--app", "tls-cli", "--api-url", server.url,
        "--ca-cert", ca, profile }
      assert.equals(0, code, out .. err)
      code, out, err = support.autopgo { "status", "tls-cli", "--api-url", server.url, "--ca-cert", ca, "--json" }
      assert.equals(0, code, out .. err)
      e2e.wait_for(function()
        local c, o = support.autopgo({ "list", "--api-url", server.url, "--json" },
          { env = { "AUTOPGO_CA_CERT=" .. ca } })
        return c == 0 and o:find("tls-cli", 1, true)
      end, 30000, "the merged profile to be listed")
      local out_file = dir .. "/merged.pgo"
      code, out, err = support.autopgo { "download", "tls-cli", "-o", out_file, "--api-url", server.url,
        "--ca-cert", ca }
      assert.equals(0, code, out .. err)
      assert.is_true(#support.read_file(out_file) > 0)
      -- without the CA the certificate is not trusted and nothing is sent
      code, out, err = support.autopgo { "list", "--api-url", server.url }
      assert.not_equals(0, code)
      assert.matches("TLS", out .. err)
    end, 90000)
  end)

  it("serves Go's net/http client over HTTP/2 and reloads the certificate on SIGHUP", function()
    run(function()
      server = start("server")
      local ca = dir .. "/ca.crt"
      local code, out, err = go_client { "-url", server.url .. "/api/health", "-ca", ca }
      assert.equals(0, code, err)
      assert.matches("^proto=HTTP/2.0 status=200 cn=server%-one", out)
      code, out, err = go_client { "-url", server.url .. "/api/profile/tls-go", "-ca", ca, "-method", "POST",
        "-body", profile }
      assert.equals(0, code, err)
      assert.matches("^proto=HTTP/2.0 status=201 ", out)

      -- a connection opened before the reload keeps its certificate; new handshakes get the new one
      local go_file = dir .. "/go-continue"
      local held = support.spawn(tlsclient, { "-url", server.url .. "/api/health", "-ca", ca, "-wait-file", go_file })
      e2e.wait_for(function() return table.concat(held.out):find("cn=server-one", 1, true) end, 30000,
        "the first request of the held connection")
      copy(dir .. "/server-two.crt", dir .. "/tls.crt")
      copy(dir .. "/server-two.key", dir .. "/tls.key")
      uv.kill(server.proc.pid, "sighup")
      e2e.wait_for(function() return #e2e.log_lines(server.proc, "TLS certificate reloaded") > 0 end, 10000,
        "the reload")
      support.write_file(go_file, "go")
      local hcode, _, hout, herr = held:wait(30000)
      assert.equals(0, hcode, herr)
      assert.matches("proto=HTTP/2.0 status=200 cn=server%-one.*\nproto=HTTP/2.0 status=200 cn=server%-one", hout)
      code, out, err = go_client { "-url", server.url .. "/api/health", "-ca", ca }
      assert.equals(0, code, err)
      assert.matches("cn=server%-two", out)

      -- a key that does not load keeps the certificate in use
      support.write_file(dir .. "/tls.key", "not a key\n")
      uv.kill(server.proc.pid, "sighup")
      e2e.wait_for(function() return #e2e.log_lines(server.proc, "cannot reload the TLS certificate") > 0 end, 10000,
        "the failed reload")
      code, out, err = go_client { "-url", server.url .. "/api/health", "-ca", ca }
      assert.equals(0, code, err)
      assert.matches("cn=server%-two", out)
      copy(dir .. "/server-one.key", dir .. "/tls.key")
      copy(dir .. "/server-one.crt", dir .. "/tls.crt")
    end, 120000)
  end)

  it("requires a client certificate with --tls-client-ca (mutual TLS)", function()
    run(function()
      server = start("server", { "--tls-client-ca", dir .. "/clients-ca.crt" })
      local ca = dir .. "/ca.crt"
      -- no certificate: the handshake is refused and no request is served
      local code, out = curl { "--http2", "--cacert", ca, "-o", "/dev/null", "-w", "%{http_code}",
        server.url .. "/api/profile" }
      assert.not_equals(0, code)
      assert.equals("000", out)
      -- a certificate from another CA is refused too
      code = curl { "--http2", "--cacert", ca, "--cert", dir .. "/server-one.crt", "--key", dir .. "/server-one.key",
        "-o", "/dev/null", server.url .. "/api/profile" }
      assert.not_equals(0, code)
      code, out = curl { "--http2", "--cacert", ca, "--cert", dir .. "/client.crt", "--key", dir .. "/client.key",
        "-o", "/dev/null", "-w", "%{http_version} %{http_code}", server.url .. "/api/profile" }
      assert.equals(0, code)
      assert.equals("2 200", out)
      local err
      code, out, err = support.autopgo { "list", "--api-url", server.url, "--ca-cert", ca,
        "--client-cert", dir .. "/client.crt", "--client-key", dir .. "/client.key" }
      assert.equals(0, code, out .. err)
      code, out, err = support.autopgo { "list", "--api-url", server.url, "--ca-cert", ca }
      assert.not_equals(0, code, out .. err)
    end, 60000)
  end)

  it("serves the worker's port over TLS", function()
    run(function()
      server = start("worker")
      local code, out, err = curl { "--http2", "--cacert", dir .. "/ca.crt", "-o", "/dev/null", "-w",
        "%{http_version} %{http_code}", server.url .. "/api/health" }
      assert.equals(0, code, err)
      assert.equals("2 200", out)
    end, 60000)
  end)

  it("lets the scraper forward profiles to a TLS server with --ca-cert and a client certificate", function()
    local services, scraper
    local ok, err = pcall(run, function()
      server = start("server", { "--tls-client-ca", dir .. "/clients-ca.crt" })
      services = e2e.start_goservices(1, dir)
      support.write_file(dir .. "/targets.json", ('[{"address": "%s"}]'):format(services[1].url))
      scraper = e2e.start_scraper({ "--api-url", server.url, "--app", "tls-scrape", "--sample-size", "1",
        "--frequency", "1s", "--duration", "1s", "--mode", "file", "--ca-cert", dir .. "/ca.crt",
        "--client-cert", dir .. "/client.crt", "--client-key", dir .. "/client.key", dir .. "/targets.json" })
      e2e.wait_for(function() return #e2e.log_lines(scraper.proc, "profile forwarded") > 0 end, 60000,
        "a profile forwarded over TLS")
      for _, line in ipairs(e2e.log_lines(scraper.proc, "profile forwarded")) do
        assert.matches("key=tls%-scrape/staging/%d+", line)
      end
    end, 120000)
    run(function()
      if scraper then e2e.stop(scraper.proc) end
      for _, s in ipairs(services or {}) do e2e.stop(s.proc) end
    end)
    assert(ok, err)
  end)
end)
