-- Resident memory while each streaming blob store (file://, s3:// against Ceph RGW, gs:// against
-- the GCS emulator, azblob:// against Azurite, redis:// against redis-server) moves 100+ MB in and
-- out, measured in the plain build: the Lua suite runs under ASan, whose quarantine makes resident
-- memory meaningless, so the blob contract (tests/lua/blob/contract.lua) can only bound the Lua
-- heap there. A store that held the body would grow by about its size; these must stay far below.
local support = require "tests.lua.support"
local services = require "tests.lua.services"
local big = require "tests.lua.blob.big_body"
local blob = require "autopgo.blob"
local url = require "autopgo.url"
local crypto = require("autopgo.core").crypto

local size = 100 * 1024 * 1024 + 99
-- Multipart parts and staged blocks may be buffered one or two at a time, never the body.
local bound = 48 * 1024 * 1024

local function env_of(t) return function(k) return t[k] end end
local function unique(what) return "autopgo-mem-" .. what .. "-" .. crypto.hex(crypto.random(4)) end

-- Each store as its spec in tests/lua/blob opens it, against the same real service.
local stores = {
  { "file://", function(dir) return assert(blob.open("file://" .. dir)) end },
  { "s3:// (Ceph RGW)", function()
    local env = services.get("rgw")
    local st = assert(blob.open(("s3://%s?endpoint=%s&use_path_style=true&region=us-east-1")
      :format(unique("s3"), url.escape(env.AUTOPGO_TEST_S3_ENDPOINT)), {
      home = "/nonexistent",
      getenv = env_of { AWS_ACCESS_KEY_ID = env.AUTOPGO_TEST_S3_ACCESS_KEY,
        AWS_SECRET_ACCESS_KEY = env.AUTOPGO_TEST_S3_SECRET_KEY, AWS_EC2_METADATA_DISABLED = "true" },
    }))
    assert(st:create_bucket())
    return st
  end },
  { "gs:// (GCS emulator)", function()
    local env = services.get("gcs")
    return assert(blob.open("gs://" .. unique("gs"), {
      home = "/nonexistent", getenv = env_of { STORAGE_EMULATOR_HOST = env.STORAGE_EMULATOR_HOST } }))
  end },
  { "azblob:// (Azurite)", function()
    local env = services.get("azurite")
    local domain = env.AUTOPGO_TEST_AZURE_BLOB_ENDPOINT:match("^http://([^/]+)/")
    local st = assert(blob.open(("azblob://%s?domain=%s&protocol=http"):format(unique("az"), domain), {
      getenv = env_of { AZURE_STORAGE_ACCOUNT = env.AUTOPGO_TEST_AZURE_ACCOUNT,
        AZURE_STORAGE_KEY = env.AUTOPGO_TEST_AZURE_KEY },
    }))
    assert(st:create_container())
    return st
  end },
  { "redis:// (redis-server)", function()
    local env = services.get("redis")
    return assert(blob.open(env.REDIS_URL .. "?prefix=" .. unique("redis") .. "/"))
  end },
}

describe("a blob store streaming 100+ MB (plain build)", function()
  for _, s in ipairs(stores) do
    it(s[1] .. " keeps resident memory far below the body's size", function()
      assert.is_false(support.sanitized(), "this spec must run in the plain build")
      local dir = support.tmpdir()
      support.run(function()
        local store = s[2](dir)
        local key = "big/hundred-mb"
        local result = assert(big.roundtrip(store, key, size))
        assert.equals(result.sent_sha256, result.got_sha256)
        assert.equals(size, result.got_bytes)
        assert(store:delete(key))
        if store.close then store:close() end
        assert.is_true(result.rss_growth < bound, ("%s: resident memory grew by %d bytes for a %d byte body")
          :format(s[1], result.rss_growth, size))
      end, 600000)
      support.rm_rf(dir)
    end)
  end
end)
