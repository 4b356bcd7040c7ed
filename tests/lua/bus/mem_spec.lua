-- Specs of lua/autopgo/bus/mem.lua: the shared event bus contract, plus groups and ack deadlines.
local support = require "tests.lua.support"
local bus = require "autopgo.bus"
local crypto = require("autopgo.core").crypto

local function topic()
  return "mem://contract-" .. crypto.hex(crypto.random(6))
end

require("tests.lua.bus.contract")("mem://", {
  setup = function() return { url = topic() } end,
  writer = function(ctx) return bus.writer(ctx.url) end,
  reader = function(ctx) return bus.reader(ctx.url) end,
  timeout_ms = 5000,
  redelivery_timeout_ms = 5000,
})

describe("mem:// event bus", function()
  it("gives every group every message", function()
    support.run(function()
      local url = topic()
      local a = assert(bus.reader(url .. "?group=a"))
      local b = assert(bus.reader(url .. "?group=b"))
      local w = assert(bus.writer(url))
      assert(w:publish("hello", { key = "k" }))
      local ma, mb = assert(a:receive()), assert(b:receive())
      assert.equals("hello", ma.body)
      assert.equals("hello", mb.body)
      ma:ack()
      mb:ack()
      a:close()
      b:close()
    end)
  end)

  it("delivers again what a reader held past its ack deadline, unless extended", function()
    support.run(function()
      local url = topic()
      local r = assert(bus.reader(url .. "?ack_deadline=50ms"))
      local w = assert(bus.writer(url))
      assert(w:publish("slow", { key = "k" }))
      local first = assert(r:receive())
      local again = assert(r:receive())
      assert.equals("slow", again.body)
      assert.equals(2, again.attempt)
      assert.is_true(again:extend(30))
      assert(w:publish("next", { key = "other" }))
      local other = assert(r:receive())
      assert.equals("next", other.body)
      assert.is_true(first:ack()) -- a stale delivery: harmless
      other:ack()
      again:ack()
      r:close()
    end)
  end)

  it("holds later messages of a key back while a nacked one waits out its delay", function()
    support.run(function()
      local url = topic()
      local r = assert(bus.reader(url))
      local w = assert(bus.writer(url))
      assert(w:publish("one", { key = "k" }))
      assert(w:publish("two", { key = "k" }))
      local m = assert(r:receive())
      assert.equals("one", m.body)
      m:nack(0.05)
      local order = {}
      for _ = 1, 2 do
        local x = assert(r:receive())
        order[#order + 1] = x.body
        x:ack()
      end
      assert.same({ "one", "two" }, order)
      r:close()
    end)
  end)

  it("rejects a bad ack_deadline", function()
    local r, err, code = bus.reader("mem://x?ack_deadline=soon")
    assert.is_nil(r)
    assert.equals("INVALID", code)
    assert.matches("ack_deadline", err)
  end)
end)
