-- Google Cloud Pub/Sub event bus (the REST API over autopgo.http), with gocloud.dev's URLs:
--   gcppubsub://projects/my-project/topics/my-topic                 writer
--   gcppubsub://projects/my-project/subscriptions/my-subscription   reader
-- (and gocloud's older short forms gcppubsub://my-project/my-topic, .../my-subscription).
-- PUBSUB_EMULATOR_HOST (host:port) sends requests to the emulator without credentials, as
-- Google's libraries do; otherwise tokens come from autopgo.gcp.auth (GOOGLE_APPLICATION_
-- CREDENTIALS, gcloud's default credentials, the metadata server).
--
-- The app is the message's ordering key (and its autopgo-key attribute): on a subscription with
-- message ordering enabled Pub/Sub delivers an app's events in order. Readers pull, keep the ack
-- deadline of what they hold extended while the work goes on (modifyAckDeadline), acknowledge on
-- ack and, on nack, set the deadline to the delay so the message comes back then. A message
-- that keeps failing goes to the subscription's dead-letter topic when it has one (Pub/Sub
-- counts the attempts); without one it is logged and acknowledged after max_attempts.
local fail = require "autopgo.fail"
local uv = require "luv"
local cjson = require "cjson.safe"
local async = require "autopgo.async"
local json = require "autopgo.json"
local crypto = require("autopgo.core").crypto
local rest = require "autopgo.rest"
local auth = require "autopgo.gcp.auth"
local inbox_mod = require "autopgo.bus.inbox"
local log = require "autopgo.log"
local bus_base = require "autopgo.bus.base"

local M = {}

M.SCOPE = "https://www.googleapis.com/auth/pubsub"
M.KEY_ATTRIBUTE = "autopgo-key"
M.EMPTY_POLL_MS = 250

local KNOWN = { max_recv_batch_size = true, max_send_batch_size = true, nacklazy = true }

-- The resource name of a gocloud gcppubsub URL: { project, kind = "topics"|"subscriptions", name }.
local function resource(u, kind)
  local full = ((u.host or "") .. (u.path or "")):gsub("/+$", "")
  local project, k, name = full:match("^projects/([^/]+)/([^/]+)/([^/]+)$")
  if project then
    if k ~= kind then
      return fail.new("INVALID", "%s names %s, but %s are needed here", u.raw, k, kind)
    end
    return project, name
  end
  project, name = full:match("^([^/]+)/([^/]+)$")
  if project and project ~= "projects" then return project, name end
  return fail.new("INVALID", "%s: want gcppubsub://projects/<project>/%s/<name>", u.raw, kind)
end

local function client(u, kind, opts)
  local q = {}
  for k, v in pairs(u.query) do q[k] = v end
  local ok, err, code = rest.check_params("gcppubsub", q, KNOWN)
  if not ok then return nil, err, code end
  local project, name = resource(u, kind)
  if not project then return nil, name, "INVALID" end
  local getenv = opts.getenv or os.getenv
  local emulator = getenv("PUBSUB_EMULATOR_HOST")
  local base, tokens
  if emulator and emulator ~= "" then
    base = emulator:match("^%a[%w+.-]*://") and emulator or ("http://" .. emulator)
  else
    base = "https://pubsub.googleapis.com"
    tokens = opts.token_source or auth.new({ scope = M.SCOPE, getenv = getenv, home = opts.home })
  end
  local path = ("projects/%s/%s/%s"):format(project, kind, name)
  return {
    base = base:gsub("/+$", ""), tokens = tokens, path = path, name = "gcppubsub://" .. path,
    insecure = opts.insecure, ca_file = opts.ca_file,
  }
end

local function on_error(c, res)
  local doc = cjson.decode(res.body or "")
  local e = type(doc) == "table" and type(doc.error) == "table" and doc.error or {}
  local code = rest.code_for_status(res.status)
  if e.status == "NOT_FOUND" then code = "NOT_FOUND" end
  if e.status == "UNAUTHENTICATED" or e.status == "PERMISSION_DENIED" then code = "UNAUTHORIZED" end
  local detail = e.message and (tostring(e.status or res.status) .. ": " .. tostring(e.message))
    or ("HTTP " .. res.status)
  local hint
  if res.status == 401 and c.tokens and not c.retried_auth then
    c.tokens:invalidate()
    c.retried_auth = true
    hint = "retry"
  end
  return ("%s: %s: %s"):format(code, c.name, detail), code, nil, hint
end

-- One REST call: method on base/v1/<path><verb> with a JSON body; returns the decoded answer.
local function call(c, method, verb, body, opts)
  opts = opts or {}
  local text = body and json.encode(body) or nil
  local res, err, code = rest.call({ deadline = opts.deadline or 30, name = c.name }, function()
    local headers = { accept = "application/json" }
    if text then headers["content-type"] = "application/json" end
    if c.tokens then
      local token, terr, tcode = c.tokens:token()
      if not token then return nil, terr, tcode end
      headers.authorization = "Bearer " .. token
    end
    return { method = method, url = ("%s/v1/%s%s"):format(c.base, c.path, verb or ""), headers = headers,
      body = text, timeout = opts.timeout or 30, insecure = c.insecure, ca_file = c.ca_file, cancel = opts.cancel }
  end, function(r) return on_error(c, r) end)
  if not res then return nil, err, code end
  c.retried_auth = nil
  local doc = cjson.decode(res.body ~= "" and res.body or "{}")
  if type(doc) ~= "table" then
    return fail.new("UNAVAILABLE", "%s: unreadable answer", c.name)
  end
  return doc
end
M.call = call

---------------------------------------------------------------------------------------------
-- writer

local Writer = bus_base.writer_class()

function Writer:send(body, opts)
  local key = opts and opts.key
  local msg = { data = crypto.base64_encode(body) }
  if key and key ~= "" then
    msg.orderingKey = key
    msg.attributes = { [M.KEY_ATTRIBUTE] = key }
  end
  return call(self.c, "POST", ":publish", { messages = { msg } })
end

local function probe(self)
  return call(self.c, "GET", nil, nil, { deadline = 10 })
end
Writer.probe = probe

function M.writer(u, opts)
  local c, err, code = client(u, "topics", opts)
  if not c then return nil, err, code end
  return bus_base.new_writer(Writer, "gcppubsub", { name = c.name, c = c })
end

---------------------------------------------------------------------------------------------
-- reader

local Reader = bus_base.held_reader_class()
Reader.probe = probe
local Msg = {}
Msg.__index = Msg

function Reader:modify(m, seconds)
  seconds = math.max(0, math.min(600, math.floor(seconds + 0.5)))
  local doc, err, code = call(self.c, "POST", ":modifyAckDeadline",
    { ackIds = { m.ack_id }, ackDeadlineSeconds = seconds })
  if not doc then return nil, err, code end
  return true
end

function Msg:ack()
  if self.settled then return true end
  local r = self.reader
  r:settle(self)
  r.attempts[self.id] = nil
  return r.inbox.stats:count("acked", "ack_failed", call(r.c, "POST", ":acknowledge", { ackIds = { self.ack_id } }))
end

function Msg:extend(seconds)
  if self.settled then return true end
  return self.reader:modify(self, seconds or self.reader.deadline)
end

function Msg:nack(delay)
  if self.settled then return true end
  local r = self.reader
  r.inbox.stats:inc("nacked")
  if self.attempt >= r.max_attempts and not r.dead_letter then
    r.inbox.stats:inc("dead_lettered")
    inbox_mod.log_given_up("pubsub: message keeps failing and the subscription has no dead-letter topic;"
      .. " acknowledging it", r.name, self, ("failed %d times"):format(self.attempt))
    return self:ack()
  end
  r:settle(self)
  return r:modify(self, delay or inbox_mod.backoff(self.attempt))
end

--- Gives up on the message now. Without a dead-letter topic it is logged and acknowledged. With
-- one its ack deadline is set to 0: Pub/Sub has no call that dead-letters a message, but it
-- forwards it to the dead-letter topic after max_delivery_attempts deliveries, each rejected again.
function Msg:reject(reason)
  if self.settled then return true end
  local r = self.reader
  if r.dead_letter then
    log.warn("pubsub: giving up on a message; handing it back so the dead-letter policy forwards it", "reader",
      r.name, "id", self.id, "attempt", self.attempt, "reason", reason)
    r.inbox.stats:inc("nacked")
    r:settle(self)
    return r:modify(self, 0)
  end
  r.inbox.stats:inc("dead_lettered")
  inbox_mod.log_given_up("pubsub: giving up on a message and the subscription has no dead-letter topic;"
    .. " acknowledging it", r.name, self, reason)
  return self:ack()
end

function Reader:on_message(rm)
  local pm = rm.message or {}
  local attrs = type(pm.attributes) == "table" and pm.attributes or {}
  local body = crypto.base64_decode(pm.data or "") or ""
  local id = pm.messageId or "?"
  local attempt = math.tointeger(tonumber(rm.deliveryAttempt))
  if not attempt then
    -- without a dead-letter policy Pub/Sub does not count: count here (per process)
    attempt = (self.attempts[id] or 0) + 1
    self.attempts[id] = attempt
  end
  local key = (pm.orderingKey ~= nil and pm.orderingKey ~= "" and pm.orderingKey) or attrs[M.KEY_ATTRIBUTE]
  local m = setmetatable({ body = body, key = key, id = id, attempt = attempt, ack_id = rm.ackId, reader = self },
    Msg)
  self:hold(m, self.deadline * 1000 / 2, function() return self:modify(m, self.deadline) end)
end

function Reader:fetch_loop()
  local started
  self:poll("pubsub: pulling failed; retrying", function()
    started = uv.now()
    return call(self.c, "POST", ":pull", { maxMessages = self.max_buffered - self.inbox:size() },
      { timeout = 100, cancel = self.cancel })
  end, function(doc)
    local list = type(doc.receivedMessages) == "table" and doc.receivedMessages or {}
    for _, rm in ipairs(list) do self:on_message(rm) end
    if #list == 0 and uv.now() - started < 1000 then async.sleep(M.EMPTY_POLL_MS) end
  end)
end

--- Stops pulling, waits (bounded) for messages in flight and hands back (deadline 0) what it
-- still holds, so other readers get it at once.
function Reader:close()
  return self:close_held(function(m) self:modify(m, 0) end)
end

function M.reader(u, opts)
  local c, err, code = client(u, "subscriptions", opts)
  if not c then return nil, err, code end
  local r = bus_base.new_held_reader(Reader, "gcppubsub", opts, 10,
    { name = c.name, c = c, attempts = {}, deadline = 10 })
  async.spawn(function()
    -- the subscription's ack deadline sets how often held messages are extended; its
    -- dead-letter policy says whether Pub/Sub dead-letters by itself
    local sub = call(c, "GET", nil, nil, { deadline = 10 })
    if sub then
      r.deadline = math.max(10, math.min(600, tonumber(sub.ackDeadlineSeconds) or 10))
      r.dead_letter = type(sub.deadLetterPolicy) == "table" and sub.deadLetterPolicy.deadLetterTopic ~= nil
    end
    r:fetch_loop()
  end)
  return r
end

return M
