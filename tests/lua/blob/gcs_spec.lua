-- Specs for lua/autopgo/blob/gcs.lua: gocloud.dev gcsblob URL options and STORAGE_EMULATOR_HOST,
-- the shared blob contract and GCS specifics (generation preconditions, key
-- escaping, prefixes) against the Firebase Storage emulator's JSON API (see
-- tests/services/gcs-emu.js for what it adds), and bearer tokens against a loopback endpoint.
local gcs = require "autopgo.blob.gcs"
local blob = require "autopgo.blob"
local url = require "autopgo.url"
local cjson = require "cjson"
local crypto = require("autopgo.core").crypto
local support = require "tests.lua.support"
local services = require "tests.lua.services"
local fixture = require "tests.lua.http_fixture"
local big = require "tests.lua.blob.big_body"
local flaky = require "tests.lua.blob.flaky_server"

local run = support.run

local function env_of(t) return function(k) return t[k] end end

local function open_url(raw, env, opts)
  opts = opts or {}
  opts.getenv = env_of(env or {})
  opts.home = opts.home or "/nonexistent"
  return gcs.open(assert(url.parse(raw)), opts)
end

describe("gs URL options", function()
  it("uses STORAGE_EMULATOR_HOST like Google's libraries, without credentials", function()
    local st = assert(open_url("gs://b", { STORAGE_EMULATOR_HOST = "127.0.0.1:9199" }))
    assert.equals("http://127.0.0.1:9199", st.base)
    assert.is_true(st.anonymous)
    st = assert(open_url("gs://b", { STORAGE_EMULATOR_HOST = "https://emu.example:8443/" }))
    assert.equals("https://emu.example:8443", st.base)
    st = assert(open_url("gs://b"))
    assert.equals("https://storage.googleapis.com", st.base)
    assert.is_false(st.anonymous)
  end)

  it("accepts gocloud's options and rejects others", function()
    assert.is_true(assert(open_url("gs://b?anonymous=true")).anonymous)
    assert.is_true(assert(open_url("gs://b?access_id=-")).anonymous)
    assert(open_url("gs://b?access_id=sa@p.iam.gserviceaccount.com&private_key_path=/k.pem&prefix=x/"))
    local st, err, code = open_url("gs://b?project=p")
    assert.is_nil(st)
    assert.equals("INVALID", code)
    assert.matches('unknown query parameter "project"', err, 1, true)
    assert.equals("INVALID", select(3, open_url("gs://b?anonymous=sure")))
    assert.equals("INVALID", select(3, open_url("gs://")))
    assert.equals("autopgo.blob.gcs", blob.schemes.gs)
  end)
end)

describe("gcs store against the GCS emulator", function()
  local env = services.get("gcs")
  local emu_env = { STORAGE_EMULATOR_HOST = env.STORAGE_EMULATOR_HOST }
  local bucket = "autopgo-spec-" .. crypto.hex(crypto.random(4))

  local function open(extra, opts) return assert(open_url("gs://" .. bucket .. (extra or ""), emu_env, opts)) end

  require("tests.lua.blob.contract")("gs:// (emulator)", {
    open = function() return open("", { page_size = 7 }) end,
    page_size = 7,
    large = 16 * 1024 * 1024,
  })

  it("lists page by page with page tokens", function()
    run(function()
      local st = open("", { page_size = 2 })
      for i = 1, 5 do assert(st:put("paged/" .. i, tostring(i))) end
      local calls, call = 0, st.call
      st.call = function(self, what, build)
        if what:match("^list") then calls = calls + 1 end
        return call(self, what, build)
      end
      local items = assert(st:list("paged/"))
      assert.equals(5, #items)
      assert.equals("paged/5", items[5].key)
      assert.equals(3, calls)
      for i = 1, 5 do assert(st:delete("paged/" .. i)) end
    end)
  end)

  it("uses generations as etags and for preconditions", function()
    run(function()
      local st = open()
      local v1 = assert(st:put("gen/k", "one", { if_none_match = "*" }))
      assert.matches("^%d+$", v1.etag)
      assert.equals(v1.etag, assert(st:stat("gen/k")).etag)
      assert.equals(v1.etag, assert(st:get("gen/k")).etag)
      assert.equals(v1.etag, assert(st:list("gen/"))[1].etag)
      local v2 = assert(st:put("gen/k", "two", { if_match = v1.etag }))
      assert.are_not.equal(v1.etag, v2.etag)
      local res, err, code = st:put("gen/k", "three", { if_match = v1.etag })
      assert.is_nil(res)
      assert.equals("PRECONDITION_FAILED", code)
      assert.matches("conditionNotMet", err, 1, true)
      assert.equals("PRECONDITION_FAILED", select(3, st:put("gen/k", "x", { if_match = "not-a-generation" })))
      assert.equals("two", assert(st:get("gen/k")).body)
      assert(st:delete("gen/k"))
    end)
  end)

  it("keeps keys with URL metacharacters, escaping like gocloud", function()
    run(function()
      local st = open()
      local names = { "odd/a b+c=d&e?f#g%h", "odd/\u{263A}", "odd/x/../y", "odd/cr\rlf\n" }
      for i, k in ipairs(names) do assert(st:put(k, "v" .. i)) end
      for i, k in ipairs(names) do assert.equals("v" .. i, assert(st:get(k)).body, k) end
      local listed = {}
      for _, e in ipairs(assert(st:list("odd/"))) do listed[e.key] = true end
      for _, k in ipairs(names) do assert.is_true(listed[k], k) end
      assert.equals("v3", assert(st:get("odd/x/..__0x2f__y")).body)
      assert.equals("v4", assert(st:get("odd/cr__0xd__lf__0xa__")).body)
      for _, k in ipairs(names) do assert(st:delete(k)) end
    end)
  end)

  it("puts everything under the URL's prefix", function()
    run(function()
      local scoped, plain = open("?prefix=tenant-a/"), open()
      assert(scoped:put("app/default.pgo", "scoped"))
      assert.equals("scoped", assert(plain:get("tenant-a/app/default.pgo")).body)
      assert.equals("app/default.pgo", assert(scoped:list(""))[1].key)
      assert(scoped:delete("app/default.pgo"))
    end)
  end)
end)

describe("gcs store with credentials", function()
  it("sends the service account's bearer token and renews it once after a 401", function()
    local tokens, api = 0, {}
    local srv = fixture.start(function(req, conn)
      if req.path == "/token" then
        tokens = tokens + 1
        return conn:respond(200, { { "Content-Type", "application/json" } },
          cjson.encode({ access_token = "ya29.t" .. tokens, expires_in = 3600 }))
      end
      api[#api + 1] = req
      if req.headers.authorization == "Bearer ya29.t1" then
        return conn:respond(401, { { "Content-Type", "application/json" } }, cjson.encode({ error = { code = 401,
          message = "Invalid Credentials", errors = { { reason = "authError" } } } }))
      end
      conn:respond(200, { { "Content-Type", "application/json" } }, cjson.encode({ kind = "storage#objects",
        items = { { name = "app/default.pgo", size = "12", generation = "1700000000000001",
          updated = "2023-11-14T22:13:20.000Z" } } }))
    end)
    local dir = support.tmpdir()
    assert(os.execute(("openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out '%s/k.pem' 2>/dev/null")
      :format(dir)))
    local keyfile = support.write_file(dir .. "/sa.json", cjson.encode({ type = "service_account",
      client_email = "sa@p.iam.gserviceaccount.com", private_key = support.read_file(dir .. "/k.pem"),
      private_key_id = "k1", token_uri = srv.url .. "/token" }))
    run(function()
      local st = assert(open_url("gs://b", { GOOGLE_APPLICATION_CREDENTIALS = keyfile }, { endpoint = srv.url }))
      local items = assert(st:list("app/"))
      assert.same({ { key = "app/default.pgo", size = 12, etag = "1700000000000001", last_modified = 1700000000 } },
        items)
      assert.equals(2, #api)
      assert.equals("Bearer ya29.t2", api[2].headers.authorization)
      assert.equals(2, tokens)
    end)
    support.rm_rf(dir)
    srv:close()
  end)

  it("fails clearly without credentials", function()
    run(function()
      local closed = support.free_port()
      local st = assert(open_url("gs://b", { GCE_METADATA_HOST = "127.0.0.1:" .. closed }))
      local res, err, code = st:get("k")
      assert.is_nil(res)
      assert.equals("UNAUTHORIZED", code)
      assert.matches("GOOGLE_APPLICATION_CREDENTIALS", err, 1, true)
    end)
  end)
end)

describe("gcs store retries", function()
  it("resumes a download that breaks off, from the same generation", function()
    local body = big.pattern(150000, 4)
    local srv = flaky.start({ body = body, cut = 99999, version_header = "x-goog-generation",
      version = "1700000000000042" })
    run(function()
      local st = assert(open_url("gs://b", { STORAGE_EMULATOR_HOST = "127.0.0.1:" .. srv.port }, { deadline = 5 }))
      local parts = {}
      local got = assert(st:get("k", { sink = function(chunk) parts[#parts + 1] = chunk end }))
      assert.equals(body, table.concat(parts))
      assert.equals(#body, got.size)
      assert.equals("1700000000000042", got.etag)
      -- resumed where the sink stopped (the reset may lose bytes that were in flight)
      local from = tonumber(srv.requests[2].headers.range:match("^bytes=(%d+)%-$"))
      assert.is_true(from > 0 and from <= 99999, srv.requests[2].headers.range)
      assert.equals("1700000000000042", url.parse_query(srv.requests[2].query).ifGenerationMatch)
    end)
    srv:close()
  end)
end)
