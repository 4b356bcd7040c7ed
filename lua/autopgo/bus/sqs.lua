-- AWS SQS event bus (query protocol over autopgo.http, SigV4), with gocloud.dev's URLs:
--   awssqs://sqs.us-east-2.amazonaws.com/123456789012/my-queue?region=us-east-2   writer and reader
-- The queue URL is https://<host><path> (http:// with disable_https=true or disableSSL=true);
-- requests go to endpoint=..., AWS_ENDPOINT_URL_SQS or AWS_ENDPOINT_URL when set, else to the
-- queue URL's host. Credentials and region come the way the AWS tools find them
-- (autopgo.aws.credentials: env, shared files with profile=, web identity, ECS, IMDSv2).
--
-- On a FIFO queue (name ending in .fifo) the app is the MessageGroupId, so SQS hands out an
-- app's events one at a time and in order, and the envelope id is the MessageDeduplicationId.
-- The app also travels as the message attribute autopgo-key. Readers long-poll (waittime=20s, at
-- most 20 s; nacklazy=true: a nack leaves the message to its visibility timeout), keep the
-- messages they hold invisible (ChangeMessageVisibility) while the work goes on, delete on ack
-- and make a nacked message visible again after the delay. A message that keeps failing is left
-- to the queue's redrive policy (its dead-letter queue) when it has one; without one it is
-- logged and deleted after max_attempts. raw=true (readers): bodies are never SNS envelopes;
-- otherwise an SNS notification (non-raw SNS delivery) is unwrapped as gocloud does.
local fail = require "autopgo.fail"
local uv = require "luv"
local cjson = require "cjson.safe"
local async = require "autopgo.async"
local xml = require "autopgo.xml"
local crypto = require("autopgo.core").crypto
local rest = require "autopgo.rest"
local units = require "autopgo.units"
local awsquery = require "autopgo.bus.awsquery"
local inbox_mod = require "autopgo.bus.inbox"
local log = require "autopgo.log"
local base = require "autopgo.bus.base"

local M = {}

M.VERSION = "2012-11-05"
M.WAIT_SECONDS = 20 -- long poll
M.EMPTY_POLL_MS = 250 -- pause after an empty answer that came back at once (no long polling)

local function settings(u, role, opts)
  local q = {}
  for k, v in pairs(u.query) do q[k] = v end
  local known = {}
  for k in pairs(awsquery.URL_OPTIONS) do known[k] = true end
  if role == "reader" then known.raw, known.nacklazy, known.waittime = true, true, true end
  local ok, err, code = rest.check_params("awssqs", q, known)
  if not ok then return nil, err, code end
  local raw, nacklazy
  raw, err, code = rest.parse_bool("raw", q.raw)
  if raw == nil then return nil, err, code end
  nacklazy, err, code = rest.parse_bool("nacklazy", q.nacklazy)
  if nacklazy == nil then return nil, err, code end
  local wait = M.WAIT_SECONDS
  if q.waittime and q.waittime ~= "" then
    wait = units.parse_duration(q.waittime)
    if not wait or wait < 0 or wait >= 21 then
      return fail.new("INVALID", "invalid value %q for query parameter waittime (want a duration from 0s to 20s)",
        q.waittime)
    end
    wait = math.floor(wait) -- whole seconds, as gocloud sends it
  end
  local path = (u.path or ""):gsub("/+$", "")
  if not u.host or u.host == "" or path == "" then
    return fail.new("INVALID", "%s: want awssqs://<host>/<account>/<queue>", u.raw)
  end
  local o
  o, err, code = awsquery.options(q, opts, "AWS_ENDPOINT_URL_SQS")
  if not o then return nil, err, code end
  local hostport = u.host .. (u.port and (":" .. u.port) or "")
  local queue_url = ("%s://%s%s"):format(o.scheme, hostport, path)
  local client
  client, err, code = awsquery.new {
    service = "sqs", version = M.VERSION, region = o.region, creds = o.creds,
    endpoint = o.endpoint or ("%s://%s"):format(o.scheme, hostport),
    name = "awssqs://" .. hostport .. path, insecure = opts.insecure, ca_file = opts.ca_file,
    anonymous = o.flags.anonymous,
  }
  if not client then return nil, err, code end
  return { queue_url = queue_url, fifo = path:match("%.fifo$") ~= nil, raw = raw, client = client,
    name = client.name, nacklazy = nacklazy, wait = wait }
end

---------------------------------------------------------------------------------------------
-- writer

local Writer = base.writer_class()

function Writer:send(body, opts)
  local params = awsquery.message_params({ target = { "QueueUrl", self.s.queue_url }, body = "MessageBody",
    attribute = "MessageAttribute.%d" }, self.s.fifo, body, opts)
  return self.s.client:call("SendMessage", params)
end

local function queue_attributes(s, names)
  local params = { { "QueueUrl", s.queue_url } }
  for i, n in ipairs(names) do params[#params + 1] = { ("AttributeName.%d"):format(i), n } end
  local doc, err, code = s.client:call("GetQueueAttributes", params, { deadline = 10 })
  if not doc then return nil, err, code end
  local out = {}
  for _, a in ipairs(xml.children(xml.find(doc, "GetQueueAttributesResult"), "Attribute")) do
    out[xml.find_text(a, "Name")] = xml.find_text(a, "Value")
  end
  return out
end

local function probe(self)
  return queue_attributes(self.s, { "QueueArn" })
end
Writer.probe = probe

function M.writer(u, opts)
  local s, err, code = settings(u, "writer", opts)
  if not s then return nil, err, code end
  return base.new_writer(Writer, "awssqs", { name = s.name, s = s })
end

---------------------------------------------------------------------------------------------
-- reader

local Reader = base.held_reader_class()
Reader.probe = probe
local Msg = {}
Msg.__index = Msg

function Reader:change_visibility(m, seconds)
  seconds = math.max(0, math.min(43200, math.floor(seconds + 0.5)))
  local doc, err, code = self.s.client:call("ChangeMessageVisibility", {
    { "QueueUrl", self.s.queue_url }, { "ReceiptHandle", m.receipt }, { "VisibilityTimeout", seconds },
  })
  if not doc then return nil, err, code end
  return true
end

function Msg:ack()
  if self.settled then return true end
  local r = self.reader
  r:settle(self)
  return r.inbox.stats:count("acked", "ack_failed", r.s.client:call("DeleteMessage", {
    { "QueueUrl", r.s.queue_url }, { "ReceiptHandle", self.receipt },
  }))
end

function Msg:extend(seconds)
  if self.settled then return true end
  return self.reader:change_visibility(self, seconds or self.reader.visibility)
end

function Msg:nack(delay)
  if self.settled then return true end
  local r = self.reader
  r.inbox.stats:inc("nacked")
  if self.attempt >= r.max_attempts and not r.redrive then
    r.inbox.stats:inc("dead_lettered")
    inbox_mod.log_given_up("sqs: message keeps failing and the queue has no dead-letter queue (redrive policy);"
      .. " deleting it", r.name, self, ("failed %d times"):format(self.attempt))
    self.settled = false
    return self:ack()
  end
  -- with a redrive policy SQS moves it to the dead-letter queue after maxReceiveCount receives
  return self:hand_back(delay or inbox_mod.backoff(self.attempt))
end

-- Stops holding the message and makes it visible again after `seconds`; with nacklazy=true it is
-- left alone and comes back when the visibility timeout it has runs out (gocloud's NackLazy).
function Msg:hand_back(seconds)
  local r = self.reader
  r:settle(self)
  if r.s.nacklazy then return true end
  return r:change_visibility(self, seconds)
end

--- Gives up on the message now. Without a redrive policy it is logged and deleted. With one it
-- is made visible again at once: SQS has no call that dead-letters a message, but its receive
-- count moves it to the dead-letter queue after maxReceiveCount receives, each rejected again.
function Msg:reject(reason)
  if self.settled then return true end
  local r = self.reader
  if r.redrive then
    log.warn("sqs: giving up on a message; handing it back so the redrive policy dead-letters it", "reader",
      r.name, "id", self.id, "attempt", self.attempt, "reason", reason)
    r.inbox.stats:inc("nacked")
    return self:hand_back(0)
  end
  r.inbox.stats:inc("dead_lettered")
  inbox_mod.log_given_up("sqs: giving up on a message and the queue has no dead-letter queue (redrive policy);"
    .. " deleting it", r.name, self, reason)
  return self:ack()
end

-- The body of an SQS message, unwrapping an SNS notification when it is one.
local function body_of(r, m)
  local body, attrs = m.body, m.attrs
  if not r.s.raw and not next(attrs) and body:sub(1, 1) == "{" then
    local doc = cjson.decode(body)
    if type(doc) == "table" and type(doc.TopicArn) == "string" and doc.TopicArn ~= ""
        and type(doc.Message) == "string" then
      body = doc.Message
      attrs = {}
      if type(doc.MessageAttributes) == "table" then
        for k, v in pairs(doc.MessageAttributes) do
          if type(v) == "table" then attrs[k] = v.Value end
        end
      end
    end
  end
  if attrs.base64encoded == "true" then
    local decoded = crypto.base64_decode(body)
    if decoded then body = decoded end
  end
  return body, attrs
end

function Reader:fetch_loop()
  local started
  self:poll("sqs: receiving failed; retrying", function()
    local want = math.min(10, self.max_buffered - self.inbox:size())
    started = uv.now()
    return self.s.client:call("ReceiveMessage", {
      { "QueueUrl", self.s.queue_url }, { "MaxNumberOfMessages", want }, { "WaitTimeSeconds", self.s.wait },
      { "AttributeName.1", "All" }, { "MessageAttributeName.1", "All" },
    }, { timeout = self.s.wait + 10, cancel = self.cancel })
  end, function(doc)
    local list = xml.children(xml.find(doc, "ReceiveMessageResult"), "Message")
    for _, el in ipairs(list) do self:on_message(el) end
    if #list == 0 and uv.now() - started < 1000 then async.sleep(M.EMPTY_POLL_MS) end
  end)
end

function Reader:on_message(el)
  local attrs, mattrs = {}, {}
  for _, a in ipairs(xml.children(el, "Attribute")) do attrs[xml.find_text(a, "Name")] = xml.find_text(a, "Value") end
  for _, a in ipairs(xml.children(el, "MessageAttribute")) do
    mattrs[xml.find_text(a, "Name")] = xml.find_text(a, "Value/StringValue")
  end
  local m = setmetatable({
    id = xml.find_text(el, "MessageId"), receipt = xml.find_text(el, "ReceiptHandle"),
    body = xml.find_text(el, "Body") or "", attrs = mattrs, reader = self,
    attempt = tonumber(attrs.ApproximateReceiveCount) or 1,
  }, Msg)
  m.body, m.attrs = body_of(self, m)
  m.key = attrs.MessageGroupId or m.attrs[awsquery.KEY_ATTRIBUTE]
  -- invisible while it waits here and while it is handled
  self:hold(m, self.visibility * 1000 / 2, function() return self:change_visibility(m, self.visibility) end)
end

--- Stops polling, waits (bounded) for messages in flight and makes every message it still holds
-- visible again, so other readers get them at once.
function Reader:close()
  return self:close_held(function(m) self:change_visibility(m, 0) end)
end

function M.reader(u, opts)
  local s, err, code = settings(u, "reader", opts)
  if not s then return nil, err, code end
  local r = base.new_held_reader(Reader, "awssqs", opts, 10, { name = s.name, s = s, visibility = 30 })
  async.spawn(function()
    -- the queue's visibility timeout sets how often held messages are extended; its redrive
    -- policy says whether SQS dead-letters by itself
    local attrs = queue_attributes(s, { "VisibilityTimeout", "RedrivePolicy" })
    if attrs then
      r.visibility = math.max(2, tonumber(attrs.VisibilityTimeout) or 30)
      r.redrive = attrs.RedrivePolicy ~= nil and attrs.RedrivePolicy ~= ""
    end
    r:fetch_loop()
  end)
  return r
end

return M
