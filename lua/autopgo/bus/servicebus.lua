-- Azure Service Bus event bus over its HTTPS REST API (autopgo.http), with gocloud.dev's URLs:
--   azuresb://my-topic                         writer (a topic or a queue)
--   azuresb://my-topic?subscription=my-sub     reader of a topic subscription
--   azuresb://my-queue                         reader of a queue (our extension)
-- The namespace and key come from SERVICEBUS_CONNECTION_STRING ("Endpoint=sb://ns.servicebus.
-- windows.net/;SharedAccessKeyName=...;SharedAccessKey=..."), as in gocloud.dev; requests carry a
-- SAS token signed with that key. The REST API was chosen over AMQP 1.0: it needs nothing but
-- the HTTP client every other cloud back end uses, it works through any HTTPS proxy, and each
-- operation the bus needs exists in it (send, peek-lock, complete, abandon, renew lock); see
-- lua/autopgo/bus/README.md.
--
-- The app is the message's PartitionKey (BrokerProperties), so a partitioned entity keeps an
-- app's messages in one partition. Readers peek-lock (a long poll), renew the lock of what they
-- hold while the work goes on, complete on ack, and on nack keep the lock for the delay and then
-- abandon it. A message that keeps failing is abandoned at once from then on, so Service Bus
-- moves it to the entity's dead-letter queue when its delivery count passes MaxDeliveryCount
-- (the REST API has no explicit dead-letter call).
local fail = require "autopgo.fail"
local cjson = require "cjson.safe"
local async = require "autopgo.async"
local log = require "autopgo.log"
local events = require "autopgo.events"
local url = require "autopgo.url"
local utc = require "autopgo.utc"
local crypto = require("autopgo.core").crypto
local rest = require "autopgo.rest"
local inbox_mod = require "autopgo.bus.inbox"
local base = require "autopgo.bus.base"

local M = {}

M.TOKEN_LIFETIME = 3600
M.POLL_SECONDS = 30 -- peek-lock long poll

--- Parses a Service Bus connection string: { endpoint = "https://ns.servicebus.windows.net",
-- key_name, key, entity_path? } or nil, err, code. "UseDevelopmentEmulator=true" means plain http.
function M.parse_connection_string(s)
  if type(s) ~= "string" or not s:find("%S") then
    return fail.new("INVALID", "SERVICEBUS_CONNECTION_STRING environment variable not set")
  end
  local kv = {}
  for part in s:gmatch("[^;]+") do
    local k, v = part:match("^%s*([^=]-)%s*=%s*(.-)%s*$")
    if k and k ~= "" then kv[k:lower()] = v end
  end
  local ep = kv.endpoint
  if not ep or not kv.sharedaccesskeyname or not kv.sharedaccesskey then
    return fail.new("INVALID", "Service Bus connection string needs Endpoint, SharedAccessKeyName and SharedAccessKey")
  end
  local host = ep:match("^%a[%w+.-]*://([^/]+)")
  if not host then return fail.new("INVALID", "Service Bus endpoint %q is not a URL", ep) end
  local scheme = (kv.usedevelopmentemulator or ""):lower() == "true" and "http" or "https"
  return { endpoint = scheme .. "://" .. host, host = host, key_name = kv.sharedaccesskeyname,
    key = kv.sharedaccesskey, entity_path = kv.entitypath }
end

--- A SAS token for `resource` (a URL), valid until `expiry` (Unix seconds): HMAC-SHA256 with the
-- key's text over the URL-encoded resource, a newline and the expiry.
function M.sas_token(resource, key_name, key, expiry)
  local sr = url.escape(resource)
  local sig = crypto.base64_encode(crypto.hmac("sha256", key, sr .. "\n" .. expiry))
  return ("SharedAccessSignature sr=%s&sig=%s&se=%d&skn=%s"):format(sr, url.escape(sig), expiry,
    url.escape(key_name))
end

local function settings(u, role, opts)
  local q = {}
  for k, v in pairs(u.query) do q[k] = v end
  local known = role == "reader" and { subscription = true } or {}
  local ok, err, code = rest.check_params("azuresb", q, known)
  if not ok then return nil, err, code end
  local getenv = opts.getenv or os.getenv
  local cs
  cs, err, code = M.parse_connection_string(opts.connection_string or getenv("SERVICEBUS_CONNECTION_STRING"))
  if not cs then return nil, err, code end
  local entity = url.unescape((u.host or "") .. (u.path or "")):gsub("^/+", ""):gsub("/+$", "")
  if entity == "" then entity = cs.entity_path or "" end
  if entity == "" then return fail.new("INVALID", "%s: no topic or queue name", u.raw) end
  local path = "/" .. url.escape(entity, "/")
  if q.subscription and q.subscription ~= "" then
    path = path .. "/subscriptions/" .. url.escape(q.subscription)
  end
  local name = "azuresb://" .. entity .. (q.subscription and ("?subscription=" .. q.subscription) or "")
  -- the SAS resource is the entity's URI as written (not percent-encoded)
  local resource = cs.endpoint .. "/" .. entity .. (q.subscription and ("/subscriptions/" .. q.subscription) or "")
  return { cs = cs, path = path, resource = resource, name = name, insecure = opts.insecure, ca_file = opts.ca_file,
    now = opts.now or os.time }
end

local function auth_header(s, resource)
  return M.sas_token(resource, s.cs.key_name, s.cs.key, s.now() + M.TOKEN_LIFETIME)
end

local function on_error(s, res)
  local code = rest.code_for_status(res.status)
  if res.status == 410 then code = "NOT_FOUND" end
  local detail = (res.body or ""):match("<Detail>(.-)</Detail>") or (res.body or ""):sub(1, 200)
  return ("%s: %s: HTTP %d%s"):format(code, s.name, res.status, detail ~= "" and (": " .. detail) or ""), code
end

-- One REST call to <endpoint><path>; returns the response (any 2xx) or nil, err, code.
local function call(s, method, path, r)
  r = r or {}
  local target = s.cs.endpoint .. path
  return rest.call({ deadline = r.deadline or 30, name = s.name }, function()
    local headers = r.headers or {}
    headers.authorization = auth_header(s, s.resource or (s.cs.endpoint .. s.path))
    if r.body and not headers["content-type"] then headers["content-type"] = "application/octet-stream" end
    return { method = method, url = target .. (r.query and ("?" .. r.query) or ""), headers = headers,
      body = r.body or (method ~= "GET" and method ~= "DELETE" and "" or nil), timeout = r.timeout or 30,
      insecure = s.insecure, ca_file = s.ca_file, cancel = r.cancel }
  end, function(res) return on_error(s, res) end)
end
M.call = call

---------------------------------------------------------------------------------------------
-- writer

local Writer = base.writer_class()

function Writer:send(body, opts)
  local props = {}
  local key = opts and opts.key
  if key and key ~= "" then props.PartitionKey = key end
  local id = (opts and opts.id) or events.id_of(body)
  if id then props.MessageId = id end
  return call(self.s, "POST", self.s.path .. "/messages", {
    body = body, headers = { ["content-type"] = "application/json", brokerproperties = cjson.encode(props) },
  })
end

local function entity_health(s)
  local res, err, code = call(s, "GET", s.path, { deadline = 10 })
  if not res then return nil, err, code end
  return true
end

local function probe(self)
  return entity_health(self.s)
end
Writer.probe = probe

function M.writer(u, opts)
  local s, err, code = settings(u, "writer", opts)
  if not s then return nil, err, code end
  return base.new_writer(Writer, "azuresb", { name = s.name, s = s })
end

---------------------------------------------------------------------------------------------
-- reader

local Reader = base.held_reader_class()
Reader.probe = probe
local Msg = {}
Msg.__index = Msg

-- A call on a locked message (its Location): DELETE completes, PUT abandons, POST renews.
function Reader:lock_call(m, method)
  local res, err, code = call(self.s, method, m.location)
  if not res then return nil, err, code end
  return true
end

function Msg:ack()
  if self.settled then return true end
  local r = self.reader
  r:settle(self)
  return r.inbox.stats:count("acked", "ack_failed", r:lock_call(self, "DELETE")) -- complete
end

function Msg:extend()
  if self.settled then return true end
  return self.reader:lock_call(self, "POST") -- renew lock
end

function Msg:nack(delay)
  if self.settled then return true end
  local r = self.reader
  r.inbox.stats:inc("nacked")
  if self.attempt >= r.max_attempts then
    -- abandoned at once: Service Bus dead-letters it past the entity's MaxDeliveryCount
    r.inbox.stats:inc("dead_lettered")
    log.warn("servicebus: message keeps failing; abandoning it without delay so Service Bus dead-letters it",
      "reader", r.name, "id", self.id, "attempt", self.attempt)
    delay = 0
  end
  return self:hand_back(delay)
end

--- Gives up on the message now: abandoned at once, as REST has no dead-letter call; Service Bus
-- moves it to the dead-letter queue past the entity's MaxDeliveryCount, each delivery rejected again.
function Msg:reject(reason)
  if self.settled then return true end
  local r = self.reader
  r.inbox.stats:inc("nacked")
  log.warn("servicebus: giving up on a message; abandoning it so Service Bus dead-letters it", "reader", r.name,
    "id", self.id, "attempt", self.attempt, "reason", reason)
  return self:hand_back(0)
end

-- Unlocks the message after `delay` seconds (at once when 0), keeping it locked until then.
function Msg:hand_back(delay)
  local r = self.reader
  delay = delay or inbox_mod.backoff(self.attempt)
  self.handed_back = true
  if self.handed_out then
    self.handed_out = false
    r.inflight = r.inflight - 1
    if r.settled_ev then r.settled_ev.set() end
  end
  if delay <= 0 then
    r:settle(self)
    return r:lock_call(self, "PUT") -- abandon (unlock)
  end
  -- keep the lock (renewed by the keepalive) for the delay, then abandon: redelivery after it
  r.inbox:later(delay * 1000, function()
    if self.settled then return end
    r:settle(self)
    local ok, err = r:lock_call(self, "PUT")
    if not ok then log.warn("servicebus: abandoning a message failed", "reader", r.name, "error", err) end
  end)
  return true
end

function Reader:on_message(res)
  local props = cjson.decode(res.headers.brokerproperties or "{}") or {}
  local location = res.headers.location or ""
  local loc_path = location:match("^%a[%w+.-]*://[^/]+(/.*)$") or location
  local m = setmetatable({
    body = res.body or "", key = props.PartitionKey, id = props.MessageId or tostring(props.SequenceNumber),
    attempt = math.tointeger(tonumber(props.DeliveryCount)) or 1, location = loc_path, reader = self,
  }, Msg)
  -- renew at half the lock the entity gave (LockedUntilUtc), or of lock_duration
  local interval = self.lock_ms / 2
  local until_s = props.LockedUntilUtc and utc.parse_http_date(props.LockedUntilUtc)
  if until_s and until_s > os.time() then interval = math.min(interval, (until_s - os.time()) * 1000 / 2) end
  self:hold(m, interval, function() return self:lock_call(m, "POST") end)
end

function Reader:fetch_loop()
  self:poll("servicebus: receiving failed; retrying", function()
    return call(self.s, "POST", self.s.path .. "/messages/head", {
      query = "timeout=" .. M.POLL_SECONDS, timeout = M.POLL_SECONDS + 15, cancel = self.cancel,
    })
  end, function(res)
    if res.status == 201 or res.status == 200 then self:on_message(res) end
  end, function(res)
    -- a message locked for a reader that is closing goes straight back
    if res.status == 201 then self:on_message(res) end
  end)
end

--- Stops receiving, waits (bounded) for messages in flight and abandons what it still holds, so
-- other readers get it at once.
function Reader:close()
  return self:close_held(function(m) self:lock_call(m, "PUT") end)
end

function M.reader(u, opts)
  local s, err, code = settings(u, "reader", opts)
  if not s then return nil, err, code end
  -- renew at half the lock duration; Service Bus's default lock is 60 s, its smallest 5 s
  local r = base.new_held_reader(Reader, "azuresb", opts, 4,
    { name = s.name, s = s, lock_ms = (opts.lock_duration or 30) * 1000 })
  async.spawn(function() r:fetch_loop() end)
  return r
end

return M
