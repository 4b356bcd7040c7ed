-- Specs for lua/autopgo/bus/nats.lua against a real nats-server with JetStream
-- (tests/services/nats.sh): gocloud URLs and NATS_SERVER_URL, core NATS queue groups (and that
-- core NATS loses what is published while no reader is connected), JetStream durable pull
-- consumers: kept messages, per-key order, acks, server-side redelivery with attempt counts,
-- ack-wait extension, dead-lettering, de-duplication, shared load and hand-over at close.
local uv = require "luv"
local support = require "tests.lua.support"
local services = require "tests.lua.services"
local bus = require "autopgo.bus"
local async = require "autopgo.async"

local run = support.run

local function take(r, n, timeout_ms, keep)
  local got = {}
  local done = async.event()
  async.spawn(function()
    while #got < n do
      local m = r:receive()
      if not m then break end
      got[#got + 1] = m
      if not keep then
        local ok, err = m:ack()
        if not ok then got.ack_error = err end
      end
    end
    done.set()
  end)
  done.wait(timeout_ms or 10000)
  assert(not got.ack_error, got.ack_error)
  return got
end

local function nothing_within(r, ms)
  local got
  async.spawn(function() got = r:receive() end)
  async.sleep(ms)
  return got == nil
end

local function js(subject, extra)
  return ("nats://%s?jetstream=true%s"):format(subject, extra or "")
end

describe("nats bus", function()
  local restore_env
  setup(function() restore_env = services.setenv(services.get("nats")) end)
  teardown(function() restore_env() end)

  it("takes the server from NATS_SERVER_URL, as gocloud.dev does", function()
    local saved = os.getenv("NATS_SERVER_URL")
    uv.os_unsetenv("NATS_SERVER_URL")
    local w, err, code = bus.writer("nats://subject")
    uv.os_setenv("NATS_SERVER_URL", saved)
    assert.is_nil(w)
    assert.equals("INVALID", code)
    assert.matches("NATS_SERVER_URL environment variable not set", err)
  end)

  it("rejects parameters that do not apply, naming them", function()
    local w, err, code = bus.writer("nats://subject?queue=q")
    assert.is_nil(w)
    assert.equals("INVALID", code)
    assert.matches('invalid query parameter "queue"', err)
    local r
    r, err = bus.reader("nats://s?jetstream=true&ack_wait=soon")
    assert.is_nil(r)
    assert.matches("ack_wait", err)
    run(function()
      local ok = assert(bus.writer("nats://subject?natsv2"))
      ok:close()
    end)
  end)

  it("fails clearly when the server cannot be reached", function()
    run(function()
      local w = assert(bus.writer("nats://s", { server_url = "nats://127.0.0.1:" .. support.free_port() }))
      local ok, err, code = w:publish("x")
      assert.is_nil(ok)
      assert.equals("UNAVAILABLE", code)
      assert.matches("No server available", err)
      ok, err, code = w:health()
      assert.is_nil(ok)
      assert.equals("UNAVAILABLE", code)
      assert.matches("No server available", err)
      w:close()
    end)
  end)

  describe("core NATS", function()
    it("delivers to one member of a queue group, with the key", function()
      run(function()
        local subject = services.unique("core.basic")
        local a = assert(bus.reader("nats://" .. subject .. "?queue=workers"))
        local b = assert(bus.reader("nats://" .. subject .. "?queue=workers"))
        local w = assert(bus.writer("nats://" .. subject))
        assert(a:health())
        assert(b:health())
        for i = 1, 20 do assert(w:publish(tostring(i), { key = "app-" .. i % 3 })) end
        local got_a, got_b = {}, {}
        async.all {
          function() got_a = take(a, 20, 1500) end,
          function() got_b = take(b, 20, 1500) end,
        }
        assert.equals(20, #got_a + #got_b)
        assert.is_true(#got_a > 0 and #got_b > 0)
        local m = got_a[1]
        assert.equals("app-" .. tonumber(m.body) % 3, m.key)
        assert.is_true(w:health())
        a:close()
        b:close()
        w:close()
      end)
    end)

    it("loses what is published while no reader is connected (use JetStream)", function()
      run(function()
        local subject = services.unique("core.lost")
        local w = assert(bus.writer("nats://" .. subject))
        assert(w:publish("nobody listens"))
        async.sleep(300) -- sent and dropped by the server before anyone subscribes
        local r = assert(bus.reader("nats://" .. subject .. "?queue=workers"))
        assert(r:health())
        assert.is_true(nothing_within(r, 500))
        r:close()
        w:close()
      end)
    end)

    it("redelivers a nacked message from memory", function()
      run(function()
        local subject = services.unique("core.nack")
        local r = assert(bus.reader("nats://" .. subject))
        local w = assert(bus.writer("nats://" .. subject))
        assert(r:health())
        assert(w:publish("again"))
        local m = take(r, 1, nil, true)[1]
        assert.is_true(m:nack(0.2))
        local m2 = take(r, 1)[1]
        assert.equals("again", m2.body)
        assert.equals(2, m2.attempt)
        r:close()
        w:close()
      end)
    end)
  end)

  describe("JetStream", function()
    require("tests.lua.bus.contract")("nats:// (JetStream)", {
      setup = function() return { subject = services.unique("js.contract") } end,
      writer = function(ctx) return bus.writer(js(ctx.subject)) end,
      reader = function(ctx) return bus.reader(js(ctx.subject, "&queue=workers")) end,
      -- dies holding its message: nothing handed back, the server redelivers after the ack wait
      kill = function(_, r)
        r.close_timeout_ms = 0
        r.held = {}
        return r:close()
      end,
    })

    it("keeps messages published before any reader existed, in order per key", function()
      run(function()
        local subject = services.unique("js.keep")
        local w = assert(bus.writer(js(subject)))
        for i = 1, 30 do assert(w:publish(('{"id":"%d"}'):format(i), { key = "app-" .. i % 4 })) end
        local r = assert(bus.reader(js(subject, "&queue=workers")))
        local got = take(r, 30)
        assert.equals(30, #got)
        local last = {}
        for _, m in ipairs(got) do
          local n = tonumber(m.body:match("%d+"))
          assert.is_true((last[m.key] or 0) < n)
          last[m.key] = n
          assert.equals(1, m.attempt)
        end
        r:close()
        -- acknowledged: a new member of the same durable gets nothing
        local r2 = assert(bus.reader(js(subject, "&queue=workers")))
        assert.is_true(nothing_within(r2, 1500))
        r2:close()
        w:close()
      end, 30000)
    end)

    it("stores a message once when the publish is retried with the same envelope id", function()
      run(function()
        local subject = services.unique("js.dedup")
        local w = assert(bus.writer(js(subject)))
        local body = '{"id":"e9e23fa8-9d46-4c66-9190-2f64eacd73a2","type":"profile.uploaded"}'
        assert(w:publish(body, { key = "a" }))
        assert(w:publish(body, { key = "a" }))
        local r = assert(bus.reader(js(subject, "&queue=w")))
        assert.equals(1, #take(r, 1))
        assert.is_true(nothing_within(r, 1000))
        r:close()
        w:close()
      end, 30000)
    end)

    it("redelivers a nacked message after the delay, counted by the server", function()
      run(function()
        local subject = services.unique("js.nack")
        local w = assert(bus.writer(js(subject)))
        assert(w:publish("retry me", { key = "a" }))
        local r = assert(bus.reader(js(subject, "&queue=w")))
        local m = take(r, 1, nil, true)[1]
        local t0 = uv.now()
        assert.is_true(m:nack(0.5))
        local again = take(r, 1)[1]
        assert.is_true(uv.now() - t0 >= 450)
        assert.equals("retry me", again.body)
        assert.equals(2, again.attempt)
        assert.equals(m.id, again.id)
        r:close()
        w:close()
      end, 30000)
    end)

    it("keeps a message it holds past the ack wait, for as long as the work goes on", function()
      run(function()
        local subject = services.unique("js.hold")
        local w = assert(bus.writer(js(subject)))
        assert(w:publish("long merge", { key = "a" }))
        local r = assert(bus.reader(js(subject, "&queue=w&ack_wait=1s")))
        local m = take(r, 1, nil, true)[1]
        assert.is_true(nothing_within(r, 3000)) -- three ack waits: not handed out again
        assert.is_true(m:ack())
        r:close()
        w:close()
      end, 30000)
    end)

    it("redelivers an unsettled message after the ack wait, unless the work is extended", function()
      run(function()
        local subject = services.unique("js.ackwait")
        local w = assert(bus.writer(js(subject)))
        assert(w:publish("slow", { key = "a" }))
        assert(w:publish("forgotten", { key = "b" }))
        -- max_extension = 0: only explicit extend() keeps a message (as if its reader hung)
        local r = assert(bus.reader(js(subject, "&queue=w&ack_wait=1s"), { max_extension = 0 }))
        local got = take(r, 2, nil, true)
        local slow = got[1].body == "slow" and got[1] or got[2]
        -- keep "slow" locked for 2.5 s by extending it; "forgotten" is redelivered
        local again
        async.all {
          function()
            for _ = 1, 5 do
              async.sleep(500)
              assert.is_true(slow:extend(1))
            end
          end,
          function() again = take(r, 1, 2400)[1] end,
        }
        assert.equals("forgotten", again.body)
        assert.equals(2, again.attempt)
        assert.is_true(slow:ack())
        assert.is_true(nothing_within(r, 1500))
        r.close_timeout_ms = 100 -- the first copy of "forgotten" was never settled
        r:close()
        w:close()
      end, 30000)
    end)

    it("moves a message that keeps failing to the dead-letter subject", function()
      run(function()
        local subject = services.unique("js.poison")
        local dead = subject .. "-dead"
        local w = assert(bus.writer(js(subject)))
        assert(w:publish("not json", { key = "app" }))
        local r = assert(bus.reader(js(subject, "&queue=w&dead_letter=" .. dead), { max_attempts = 2 }))
        for attempt = 1, 2 do
          local m = take(r, 1, nil, true)[1]
          assert.equals(attempt, m.attempt)
          assert.is_true(m:nack(0.1))
        end
        assert.equals(1, r:stats().dead_lettered)
        assert.is_true(nothing_within(r, 1000)) -- terminated, not redelivered
        r:close()
        local d = assert(bus.reader(js(dead, "&queue=audit")))
        local m = take(d, 1)[1]
        assert.equals("not json", m.body)
        assert.equals("app", m.key)
        d:close()
        w:close()
      end, 30000)
    end)

    it("moves a rejected message to the dead-letter subject at once and terminates it", function()
      run(function()
        local subject = services.unique("js.reject")
        local dead = subject .. "-dead"
        local w = assert(bus.writer(js(subject)))
        local d = assert(bus.reader(js(dead, "&queue=audit")))
        assert(w:publish("{not json", { key = "app" }))
        local r = assert(bus.reader(js(subject, "&queue=w&dead_letter=" .. dead)))
        local m = take(r, 1, nil, true)[1]
        assert.equals(1, m.attempt)
        assert.is_true(m:reject("INVALID: event is not JSON"))
        assert.equals(1, r:stats().dead_lettered)
        assert.is_true(nothing_within(r, 1000)) -- terminated, not redelivered
        r:close()
        local got = take(d, 1)[1]
        assert.equals("{not json", got.body)
        assert.equals("app", got.key)
        d:close()
        w:close()
      end, 30000)
    end)

    it("shares a durable between readers and hands back what a closing reader held", function()
      run(function()
        local subject = services.unique("js.share")
        local w = assert(bus.writer(js(subject)))
        local a = assert(bus.reader(js(subject, "&queue=w"), { max_buffered = 4 }))
        local b = assert(bus.reader(js(subject, "&queue=w"), { max_buffered = 4 }))
        for i = 1, 40 do assert(w:publish(tostring(i), { key = "k" .. i })) end
        local got_a, got_b = {}, {}
        async.all {
          function() got_a = take(a, 40, 3000) end,
          function() got_b = take(b, 40, 3000) end,
        }
        assert.equals(40, #got_a + #got_b)
        assert.is_true(#got_a > 0 and #got_b > 0)
        a:close()
        b:close()
        -- a reader takes one and goes away without settling it: the next reader gets it
        -- straight away (not after the 30 s ack wait)
        assert(w:publish("held"))
        a = assert(bus.reader(js(subject, "&queue=w")))
        local held = take(a, 1, 3000, true)[1]
        assert.equals("held", held.body)
        a.close_timeout_ms = 100
        a:close()
        local c = assert(bus.reader(js(subject, "&queue=w")))
        local again = take(c, 1, 3000)[1]
        assert.equals("held", again.body)
        assert.equals(2, again.attempt)
        c:close()
        w:close()
      end, 30000)
    end)
  end)
end)
