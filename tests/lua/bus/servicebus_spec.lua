-- Specs for lua/autopgo/bus/servicebus.lua against the Service Bus REST peer of the test suite
-- (tests/services/servicebus.sh; no Service Bus emulator runs here): gocloud URLs and
-- SERVICEBUS_CONNECTION_STRING, SAS tokens the server verifies, the shared contract on a queue
-- and on a topic subscription, partition key = app, lock renewal while a message is held,
-- abandon after a nack's delay, dead-lettering past MaxDeliveryCount, health and bad keys.
local uv = require "luv"
local support = require "tests.lua.support"
local services = require "tests.lua.services"
local bus = require "autopgo.bus"
local async = require "autopgo.async"
local url = require "autopgo.url"
local sb = require "autopgo.bus.servicebus"

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

local function pending(r)
  local ev = async.event()
  async.spawn(function() ev.set(r:receive()) end)
  return ev
end

-- Creates an entity over the management REST API (PUT with an Atom entry).
local function create(path, description)
  local s = { cs = assert(sb.parse_connection_string(os.getenv("SERVICEBUS_CONNECTION_STRING"))), path = path,
    name = "setup", now = os.time }
  local entry = ('<entry xmlns="http://www.w3.org/2005/Atom"><content type="application/xml">%s</content></entry>')
    :format(description)
  assert(sb.call(s, "PUT", path, { body = entry, headers = { ["content-type"] = "application/atom+xml" } }))
end

local function queue(opts)
  local name = services.unique("q")
  create("/" .. name, ("<QueueDescription><LockDuration>PT%dS</LockDuration><MaxDeliveryCount>%d</MaxDeliveryCount>"
    .. "</QueueDescription>"):format(opts and opts.lock or 5, opts and opts.max or 10))
  return "azuresb://" .. name
end

local function topic_with_subscription()
  local name, sub = services.unique("t"), "workers"
  create("/" .. name, "<TopicDescription></TopicDescription>")
  create(("/%s/subscriptions/%s"):format(name, sub),
    "<SubscriptionDescription><LockDuration>PT5S</LockDuration></SubscriptionDescription>")
  return "azuresb://" .. name, ("azuresb://%s?subscription=%s"):format(name, sub)
end

-- A reader dies: it stops renewing what it holds and gives nothing back.
local function kill(_, r)
  for m in pairs(r.held) do
    if m.keepalive then m.keepalive() end
    m.settled = true
  end
  r.held, r.inflight = {}, 0
  return r:close()
end

describe("azuresb bus", function()
  local restore_env
  setup(function() restore_env = services.setenv(services.get("servicebus")) end)
  teardown(function() restore_env() end)

  require("tests.lua.bus.contract")("azuresb:// (queue)", {
    setup = function() return { url = queue() } end,
    writer = function(ctx) return bus.writer(ctx.url) end,
    reader = function(ctx) return bus.reader(ctx.url) end,
    kill = kill,
    rejected_comes_back = true, -- abandoned until MaxDeliveryCount dead-letters it
  })

  require("tests.lua.bus.contract")("azuresb:// (topic subscription)", {
    setup = function()
      local w, r = topic_with_subscription()
      return { w = w, r = r }
    end,
    writer = function(ctx) return bus.writer(ctx.w) end,
    reader = function(ctx) return bus.reader(ctx.r) end,
    kill = kill,
    rejected_comes_back = true,
  })

  it("takes the namespace from SERVICEBUS_CONNECTION_STRING, as gocloud.dev does", function()
    local w, err, code = bus.writer("azuresb://t", { getenv = function() return nil end })
    assert.is_nil(w)
    assert.equals("INVALID", code)
    assert.matches("SERVICEBUS_CONNECTION_STRING environment variable not set", err)
    w, err = bus.writer("azuresb://t?subscription=s")
    assert.is_nil(w)
    assert.matches('unknown query parameter "subscription"', err)
    local cs = assert(sb.parse_connection_string(
      "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=k;SharedAccessKey=s3cret"))
    assert.equals("https://ns.servicebus.windows.net", cs.endpoint)
  end)

  it("signs SAS tokens the way Service Bus documents them", function()
    local token = sb.sas_token("https://ns.servicebus.windows.net/t", "key", "secret", 1700000000)
    local sr, sig, se, skn = token:match("^SharedAccessSignature sr=([^&]+)&sig=([^&]+)&se=(%d+)&skn=(.+)$")
    assert.equals("https%3A%2F%2Fns.servicebus.windows.net%2Ft", sr)
    assert.equals("1700000000", se)
    assert.equals("key", skn)
    -- HMAC-SHA256("secret", sr .. "\n" .. se), base64, URL-encoded
    local crypto = require("autopgo.core").crypto
    assert.equals(url.escape(crypto.base64_encode(crypto.hmac("sha256", "secret", sr .. "\n" .. se))), sig)
  end)

  it("sends the app as PartitionKey and keeps a held message locked", function()
    run(function()
      local u = queue { lock = 2 }
      assert(assert(bus.writer(u)):publish('{"id":"e1"}', { key = "app-a" }))
      local r1 = assert(bus.reader(u))
      local m = take(r1, 1, nil, true)[1]
      assert.equals('{"id":"e1"}', m.body)
      assert.equals("app-a", m.key)
      assert.equals("e1", m.id)
      assert.equals(1, m.attempt)
      local r2 = assert(bus.reader(u))
      local later = pending(r2)
      assert.is_nil((later.wait(5000))) -- 2.5 lock durations
      assert.is_true(m:ack())
      r1:close()
      r2:close()
    end, 30000)
  end)

  it("abandons a nacked message after the delay, counted by Service Bus", function()
    run(function()
      local u = queue { lock = 2 }
      assert(assert(bus.writer(u)):publish("retry", { key = "a" }))
      local r = assert(bus.reader(u))
      local m = take(r, 1, nil, true)[1]
      local t0 = uv.now()
      assert.is_true(m:nack(3)) -- longer than the lock: it is renewed meanwhile
      local again = take(r, 1, 10000)[1]
      assert.equals("retry", again.body)
      assert.equals(2, again.attempt)
      assert.is_true(uv.now() - t0 >= 2900)
      r:close()
    end, 30000)
  end)

  it("lets Service Bus dead-letter a message that keeps failing", function()
    run(function()
      local u = queue { max = 3 }
      assert(assert(bus.writer(u)):publish("poison", { key = "app" }))
      local r = assert(bus.reader(u, { max_attempts = 1 }))
      for attempt = 1, 3 do
        local m = take(r, 1, nil, true)[1]
        assert.equals(attempt, m.attempt)
        assert.is_true(m:nack(60)) -- past max_attempts: abandoned at once anyway
      end
      assert.is_nil((pending(r).wait(1500)))
      r:close()
      local dlq = assert(bus.reader(u .. "/$DeadLetterQueue"))
      assert.equals("poison", take(dlq, 1)[1].body)
      dlq:close()
    end, 30000)
  end)

  it("lets Service Bus dead-letter a rejected message once its delivery count runs out", function()
    run(function()
      local u = queue { max = 3 }
      assert(assert(bus.writer(u)):publish("not json", { key = "app" }))
      local r = assert(bus.reader(u))
      for attempt = 1, 3 do
        local m = take(r, 1, nil, true)[1]
        assert.equals(attempt, m.attempt)
        assert.is_true(m:reject("malformed event")) -- abandoned at once, no back-off
      end
      assert.is_nil((pending(r).wait(1500)))
      r:close()
      local dlq = assert(bus.reader(u .. "/$DeadLetterQueue"))
      assert.equals("not json", take(dlq, 1)[1].body)
      dlq:close()
    end, 30000)
  end)

  it("reports health, and refuses a wrong key", function()
    run(function()
      local u = queue()
      assert.is_true(assert(bus.writer(u)):health())
      local missing = assert(bus.writer("azuresb://" .. services.unique("none")))
      local ok, err, code = missing:health()
      assert.is_nil(ok)
      assert.equals("NOT_FOUND", code)
      assert.matches("HTTP 404", err)
      local bad = os.getenv("SERVICEBUS_CONNECTION_STRING"):gsub("SharedAccessKey=[^;]+", "SharedAccessKey=wrong")
      local w = assert(bus.writer(u, { connection_string = bad }))
      ok, err, code = w:publish("x", { key = "a" })
      assert.is_nil(ok)
      assert.equals("UNAUTHORIZED", code)
      assert.matches("signature does not match", err)
    end, 30000)
  end)
end)
