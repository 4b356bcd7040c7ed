-- Specs of autopgo.bytes (core/lua/bytes.c): views of bytes held once in C, read by C bindings in
-- place (crypto.digest, fs.write_new_async, the validator) and by Lua in copied pieces.
local support = require "tests.lua.support"
local async = require "autopgo.async"
local core = require "autopgo.core"
local bytes, crypto = core.bytes, core.crypto

describe("autopgo.bytes", function()
  it("counts and copies pieces as string.sub does", function()
    local s = "0123456789"
    local b = bytes.from_string(s)
    assert.is_true(bytes.is(b))
    assert.is_false(bytes.is(s))
    assert.equals(10, #b)
    for _, ij in ipairs { { 1, -1 }, { 3, 5 }, { -3, -1 }, { 0, 2 }, { 8, 100 }, { 6, 2 }, { -100, 3 } } do
      assert.equals(s:sub(ij[1], ij[2]), b:sub(ij[1], ij[2]))
    end
    assert.equals(s, b:sub())
    assert.matches("autopgo.bytes %(10 bytes%)", tostring(b))
  end)

  it("makes views that share the bytes, and outlive the view they came from", function()
    local b = bytes.from_string("hello, world")
    local v = b:view(8, -1)
    assert.equals(5, #v)
    assert.equals("world", v:sub())
    assert.equals("orl", v:view(2, 4):sub())
    b:release()
    assert.equals("world", v:sub(), "a view holds its own reference")
    local _, err, code = b:sub()
    assert.equals("CLOSED", code)
    assert.matches("released", err)
    assert.equals(0, #b)
  end)

  it("is read in place by C bindings, on the loop and on the thread pool", function()
    local data = ("abc"):rep(100000)
    local b = bytes.from_string(data)
    assert.equals(crypto.digest("sha256", data), crypto.digest("sha256", b))
    local dir = support.tmpdir()
    support.run(function()
      local path = dir .. "/out"
      local pending = async.event()
      local info, err
      local v = b:view(2, -2)
      core.fs.write_new_async(path, v, function(e, i) info, err = i, e; pending.set() end)
      -- every Lua hold is gone: the work's reader reference keeps the bytes until it is done
      v:release()
      b:release()
      collectgarbage()
      pending.wait(10000)
      assert.is_nil(err)
      assert.equals(#data - 2, info.size)
      assert.equals(data:sub(2, -2), support.read_file(path))
    end)
    support.rm_rf(dir)
  end)

  it("refuses what is not a string or bytes where bytes are read", function()
    assert.has_error(function() crypto.digest("sha256", {}) end)
    local b = bytes.from_string("x")
    b:release()
    assert.has_error(function() crypto.digest("sha256", b) end)
  end)
end)
