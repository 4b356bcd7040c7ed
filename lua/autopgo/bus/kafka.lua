-- Kafka event bus over librdkafka (autopgo.core.kafka), with gocloud.dev's URLs:
--   kafka://topic                 writer; the message key is the app (ordering per partition)
--   kafka://group?topic=t[&topic=u][&offset=oldest|newest] reader in consumer group `group`; offset:
--                                 where a group with no committed offset starts (default oldest)
-- Brokers come from KAFKA_BROKERS (comma-separated), as in gocloud.dev. Beyond gocloud, any
-- query parameter containing a dot is passed to librdkafka (kafka://g?topic=t&session.timeout.ms=6000)
-- and `dead_letter_topic=name` sends messages that keep failing there instead of dropping them.
--
-- Delivery is at least once: an offset is committed only after every message before it in
-- its partition was acknowledged. Acknowledged messages past an unacknowledged one are listed
-- in the commit metadata, so after a rebalance the next owner skips them instead of handling
-- them twice. A revoke is held until the messages in flight are settled and committed.
local fail = require "autopgo.fail"
local core = require "autopgo.core"
local async = require "autopgo.async"
local log = require "autopgo.log"
local url = require "autopgo.url"
local inbox_mod = require "autopgo.bus.inbox"
local stats = require "autopgo.bus.stats"
local base = require "autopgo.bus.base"

local kafka = core.kafka

local M = {}

local META_PREFIX = "autopgo1:"
local META_MAX = 4000 -- bytes of commit metadata; offsets past that may be handled again

local function brokers(opts)
  local b = opts.brokers or os.getenv("KAFKA_BROKERS")
  if not b or b == "" then
    return fail.new("INVALID", "KAFKA_BROKERS environment variable not set")
  end
  return b
end

-- gocloud names the topic (writer) or group (reader) by path.Join(host, path).
local function joined_name(u)
  local name = (u.host or "") .. (u.path or "")
  name = url.unescape(name):gsub("^/+", ""):gsub("/+$", "")
  return name
end

-- Splits the query into librdkafka properties (names with a dot) and our own parameters.
local function split_query(u, allowed)
  local props, params = {}, {}
  for _, kv in ipairs(u.query_list or {}) do
    local k, v = kv[1], kv[2]
    if k:find(".", 1, true) then
      props[k] = v
    elseif allowed[k] then
      params[k] = params[k] or {}
      table.insert(params[k], v)
    else
      return fail.new("INVALID", "%s: invalid query parameter %q", u.raw, k)
    end
  end
  return props, params
end

local OFFSET_RESET = { oldest = "earliest", newest = "latest" }

local function merge(into, from)
  for k, v in pairs(from or {}) do into[k] = tostring(v) end
  return into
end

---------------------------------------------------------------------------------------------
-- writer

local Writer = {}
Writer.__index = Writer

function Writer:publish(body, opts)
  if self.closed then return fail.new("CLOSED", "the writer is closed") end
  local key = opts and opts.key
  local ok, err, code = async.await_start(function(cb)
    return self.producer:produce(self.topic, key, body, cb)
  end)
  if ok == nil and err then
    self.stats:inc("failed")
    self.last_error = err
    return nil, err, code
  end
  self.stats:inc("published")
  self.last_error = nil
  return true
end

local function probe(client, timeout_ms)
  local brokers_up, err, code = async.await_start(function(cb) return client:probe(timeout_ms or 5000, cb) end)
  if not brokers_up then return nil, err, code end
  if brokers_up < 1 then return fail.new("UNAVAILABLE", "no Kafka broker answered") end
  return true
end

function Writer:health()
  if self.closed then return fail.new("CLOSED", "the writer is closed") end
  return probe(self.producer)
end

local function close_client(client)
  if coroutine.isyieldable() then
    async.await(function(cb) client:close(function() cb(nil) end) end)
  else
    client:close()
  end
end

--- Waits (when called from a coroutine) until queued messages are delivered or time out.
function Writer:close()
  if self.closed then return true end
  self.closed = true
  close_client(self.producer)
  return true
end

function M.writer(u, opts)
  local b, err, code = brokers(opts)
  if not b then return nil, err, code end
  local topic = joined_name(u)
  if topic == "" then return fail.new("INVALID", "%s: no topic name", u.raw) end
  local props
  props, err, code = split_query(u, { key_name = true })
  if not props then return nil, err, code end
  local conf = merge({
    ["bootstrap.servers"] = b,
    ["client.id"] = "autopgo",
    -- acks=all with ordered, de-duplicated retries: a key's messages keep their order.
    ["enable.idempotence"] = "true",
    -- the same partition for a key as sarama's default (the original's Kafka client).
    partitioner = "fnv1a_random",
    ["message.timeout.ms"] = "30000",
    ["linger.ms"] = "5",
  }, props)
  merge(conf, opts.config)
  local producer
  producer, err, code = kafka.producer(conf)
  if not producer then return nil, err, code end
  return setmetatable({
    name = "kafka://" .. topic, topic = topic, producer = producer,
    stats = stats.new("kafka", "writer"),
  }, Writer)
end

---------------------------------------------------------------------------------------------
-- reader

local Reader = {}
Reader.__index = Reader
local Msg = {}
Msg.__index = Msg

local function part_key(topic, partition)
  return topic .. "\0" .. partition
end

local function parse_meta(meta)
  local acked = {}
  if meta and meta:sub(1, #META_PREFIX) == META_PREFIX then
    for n in meta:sub(#META_PREFIX + 1):gmatch("%d+") do acked[tonumber(n)] = true end
  end
  return acked
end

-- The offset to commit for a partition and the metadata listing what was handled past it.
local function commit_point(p)
  local out, state = p.out, p.state
  while p.head <= #out and state[out[p.head]] == "acked" do
    state[out[p.head]] = nil
    out[p.head] = nil
    p.head = p.head + 1
  end
  if p.head > #out then
    -- compact the array once it has been consumed
    p.out, p.head = {}, 1
    out = p.out
  end
  local offset = out[p.head] or (p.last and p.last + 1)
  if not offset then return nil end
  local ahead = {}
  for i = p.head, #out do
    if state[out[i]] == "acked" then ahead[#ahead + 1] = out[i] end
  end
  for o in pairs(p.meta_acked) do
    if o >= offset and not state[o] then ahead[#ahead + 1] = o end
  end
  table.sort(ahead)
  local meta = META_PREFIX
  for _, o in ipairs(ahead) do
    local s = (meta == META_PREFIX and "" or ",") .. o
    if #meta + #s > META_MAX then break end
    meta = meta .. s
  end
  return offset, meta
end

function Reader:commit_list()
  local list = {}
  for _, p in pairs(self.parts) do
    local offset, meta = commit_point(p)
    if offset and (offset ~= p.committed_offset or meta ~= p.committed_meta) then
      list[#list + 1] = { topic = p.topic, partition = p.partition, offset = offset, metadata = meta, p = p }
    end
  end
  return list
end

function Reader:commit_loop()
  self.committing = true
  while #self.commit_waiters > 0 do
    local waiters = self.commit_waiters
    self.commit_waiters = {}
    local list = self:commit_list()
    local err
    if #list > 0 and not self.consumer_closed then
      local _, e = async.await_start(function(cb) return self.consumer:commit(list, cb) end)
      err = e
      if not err then
        for _, c in ipairs(list) do c.p.committed_offset, c.p.committed_meta = c.offset, c.metadata end
      else
        log.warn("kafka commit failed (retried with the next one)", "reader", self.name, "error", err)
      end
    end
    for _, ev in ipairs(waiters) do ev.set(err == nil, err) end
  end
  self.committing = false
end

-- Commits what can be committed now; returns an event that fires with (ok, err).
function Reader:commit_soon()
  local ev = async.event()
  self.commit_waiters[#self.commit_waiters + 1] = ev
  if not self.committing then async.spawn(function() self:commit_loop() end) end
  return ev
end

local function owned(r, p)
  return r.parts[p.key] == p and not p.revoking
end

function Reader:on_settle(p)
  p.inflight = p.inflight - 1
  if self.settled_ev then self.settled_ev.set() end
end

function Msg:ack()
  if self.settled then return true end
  self.settled = true
  local r, p = self.reader, self.part
  r:on_settle(p)
  if r.parts[p.key] ~= p then
    r.inbox.stats:inc("ack_failed")
    return fail.new("CONFLICT", "%s was reassigned before the ack; its next owner redelivers it", self.id)
  end
  p.state[self.offset] = "acked"
  r.inbox.stats:inc("acked")
  local ok, err = r:commit_soon().wait()
  if not ok then
    r.inbox.stats:inc("ack_failed")
    return nil, err, async.error_code(err)
  end
  return true
end

function Msg:dead_letter(reason)
  local r = self.reader
  return base.dead_letter(r, self, reason, "kafka", "topic", r.dlq and r.dlq.topic)
end

--- Gives up on the message now: to the dead-letter topic (or logged and dropped), then committed.
-- Redelivered later when the dead-letter topic cannot be written.
function Msg:reject(reason)
  if self.settled then return true end
  if owned(self.reader, self.part) and self:dead_letter(reason) then return self:ack() end
  return self:nack()
end

function Msg:nack(delay)
  if self.settled then return true end
  local r, p = self.reader, self.part
  r.inbox.stats:inc("nacked")
  if self.attempt >= r.max_attempts and owned(r, p) then
    if self:dead_letter(("failed %d times"):format(self.attempt)) then return self:ack() end
  end
  self.settled = true
  r:on_settle(p)
  if not owned(r, p) then return true end -- the partition's next owner redelivers it
  delay = delay or inbox_mod.backoff(self.attempt)
  r.inbox:later(delay * 1000, function()
    if not owned(r, p) then return end
    r.inbox.stats:inc("redelivered")
    r.inbox:push_front(setmetatable({
      body = self.body, key = self.key, id = self.id, offset = self.offset, attempt = self.attempt + 1,
      part = p, reader = r,
    }, Msg))
  end)
  return true
end

function Msg.extend(_)
  return true -- a Kafka message is not locked; nothing to extend
end

function Reader:on_message(m)
  local p = self.parts[part_key(m.topic, m.partition)]
  if not p or p.revoking then return end -- revoked meanwhile: the next owner gets it
  self.last_error = nil
  p.last = m.offset
  if p.meta_acked[m.offset] then
    p.meta_acked[m.offset] = nil -- handled by a previous owner after the committed offset
    return
  end
  p.out[#p.out + 1] = m.offset
  p.state[m.offset] = "pending"
  self.inbox:push(setmetatable({
    body = m.value, key = m.key, id = ("%s/%d/%d"):format(m.topic, m.partition, m.offset),
    offset = m.offset, attempt = 1, part = p, reader = self,
  }, Msg))
end

function Reader:on_assign(parts)
  for _, tp in ipairs(parts) do
    local key = part_key(tp.topic, tp.partition)
    local meta_acked = {}
    for o in pairs(parse_meta(tp.metadata)) do
      if tp.offset < 0 or o >= tp.offset then meta_acked[o] = true end
    end
    self.parts[key] = {
      key = key, topic = tp.topic, partition = tp.partition, out = {}, head = 1, state = {},
      meta_acked = meta_acked, inflight = 0,
      committed_offset = tp.offset >= 0 and tp.offset or nil, committed_meta = tp.metadata,
    }
  end
  log.info("kafka partitions assigned", "reader", self.name, "count", #parts)
end

local function drop_queued(r)
  r.inbox:remove_if(function(m) return not owned(r, m.part) end)
end

function Reader:on_revoke(parts)
  local revoking = {}
  for _, tp in ipairs(parts) do
    local p = self.parts[part_key(tp.topic, tp.partition)]
    if p then
      p.revoking = true
      revoking[#revoking + 1] = p
    end
  end
  drop_queued(self)
  log.info("kafka partitions revoked; finishing in-flight messages", "reader", self.name, "count", #parts)
  async.spawn(function()
    local busy = inbox_mod.wait_settled(self, self.revoke_timeout_ms, function()
      local n = 0
      for _, p in ipairs(revoking) do n = n + p.inflight end
      return n
    end)
    if busy > 0 then
      log.warn("kafka: revoke timed out with messages in flight; they will be redelivered",
        "reader", self.name, "in_flight", busy)
    end
    self:commit_soon().wait(10000)
    for _, p in ipairs(revoking) do
      if self.parts[p.key] == p then self.parts[p.key] = nil end
    end
    if not self.consumer_closed then self.consumer:rebalance_done() end
  end)
end

function Reader:on_lost(parts)
  for _, tp in ipairs(parts) do
    local key = part_key(tp.topic, tp.partition)
    local p = self.parts[key]
    if p then
      p.revoking = true
      self.parts[key] = nil
    end
  end
  drop_queued(self)
  log.warn("kafka partitions lost (session timed out); their messages will be redelivered", "reader",
    self.name, "count", #parts)
end

function Reader:on_event(kind, a, b)
  if kind == "message" then
    self:on_message(a)
  elseif kind == "assign" then
    self:on_assign(a)
  elseif kind == "revoke" then
    self:on_revoke(a)
  elseif kind == "lost" then
    self:on_lost(a)
  elseif kind == "error" then
    self.last_error = "UNAVAILABLE: " .. a
    if b then
      self.fatal = "UNAVAILABLE: kafka consumer failed: " .. a
      log.error("kafka consumer failed", "reader", self.name, "error", a)
      self.inbox:close(self.fatal)
    else
      log.warn("kafka consumer error", "reader", self.name, "error", a)
    end
  end
end

function Reader:receive()
  local m, err, code = self.inbox:receive(function(msg) return not owned(self, msg.part) end)
  if not m then return nil, err, code end
  m.settled = false
  m.part.inflight = m.part.inflight + 1
  return m
end

function Reader:health()
  if self.fatal then return nil, self.fatal, "UNAVAILABLE" end
  if self.closed then return fail.new("CLOSED", "the reader is closed") end
  return probe(self.consumer)
end

function Reader:stats()
  return self.inbox.stats:snapshot()
end

--- Stops receiving, waits (bounded) for messages in flight, commits, and leaves the group.
function Reader:close()
  if self.closed then return true end
  self.closed = true
  self.inbox:close("CLOSED: the reader is closed")
  if coroutine.isyieldable() then
    inbox_mod.wait_settled(self, self.revoke_timeout_ms, function()
      local n = 0
      for _, p in pairs(self.parts) do n = n + p.inflight end
      return n
    end)
    self:commit_soon().wait(10000)
  end
  self.consumer_closed = true
  close_client(self.consumer)
  if self.dlq then self.dlq:close() end
  return true
end

function M.reader(u, opts)
  local b, err, code = brokers(opts)
  if not b then return nil, err, code end
  local group = joined_name(u)
  if group == "" then return fail.new("INVALID", "%s: no consumer group name", u.raw) end
  local props, params = split_query(u, { topic = true, key_name = true, dead_letter_topic = true, offset = true })
  if not props then return nil, params, "INVALID" end
  local topics = params.topic
  if not topics or #topics == 0 then
    return fail.new("INVALID", "%s: no topic (want kafka://group?topic=name)", u.raw)
  end
  -- gocloud's offset=oldest|newest: where a group without a committed offset starts
  local offset = (params.offset or {})[1] or "oldest"
  local reset = OFFSET_RESET[offset]
  if not reset then
    return fail.new("INVALID", "%s: invalid value %q for query parameter offset (want oldest or newest)", u.raw,
      offset)
  end
  local conf = merge({
    ["bootstrap.servers"] = b,
    ["group.id"] = group,
    ["client.id"] = "autopgo",
    ["enable.auto.commit"] = "false",
    ["enable.auto.offset.store"] = "false",
    -- by default a new group starts at the beginning: nothing published before the first
    -- worker is lost
    ["auto.offset.reset"] = reset,
  }, props)
  merge(conf, opts.config)

  local r = setmetatable({
    name = ("kafka://%s?topic=%s"):format(group, table.concat(topics, ",")),
    parts = {}, commit_waiters = {},
    max_attempts = opts.max_attempts or 5,
    revoke_timeout_ms = (opts.revoke_timeout or 30) * 1000,
  }, Reader)
  r.inbox = inbox_mod.new {
    bus = "kafka",
    high = opts.max_buffered or 512,
    on_full = function() if not r.consumer_closed then r.consumer:pause(true) end end,
    on_drained = function() if not r.consumer_closed then r.consumer:pause(false) end end,
  }
  local dlt = (params.dead_letter_topic or {})[1] or opts.dead_letter_topic
  if dlt then
    local dlq
    dlq, err, code = M.writer(url.parse("kafka://" .. dlt), { brokers = b, config = opts.producer_config })
    if not dlq then return nil, err, code end
    r.dlq = dlq
  end
  local consumer
  consumer, err, code = kafka.consumer(conf, function(kind, a, c) r:on_event(kind, a, c) end)
  if not consumer then
    if r.dlq then r.dlq:close() end
    return nil, err, code
  end
  r.consumer = consumer
  local ok
  ok, err, code = consumer:subscribe(topics)
  if not ok then
    r:close()
    return nil, err, code
  end
  return r
end

return M
