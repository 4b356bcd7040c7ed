-- Specs for lua/autopgo/bus/sns.lua against the SNS emulator of serverless-offline-sns
-- (tests/services/sns.sh): gocloud's awssns:///<arn> URLs, publishing with the app as the
-- autopgo-key attribute (and MessageGroupId on FIFO topics), delivery to an HTTP subscriber
-- (a sink served here), writer-only, health and failures.
local support = require "tests.lua.support"
local services = require "tests.lua.services"
local bus = require "autopgo.bus"
local async = require "autopgo.async"
local httpd = require "autopgo.httpd"
local json = require "autopgo.json"
local awsquery = require "autopgo.bus.awsquery"
local credentials = require "autopgo.aws.credentials"
local xml = require "autopgo.xml"

local run = support.run

describe("awssns bus", function()
  local port, restore_env
  setup(function()
    local svc = services.get("sns")
    port = tonumber(svc.SNS_PORT)
    restore_env = services.setenv(svc)
  end)
  teardown(function() restore_env() end)

  local function client()
    return assert(awsquery.new { service = "sns", version = "2010-03-31", region = "us-east-1",
      creds = credentials.new {}, endpoint = "http://127.0.0.1:" .. port, name = "sns-test" })
  end

  -- Creates a topic with an HTTP subscriber; returns the awssns:// URL and the notifications the
  -- subscriber got (a list, filled as they arrive) and the sink server.
  local function topic_with_sink(name)
    local c = client()
    local doc = assert(c:call("CreateTopic", { { "Name", name } }))
    local arn = xml.find_text(doc, "CreateTopicResult/TopicArn")
    local got, arrived = {}, async.event()
    local srv = assert(httpd.listen { host = "127.0.0.1", port = 0, handler = function(req, res)
      local note = json.decode(req:body())
      got[#got + 1] = note
      arrived.set()
      res:status(200):send("")
    end })
    assert(c:call("Subscribe", { { "TopicArn", arn }, { "Protocol", "http" },
      { "Endpoint", ("http://127.0.0.1:%d/sink"):format(srv.port) } }))
    local u = ("awssns:///%s?endpoint=http://127.0.0.1:%d"):format(arn, port)
    return u, got, function(n)
      for _ = 1, 100 do
        if #got >= n then return true end
        arrived = async.event()
        arrived.wait(100)
      end
      return #got >= n
    end, srv
  end

  it("publishes the body with the app as the autopgo-key attribute", function()
    run(function()
      local u, got, wait_for, srv = topic_with_sink(services.unique("orders"))
      local w = assert(bus.writer(u))
      assert.equals("awssns:///arn:aws:sns:us-east-1:123456789012:" .. u:match(":(orders%-[%w%-]+)%?"), w.name)
      local body = '{"id":"e1","type":"profile.uploaded","payload":{"app":"app-a"}}'
      assert.is_true(w:publish(body, { key = "app-a" }))
      assert.is_true(wait_for(1))
      assert.equals("Notification", got[1].Type)
      assert.equals(body, got[1].Message)
      assert.equals("app-a", got[1].MessageAttributes["autopgo-key"].Value)
      assert.equals(1, w.stats.published)
      srv:close()
    end)
  end)

  it("uses the app as MessageGroupId on a FIFO topic", function()
    run(function()
      local u, got, wait_for, srv = topic_with_sink(services.unique("events") .. ".fifo")
      local w = assert(bus.writer(u))
      assert.is_true(w:publish('{"id":"e2"}', { key = "app-b" }))
      assert.is_true(wait_for(1))
      assert.equals('{"id":"e2"}', got[1].Message)
      assert.equals("app-b", got[1].MessageGroupId)
      srv:close()
    end)
  end)

  it("takes the region from the ARN and refuses to read", function()
    local w = assert(bus.writer("awssns:///arn:aws:sns:eu-west-1:123456789012:t"))
    assert.equals("eu-west-1", w.client.region)
    assert.equals("https", w.client.scheme)
    assert.equals("sns.eu-west-1.amazonaws.com", w.client.host)
    local r, err, code = bus.reader("awssns:///arn:aws:sns:eu-west-1:123456789012:t")
    assert.is_nil(r)
    assert.equals("UNSUPPORTED", code)
    assert.matches("cannot be used as an event reader", err)
    r, err, code = bus.writer("awssns:///not-an-arn")
    assert.is_nil(r)
    assert.equals("INVALID", code)
    assert.matches("want awssns:///arn:aws:sns:", err)
  end)

  it("fails publish and health clearly when SNS cannot be reached", function()
    run(function()
      local w = assert(bus.writer(("awssns:///arn:aws:sns:us-east-1:1:t?endpoint=http://127.0.0.1:%d")
        :format(support.free_port())))
      local ok, err, code = w:publish("x", { key = "a" })
      assert.is_nil(ok)
      assert.equals("UNAVAILABLE", code)
      assert.is_string(err)
      assert.equals(1, w.stats.failed)
      local _
      ok, _, code = w:health()
      assert.is_nil(ok)
      assert.equals("UNAVAILABLE", code)
    end, 120000)
  end)
end)
