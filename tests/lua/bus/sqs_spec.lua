-- Specs for lua/autopgo/bus/sqs.lua against sqslite (tests/services/sqs.sh, with the visibility,
-- receipt-handle and batch-delete behaviour of SQS restored; see tests/services/sqs-launch.js):
-- gocloud URLs, the shared contract on a standard and a FIFO queue, message groups keyed by app,
-- visibility kept while a message is held, nack with delay, the redrive policy's dead-letter
-- queue, deletion after max_attempts without one, SNS envelopes, health.
local uv = require "luv"
local support = require "tests.lua.support"
local services = require "tests.lua.services"
local bus = require "autopgo.bus"
local async = require "autopgo.async"
local url = require "autopgo.url"
local awsquery = require "autopgo.bus.awsquery"
local credentials = require "autopgo.aws.credentials"

local run = support.run

local port

local function client()
  return assert(awsquery.new { service = "sqs", version = "2012-11-05", region = "us-east-1",
    creds = credentials.new {}, endpoint = "http://127.0.0.1:" .. port, name = "sqs-test" })
end

-- Creates a queue (name, { Attribute = value }) and returns its awssqs:// URL.
local function create_queue(name, attrs)
  local params = { { "QueueName", name } }
  local i = 0
  for k, v in pairs(attrs or {}) do
    i = i + 1
    params[#params + 1] = { ("Attribute.%d.Name"):format(i), k }
    params[#params + 1] = { ("Attribute.%d.Value"):format(i), v }
  end
  assert(client():call("CreateQueue", params))
  return ("awssqs://localhost:%d/queues/%s?region=us-east-1&disable_https=true"):format(port, name)
end

local function send_raw(queue_url, body)
  local u = assert(url.parse(queue_url))
  assert(client():call("SendMessage", { { "QueueUrl", ("http://localhost:%d%s"):format(port, u.path) },
    { "MessageBody", body } }))
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
  done.wait(timeout_ms or 10000)
  assert(not got.ack_error, got.ack_error)
  return got
end

-- One pending receive whose result can be waited for later: pending.wait(ms) returns the
-- message, or nil when nothing came within ms (the receive goes on).
local function pending(r)
  local ev = async.event()
  async.spawn(function() ev.set(r:receive()) end)
  return ev
end

local function nothing_within(r, ms)
  local p = pending(r)
  return p.wait(ms) == nil, p
end

-- A reader dies: it stops extending what it holds and gives nothing back.
local function kill(_, r)
  for m in pairs(r.held) do
    if m.keepalive then m.keepalive() end
    m.settled = true
  end
  r.held = {}
  r.inflight = 0
  return r:close()
end

describe("awssqs bus", function()
  local restore_env
  setup(function()
    local svc = services.get("sqs")
    port = tonumber(svc.SQS_PORT)
    restore_env = services.setenv(svc)
  end)
  teardown(function() restore_env() end)

  require("tests.lua.bus.contract")("awssqs:// (standard queue)", {
    setup = function() return { url = create_queue(services.unique("contract"), { VisibilityTimeout = "2" }) } end,
    writer = function(ctx) return bus.writer(ctx.url) end,
    reader = function(ctx) return bus.reader(ctx.url) end,
    kill = kill,
  })

  require("tests.lua.bus.contract")("awssqs:// (FIFO queue)", {
    setup = function()
      local name = services.unique("contract") .. ".fifo"
      return { url = create_queue(name, { VisibilityTimeout = "2", FifoQueue = "true" }) }
    end,
    writer = function(ctx) return bus.writer(ctx.url) end,
    reader = function(ctx) return bus.reader(ctx.url) end,
    kill = kill,
  })

  it("rejects URLs it cannot use, naming the problem", function()
    local r, err, code = bus.reader("awssqs://sqs.us-east-1.amazonaws.com")
    assert.is_nil(r)
    assert.equals("INVALID", code)
    assert.matches("want awssqs://", err)
    r, err = bus.reader("awssqs://h/1/q?bogus=1")
    assert.is_nil(r)
    assert.matches('unknown query parameter "bogus"', err)
    r, err = bus.writer("awssqs://h/1/q?raw=true")
    assert.is_nil(r)
    assert.matches('unknown query parameter "raw"', err)
    for _, bad in ipairs { "waittime=21s", "waittime=-1s", "waittime=soon", "nacklazy=maybe", "anonymous=2",
      "s3ForcePathStyle=yes please" } do
      r, err, code = bus.reader("awssqs://h/1/q?" .. bad)
      assert.is_nil(r, bad)
      assert.equals("INVALID", code)
      assert.matches("for query parameter " .. bad:match("^[^=]+"), err, 1, true)
    end
    r, err = bus.writer("awssqs://h/1/q?waittime=1s")
    assert.is_nil(r)
    assert.matches('unknown query parameter "waittime"', err)
  end)

  it("takes gocloud's anonymous=true (unsigned) and s3ForcePathStyle on any AWS URL", function()
    run(function()
      local u = create_queue(services.unique("anon"))
      local no_creds = { get = function() return nil, "UNAUTHORIZED: no credentials here", "UNAUTHORIZED" end,
        region = function() return nil end }
      local w = assert(bus.writer(u, { credentials = no_creds }))
      local ok, _, code = w:publish("signed")
      assert.is_nil(ok)
      assert.equals("UNAUTHORIZED", code)
      w = assert(bus.writer(u .. "&anonymous=true&s3ForcePathStyle=true", { credentials = no_creds }))
      assert.is_true(w:publish("unsigned"))
      local r = assert(bus.reader(u .. "&anonymous=true&waittime=0s", { credentials = no_creds }))
      assert.equals(0, r.s.wait)
      assert.equals("unsigned", take(r, 1)[1].body)
      r:close()
    end)
  end)

  it("leaves a nacked message to its visibility timeout with nacklazy=true", function()
    run(function()
      local u = create_queue(services.unique("lazy"), { VisibilityTimeout = "3" })
      local w = assert(bus.writer(u))
      assert(w:publish("lazy"))
      local r = assert(bus.reader(u .. "&nacklazy=true&waittime=1s"))
      assert.equals(1, r.s.wait)
      local m = take(r, 1, nil, true)[1]
      local t0 = uv.now()
      assert.is_true(m:nack(0))
      local again = take(r, 1, 15000)[1]
      assert.equals("lazy", again.body)
      assert.is_true(uv.now() - t0 >= 1000, "came back at once, as a nack without nacklazy does")
      r:close()
    end, 30000)
  end)

  it("groups a FIFO queue's messages by app: one app's next event waits for the one in flight", function()
    run(function()
      local u = create_queue(services.unique("groups") .. ".fifo", { FifoQueue = "true", VisibilityTimeout = "30" })
      local w = assert(bus.writer(u))
      assert(w:publish('{"id":"a1"}', { key = "app-a" }))
      assert(w:publish('{"id":"a2"}', { key = "app-a" }))
      assert(w:publish('{"id":"b1"}', { key = "app-b" }))
      local r = assert(bus.reader(u, { max_buffered = 1 }))
      local a1 = take(r, 1, nil, true)[1]
      assert.equals('{"id":"a1"}', a1.body)
      assert.equals("app-a", a1.key)
      local b1 = take(r, 1, nil, true)[1]
      assert.equals('{"id":"b1"}', b1.body) -- a2 waits while a1 is in flight
      assert.is_true(b1:ack())
      local quiet, next_msg = nothing_within(r, 1000)
      assert.is_true(quiet)
      assert.is_true(a1:ack())
      local a2 = next_msg.wait(10000)
      assert.equals('{"id":"a2"}', a2.body)
      assert.is_true(a2:ack())
      r:close()
    end, 30000)
  end)

  it("keeps a held message invisible past the visibility timeout, and redelivers it after a nack", function()
    run(function()
      local u = create_queue(services.unique("hold"), { VisibilityTimeout = "2" })
      local w = assert(bus.writer(u))
      assert(w:publish("work", { key = "a" }))
      local r1 = assert(bus.reader(u))
      local m = take(r1, 1, 5000, true)[1]
      assert.equals("work", m.body)
      local r2 = assert(bus.reader(u))
      local quiet, later2 = nothing_within(r2, 5000) -- 2.5 visibility timeouts
      assert.is_true(quiet)
      local later1 = pending(r1)
      local first = async.event()
      async.spawn(function() first.set(later1.wait(10000)) end)
      async.spawn(function() first.set(later2.wait(10000)) end)
      local t0 = uv.now()
      assert.is_true(m:nack(1))
      local again = first.wait(10000)
      assert.equals("work", again.body)
      assert.is_true(uv.now() - t0 >= 900)
      assert.is_true(again.attempt >= 2)
      assert.is_true(again:ack())
      r1:close()
      r2:close()
    end, 30000)
  end)

  it("leaves a failing message to the redrive policy's dead-letter queue", function()
    run(function()
      local dlq_name = services.unique("dead")
      local dlq = create_queue(dlq_name)
      local policy = ('{"deadLetterTargetArn":"arn:aws:sqs:us-east-1:queues:%s","maxReceiveCount":"2"}')
        :format(dlq_name)
      local u = create_queue(services.unique("redrive"), { VisibilityTimeout = "30", RedrivePolicy = policy })
      local w = assert(bus.writer(u))
      assert(w:publish("poison", { key = "app" }))
      local r = assert(bus.reader(u, { max_attempts = 1 }))
      for attempt = 1, 2 do
        local m = take(r, 1, nil, true)[1]
        assert.equals(attempt, m.attempt)
        assert.is_true(m:nack(0))
      end
      assert.is_true(nothing_within(r, 1500))
      r:close()
      local d = assert(bus.reader(dlq))
      local m = take(d, 1)[1]
      assert.equals("poison", m.body)
      assert.equals("app", m.key)
      d:close()
    end, 30000)
  end)

  it("hands a rejected message back at once, so the redrive policy dead-letters it", function()
    run(function()
      local dlq_name = services.unique("dead")
      local dlq = create_queue(dlq_name)
      local policy = ('{"deadLetterTargetArn":"arn:aws:sqs:us-east-1:queues:%s","maxReceiveCount":"2"}')
        :format(dlq_name)
      local u = create_queue(services.unique("reject"), { VisibilityTimeout = "30", RedrivePolicy = policy })
      local w = assert(bus.writer(u))
      assert(w:publish("{not json", { key = "app" }))
      local r = assert(bus.reader(u))
      for attempt = 1, 2 do
        local m = take(r, 1, nil, true)[1]
        assert.equals(attempt, m.attempt)
        assert.is_true(m:reject("INVALID: event is not JSON"))
      end
      assert.is_true(nothing_within(r, 1500))
      r:close()
      local d = assert(bus.reader(dlq))
      assert.equals("{not json", take(d, 1)[1].body)
      d:close()
    end, 30000)
  end)

  it("deletes a message that keeps failing when the queue has no dead-letter queue", function()
    run(function()
      local u = create_queue(services.unique("nodlq"), { VisibilityTimeout = "30" })
      local w = assert(bus.writer(u))
      assert(w:publish("poison", { key = "app" }))
      local r = assert(bus.reader(u, { max_attempts = 2 }))
      for _ = 1, 2 do assert.is_true(take(r, 1, nil, true)[1]:nack(0)) end
      assert.equals(1, r:stats().dead_lettered)
      assert.is_true(nothing_within(r, 1500))
      r:close()
    end, 30000)
  end)

  it("unwraps SNS notifications unless raw=true", function()
    run(function()
      local u = create_queue(services.unique("fromsns"))
      local note = '{"Type":"Notification","MessageId":"1","TopicArn":"arn:aws:sns:us-east-1:1:t",'
        .. '"Message":"{\\"id\\":\\"e1\\"}","MessageAttributes":{"autopgo-key":{"Type":"String","Value":"app-x"}}}'
      send_raw(u, note)
      local r = assert(bus.reader(u))
      local m = take(r, 1)[1]
      assert.equals('{"id":"e1"}', m.body)
      assert.equals("app-x", m.key)
      r:close()
      send_raw(u, note)
      local raw = assert(bus.reader(u .. "&raw=true"))
      assert.equals(note, take(raw, 1)[1].body)
      raw:close()
    end, 30000)
  end)

  it("reports health from the queue", function()
    run(function()
      local u = create_queue(services.unique("health"))
      local w = assert(bus.writer(u))
      assert.is_true(w:health())
      local missing = assert(bus.writer(("awssqs://localhost:%d/queues/%s?region=us-east-1&disable_https=true")
        :format(port, services.unique("missing"))))
      local ok, err, code = missing:health()
      assert.is_nil(ok)
      assert.equals("NOT_FOUND", code)
      assert.matches("NonExistentQueue", err)
      local dead = assert(bus.writer(("awssqs://localhost:%d/queues/q?region=us-east-1&disable_https=true")
        :format(support.free_port())))
      ok, err, code = dead:health()
      assert.is_nil(ok)
      assert.equals("UNAVAILABLE", code)
      assert.is_string(err)
    end, 60000)
  end)
end)
