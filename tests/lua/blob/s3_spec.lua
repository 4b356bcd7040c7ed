-- Specs for lua/autopgo/blob/s3.lua: gocloud.dev URL options, then the shared blob contract and
-- S3 specifics (wrong secrets, multipart uploads, streaming 100+ MB, key escaping, prefixes,
-- retries) against a real Ceph RGW that verifies signatures and payload hashes.
local s3 = require "autopgo.blob.s3"
local blob = require "autopgo.blob"
local url = require "autopgo.url"
local crypto = require("autopgo.core").crypto
local support = require "tests.lua.support"
local services = require "tests.lua.services"
local fixture = require "tests.lua.http_fixture"
local big = require "tests.lua.blob.big_body"
local flaky = require "tests.lua.blob.flaky_server"

local run = support.run

local function env_of(t) return function(k) return t[k] end end
local NO_ENV = env_of({ AWS_EC2_METADATA_DISABLED = "true" })

local function open_url(raw, opts)
  opts = opts or {}
  opts.getenv = opts.getenv or NO_ENV
  opts.home = opts.home or "/nonexistent"
  return s3.open(assert(url.parse(raw)), opts)
end

describe("s3 URL options", function()
  it("addresses AWS regions virtual-hosted by default, path-style on request", function()
    local st = assert(open_url("s3://my-bucket?region=eu-west-1&anonymous=true"))
    assert.same({ scheme = "https", host = "s3.eu-west-1.amazonaws.com", base_path = "", path_style = false },
      st.endpoint)
    assert.equals("eu-west-1", st.region)
    local path, host = st:locate("a/b c")
    assert.equals("/a/b%20c", path)
    assert.equals("my-bucket.s3.eu-west-1.amazonaws.com", host)
    for _, flag in ipairs { "use_path_style=true", "s3ForcePathStyle=true", "hostname_immutable=1" } do
      st = assert(open_url("s3://my-bucket?region=eu-west-1&anonymous=true&" .. flag))
      path, host = st:locate("k")
      assert.equals("/my-bucket/k", path, flag)
      assert.equals("s3.eu-west-1.amazonaws.com", host, flag)
    end
  end)

  it("knows dualstack, fips, accelerate and the China partition", function()
    assert.equals("s3-fips.dualstack.us-east-2.amazonaws.com",
      assert(open_url("s3://b?region=us-east-2&fips=true&dualstack=true&anonymous=true")).endpoint.host)
    assert.equals("s3-accelerate.amazonaws.com",
      assert(open_url("s3://b?region=us-east-2&accelerate=true&anonymous=true")).endpoint.host)
    assert.equals("s3.cn-north-1.amazonaws.com.cn",
      assert(open_url("s3://b?region=cn-north-1&anonymous=true")).endpoint.host)
    -- dotted bucket names cannot be TLS virtual hosts
    assert.is_true(assert(open_url("s3://my.bucket?region=us-east-1&anonymous=true")).endpoint.path_style)
  end)

  it("takes endpoints as URLs or hosts, with disable_https / disableSSL choosing http", function()
    local st = assert(open_url("s3://b?endpoint=http%3A%2F%2F127.0.0.1%3A9000&use_path_style=true&anonymous=true"))
    assert.same({ scheme = "http", host = "127.0.0.1:9000", base_path = "", path_style = true }, st.endpoint)
    -- an IP endpoint cannot take the bucket as a subdomain
    assert.is_true(assert(open_url("s3://b?endpoint=http://127.0.0.1:9000&anonymous=true")).endpoint.path_style)
    assert.is_true(assert(open_url("s3://b?endpoint=http://localhost:9000&anonymous=true")).endpoint.path_style)
    st = assert(open_url("s3://b?endpoint=minio.local:9000&disable_https=true&anonymous=true"))
    assert.equals("http", st.endpoint.scheme)
    assert.equals("b.minio.local:9000", select(2, st:locate("k")))
    st = assert(open_url("s3://b?endpoint=minio.local&disableSSL=true&s3ForcePathStyle=true&anonymous=true"))
    assert.equals("http", st.endpoint.scheme)
    st = assert(open_url("s3://b?endpoint=storage.example.com&anonymous=true"))
    assert.equals("https", st.endpoint.scheme)
    st = assert(open_url("s3://b?anonymous=true", { getenv = env_of({ AWS_ENDPOINT_URL_S3 = "http://127.0.0.1:1234",
      AWS_REGION = "ap-east-1" }) }))
    assert.equals("127.0.0.1:1234", st.endpoint.host)
    assert.equals("ap-east-1", st.region)
  end)

  it("accepts gocloud's other options and rejects unknown ones and bad booleans", function()
    assert(open_url("s3://b?region=us-east-1&awssdk=v2&rate_limiter_capacity=10&profile=x&anonymous=true"
      .. "&request_checksum_calculation=when_required&response_checksum_validation=when_supported"
      .. "&ssetype=aws:kms&kmskeyid=k1&prefix=tenant/"))
    local st, err, code = open_url("s3://b?regoin=us-east-1")
    assert.is_nil(st)
    assert.equals("INVALID", code)
    assert.matches('unknown query parameter "regoin"', err, 1, true)
    st, err, code = open_url("s3://b?use_path_style=yes")
    assert.is_nil(st)
    assert.equals("INVALID", code)
    assert.matches("use_path_style", err, 1, true)
    assert.equals("INVALID", select(3, open_url("s3://b?ssetype=rot13")))
    assert.equals("INVALID", select(3, open_url("s3://?region=x")))
  end)

  it("is what blob.open returns for s3:// URLs", function()
    local st = assert(blob.open("s3://some-bucket?region=us-east-1&anonymous=true"))
    assert.equals("s3://some-bucket", st.name)
  end)
end)

describe("s3 store against Ceph RGW", function()
  local env = services.get("rgw")
  local endpoint = env.AUTOPGO_TEST_S3_ENDPOINT
  local good_env = env_of({ AWS_ACCESS_KEY_ID = env.AUTOPGO_TEST_S3_ACCESS_KEY,
    AWS_SECRET_ACCESS_KEY = env.AUTOPGO_TEST_S3_SECRET_KEY, AWS_EC2_METADATA_DISABLED = "true" })
  local bucket = "autopgo-spec-" .. crypto.hex(crypto.random(4))
  local base = ("s3://%s?endpoint=%s&use_path_style=true&region=us-east-1"):format(bucket, url.escape(endpoint))
  local created = false

  local function open(extra, getenv, opts)
    opts = opts or {}
    opts.getenv = getenv or good_env
    local st = assert(open_url(base .. (extra or ""), opts))
    if not created then
      assert(st:create_bucket())
      created = true
    end
    return st
  end

  require("tests.lua.blob.contract")("s3:// (RGW)", {
    open = function() return open("", nil, { page_size = 7 }) end,
    page_size = 7,
    large = 24 * 1024 * 1024, -- above the part size below: multipart
  })

  it("lists page by page with continuation tokens", function()
    run(function()
      local st = open("", nil, { page_size = 2 })
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

  it("uses multipart uploads above the part size, and one streamed PUT for conditional writes", function()
    run(function()
      local st = open("", nil, { part_size = 5 * 1024 * 1024 })
      local data = big.pattern(12 * 1024 * 1024 + 5)
      local put = assert(st:put("mp/one", data, { content_type = "application/octet-stream" }))
      assert.matches("%-3\"$", put.etag) -- S3's multipart etags end with -<parts>
      local got = assert(st:get("mp/one"))
      assert.equals(put.etag, got.etag)
      assert.equals(crypto.digest("sha256", data), crypto.digest("sha256", got.body))
      -- conditional writes are refused or applied atomically, whatever their size
      local again, err, code = st:put("mp/one", data, { if_none_match = "*" })
      assert.is_nil(again)
      assert.equals("PRECONDITION_FAILED", code, err)
      local stale, _, scode = st:put("mp/one", { path = support.write_file(support.tmpdir() .. "/b", data) },
        { if_match = '"0123456789abcdef0123456789abcdef-3"' })
      assert.is_nil(stale)
      assert.equals("PRECONDITION_FAILED", scode)
      local v2 = assert(st:put("mp/one", data .. "v2", { if_match = put.etag }))
      assert.not_matches("%-%d+\"$", v2.etag)
      assert.equals(v2.etag, assert(st:stat("mp/one")).etag)
      assert(st:delete("mp/one"))
    end, 120000)
  end)

  it("sends file bodies in parts that are retried from the file", function()
    run(function()
      local st = open("", nil, { part_size = 5 * 1024 * 1024 })
      local dir = support.tmpdir()
      local data = big.pattern(11 * 1024 * 1024 + 1, 9)
      local put = assert(st:put("mp/file", { path = support.write_file(dir .. "/f", data) }))
      assert.matches("%-3\"$", put.etag)
      assert.equals(crypto.digest("sha256", data), crypto.digest("sha256", assert(st:get("mp/file")).body))
      assert(st:delete("mp/file"))
      support.rm_rf(dir)
    end, 120000)
  end)

  it("fails with a clear UNAUTHORIZED for a wrong secret or an unknown key", function()
    run(function()
      open()
      local st = open("", env_of({ AWS_ACCESS_KEY_ID = env.AUTOPGO_TEST_S3_ACCESS_KEY,
        AWS_SECRET_ACCESS_KEY = "not-the-secret" }))
      local res, err, code = st:put("denied", "x")
      assert.is_nil(res)
      assert.equals("UNAUTHORIZED", code)
      assert.matches("SignatureDoesNotMatch", err, 1, true)
      assert.matches("secret access key does not match", err, 1, true)
      assert.equals("UNAUTHORIZED", select(3, st:health()))
      st = open("", env_of({ AWS_ACCESS_KEY_ID = "AKNOBODY", AWS_SECRET_ACCESS_KEY = "x" }))
      res, err, code = st:get("anything")
      assert.is_nil(res)
      assert.equals("UNAUTHORIZED", code)
      assert.matches("InvalidAccessKeyId", err, 1, true)
      st = open("&anonymous=true")
      assert.equals("UNAUTHORIZED", select(3, st:put("anon", "x")))
    end)
  end)

  it("reports health, and NOT_FOUND for a bucket that does not exist", function()
    run(function()
      assert.is_true(open():health())
      local st = assert(open_url(("s3://no-such-bucket-%s?endpoint=%s&use_path_style=true"):format(
        crypto.hex(crypto.random(3)), url.escape(endpoint)), { getenv = good_env }))
      local ok, err, code = st:health()
      assert.is_nil(ok)
      assert.equals("NOT_FOUND", code)
      assert.matches("does not exist", err, 1, true)
      assert.equals("NOT_FOUND", select(3, st:get("k")))
    end)
  end)

  it("keeps keys with spaces, unicode and URL metacharacters, and escapes like gocloud", function()
    run(function()
      local st = open()
      local names = { "odd/a b+c=d&e?f#g%h", "odd/\u{263A}\u{263A}", "odd/semi;colon,comma'quote\"", "odd/x/../y",
        "odd/tab\tnew\nline" }
      for i, k in ipairs(names) do assert(st:put(k, "v" .. i)) end
      for i, k in ipairs(names) do assert.equals("v" .. i, assert(st:get(k)).body, k) end
      local listed = {}
      for _, e in ipairs(assert(st:list("odd/"))) do listed[e.key] = true end
      for _, k in ipairs(names) do assert.is_true(listed[k], k) end
      -- gocloud's s3blob stores "../" as "..__0x2f__" and control characters as __0x9__
      assert.equals("v4", assert(st:get("odd/x/..__0x2f__y")).body)
      assert.equals("v5", assert(st:get("odd/tab__0x9__new__0xa__line")).body)
      for _, k in ipairs(names) do assert(st:delete(k)) end
    end)
  end)

  it("puts everything under the URL's prefix", function()
    run(function()
      local tenant = "tenant-" .. crypto.hex(crypto.random(3)) .. "/"
      local scoped = open("&prefix=" .. url.escape(tenant))
      local plain = open()
      assert(scoped:put("app/default.pgo", "scoped"))
      assert.equals("scoped", assert(plain:get(tenant .. "app/default.pgo")).body)
      local items = assert(scoped:list("app/"))
      assert.equals(1, #items)
      assert.equals("app/default.pgo", items[1].key)
      assert(scoped:delete("app/default.pgo"))
      assert.equals("NOT_FOUND", select(3, plain:stat(tenant .. "app/default.pgo")))
    end)
  end)

  it("signs with keys from the ECS container endpoint", function()
    local srv = fixture.start(function(_, conn)
      conn:respond(200, { { "Content-Type", "application/json" } },
        ('{"AccessKeyId":"%s","SecretAccessKey":"%s","Expiration":"2100-01-01T00:00:00Z"}')
          :format(env.AUTOPGO_TEST_S3_ACCESS_KEY, env.AUTOPGO_TEST_S3_SECRET_KEY))
    end)
    run(function()
      open()
      local st = open("", env_of({ AWS_CONTAINER_CREDENTIALS_FULL_URI = srv.url .. "/creds",
        AWS_CONFIG_FILE = "/nonexistent", AWS_SHARED_CREDENTIALS_FILE = "/nonexistent" }))
      assert(st:put("ecs-key", "via ECS credentials"))
      assert.equals("via ECS credentials", assert(st:get("ecs-key")).body)
      assert(st:delete("ecs-key"))
    end)
    assert.equals(1, #srv.requests) -- cached for the three calls
    srv:close()
  end)

  it("is opened from AWS_PROFILE credentials in the shared files", function()
    run(function()
      local dir = support.tmpdir()
      support.write_file(dir .. "/credentials", ("[rgw]\naws_access_key_id = %s\naws_secret_access_key = %s\n")
        :format(env.AUTOPGO_TEST_S3_ACCESS_KEY, env.AUTOPGO_TEST_S3_SECRET_KEY))
      local st = open("", env_of({ AWS_PROFILE = "rgw", AWS_SHARED_CREDENTIALS_FILE = dir .. "/credentials",
        AWS_CONFIG_FILE = dir .. "/none", AWS_EC2_METADATA_DISABLED = "true" }))
      assert(st:put("profile-key", "via profile"))
      assert.equals("via profile", assert(st:get("profile-key")).body)
      assert(st:delete("profile-key"))
      local bad = open("&profile=nope", env_of({ AWS_SHARED_CREDENTIALS_FILE = dir .. "/credentials",
        AWS_CONFIG_FILE = dir .. "/none" }))
      local res, err, code = bad:get("profile-key")
      assert.is_nil(res)
      assert.equals("INVALID", code)
      assert.matches('AWS profile "nope" not found', err, 1, true)
      support.rm_rf(dir)
    end)
  end)
end)

describe("s3 store retries", function()
  it("retries 503 SlowDown and 500 with backoff, and gives up at the deadline", function()
    local failures = 2
    local srv = fixture.start(function(req, conn)
      if failures > 0 then
        failures = failures - 1
        conn:respond(503, { { "Content-Type", "application/xml" } },
          "<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>")
      elseif req.method == "GET" then
        conn:respond(200, { { "ETag", '"abc"' }, { "Last-Modified", "Sun, 30 Aug 2015 12:36:00 GMT" } }, "payload")
      else
        conn:respond(500, {}, "<Error><Code>InternalError</Code><Message>oops</Message></Error>")
      end
    end)
    run(function()
      local st = assert(open_url(("s3://b?endpoint=%s&use_path_style=true&anonymous=true"):format(
        url.escape(srv.url)), { deadline = 2 }))
      local got = assert(st:get("k"))
      assert.equals("payload", got.body)
      assert.equals(1440938160, got.last_modified)
      assert.equals(3, #srv.requests)
      local res, err, code = st:put("k", "x")
      assert.is_nil(res)
      assert.equals("UNAVAILABLE", code)
      assert.matches("InternalError", err, 1, true)
      assert.matches("gave up after %d+ attempts", err)
    end)
    srv:close()
  end)

  it("resumes a download that breaks off, from the same version only", function()
    local body = big.pattern(300000, 2)
    for _, changed in ipairs { false, true } do
      local srv = flaky.start({ body = body, cut = 123457, version_header = "ETag", version = '"v1etag"',
        changed = changed })
      run(function()
        local st = assert(open_url(("s3://b?endpoint=%s&use_path_style=true&anonymous=true"):format(
          url.escape(srv.url)), { deadline = 5 }))
        local parts = {}
        local got, err, code = st:get("k", { sink = function(chunk) parts[#parts + 1] = chunk end })
        if changed then
          assert.is_nil(got)
          assert.equals("UNAVAILABLE", code)
          assert.matches("changed while it was being downloaded", err, 1, true)
        else
          assert(got, err)
          assert.equals(body, table.concat(parts))
          assert.equals(#body, got.size)
          -- resumed where the sink stopped (the reset may lose bytes that were in flight)
          local from = tonumber(srv.requests[2].headers.range:match("^bytes=(%d+)%-$"))
          assert.is_true(from > 0 and from <= 123457, srv.requests[2].headers.range)
          assert.equals("v1etag", srv.requests[2].headers["if-match"])
        end
      end)
      srv:close()
    end
  end)

  it("resends a file body after a reset, but never a producer's, saying why", function()
    local puts = 0
    local srv = fixture.start(function(_, conn)
      puts = puts + 1
      if puts == 1 then return conn:reset() end -- the first attempt of each put
      local body = conn:read_body()
      conn:respond(200, { { "ETag", '"' .. crypto.hex(crypto.digest("md5", body)) .. '"' } }, "")
    end, { stream_body = true })
    run(function()
      local st = assert(open_url(("s3://b?endpoint=%s&use_path_style=true&anonymous=true"):format(url.escape(srv.url)),
        { deadline = 5 }))
      local dir = support.tmpdir()
      local data = big.pattern(9 * 1024 * 1024, 6) -- above the size hashed up front: streamed from the file
      local put = assert(st:put("from-file", { path = support.write_file(dir .. "/f", data) }))
      assert.equals('"' .. crypto.hex(crypto.digest("md5", data)) .. '"', put.etag)
      assert.equals(2, #srv.requests)
      support.rm_rf(dir)
      puts = 0
      local sent = 0
      local res, err, code = st:put("from-producer", { size = 300000, producer = function()
        if sent >= 300000 then return nil end
        sent = sent + 100000
        return ("p"):rep(100000)
      end })
      assert.is_nil(res)
      assert.equals("UNAVAILABLE", code)
      assert.matches("a streamed body cannot be sent again after a failure: UNAVAILABLE", err, 1, true)
      assert.equals(3, #srv.requests)
    end)
    srv:close()
  end)

  it("does not retry what a retry cannot fix", function()
    local srv = fixture.start(function(_, conn)
      conn:respond(412, {}, "<Error><Code>PreconditionFailed</Code><Message>At least one of the pre-conditions you "
        .. "specified did not hold</Message></Error>")
    end)
    run(function()
      local st = assert(open_url(("s3://b?endpoint=%s&use_path_style=true&anonymous=true"):format(url.escape(srv.url))))
      local res, _, code = st:put("k", "x", { if_none_match = "*" })
      assert.is_nil(res)
      assert.equals("PRECONDITION_FAILED", code)
      assert.equals(1, #srv.requests)
      assert.equals("*", srv.requests[1].headers["if-none-match"])
    end)
    srv:close()
  end)

  it("reports an unreachable endpoint as UNAVAILABLE", function()
    run(function()
      local port = support.free_port()
      local st = assert(open_url(("s3://b?endpoint=http://127.0.0.1:%d&use_path_style=true&anonymous=true")
        :format(port), { deadline = 1 }))
      local ok, err, code = st:health()
      assert.is_nil(ok)
      assert.equals("UNAVAILABLE", code)
      assert.matches("s3://b", err, 1, true)
    end)
  end)
end)
