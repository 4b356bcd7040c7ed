-- Resident memory while a blob store streams 100+ MB in and out, measured in the plain build
-- (the Lua suite runs under ASan, whose quarantine makes resident memory meaningless): the
-- file store never holds the body, so the process grows by far less than the body's size.
local support = require "tests.lua.support"
local big = require "tests.lua.blob.big_body"
local blob = require "autopgo.blob"

describe("a blob store streaming 100+ MB (plain build)", function()
  it("keeps resident memory far below the body's size", function()
    assert.is_false(support.sanitized(), "this spec must run in the plain build")
    local dir = support.tmpdir()
    support.run(function()
      local store = assert(blob.open("file://" .. dir))
      local size = 100 * 1024 * 1024 + 99
      local result = assert(big.roundtrip(store, "big/hundred-mb", size))
      assert.equals(result.sent_sha256, result.got_sha256)
      assert.equals(size, result.got_bytes)
      assert.is_true(result.rss_growth < 32 * 1024 * 1024, ("resident memory grew by %d bytes for a %d byte body")
        :format(result.rss_growth, size))
    end, 120000)
    support.rm_rf(dir)
  end)
end)
