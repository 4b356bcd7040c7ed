-- End-to-end access control with the real binary: `autopgo server --auth-file` (start-up, SIGHUP
-- reloads on an open connection, a broken file), every client command with --token, --token-file
-- and AUTOPGO_TOKEN, and the scraper's token, which goes to the server and never to its targets.
local cjson = require "cjson"
local http = require "autopgo.http"
local httpd = require "autopgo.httpd"
local crypto = require("autopgo.core").crypto
local support = require "tests.lua.support"
local httpc = require "tests.lua.httpc"
local profiles = require "tests.lua.profiles"
local serverproc = require "tests.e2e.serverproc"
local e2e = require "tests.e2e.scrape_support"

local run = support.run
local good = support.testdata .. "/" .. profiles.usable[1]

local function sha(t) return crypto.hex(crypto.digest("sha256", t)) end
local function token() return crypto.hex(crypto.random(16)) end

local function grants(list)
  local doc = {}
  for _, g in ipairs(list) do
    doc[#doc + 1] = { name = g[1], sha256 = sha(g[2]), scopes = g[3], apps = g[4] or { "*" } }
  end
  return cjson.encode(doc)
end

describe("access control (end to end)", function()
  local dir
  before_each(function() dir = support.tmpdir() end)
  after_each(function()
    serverproc.cleanup()
    support.rm_rf(dir)
  end)

  local function stderr_of(s) return select(2, s.proc.output()) end

  it("says at start-up whether the API is open, and will not start on a bad auth file", function()
    run(function()
      local s = serverproc.start(dir)
      assert.matches("API access control off", stderr_of(s), 1, true)
      serverproc.stop(s)
      support.write_file(dir .. "/auth.json", grants { { "ci", token(), { "download" } } })
      s = serverproc.start(dir, { "--auth-file", "auth.json" })
      assert.matches("API access control on", stderr_of(s), 1, true)
      assert.equals(401, httpc.request(s.port, "GET", "/api/profile").status)
      assert.equals(200, httpc.request(s.port, "GET", "/api/health").status)
      serverproc.stop(s)
      support.write_file(dir .. "/auth.json", '[{"name": "ci"}]')
      local code, _, err = support.autopgo({ "server", "--port", tostring(support.free_port()), "--auth-file",
        "auth.json" }, { cwd = dir })
      assert.equals(1, code)
      assert.matches("auth.json: grant \"ci\": \"sha256\" must be", err, 1, true)
    end)
  end)

  it("reloads the grants on SIGHUP without dropping connections, and keeps them when the file is broken", function()
    run(function()
      local a, b = token(), token()
      local file = dir .. "/auth.json"
      support.write_file(file, grants { { "a", a, { "download" } } })
      local s = serverproc.start(dir, { "--auth-file", file }, { "AUTOPGO_METRICS_SCOPE=metrics" })
      local c = httpc.connect(s.port)
      local function get(t, path)
        c:send(httpc.format("GET", path or "/api/profile", { authorization = "Bearer " .. t }))
        return assert(c:read_response()).status
      end
      assert.equals(200, get(a))
      assert.equals(401, get(b))
      assert.equals(401, httpc.request(s.port, "GET", "/metrics").status)
      support.write_file(file, grants { { "b", b, { "download", "metrics" } } })
      s.proc:kill("sighup")
      serverproc.wait_until("the reload", function() return stderr_of(s):find("auth file reloaded", 1, true) end)
      assert.equals(401, get(a))
      assert.equals(200, get(b))
      assert.equals(200, get(b, "/metrics"))
      support.write_file(file, grants { { "b", b, { "download" } } }:sub(1, 20))
      s.proc:kill("sighup")
      serverproc.wait_until("the failed reload", function()
        return stderr_of(s):find("auth file reload failed; keeping the previous grants", 1, true)
      end)
      assert.equals(200, get(b))
      assert.equals(401, get(a))
      c:close()
      local stopped, serr = serverproc.stop(s)
      assert.equals(0, stopped, serr)
    end)
  end)

  it("gives every client command its token by --token, --token-file or AUTOPGO_TOKEN, and never logs it", function()
    run(function()
      local up, down, del = token(), token(), token()
      support.write_file(dir .. "/auth.json", grants {
        { "up", up, { "upload" }, { "pay-*" } }, { "down", down, { "download" } },
        { "del", del, { "delete", "download" } },
      })
      support.write_file(dir .. "/down.token", down .. "\n")
      local s = serverproc.start(dir, { "--auth-file", "auth.json" })
      local function cli(args, env)
        local all = { table.unpack(args) }
        all[#all + 1] = "--api-url"
        all[#all + 1] = s.url
        all[#all + 1] = "--log-level"
        all[#all + 1] = "debug"
        local code, out, err = support.autopgo(all, { cwd = dir, env = env })
        for _, t in ipairs { up, down, del } do
          assert.is_nil(err:find(t, 1, true), "a token was logged: " .. err)
        end
        return code, out, err
      end
      -- no token, a token without the scope
      local code, _, err = cli { "upload", "--app", "pay-a", good }
      assert.equals(1, code)
      assert.matches("a bearer token is required (401)", err, 1, true)
      code, _, err = cli({ "upload", "--app", "pay-a", good }, { "AUTOPGO_TOKEN=" .. down })
      assert.equals(1, code)
      assert.matches("the token does not grant upload (403)", err, 1, true)
      code, _, err = cli { "upload", "--app", "billing", "--token", up, good }
      assert.equals(1, code)
      assert.matches("for app billing (403)", err, 1, true)
      assert.same({}, serverproc.files(s, "billing"))
      -- upload: env, then flag
      code, _, err = cli({ "upload", "--app", "pay-a", good }, { "AUTOPGO_TOKEN=" .. up })
      assert.equals(0, code, err)
      code, _, err = cli { "upload", "--app", "pay-b", "--token", up, good }
      assert.equals(0, code, err)
      serverproc.wait_until("the merges", function()
        return #serverproc.files(s, "pay-a/default.pgo") == 1 and #serverproc.files(s, "pay-b/default.pgo") == 1
      end)
      -- read with a token file
      local out
      code, out, err = cli { "list", "--token-file", "down.token" }
      assert.equals(0, code, err)
      assert.matches("pay-a", out, 1, true)
      code, out, err = cli({ "status", "pay-a", "--json" }, { "AUTOPGO_TOKEN_FILE=down.token" })
      assert.equals(0, code, err)
      assert.matches('"app":"pay-a"', out, 1, true)
      code, _, err = cli { "download", "pay-a", "-o", "out.pgo", "--token-file", "down.token" }
      assert.equals(0, code, err)
      assert.equals(support.read_file(dir .. "/autopgo-data/pay-a/default.pgo"), support.read_file(dir .. "/out.pgo"))
      code, _, err = cli { "download", "pay-a", "-o", "no.pgo" }
      assert.equals(1, code)
      assert.matches("(401)", err, 1, true)
      -- a flag beats the environment; the same source twice is a usage error
      code, _, err = cli({ "delete", "pay-b", "--token", del }, { "AUTOPGO_TOKEN=" .. down })
      assert.equals(0, code, err)
      code, _, err = cli { "delete", "pay-b", "--token", del, "--token-file", "down.token" }
      assert.equals(2, code)
      assert.matches("give one of --token", err, 1, true)
      code, _, err = cli { "list", "--token-file", "missing.token" }
      assert.equals(1, code)
      assert.matches("cannot read the token file", err, 1, true)
      -- clean lists (download) and deletes (delete)
      code, _, err = cli({ "clean", "--larger-than", "1" }, { "AUTOPGO_TOKEN=" .. down })
      assert.equals(1, code)
      assert.matches("(403)", err, 1, true)
      assert.equals(1, #serverproc.files(s, "pay-a/default.pgo"))
      code, _, err = cli({ "clean", "--larger-than", "1" }, { "AUTOPGO_TOKEN=" .. del })
      assert.equals(0, code, err)
      serverproc.wait_until("the deletion", function() return #serverproc.files(s, "pay-a") == 0 end)
      local stopped, serr = serverproc.stop(s)
      assert.equals(0, stopped, serr)
    end)
  end)

  it("puts the worker's /metrics behind a scope when asked, keeping its probes open", function()
    run(function()
      local t = token()
      support.write_file(dir .. "/auth.json", grants { { "prometheus", t, { "metrics" } } })
      local port = support.free_port()
      local proc = support.spawn(support.bin, { "worker", "--host", "127.0.0.1", "--port", tostring(port),
        "--data-dir", dir .. "/data", "--auth-file", dir .. "/auth.json", "--metrics-scope", "metrics" })
      e2e.wait_for(function()
        if proc.code then error("autopgo worker exited: " .. select(2, proc.output())) end
        local ok, res = pcall(httpc.request, port, "GET", "/api/ready")
        return ok and res and res.status == 200
      end, 30000, "the worker to be ready")
      assert.equals(200, httpc.request(port, "GET", "/api/health").status)
      local r = httpc.request(port, "GET", "/metrics")
      assert.equals(401, r.status)
      assert.equals('Bearer realm="autopgo"', r.headers["www-authenticate"])
      r = httpc.request(port, "GET", "/metrics", { headers = { authorization = "Bearer " .. t } })
      assert.equals(200, r.status)
      assert.matches("autopgo_auth_refusals_total", r.body, 1, true)
      -- bound to loopback: a rebound name is refused
      assert.equals(421, httpc.request(port, "GET", "/api/health", { headers = { host = "evil.example" } }).status)
      assert.equals(0, e2e.stop(proc), select(2, proc.output()))
    end)
  end)

  it("sends the scraper's token to the server only, never to its targets", function()
    run(function()
      local t = token()
      support.write_file(dir .. "/auth.json", grants { { "scrapers", t, { "upload" }, { "pay-*" } } })
      support.write_file(dir .. "/scrape.token", t)
      local s = serverproc.start(dir, { "--auth-file", "auth.json" })
      local seen = {}
      local profile = support.read_file(good)
      local target = assert(httpd.listen { host = "127.0.0.1", port = 0, handler = function(req, res)
        seen[#seen + 1] = req.headers
        res:header("content-type", "application/octet-stream")
        return res:send(profile)
      end })
      support.write_file(dir .. "/targets.json", cjson.encode { { address = "http://127.0.0.1:" .. target.port } })
      local function scrape(app, extra)
        local args = { "--api-url", s.url, "--app", app, "--sample-size", "1", "--duration", "1s", "--frequency",
          "1s", dir .. "/targets.json" }
        for _, a in ipairs(extra or {}) do args[#args + 1] = a end
        return e2e.start_scraper(args)
      end
      -- without a token: refused by the server, not retried, nothing stored
      local sc = scrape("pay-a")
      e2e.wait_for(function() return #e2e.log_lines(sc.proc, "(401)") > 0 end, 30000, "a refused upload")
      e2e.stop(sc.proc)
      assert.same({}, serverproc.files(s, "pay-a"))
      sc = scrape("pay-a", { "--token-file", dir .. "/scrape.token" })
      -- its own port, bound to loopback: probes open, a rebound Host name refused
      e2e.wait_for(function()
        local ok, r = pcall(httpc.request, sc.port, "GET", "/api/health")
        return ok and r and r.status == 200
      end, 30000, "the scraper's health port")
      assert.equals(421, httpc.request(sc.port, "GET", "/metrics", { headers = { host = "evil.example" } }).status)
      serverproc.wait_until("the scraped profile", function() return #serverproc.files(s, "pay-a/default.pgo") == 1 end)
      assert.equals(0, e2e.stop(sc.proc))
      assert.is_true(#seen >= 2)
      for _, h in ipairs(seen) do assert.is_nil(h.authorization) end
      local _, err = sc.proc.output()
      assert.is_nil(err:find(t, 1, true))
      target:shutdown()
      local res = assert(http.request { url = s.url .. "/api/profile" })
      assert.equals(401, res.status)
      local stopped, serr = serverproc.stop(s)
      assert.equals(0, stopped, serr)
    end)
  end)
end)
