-- Specs for lua/autopgo/bus/pubsub.lua. The URL forms are checked everywhere; delivery is checked
-- against Google's Pub/Sub emulator (tests/services/pubsub.sh), which is preinstalled on some
-- machines only and cannot be installed from apt or npm: where it is missing those specs are
-- reported as pending, "skipped, emulator not installed" (never as passed).
local uv = require "luv"
local support = require "tests.lua.support"
local services = require "tests.lua.services"
local bus = require "autopgo.bus"
local async = require "autopgo.async"
local pubsub = require "autopgo.bus.pubsub"

local run = support.run

describe("gcppubsub bus URLs", function()
  it("names topics and subscriptions the way gocloud.dev does", function()
    local w = assert(bus.writer("gcppubsub://projects/my-proj/topics/events"))
    assert.equals("gcppubsub://projects/my-proj/topics/events", w.name)
    local legacy = assert(bus.writer("gcppubsub://my-proj/events"))
    assert.equals("gcppubsub://projects/my-proj/topics/events", legacy.name)
    local r, err, code = bus.reader("gcppubsub://projects/my-proj/topics/events")
    assert.is_nil(r)
    assert.equals("INVALID", code)
    assert.matches("names topics, but subscriptions are needed", err)
    r, err = bus.reader("gcppubsub://projects/p/subscriptions/s?bogus=1")
    assert.is_nil(r)
    assert.matches('unknown query parameter "bogus"', err)
    r, err = bus.writer("gcppubsub://projects/p")
    assert.is_nil(r)
    assert.matches("want gcppubsub://projects/<project>/topics/<name>", err)
  end)

  it("goes to the emulator without credentials when PUBSUB_EMULATOR_HOST is set", function()
    local w = assert(bus.writer("gcppubsub://projects/p/topics/t",
      { getenv = function(k) return k == "PUBSUB_EMULATOR_HOST" and "127.0.0.1:8085" or nil end }))
    assert.equals("http://127.0.0.1:8085", w.c.base)
    assert.is_nil(w.c.tokens)
    local real = assert(bus.writer("gcppubsub://projects/p/topics/t", { getenv = function() return nil end }))
    assert.equals("https://pubsub.googleapis.com", real.c.base)
    assert.is_not_nil(real.c.tokens)
  end)
end)

local why_not = services.unavailable("pubsub") -- e.g. "skipped, emulator not installed (<path>)"
if why_not then
  describe("gcppubsub bus against the Pub/Sub emulator", function()
    pending(why_not)
  end)
  return
end

describe("gcppubsub bus against the Pub/Sub emulator", function()
  local svc, restore_env
  setup(function()
    svc = services.get("pubsub")
    restore_env = services.setenv(svc)
  end)
  teardown(function() restore_env() end)

  -- Creates a topic and an ordered subscription (extra: more subscription settings); returns the
  -- writer and reader URLs.
  local function topic_and_sub(extra)
    local name = services.unique("autopgo")
    local tc = { base = "http://" .. svc.PUBSUB_EMULATOR_HOST, path = "projects/test-proj/topics/" .. name,
      name = "setup" }
    assert(pubsub.call(tc, "PUT", nil, {}))
    local cfg = { topic = tc.path, ackDeadlineSeconds = 10, enableMessageOrdering = true }
    for k, v in pairs(extra or {}) do cfg[k] = v end
    local sc = { base = tc.base, path = "projects/test-proj/subscriptions/" .. name, name = "setup" }
    assert(pubsub.call(sc, "PUT", nil, cfg))
    return "gcppubsub://" .. tc.path, "gcppubsub://" .. sc.path, tc.path
  end

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
    done.wait(timeout_ms or 15000)
    assert(not got.ack_error, got.ack_error)
    return got
  end

  local function pending_receive(r)
    local ev = async.event()
    async.spawn(function() ev.set(r:receive()) end)
    return ev
  end

  require("tests.lua.bus.contract")("gcppubsub://", {
    setup = function()
      local w, r = topic_and_sub()
      return { w = w, r = r }
    end,
    writer = function(ctx) return bus.writer(ctx.w) end,
    reader = function(ctx) return bus.reader(ctx.r) end,
    -- dies: stops extending what it holds and hands nothing back (redelivered after 10 s)
    kill = function(_, r)
      for m in pairs(r.held) do
        if m.keepalive then m.keepalive() end
        m.settled = true
      end
      r.held, r.inflight = {}, 0
      return r:close()
    end,
    timeout_ms = 20000,
    redelivery_timeout_ms = 60000,
  })

  it("uses the app as ordering key and attribute", function()
    run(function()
      local wu, ru = topic_and_sub()
      local w = assert(bus.writer(wu))
      for i = 1, 10 do assert(w:publish("a-" .. i, { key = "app-a" })) end
      local r = assert(bus.reader(ru))
      local got = take(r, 10)
      assert.equals(10, #got)
      for i, m in ipairs(got) do
        assert.equals("a-" .. i, m.body)
        assert.equals("app-a", m.key)
      end
      r:close()
    end, 60000)
  end)

  it("keeps a held message past the ack deadline and redelivers it after a nack's delay", function()
    run(function()
      local wu, ru = topic_and_sub()
      assert(assert(bus.writer(wu)):publish("work", { key = "k" }))
      local r = assert(bus.reader(ru))
      local m = take(r, 1, nil, true)[1]
      local later = pending_receive(r)
      assert.is_nil((later.wait(15000))) -- 1.5 ack deadlines
      local t0 = uv.now()
      assert.is_true(m:nack(2))
      local again = later.wait(20000)
      assert.equals("work", again.body)
      assert.is_true(uv.now() - t0 >= 1900)
      assert.equals(2, again.attempt)
      assert.is_true(again:ack())
      r:close()
    end, 90000)
  end)

  it("leaves a failing message to the subscription's dead-letter topic", function()
    run(function()
      local _, dead_r, dead_topic = topic_and_sub()
      -- (the emulator forwards nothing to a dead-letter topic from an ordered subscription)
      local wu, ru = topic_and_sub { enableMessageOrdering = false,
        deadLetterPolicy = { deadLetterTopic = dead_topic, maxDeliveryAttempts = 5 } }
      assert(assert(bus.writer(wu)):publish("poison", { key = "app" }))
      local r = assert(bus.reader(ru, { max_attempts = 1 }))
      for attempt = 1, 5 do
        local m = take(r, 1, 20000, true)[1]
        assert.equals(attempt, m.attempt) -- counted by Pub/Sub (deliveryAttempt)
        assert.is_true(m:nack(0))
      end
      -- the next delivery attempt (while the reader still pulls) goes to the dead-letter topic
      local d = assert(bus.reader(dead_r))
      local m = take(d, 1, 30000)[1]
      assert.equals("poison", m.body)
      assert.is_nil((pending_receive(r).wait(1000)))
      r:close()
      d:close()
    end, 120000)
  end)

  it("acknowledges a message that keeps failing when there is no dead-letter topic", function()
    run(function()
      local wu, ru = topic_and_sub()
      assert(assert(bus.writer(wu)):publish("poison", { key = "app" }))
      local r = assert(bus.reader(ru, { max_attempts = 2 }))
      for _ = 1, 2 do assert.is_true(take(r, 1, 20000, true)[1]:nack(0)) end
      assert.equals(1, r:stats().dead_lettered)
      assert.is_nil((pending_receive(r).wait(3000)))
      r:close()
    end, 60000)
  end)

  it("reports health from the topic and subscription", function()
    run(function()
      local wu, ru = topic_and_sub()
      assert.is_true(assert(bus.writer(wu)):health())
      local r = assert(bus.reader(ru))
      assert.is_true(r:health())
      r:close()
      local missing = assert(bus.writer("gcppubsub://projects/test-proj/topics/" .. services.unique("none")))
      local ok, err, code = missing:health()
      assert.is_nil(ok)
      assert.equals("NOT_FOUND", code)
      assert.is_string(err)
    end, 60000)
  end)
end)
