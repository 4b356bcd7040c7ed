-- Specs of lua/autopgo/blob/mem.lua: the shared blob store contract, plus sharing by name.
local support = require "tests.lua.support"
local blob = require "autopgo.blob"
local crypto = require("autopgo.core").crypto

require("tests.lua.blob.contract")("mem://", {
  open = function() return blob.open("mem://contract") end,
  in_memory = true,
})

describe("mem:// blob store", function()
  it("shares a bucket between opens of the same name and keeps other names apart", function()
    support.run(function()
      local name = "shared-" .. crypto.hex(crypto.random(4))
      local a = assert(blob.open("mem://" .. name))
      local b = assert(blob.open("mem://" .. name))
      local other = assert(blob.open("mem://" .. name .. "-other"))
      assert(a:put("k", "v"))
      assert.equals("v", assert(b:get("k")).body)
      assert.equals("NOT_FOUND", select(3, other:get("k")))
    end)
  end)
end)
