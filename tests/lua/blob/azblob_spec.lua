-- Specs for lua/autopgo/blob/azblob.lua: gocloud.dev azureblob URL options and credential
-- sources, then the shared blob contract and Azure specifics (Shared Key, SAS, connection
-- strings, a wrong key, staged blocks, streaming 100+ MB, key escaping) against Azurite, which
-- verifies Shared Key and SAS signatures.
local azblob = require "autopgo.blob.azblob"
local blob = require "autopgo.blob"
local url = require "autopgo.url"
local crypto = require("autopgo.core").crypto
local sas = require "autopgo.azure.sas"
local support = require "tests.lua.support"
local services = require "tests.lua.services"
local big = require "tests.lua.blob.big_body"
local flaky = require "tests.lua.blob.flaky_server"

local run = support.run

local function env_of(t) return function(k) return t[k] end end

local function open_url(raw, env, opts)
  opts = opts or {}
  opts.getenv = env_of(env or {})
  return azblob.open(assert(url.parse(raw)), opts)
end

local KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="

describe("azblob URL options", function()
  local env = { AZURE_STORAGE_ACCOUNT = "acct", AZURE_STORAGE_KEY = KEY }

  local function base(st) return ("%s://%s%s"):format(st.scheme, st.host, st.base_path) end

  it("builds gocloud's service URLs", function()
    assert.equals("https://acct.blob.core.windows.net", base(assert(open_url("azblob://c", env))))
    assert.equals("https://acct.blob.core.usgovcloudapi.net",
      base(assert(open_url("azblob://c?domain=blob.core.usgovcloudapi.net", env))))
    assert.equals("http://127.0.0.1:10000/acct",
      base(assert(open_url("azblob://c?domain=127.0.0.1:10000&protocol=http", env))))
    assert.equals("http://azurite:10000/acct",
      base(assert(open_url("azblob://c?domain=azurite:10000&protocol=http&localemu=true", env))))
    assert.equals("https://cdn.example.com", base(assert(open_url("azblob://c?domain=cdn.example.com&cdn=true", env))))
    assert.equals("https://other.blob.core.windows.net",
      base(assert(open_url("azblob://c?storage_account=other", env))))
    local e2 = { AZURE_STORAGE_ACCOUNT = "acct", AZURE_STORAGE_KEY = KEY, AZURE_STORAGE_DOMAIN = "localhost:1",
      AZURE_STORAGE_PROTOCOL = "http" }
    assert.equals("http://localhost:1/acct", base(assert(open_url("azblob://c", e2))))
    assert.equals("/acct/c/a/b%20c", assert(open_url("azblob://c", e2)):path("a/b c"))
  end)

  it("takes credentials in gocloud's order", function()
    assert.equals("sharedkey", assert(open_url("azblob://c", { AZURE_STORAGE_ACCOUNT = "a", AZURE_STORAGE_KEY = KEY,
      AZURE_STORAGE_SAS_TOKEN = "sv=1" })).auth.kind)
    local st = assert(open_url("azblob://c", { AZURE_STORAGE_ACCOUNT = "a", AZURE_STORAGE_SAS_TOKEN = "?sv=1&sig=x",
      AZURE_STORAGE_CONNECTION_STRING = "UseDevelopmentStorage=true" }))
    assert.same({ kind = "sas", token = "sv=1&sig=x" }, st.auth)
    st = assert(open_url("azblob://c", { AZURE_STORAGE_CONNECTION_STRING = "DefaultEndpointsProtocol=http;AccountName="
      .. "devstoreaccount1;AccountKey=" .. KEY .. ";BlobEndpoint=http://127.0.0.1:10999/devstoreaccount1;" }))
    assert.equals("http://127.0.0.1:10999/devstoreaccount1", base(st))
    assert.equals("devstoreaccount1", st.auth.account)
    st = assert(open_url("azblob://c", { AZURE_STORAGEBLOB_CONNECTIONSTRING = "UseDevelopmentStorage=true" }))
    assert.equals("http://127.0.0.1:10000/devstoreaccount1", base(st))
  end)

  it("rejects bad options and missing credentials clearly", function()
    local st, err, code = open_url("azblob://c?regoin=x", env)
    assert.is_nil(st)
    assert.equals("INVALID", code)
    assert.matches('unknown query parameter "regoin"', err, 1, true)
    assert.equals("INVALID", select(3, open_url("azblob://c?protocol=ftp", env)))
    assert.equals("INVALID", select(3, open_url("azblob://c?localemu=maybe", env)))
    assert.equals("INVALID", select(3, open_url("azblob://", env)))
    st, err, code = open_url("azblob://c", {})
    assert.is_nil(st)
    assert.equals("UNAUTHORIZED", code)
    assert.matches("AZURE_STORAGE_CONNECTION_STRING", err, 1, true)
    assert.equals("INVALID", select(3, open_url("azblob://c", { AZURE_STORAGE_SAS_TOKEN = "sv=1" })))
  end)

  it("is what blob.open returns for azblob:// URLs", function()
    assert.is_table(blob.schemes)
    assert.equals("autopgo.blob.azblob", blob.schemes.azblob)
  end)
end)

describe("azblob store against Azurite", function()
  local env = services.get("azurite")
  local endpoint = env.AUTOPGO_TEST_AZURE_BLOB_ENDPOINT -- http://127.0.0.1:PORT/devstoreaccount1
  local domain = endpoint:match("^http://([^/]+)/")
  local account = env.AUTOPGO_TEST_AZURE_ACCOUNT
  local key_env = { AZURE_STORAGE_ACCOUNT = account, AZURE_STORAGE_KEY = env.AUTOPGO_TEST_AZURE_KEY }
  local container = "autopgo-spec-" .. crypto.hex(crypto.random(4))
  local base = ("azblob://%s?domain=%s&protocol=http"):format(container, domain)
  local created = false

  local function open(extra, e, opts)
    local st = assert(open_url(base .. (extra or ""), e or key_env, opts))
    if not created then
      assert(st:create_container())
      created = true
    end
    return st
  end

  require("tests.lua.blob.contract")("azblob:// (Azurite, Shared Key)", {
    open = function() return open("", nil, { page_size = 7 }) end,
    page_size = 7,
    large = 20 * 1024 * 1024, -- above the block size: staged blocks
  })

  it("works from Azurite's connection string", function()
    run(function()
      open()
      local cs = ("DefaultEndpointsProtocol=http;AccountName=%s;AccountKey=%s;BlobEndpoint=%s;"):format(account,
        env.AUTOPGO_TEST_AZURE_KEY, endpoint)
      local st = assert(open_url("azblob://" .. container, { AZURE_STORAGE_CONNECTION_STRING = cs }))
      assert.is_true(st:health())
      local put = assert(st:put("cs/one", "via connection string"))
      assert.equals("via connection string", assert(st:get("cs/one")).body)
      assert.equals(put.etag, assert(st:list("cs/"))[1].etag)
      assert(st:delete("cs/one"))
    end)
  end)

  it("works with a SAS token, and refuses a tampered one", function()
    run(function()
      open()
      local token = assert(sas.account_sas(account, env.AUTOPGO_TEST_AZURE_KEY, { permissions = "rwdlac",
        services = "b", resource_types = "sco", expiry = os.time() + 3600, protocol = "https,http" }))
      local sas_env = { AZURE_STORAGE_ACCOUNT = account, AZURE_STORAGE_SAS_TOKEN = "?" .. token }
      local st = open("", sas_env)
      assert(st:put("sas/one", "via SAS"))
      assert.equals("via SAS", assert(st:get("sas/one")).body)
      assert.equals(1, #assert(st:list("sas/")))
      local cs = ("BlobEndpoint=%s;SharedAccessSignature=%s"):format(endpoint, token)
      assert.equals("via SAS", assert(assert(open_url("azblob://" .. container,
        { AZURE_STORAGE_CONNECTION_STRING = cs })):get("sas/one")).body)
      local bad = open("", { AZURE_STORAGE_ACCOUNT = account,
        AZURE_STORAGE_SAS_TOKEN = token:gsub("sp=rwdlac", "sp=rwdlacup") })
      local res, err, code = bad:get("sas/one")
      assert.is_nil(res)
      assert.equals("UNAUTHORIZED", code, err)
      assert(st:delete("sas/one"))
    end)
  end)

  it("fails with a clear UNAUTHORIZED for a wrong account key", function()
    run(function()
      open()
      local wrong = crypto.base64_encode(crypto.random(64))
      local st = open("", { AZURE_STORAGE_ACCOUNT = account, AZURE_STORAGE_KEY = wrong })
      local res, err, code = st:put("denied", "x")
      assert.is_nil(res)
      assert.equals("UNAUTHORIZED", code)
      assert.matches("AuthorizationFailure", err, 1, true)
      assert.equals("UNAUTHORIZED", select(3, st:health()))
      local notb64 = open("", { AZURE_STORAGE_ACCOUNT = account, AZURE_STORAGE_KEY = "not base64!" })
      assert.equals("INVALID", select(3, notb64:get("x")))
    end)
  end)

  it("lists page by page with markers", function()
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

  it("commits staged blocks with one conditional block list", function()
    run(function()
      local st = open("", nil, { block_size = 4 * 1024 * 1024 })
      local data = big.pattern(9 * 1024 * 1024 + 3, 4)
      local v1 = assert(st:put("blocks/one", data))
      local got = assert(st:get("blocks/one"))
      assert.equals(v1.etag, got.etag)
      assert.equals(crypto.digest("sha256", data), crypto.digest("sha256", got.body))
      local res, _, code = st:put("blocks/one", data, { if_none_match = "*" })
      assert.is_nil(res)
      assert.equals("PRECONDITION_FAILED", code)
      local dir = support.tmpdir()
      res, _, code = st:put("blocks/one", { path = support.write_file(dir .. "/f", data .. "x") },
        { if_match = '"0x8DEADBEEF000000"' })
      assert.is_nil(res)
      assert.equals("PRECONDITION_FAILED", code)
      local v2 = assert(st:put("blocks/one", { path = dir .. "/f" }, { if_match = v1.etag }))
      assert.equals(v2.etag, assert(st:stat("blocks/one")).etag)
      assert.equals(#data + 1, assert(st:stat("blocks/one")).size)
      assert(st:delete("blocks/one"))
      support.rm_rf(dir)
    end, 120000)
  end)

  it("reports health, and NOT_FOUND for a container that does not exist", function()
    run(function()
      assert.is_true(open():health())
      local st = assert(open_url(("azblob://no-such-%s?domain=%s&protocol=http"):format(crypto.hex(crypto.random(3)),
        domain), key_env))
      local ok, err, code = st:health()
      assert.is_nil(ok)
      assert.equals("NOT_FOUND", code)
      assert.matches("does not exist", err, 1, true)
    end)
  end)

  it("keeps keys with URL metacharacters, escaping like gocloud", function()
    run(function()
      local st = open()
      local names = { "odd/a b+c=d&e?f#g%h", "odd/\u{263A}", "odd/back\\slash\"quote", "odd/x/../y", "odd/trailing/" }
      for i, k in ipairs(names) do assert(st:put(k, "v" .. i)) end
      for i, k in ipairs(names) do assert.equals("v" .. i, assert(st:get(k)).body, k) end
      local listed = {}
      for _, e in ipairs(assert(st:list("odd/"))) do listed[e.key] = true end
      for _, k in ipairs(names) do assert.is_true(listed[k], k) end
      assert.equals("v1", assert(st:get("odd/a b+c=d&e__0x3f__f__0x23__g__0x25__h")).body)
      assert.equals("v5", assert(st:get("odd/trailing__0x2f__")).body)
      for _, k in ipairs(names) do assert(st:delete(k)) end
    end)
  end)
end)

describe("azblob store retries", function()
  it("resumes a download that breaks off, from the same ETag", function()
    local body = big.pattern(200000, 3)
    local srv = flaky.start({ body = body, cut = 65537, version_header = "ETag", version = '"0x8DC0FFEE"' })
    run(function()
      local st = assert(open_url(("azblob://c?domain=127.0.0.1:%d&protocol=http"):format(srv.port),
        { AZURE_STORAGE_ACCOUNT = "devstoreaccount1", AZURE_STORAGE_KEY = KEY }, { deadline = 5 }))
      local parts = {}
      local got = assert(st:get("k", { sink = function(chunk) parts[#parts + 1] = chunk end }))
      assert.equals(body, table.concat(parts))
      assert.equals(#body, got.size)
      -- resumed where the sink stopped (the reset may lose bytes that were in flight)
      local from = tonumber(srv.requests[2].headers.range:match("^bytes=(%d+)%-$"))
      assert.is_true(from > 0 and from <= 65537, srv.requests[2].headers.range)
      assert.equals('"0x8DC0FFEE"', srv.requests[2].headers["if-match"])
    end)
    srv:close()
  end)
end)
