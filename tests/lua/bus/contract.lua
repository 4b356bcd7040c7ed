-- The event bus contract (the interface in lua/autopgo/bus/init.lua) as shared specs: every bus
-- spec calls this with a factory, so mem://, kafka://, nats://, awssqs://, gcppubsub://, azuresb://
-- ... deliver the way the worker relies on (at least once, per-key order, redelivery of what was
-- not acknowledged, a rejected message settled, readers of one group sharing the work).
--
-- usage, in tests/lua/bus/<bus>_spec.lua:
--   require("tests.lua.bus.contract")("nats://", {
--     setup = function() return ctx end,          -- runs in a coroutine before each spec: a fresh
--                                                 -- topic/subject/queue so specs do not interfere
--     writer = function(ctx) return writer end,   -- a writer publishing to ctx's topic
--     reader = function(ctx) return reader end,   -- a NEW reader in ctx's group on every call
--     kill = function(ctx, reader) end,           -- optional: make a reader die without acking
--                                                 -- (default: reader:close())
--     teardown = function(ctx) end,               -- optional, after each spec
--     timeout_ms = 15000,                         -- optional: how long a delivery may take
--     redelivery_timeout_ms = 60000,              -- optional: how long redelivery after a dead
--                                                 -- reader or a nack may take
--     rejected_comes_back = true,                 -- optional: the bus dead-letters by delivery
--                                                 -- count, so a rejected message is redelivered
--   })
-- Waiting is bounded by those timeouts; no spec asserts how fast anything is.
-- Required (not a spec file itself), so busted's functions come from its API, not the spec's globals.
local busted = require "busted"
local assert = require "luassert"
local describe, it = busted.describe, busted.it
local before_each, after_each = busted.before_each, busted.after_each
local support = require "tests.lua.support"
local async = require "autopgo.async"
local crypto = require("autopgo.core").crypto

local run = support.run

-- Runs reader:receive() in its own coroutine and waits at most ms for it. Returns the message,
-- or nil, "TIMEOUT" (the receive keeps waiting and ends when the reader is closed).
local function receive_within(reader, ms)
  local ev = async.event()
  async.spawn(function()
    ev.set(table.pack(reader:receive()))
  end)
  local res = ev.wait(ms)
  if not res then return nil, "TIMEOUT" end
  return table.unpack(res, 1, res.n)
end

return function(name, factory)
  local timeout = factory.timeout_ms or 15000
  local redelivery = factory.redelivery_timeout_ms or 60000
  local total = 4 * redelivery + 60000

  local function kill(ctx, reader)
    if factory.kill then return factory.kill(ctx, reader) end
    return reader:close()
  end

  describe(name .. " event bus contract", function()
    local ctx, opened

    -- Everything a spec opens through these helpers is closed after it, even when it fails.
    local function writer()
      local w = assert(factory.writer(ctx))
      opened[#opened + 1] = w
      return w
    end
    local function reader()
      local r = assert(factory.reader(ctx))
      opened[#opened + 1] = r
      return r
    end

    before_each(function()
      opened = {}
      ctx = run(function() return factory.setup and factory.setup() or {} end, 60000)
    end)

    after_each(function()
      run(function()
        for _, o in ipairs(opened) do pcall(o.close, o) end
        if factory.teardown then factory.teardown(ctx) end
      end, 60000)
    end)

    it("has names and reports healthy ends", function()
      run(function()
        local w, r = writer(), reader()
        assert.is_string(w.name)
        assert.is_string(r.name)
        assert.is_true(w:health())
        assert.is_true(r:health())
      end, total)
    end)

    it("delivers a published body and key", function()
      run(function()
        local w, r = writer(), reader()
        local body = '{"id":"x","type":"profile.uploaded","payload":{"app":"caf\195\169 \\"q\\""}}'
        assert.is_true(w:publish(body, { key = "my-app" }))
        local msg = assert(receive_within(r, timeout))
        assert.equals(body, msg.body)
        assert.equals("my-app", msg.key)
        assert.is_not_nil(msg.id)
        assert.is_true(msg:extend(30))
        assert.is_true(msg:ack())
      end, total)
    end)

    it("does not deliver an acknowledged message again", function()
      run(function()
        local w, r = writer(), reader()
        assert(w:publish("first", { key = "k" }))
        local m1 = assert(receive_within(r, timeout))
        assert.equals("first", m1.body)
        assert(m1:ack())
        assert(w:publish("second", { key = "k" }))
        local m2 = assert(receive_within(r, timeout))
        assert.equals("second", m2.body)
        assert(m2:ack())
      end, total)
    end)

    it("keeps the order of messages with the same key", function()
      run(function()
        local w, r = writer(), reader()
        for i = 1, 10 do
          assert(w:publish("a-" .. i, { key = "app-a" }))
          assert(w:publish("b-" .. i, { key = "app-b" }))
        end
        local seen = { a = {}, b = {} }
        for _ = 1, 20 do
          local msg = assert(receive_within(r, timeout))
          local k, i = msg.body:match("^(%a)%-(%d+)$")
          seen[k][#seen[k] + 1] = tonumber(i)
          assert(msg:ack())
        end
        assert.same({ 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 }, seen.a)
        assert.same({ 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 }, seen.b)
      end, total)
    end)

    it("redelivers a nacked message", function()
      run(function()
        local w, r = writer(), reader()
        assert(w:publish("try again", { key = "k" }))
        local m1 = assert(receive_within(r, timeout))
        assert.is_true(m1:nack(0))
        local m2 = assert(receive_within(r, redelivery))
        assert.equals("try again", m2.body)
        if m1.attempt and m2.attempt then assert.is_true(m2.attempt > m1.attempt) end
        assert(m2:ack())
      end, total)
    end)

    it("settles a rejected message and goes on with the next", function()
      run(function()
        local w, r = writer(), reader()
        assert(w:publish("poison", { key = "k" }))
        local msg = assert(receive_within(r, timeout))
        assert.equals("poison", msg.body)
        assert.is_true(msg:reject("INVALID: cannot be handled"))
        assert(w:publish("next", { key = "k" }))
        -- buses that dead-letter by delivery count hand it back at once until the count is reached
        local again = 0
        msg = assert(receive_within(r, redelivery))
        while msg.body == "poison" and factory.rejected_comes_back do
          again = again + 1
          assert.is_true(msg:reject("INVALID: cannot be handled"))
          msg = assert(receive_within(r, redelivery))
        end
        assert.equals("next", msg.body)
        assert(msg:ack())
        if not factory.rejected_comes_back then
          assert.equals("TIMEOUT", select(2, receive_within(r, 500)))
        end
        assert.is_true(again < 50)
      end, total)
    end)

    it("shares the work between two readers of one group", function()
      run(function()
        local w = writer()
        local r1, r2 = reader(), reader()
        for i = 1, 16 do assert(w:publish("job-" .. i, { key = "key-" .. i })) end
        local got, count = {}, 0
        local all_in = async.event()
        local function record(msg)
          if not got[msg.body] then
            got[msg.body] = true
            count = count + 1
          end
          if count == 16 then all_in.set() end
        end
        -- r1 takes one message and sits on it: r2 must still get work.
        local held = assert(receive_within(r1, timeout))
        record(held)
        local other = assert(receive_within(r2, timeout),
          "the second reader got nothing while the first held a message")
        assert.are_not.equal(held.body, other.body)
        record(other)
        assert(other:ack())
        assert(held:ack())
        -- both drain the rest (redeliveries may repeat a message: at least once)
        local function consume(r)
          while true do
            local msg = r:receive()
            if not msg then return end
            record(msg)
            msg:ack()
          end
        end
        async.spawn(consume, r1)
        async.spawn(consume, r2)
        assert.is_true(all_in.wait(2 * timeout) == true, "not every message was delivered")
        for i = 1, 16 do assert.is_true(got["job-" .. i], "job-" .. i .. " was never delivered") end
      end, total)
    end)

    it("gives a second reader the message a first reader died holding", function()
      run(function()
        local w = writer()
        local readers = { reader(), reader() }
        local marker = "orphan-" .. crypto.hex(crypto.random(4))
        assert(w:publish(marker, { key = "k" }))
        -- Whichever reader gets it (on a partitioned bus only the partition's owner can) dies
        -- holding it; the other must get it.
        local first = async.event()
        local second = async.event()
        for i, r in ipairs(readers) do
          async.spawn(function()
            local msg = r:receive()
            if not msg then return end
            if not first.is_set then first.set(i, msg) else second.set(i, msg) end
          end)
        end
        local holder, taken = first.wait(timeout)
        assert(holder, "nobody received the message")
        assert.equals(marker, taken.body)
        kill(ctx, readers[holder])
        local other, again = second.wait(redelivery)
        assert(other, "the message was not delivered again")
        assert.are_not.equal(holder, other)
        assert.equals(marker, again.body)
        assert(again:ack())
      end, total)
    end)

    it("returns CLOSED from receive once the reader is closed", function()
      run(function()
        local r = reader()
        local pending = async.event()
        async.spawn(function() pending.set(table.pack(r:receive())) end)
        r:close()
        local res = assert(pending.wait(timeout), "receive did not return after close")
        assert.is_nil(res[1])
        assert.equals("CLOSED", res[3])
        local again = table.pack(r:receive())
        assert.is_nil(again[1])
        assert.equals("CLOSED", again[3])
      end, total)
    end)
  end)
end
