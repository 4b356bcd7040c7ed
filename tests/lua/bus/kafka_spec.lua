-- Specs for lua/autopgo/bus/kafka.lua against librdkafka's mock cluster running as a separate
-- daemon (tests/services/kafka.sh): gocloud URLs and KAFKA_BROKERS, keys and per-key order,
-- acks that commit, nack and redelivery, dead-lettering, sharing a group, hand-over of
-- unacknowledged work, the commit metadata that stops a new owner from redoing work, health.
local uv = require "luv"
local support = require "tests.lua.support"
local services = require "tests.lua.services"
local bus = require "autopgo.bus"
local async = require "autopgo.async"

local run = support.run

-- A group that notices a member leaving or dying within seconds (the default is 45 s).
local FAST = "&session.timeout.ms=6000&heartbeat.interval.ms=500"

local function reader(group, topic, opts)
  return assert(bus.reader(("kafka://%s?topic=%s%s"):format(group, topic, FAST), opts))
end

local function publish_all(topic, list)
  local w = assert(bus.writer("kafka://" .. topic))
  for _, m in ipairs(list) do assert(w:publish(m[2], { key = m[1] })) end
  w:close()
end

-- Receives n messages (or fails after timeout_ms), acking each unless keep is set.
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
  done.wait(timeout_ms or 20000)
  assert(not got.ack_error, got.ack_error)
  return got
end

-- Whether anything arrives within ms (the message is left unacknowledged).
local function nothing_within(r, ms)
  local got
  local co = async.spawn(function() got = r:receive() end)
  async.sleep(ms)
  if not got then
    -- leave the receiver parked; closing the reader wakes it
    return true, co
  end
  return false, got
end

describe("kafka bus", function()
  local restore_env
  setup(function() restore_env = services.setenv(services.get("kafka")) end)
  teardown(function() restore_env() end)

  require("tests.lua.bus.contract")("kafka://", {
    setup = function() return { topic = services.unique("t-contract"), group = services.unique("g-contract") } end,
    writer = function(ctx) return bus.writer("kafka://" .. ctx.topic) end,
    reader = function(ctx) return reader(ctx.group, ctx.topic) end,
    -- dies holding its message: nothing is waited for or committed
    kill = function(_, r)
      r.revoke_timeout_ms = 0
      return r:close()
    end,
    -- a group's members join (and leave) within seconds on the mock cluster
    timeout_ms = 30000,
    redelivery_timeout_ms = 60000,
  })

  it("takes the brokers from KAFKA_BROKERS, as gocloud.dev does", function()
    local saved = os.getenv("KAFKA_BROKERS")
    uv.os_unsetenv("KAFKA_BROKERS")
    local w, err, code = bus.writer("kafka://t")
    uv.os_setenv("KAFKA_BROKERS", saved)
    assert.is_nil(w)
    assert.equals("INVALID", code)
    assert.matches("KAFKA_BROKERS environment variable not set", err)
  end)

  it("rejects URLs it cannot use, naming the problem", function()
    local r, err, code = bus.reader("kafka://group")
    assert.is_nil(r)
    assert.equals("INVALID", code)
    assert.matches("no topic", err)
    r, err = bus.reader("kafka://group?topic=t&bogus=1")
    assert.is_nil(r)
    assert.matches('invalid query parameter "bogus"', err)
    r, err = bus.reader("kafka://g?topic=t&no.such.property=1")
    assert.is_nil(r)
    assert.matches("no.such.property", err)
    r, err, code = bus.reader("kafka://g?topic=t&offset=latest")
    assert.is_nil(r)
    assert.equals("INVALID", code)
    assert.matches('invalid value "latest" for query parameter offset', err)
  end)

  it("starts a new group where gocloud's offset= says: oldest reads what came before it joined", function()
    run(function()
      local topic = services.unique("t-offset")
      publish_all(topic, { { "k", "before" } })
      local old = assert(bus.reader(("kafka://%s?topic=%s&offset=oldest%s"):format(services.unique("g-old"), topic,
        FAST)))
      assert.equals("before", take(old, 1)[1].body)
      old:close()
      local new = assert(bus.reader(("kafka://%s?topic=%s&offset=newest%s"):format(services.unique("g-new"), topic,
        FAST)))
      local got = async.event()
      async.spawn(function() got.set(new:receive()) end)
      assert.is_nil(got.wait(5000)) -- joined meanwhile; "before" is not for it
      publish_all(topic, { { "k", "after" } })
      local m = assert(got.wait(20000), "nothing after the group joined")
      assert.equals("after", m.body)
      assert(m:ack())
      new:close()
    end, 60000)
  end)

  it("publishes with the app as key and receives the envelope back", function()
    run(function()
      local topic, group = services.unique("t-basic"), services.unique("g-basic")
      publish_all(topic, { { "app-a", '{"type":"profile.uploaded"}' } })
      local r = reader(group, topic)
      local got = take(r, 1)
      assert.equals(1, #got)
      assert.equals('{"type":"profile.uploaded"}', got[1].body)
      assert.equals("app-a", got[1].key)
      assert.equals(1, got[1].attempt)
      assert.matches("^" .. topic:gsub("%-", "%%-") .. "/%d+/0$", got[1].id)
      assert.is_true(got[1]:extend(30))
      r:close()
      assert.same({ nil, "CLOSED: the reader is closed", "CLOSED" }, { r:receive() })
    end, 60000)
  end)

  it("keeps the order of each key's messages", function()
    run(function()
      local topic, group = services.unique("t-order"), services.unique("g-order")
      local list = {}
      for i = 1, 60 do list[#list + 1] = { "app-" .. (i % 5), tostring(i) } end
      publish_all(topic, list)
      local r = reader(group, topic)
      local got = take(r, 60)
      assert.equals(60, #got)
      local last = {}
      for _, m in ipairs(got) do
        local n = tonumber(m.body)
        assert.is_true((last[m.key] or 0) < n, "out of order for " .. m.key)
        last[m.key] = n
      end
      r:close()
    end, 60000)
  end)

  it("commits acknowledged messages: the group does not see them again", function()
    run(function()
      local topic, group = services.unique("t-commit"), services.unique("g-commit")
      publish_all(topic, { { "a", "1" }, { "b", "2" }, { "c", "3" } })
      local r = reader(group, topic)
      assert.equals(3, #take(r, 3))
      r:close()
      publish_all(topic, { { "a", "4" } })
      local r2 = reader(group, topic)
      local got = take(r2, 1)
      assert.equals("4", got[1].body)
      assert.is_true((nothing_within(r2, 1500)))
      r2:close()
    end, 60000)
  end)

  it("redelivers a nacked message after the delay, counting attempts", function()
    run(function()
      local topic, group = services.unique("t-nack"), services.unique("g-nack")
      publish_all(topic, { { "a", "x" } })
      local r = reader(group, topic)
      local m = take(r, 1, nil, true)[1]
      local t0 = uv.now()
      assert.is_true(m:nack(0.5))
      local again = take(r, 1)[1]
      assert.is_true(uv.now() - t0 >= 450)
      assert.equals("x", again.body)
      assert.equals(2, again.attempt)
      assert.equals(m.id, again.id)
      assert.equals(1, r:stats().redelivered)
      r:close()
    end, 60000)
  end)

  it("drops (and commits) a message that keeps failing when there is no dead-letter topic", function()
    run(function()
      local topic, group = services.unique("t-poison"), services.unique("g-poison")
      publish_all(topic, { { "a", "not json" }, { "a", "fine" } })
      local r = reader(group, topic, { max_attempts = 2 })
      local seen = {}
      for _ = 1, 3 do
        local m = take(r, 1, nil, true)[1]
        seen[#seen + 1] = m.body .. "#" .. m.attempt
        if m.body == "fine" then assert(m:ack()) else assert.is_true(m:nack(0.1)) end
      end
      table.sort(seen)
      assert.same({ "fine#1", "not json#1", "not json#2" }, seen)
      assert.equals(1, r:stats().dead_lettered)
      r:close()
      local r2 = reader(group, topic)
      assert.is_true((nothing_within(r2, 1500)))
      r2:close()
    end, 60000)
  end)

  it("moves a message that keeps failing to the dead-letter topic when one is configured", function()
    run(function()
      local topic, group = services.unique("t-dlq"), services.unique("g-dlq")
      local dlt = topic .. ".dead"
      publish_all(topic, { { "app-x", "poison" } })
      local r = assert(bus.reader(("kafka://%s?topic=%s&dead_letter_topic=%s%s"):format(group, topic, dlt, FAST),
        { max_attempts = 1 }))
      local m = take(r, 1, nil, true)[1]
      assert.is_true(m:nack(0.1))
      r:close()
      local d = reader(services.unique("g-dlq-read"), dlt)
      local dead = take(d, 1)[1]
      assert.equals("poison", dead.body)
      assert.equals("app-x", dead.key)
      d:close()
    end, 60000)
  end)

  it("moves a rejected message to the dead-letter topic on its first attempt and commits it", function()
    run(function()
      local topic, group = services.unique("t-reject"), services.unique("g-reject")
      local dlt = topic .. ".dead"
      publish_all(topic, { { "app-x", "{not json" } })
      local r = assert(bus.reader(("kafka://%s?topic=%s&dead_letter_topic=%s%s"):format(group, topic, dlt, FAST)))
      local m = take(r, 1, nil, true)[1]
      assert.equals(1, m.attempt)
      assert.is_true(m:reject("INVALID: event is not JSON"))
      assert.equals(1, r:stats().dead_lettered)
      assert.equals(1, r:stats().acked)
      assert.is_true((nothing_within(r, 1000)))
      r:close()
      local r2 = reader(group, topic)
      assert.is_true((nothing_within(r2, 1500))) -- committed
      r2:close()
      local d = reader(services.unique("g-reject-read"), dlt)
      local dead = take(d, 1)[1]
      assert.equals("{not json", dead.body)
      assert.equals("app-x", dead.key)
      d:close()
    end, 60000)
  end)

  it("shares a group's partitions between two readers", function()
    run(function()
      local topic, group = services.unique("t-share"), services.unique("g-share")
      local a = reader(group, topic)
      local b = reader(group, topic)
      async.sleep(4000) -- both join before anything is published
      local list = {}
      for i = 1, 40 do list[#list + 1] = { "app-" .. i, tostring(i) } end
      publish_all(topic, list)
      local got_a, got_b = {}, {}
      async.all {
        function() got_a = take(a, 40, 8000) end,
        function() got_b = take(b, 40, 8000) end,
      }
      assert.equals(40, #got_a + #got_b)
      assert.is_true(#got_a > 0 and #got_b > 0, "one reader got nothing")
      a:close()
      b:close()
    end, 60000)
  end)

  it("hands unacknowledged work to the next reader, but not work that was done", function()
    run(function()
      local topic, group = services.unique("t-handover"), services.unique("g-handover")
      -- one key: both messages land in the same partition, in this order
      publish_all(topic, { { "app", "first" }, { "app", "second" } })
      local a = reader(group, topic)
      local got = take(a, 2, nil, true)
      assert.equals("first", got[1].body)
      assert.equals("second", got[2].body)
      -- "first" fails and waits for a retry; "second" is done. Then the reader goes away.
      assert.is_true(got[1]:nack(60))
      assert.is_true(got[2]:ack())
      a:close()
      -- the next member gets "first" again, and not "second" (listed in the commit metadata)
      local b = reader(group, topic)
      local again = take(b, 1)
      assert.equals("first", again[1].body)
      assert.is_true((nothing_within(b, 1500)))
      b:close()
    end, 60000)
  end)

  it("redelivers a message whose reader went away without settling it", function()
    run(function()
      local topic, group = services.unique("t-dies"), services.unique("g-dies")
      publish_all(topic, { { "app", "work" } })
      local a = reader(group, topic, { revoke_timeout = 1 })
      local m = take(a, 1, nil, true)[1]
      assert.equals("work", m.body)
      a:close() -- in flight and never settled
      local b = reader(group, topic)
      assert.equals("work", take(b, 1)[1].body)
      b:close()
    end, 60000)
  end)

  it("reports health from the brokers", function()
    run(function()
      local w = assert(bus.writer("kafka://" .. services.unique("t-health")))
      assert.is_true(w:health())
      assert.equals("kafka://" .. w.topic, w.name)
      w:close()
      local ok, err, code = w:health()
      assert.is_nil(ok)
      assert.equals("CLOSED", code)
      assert.matches("closed", err)
      -- a cluster nobody listens on
      local port = support.free_port()
      local dead = assert(bus.writer("kafka://t", { brokers = "127.0.0.1:" .. port }))
      ok, err, code = dead:health()
      assert.is_nil(ok)
      assert.equals("UNAVAILABLE", code)
      assert.matches("^UNAVAILABLE: kafka brokers unreachable", err)
      dead:close()
    end, 60000)
  end)
end)
