-- Specs of lua/autopgo/auth.lua: the auth file's format and its errors, app patterns, the token
-- matrix (every API endpoint x no token, wrong token, wrong scope, wrong app, right token) over a
-- real HTTP server with nothing stored, deleted or announced by a refused request, reloads, and the
-- Origin and Host rules.
local support = require "tests.lua.support"
local httpc = require "tests.lua.httpc"
local profiles = require "tests.lua.profiles"
local auth = require "autopgo.auth"
local httpd = require "autopgo.httpd"
local api = require "autopgo.api"
local blob = require "autopgo.blob"
local bus = require "autopgo.bus"
local events = require "autopgo.events"
local metrics = require "autopgo.metrics"
local keys = require "autopgo.keys"
local crypto = require("autopgo.core").crypto
local cjson = require "cjson"

local run = support.run

local function sha(token) return crypto.hex(crypto.digest("sha256", token)) end

local function token() return crypto.hex(crypto.random(16)) end

local SCOPES = { "upload", "download", "delete", "metrics" }

-- Grants for the matrix: per scope one holding only it for pay-[ab], one holding every other scope
-- for every app; and one holding every scope for other apps only.
local function matrix_grants()
  local tokens, doc = {}, {}
  for _, s in ipairs(SCOPES) do
    local only, but = token(), token()
    tokens["only-" .. s], tokens["all-but-" .. s] = only, but
    doc[#doc + 1] = { name = "only-" .. s, sha256 = sha(only), scopes = { s }, apps = { "pay-[ab]" } }
    local others = {}
    for _, o in ipairs(SCOPES) do if o ~= s then others[#others + 1] = o end end
    doc[#doc + 1] = { name = "all-but-" .. s, sha256 = sha(but), scopes = others, apps = { "*" } }
  end
  tokens.elsewhere = token()
  doc[#doc + 1] = { name = "elsewhere", sha256 = sha(tokens.elsewhere), scopes = SCOPES, apps = { "other-*", "x?z" } }
  return tokens, doc
end

-- A server with the API, health, readiness and /metrics behind a guard. o: grants (a document to
-- write as the auth file; nil: no auth file), guard_host, allowed_origins, metrics_scope.
local function serve(o)
  o = o or {}
  local id = crypto.hex(crypto.random(5))
  local e = { dir = support.tmpdir(), url = "mem://auth-" .. id }
  e.store = assert(blob.open(e.url))
  e.writer = assert(bus.writer(e.url))
  e.reader = assert(bus.reader(e.url))
  if o.grants then
    e.file = e.dir .. "/auth.json"
    support.write_file(e.file, cjson.encode(o.grants))
  end
  e.guard = assert(auth.guard { auth_file = e.file, host = o.guard_host or "0.0.0.0",
    allowed_origins = o.allowed_origins })
  local router = httpd.router { guard = e.guard }
  api.new({ store = e.store, writer = e.writer, max_upload_size = 1024 * 1024 }):routes(router)
  router:add("GET", "/api/health", function(_, res) return res:json(200, {}) end, auth.OPEN)
  router:add("GET", "/api/ready", function(_, res) return res:json(200, {}) end, auth.OPEN)
  router:add("GET", "/metrics", metrics.handler(), o.metrics_scope or auth.OPEN)
  router:add("GET", "/undeclared", function(_, res) return res:json(200, {}) end)
  e.srv = assert(httpd.listen { host = "127.0.0.1", port = 0, handler = router, max_body = 1024 * 1024 })
  function e.request(method, path, headers, body)
    return httpc.request(e.srv.port, method, path, { headers = headers, body = body })
  end
  function e.close()
    e.srv:shutdown()
    e.reader:close()
    support.rm_rf(e.dir)
  end
  return e
end

-- Every object of the store with its size, as one string to compare before and after.
local function snapshot(store)
  local out = {}
  for _, item in ipairs(assert(store:list(""))) do out[#out + 1] = item.key .. "=" .. item.size end
  table.sort(out)
  return table.concat(out, "\n")
end

local function seed(store)
  local body = profiles.file(profiles.usable[1])
  assert(store:put(keys.base("pay-a"), body))
  assert(store:put(keys.base("other-b"), body))
  assert(store:put(keys.staging("pay-a", 1), body))
end

local function bearer(t) return { authorization = "Bearer " .. t } end

local function assert_error(r, status)
  assert.equals(status, r.status, r.body)
  assert.equals("application/json", r.headers["content-type"])
  local doc = cjson.decode(r.body)
  assert.equals(status, doc.code)
  assert.is_string(doc.message)
end

-- The value of autopgo_auth_refusals_total for a status and reason (0 before the first).
local function refused(status, reason)
  local line = ('autopgo_auth_refusals_total{status="%s",reason="%s"} '):format(status, reason)
  local at = metrics.render():find(line, 1, true)
  if not at then return 0 end
  return tonumber(metrics.render():match("^(%d+)", at + #line))
end

local function listed(r)
  local out = {}
  for _, p in ipairs(cjson.decode(r.body).profiles) do out[#out + 1] = p.key end
  table.sort(out)
  return table.concat(out, ",")
end

describe("auth", function()
  describe("auth file", function()
    it("parses grants: digest, scopes and patterns", function()
      local grants = assert(auth.parse(cjson.encode {
        { name = "ci", sha256 = sha("a"):upper(), scopes = { "download" }, apps = { "*" } },
        { name = "scrapers", sha256 = sha("b"), scopes = { "upload", "delete" }, apps = { "payments-*", "x" } },
      }, "auth.json"))
      assert.equals(2, #grants)
      assert.equals("ci", auth.find(grants, "a").name)
      assert.equals("scrapers", auth.find(grants, "b").name)
      assert.is_nil(auth.find(grants, "c"))
      assert.is_true(auth.allows(grants[2], "upload", "payments-eu"))
      assert.is_false(auth.allows(grants[2], "upload", "billing"))
      assert.is_false(auth.allows(grants[2], "download", "payments-eu"))
      assert.is_true(auth.allows(grants[2], "delete", "x"))
      assert.is_false(auth.allows(grants[2], "delete", "xx"))
      assert.is_true(auth.allows(grants[1], "download", nil))
      assert.same({}, assert(auth.parse("[]")))
    end)

    it("matches shell-style app patterns", function()
      local function g(p) return assert(auth.parse(cjson.encode {
        { name = "n", sha256 = sha("t"), scopes = { "upload" }, apps = { p } } }))[1] end
      local cases = {
        { "*", "anything-1", true }, { "pay-*", "pay-", true }, { "pay-*", "pay", false },
        { "pay-*", "xpay-a", false }, { "a?c", "abc", true }, { "a?c", "ac", false },
        { "svc-[ab]", "svc-b", true }, { "svc-[ab]", "svc-c", false }, { "svc-[!ab]", "svc-c", true },
        { "svc-[!ab]", "svc-a", false }, { "v[0-9]", "v7", true }, { "v[0-9]", "vx", false },
        { "a-b", "a-b", true }, { "a-b", "axb", false },
      }
      for _, c in ipairs(cases) do
        assert.equals(c[3], auth.allows(g(c[1]), "upload", c[2]), c[1] .. " vs " .. c[2])
      end
      assert.is_false(auth.allows(g("*"), "download", "x"))
    end)

    it("refuses a file that does not say exactly what it grants", function()
      local good = { name = "n", sha256 = sha("t"), scopes = { "upload" }, apps = { "*" } }
      local function with(k, v)
        local t = {}
        for kk, vv in pairs(good) do t[kk] = vv end
        t[k] = v
        return t
      end
      local cases = {
        { "{", "not JSON" },
        { '{"name":"x"}', "must be a JSON array" },
        { cjson.encode { "x" }, "must be an object" },
        { cjson.encode { with("name", "") }, "\"name\"" },
        { cjson.encode { with("sha256", "abc") }, "64 hex digits" },
        { cjson.encode { with("sha256", ("g"):rep(64)) }, "64 hex digits" },
        { cjson.encode { with("scopes", {}) }, "\"scopes\"" },
        { cjson.encode { with("scopes", { "admin" }) }, "unknown scope \"admin\"" },
        { cjson.encode { with("apps", { "Pay" }) }, "app pattern \"Pay\"" },
        { cjson.encode { with("apps", { "a[b" }) }, "without ]" },
        { cjson.encode { with("apps", "*") }, "\"apps\" must be an array" },
        { cjson.encode { with("extra", 1) }, "unknown field \"extra\"" },
        { cjson.encode { good, good }, "used twice" },
        { cjson.encode { good, with("name", "m") }, "same sha256" },
      }
      for _, c in ipairs(cases) do
        local grants, err, code = auth.parse(c[1], "auth.json")
        assert.is_nil(grants, c[1])
        assert.equals("INVALID", code)
        assert.matches(c[2], err, 1, true)
        assert.matches("auth.json", err, 1, true)
      end
    end)

    it("will not start a guard on a file it cannot read or parse", function()
      local dir = support.tmpdir()
      local g, err, code = auth.guard { auth_file = dir .. "/missing.json" }
      assert.is_nil(g)
      assert.equals("IO", code, err)
      support.write_file(dir .. "/bad.json", "[{")
      g, err, code = auth.guard { auth_file = dir .. "/bad.json" }
      assert.is_nil(g)
      assert.equals("INVALID", code, err)
      g, err, code = auth.guard { allowed_origins = { "ci.example" } }
      assert.is_nil(g)
      assert.equals("INVALID", code, err)
      support.rm_rf(dir)
    end)

    it("knows the loopback listen addresses", function()
      for _, h in ipairs { "127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost", "LOCALHOST" } do
        assert.is_true(auth.is_loopback(h), h)
      end
      for _, h in ipairs { "0.0.0.0", "::", "10.0.0.1", "example.com", "128.0.0.1" } do
        assert.is_false(auth.is_loopback(h), h)
      end
    end)
  end)

  describe("token matrix", function()
    local endpoints = {
      { "POST", "/api/profile/pay-a", "upload", 201 },
      { "GET", "/api/profile/pay-a", "download", 200 },
      { "HEAD", "/api/profile/pay-a", "download", 200 },
      { "GET", "/api/profile/pay-a/uploads", "download", 200 },
      { "GET", "/api/profile/pay-a/decisions", "download", 200 },
      { "GET", "/api/profile/pay-a?format=pgo", "download", 200 },
      { "GET", "/api/profile", "download", 200, listing = true },
      { "GET", "/metrics", "metrics", 200, no_app = true },
      { "DELETE", "/api/profile/pay-a", "delete", 200 },
    }

    it("answers every endpoint x {no, wrong, wrong-scope, wrong-app, right token} as documented", function()
      run(function()
        local tokens, doc = matrix_grants()
        local e = serve { grants = doc, metrics_scope = "metrics" }
        seed(e.store)
        local before = snapshot(e.store)
        local counted = { refused("401", "no_token"), refused("401", "invalid_token"),
          refused("403", "insufficient_scope") }
        local body = profiles.file(profiles.usable[2])
        for _, ep in ipairs(endpoints) do
          local method, path, scope = ep[1], ep[2], ep[3]
          local what = method .. " " .. path
          local b = method == "POST" and body or nil
          -- no token
          local r = e.request(method, path, nil, b)
          if method ~= "HEAD" then assert_error(r, 401) end
          assert.equals(401, r.status, what)
          assert.equals('Bearer realm="autopgo"', r.headers["www-authenticate"], what)
          -- another scheme is no bearer token either
          r = e.request(method, path, { authorization = "Basic dXNlcjpwYXNz" }, b)
          assert.equals(401, r.status, what)
          -- wrong token
          r = e.request(method, path, bearer("not-" .. tokens["only-" .. scope]), b)
          if method ~= "HEAD" then assert_error(r, 401) end
          assert.matches('^Bearer realm="autopgo", error="invalid_token"', r.headers["www-authenticate"])
          -- a grant with every scope but this one, for every app
          r = e.request(method, path, bearer(tokens["all-but-" .. scope]), b)
          if method ~= "HEAD" then assert_error(r, 403) end
          assert.equals(403, r.status, what)
          assert.matches('error="insufficient_scope"', r.headers["www-authenticate"], 1, true)
          assert.matches(('scope="%s"'):format(scope), r.headers["www-authenticate"], 1, true)
          -- a grant with every scope, for other apps
          r = e.request(method, path, bearer(tokens.elsewhere), b)
          if ep.listing then
            assert.equals(200, r.status)
            assert.equals("other-b", listed(r))
          elseif ep.no_app then
            assert.equals(200, r.status, what) -- /metrics names no app: the scope is enough
          else
            if method ~= "HEAD" then assert_error(r, 403) end
            assert.matches("insufficient_scope", r.headers["www-authenticate"], 1, true)
          end
          assert.equals(before, snapshot(e.store), what)
        end
        -- counted: per endpoint two without a bearer token, one unknown, one or two out of scope
        assert.equals(counted[1] + 2 * #endpoints, refused("401", "no_token"))
        assert.equals(counted[2] + #endpoints, refused("401", "invalid_token"))
        assert.equals(counted[3] + 2 * #endpoints - 2, refused("403", "insufficient_scope"))
        -- Nothing was announced: the first event on the bus is one published now.
        assert(events.publish(e.writer, events.DELETED, { app = "marker" }))
        local msg = assert(e.reader:receive())
        msg:ack()
        assert.equals("marker", assert(events.parse(msg.body)).payload.app)

        -- the right token: only the needed scope, for pay-[ab]
        for _, ep in ipairs(endpoints) do
          local method, path, scope, ok = ep[1], ep[2], ep[3], ep[4]
          local r = e.request(method, path, bearer(tokens["only-" .. scope]), method == "POST" and body or nil)
          assert.equals(ok, r.status, method .. " " .. path .. ": " .. tostring(r.body))
          assert.is_nil(r.headers["www-authenticate"])
          if ep.listing then assert.equals("pay-a", listed(r)) end
          if method == "POST" then
            local key = cjson.decode(r.body).key
            assert.equals(body, assert(e.store:get(key)).body)
            local m = assert(e.reader:receive())
            m:ack()
            assert.equals(events.UPLOADED, events.parse(m.body).type)
          elseif method == "DELETE" then
            local m = assert(e.reader:receive())
            m:ack()
            local env = events.parse(m.body)
            assert.equals(events.DELETED, env.type)
            assert.equals("pay-a", env.payload.app)
          end
        end
        e.close()
      end)
    end)

    it("keeps health and readiness open, /metrics open by default, and refuses routes that declare nothing", function()
      run(function()
        local tokens, doc = matrix_grants()
        local e = serve { grants = doc }
        for _, p in ipairs { "/api/health", "/api/ready", "/metrics" } do
          assert.equals(200, e.request("GET", p).status, p)
          assert.equals(200, e.request("GET", p, bearer("junk")).status, p)
        end
        local r = e.request("GET", "/undeclared", bearer(tokens["only-download"]))
        assert_error(r, 403)
        -- no route: the router's own answers, before any token check
        assert.equals(404, e.request("GET", "/nope").status)
        assert.equals(405, e.request("PUT", "/api/profile/pay-a").status)
        e.close()
      end)
    end)

    it("checks the app before the app name is validated", function()
      run(function()
        local tokens, doc = matrix_grants()
        local e = serve { grants = doc }
        assert.equals(403, e.request("GET", "/api/profile/Bad_Name", bearer(tokens["only-download"])).status)
        assert.equals(401, e.request("GET", "/api/profile/Bad_Name").status)
        e.close()
      end)
    end)

    it("without an auth file serves everyone as before", function()
      run(function()
        local e = serve {}
        seed(e.store)
        assert.is_false(e.guard:enabled())
        assert.equals("other-b,pay-a", listed(e.request("GET", "/api/profile")))
        assert.equals(200, e.request("GET", "/api/profile/pay-a", bearer("anything")).status)
        assert.equals(201, e.request("POST", "/api/profile/pay-c", nil, profiles.file(profiles.usable[1])).status)
        assert.equals(200, e.request("GET", "/undeclared").status)
        e.close()
      end)
    end)
  end)

  describe("reload", function()
    it("swaps the grants on an open connection, and keeps them when the new file does not parse", function()
      run(function()
        local old, new = token(), token()
        local e = serve { grants = { { name = "a", sha256 = sha(old), scopes = { "download" }, apps = { "*" } } } }
        seed(e.store)
        local c = httpc.connect(e.srv.port)
        local function get(t)
          c:send(httpc.format("GET", "/api/profile", bearer(t)))
          return c:read_response().status
        end
        assert.equals(200, get(old))
        assert.equals(401, get(new))
        support.write_file(e.file, cjson.encode {
          { name = "b", sha256 = sha(new), scopes = { "download" }, apps = { "*" } } })
        assert.is_true(e.guard:reload())
        assert.equals(401, get(old))
        assert.equals(200, get(new))
        support.write_file(e.file, '[{"name": "b", "sha256": ')
        local ok, err, code = e.guard:reload()
        assert.is_nil(ok)
        assert.equals("INVALID", code)
        assert.matches("not JSON", err, 1, true)
        assert.equals(200, get(new))
        assert.equals(401, get(old))
        os.remove(e.file)
        assert.is_nil((e.guard:reload()))
        assert.equals(200, get(new))
        c:close()
        e.close()
      end)
    end)
  end)

  describe("browsers", function()
    local profile = profiles.file(profiles.usable[1])

    it("refuses cross-origin state-changing requests and nothing is stored", function()
      run(function()
        local e = serve {}
        seed(e.store)
        local before = snapshot(e.store)
        local own = "127.0.0.1:" .. e.srv.port
        local foreign = { "http://evil.example", "null", "http://127.0.0.1:1", "https://" .. own .. ".evil" }
        for _, origin in ipairs(foreign) do
          local headers = { origin = origin, ["content-type"] = "text/plain" }
          local r = e.request("POST", "/api/profile/pay-a", headers, profile)
          assert_error(r, 403)
          assert.matches("cross-origin", r.body, 1, true)
          assert_error(e.request("DELETE", "/api/profile/pay-a", { origin = origin }), 403)
        end
        assert.equals(before, snapshot(e.store))
        -- reading cross-origin is the browser's business (no CORS headers are sent)
        assert.equals(200, e.request("GET", "/api/profile", { origin = "http://evil.example" }).status)
        -- its own origin, and no Origin at all (curl, the CLI), are fine
        assert.equals(201, e.request("POST", "/api/profile/pay-a", { origin = "http://" .. own, host = own },
          profile).status)
        assert.equals(201, e.request("POST", "/api/profile/pay-a", { origin = "HTTP://LOCALHOST",
          host = "localhost:80" }, profile).status)
        assert.equals(201, e.request("POST", "/api/profile/pay-a", nil, profile).status)
        e.close()
      end)
    end)

    it("lets the configured origins through", function()
      run(function()
        local e = serve { allowed_origins = { "https://ci.example", "http://dash.example:8080" } }
        local r = e.request("POST", "/api/profile/pay-a", { origin = "https://ci.example:443" }, profile)
        assert.equals(201, r.status)
        assert.equals(201, e.request("POST", "/api/profile/pay-a", { origin = "http://dash.example:8080" },
          profile).status)
        assert.equals(403, e.request("POST", "/api/profile/pay-a", { origin = "http://ci.example" }, profile).status)
        e.close()
        e = serve { allowed_origins = { "*" } }
        assert.equals(201, e.request("POST", "/api/profile/pay-a", { origin = "http://evil.example" }, profile).status)
        e.close()
      end)
    end)

    it("answers only loopback Host names when bound to loopback (DNS rebinding)", function()
      run(function()
        local e = serve { guard_host = "127.0.0.1" }
        local port = e.srv.port
        for _, h in ipairs { "evil.example:" .. port, "evil.example", "10.0.0.1:" .. port, "127.0.0.1.evil.example" } do
          local r = e.request("GET", "/api/profile", { host = h })
          assert_error(r, 421)
          assert_error(e.request("POST", "/api/profile/pay-a", { host = h }, profile), 421)
        end
        for _, h in ipairs { "127.0.0.1:" .. port, "localhost:" .. port, "LOCALHOST", "[::1]:" .. port,
          "127.0.0.2", "app.localhost:" .. port } do
          assert.equals(200, e.request("GET", "/api/profile", { host = h }).status, h)
        end
        assert.same({}, assert(e.store:list("")))
        e.close()
        -- bound to every interface: any Host
        e = serve { guard_host = "0.0.0.0" }
        assert.equals(200, e.request("GET", "/api/profile", { host = "evil.example" }).status)
        e.close()
      end)
    end)
  end)
end)
