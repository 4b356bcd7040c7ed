-- The in-process event bus (mem://topic[?group=g&ack_deadline=60s]): what the embedded default uses
-- between the server and the worker of one process. Per topic, every group gets every message;
-- readers of one group share them. Messages with the same key are delivered one at a time in
-- publish order (the next only after the previous was acknowledged), like SQS FIFO groups or
-- Pub/Sub ordering keys; a message that is nacked, outlives its ack deadline or belongs to a
-- reader that closes is delivered again; a rejected one is logged and dropped. Nothing survives
-- the process (the embedded worker re-drives staged uploads at start for that reason).
local fail = require "autopgo.fail"
local uv = require "luv"
local async = require "autopgo.async"
local units = require "autopgo.units"
local inbox = require "autopgo.bus.inbox"
local crypto = require("autopgo.core").crypto

local M = {}

local topics = {} -- name -> { groups = { [name] = group } }

local DEFAULT_DEADLINE = 60

local function topic_of(name)
  local t = topics[name]
  if not t then
    t = { name = name, groups = {} }
    topics[name] = t
  end
  return t
end

-- Groups ---------------------------------------------------------------------------------------

local Group = {}
Group.__index = Group

local function new_group(topic, name)
  local g = setmetatable({
    topic = topic, name = name,
    keys = {},      -- key -> FIFO list of pending messages
    busy = {},      -- key -> delivery in flight for that key
    ready = {},     -- FIFO of keys that have a pending message and nothing in flight
    queued = {},    -- key -> true while the key sits in `ready`
    waiters = {},   -- FIFO of { reader, co } waiting in receive()
    seq = 0,
  }, Group)
  topic.groups[name] = g
  return g
end

local function group_of(topic, name)
  return topic.groups[name] or new_group(topic, name)
end

function Group:mark_ready(key)
  if not self.busy[key] and not self.queued[key] and self.keys[key] and #self.keys[key] > 0 then
    self.queued[key] = true
    self.ready[#self.ready + 1] = key
  end
end

function Group:enqueue(msg, front)
  local q = self.keys[msg.key]
  if not q then
    q = {}
    self.keys[msg.key] = q
  end
  table.insert(q, front and 1 or #q + 1, msg)
  self:mark_ready(msg.key)
  self:dispatch()
end

-- The oldest ready message, now delivered to reader; nil when nothing is ready.
function Group:take(reader)
  if #self.ready == 0 then return nil end
  local key = table.remove(self.ready, 1)
  self.queued[key] = nil
  local q = self.keys[key]
  local msg = table.remove(q, 1)
  if #q == 0 then self.keys[key] = nil end
  return self:deliver(msg, reader)
end

-- Hands ready messages to readers waiting in receive(), oldest waiter first.
function Group:dispatch()
  while #self.waiters > 0 and #self.ready > 0 do
    local waiter = table.remove(self.waiters, 1)
    async.resume(waiter.co, self:take(waiter.reader))
  end
end

local Delivery = {}
Delivery.__index = Delivery

function Group:deliver(msg, reader)
  msg.attempt = msg.attempt + 1
  local d = setmetatable({
    body = msg.body, key = msg.user_key, id = msg.id, attempt = msg.attempt,
    _msg = msg, _group = self, _reader = reader, _done = false,
  }, Delivery)
  self.busy[msg.key] = d
  reader.holding[d] = true
  d:_arm(reader.deadline)
  return d
end

-- Ends a delivery: acknowledged (the message is gone) or returned (delivered again later).
function Group:settle(d, acked, delay)
  if d._done then return end
  d._done = true
  d:_disarm()
  d._reader.holding[d] = nil
  local key = d._msg.key
  if self.busy[key] == d then self.busy[key] = nil end
  if acked then
    self:mark_ready(key)
    self:dispatch()
  elseif delay and delay > 0 then
    -- The key stays blocked until the message is back, so later messages do not overtake it.
    local hold = {}
    self.busy[key] = hold
    local timer = uv.new_timer()
    timer:start(math.floor(delay * 1000), 0, function()
      timer:close()
      if self.busy[key] == hold then self.busy[key] = nil end
      self:enqueue(d._msg, true)
    end)
  else
    self:enqueue(d._msg, true)
  end
end

function Delivery:_arm(seconds)
  self:_disarm()
  local timer = uv.new_timer()
  self._timer = timer
  timer:start(math.floor(seconds * 1000), 0, function()
    -- Held past its deadline: the reader is presumed stuck or dead.
    self._group:settle(self, false)
  end)
end

function Delivery:_disarm()
  if self._timer then
    if not self._timer:is_closing() then self._timer:close() end
    self._timer = nil
  end
end

function Delivery:ack()
  self._group:settle(self, true)
  return true
end

function Delivery:nack(delay_seconds)
  self._group:settle(self, false, delay_seconds)
  return true
end

--- Gives up on the message: there is no dead-letter place in memory, so it is logged and
-- acknowledged (never delivered again).
function Delivery:reject(reason)
  if self._done then return true end
  inbox.log_given_up("mem: giving up on a message; there is no dead-letter place, dropping it",
    self._reader.name, self, reason)
  return self:ack()
end

function Delivery:extend(seconds)
  if not self._done then self:_arm(seconds or self._reader.deadline) end
  return true
end

-- Writers and readers ----------------------------------------------------------------------------

local Writer = {}
Writer.__index = Writer

function Writer:publish(body, opts)
  if self.closed then return fail.new("CLOSED", "the writer is closed") end
  if type(body) ~= "string" then return fail.new("INVALID", "body must be a string") end
  local user_key = opts and opts.key
  local topic = self.topic
  if not next(topic.groups) then group_of(topic, "default") end
  for _, g in pairs(topic.groups) do
    g.seq = g.seq + 1
    -- Messages without a key are unordered: each gets a key of its own.
    local key = user_key and ("k:" .. user_key) or ("n:" .. g.seq)
    g:enqueue({ body = body, key = key, user_key = user_key, id = crypto.uuid4(), attempt = 0 })
  end
  return true
end

function Writer:health()
  if self.closed then return fail.new("CLOSED", "the writer is closed") end
  return true
end

function Writer:close()
  self.closed = true
  return true
end

local Reader = {}
Reader.__index = Reader

function Reader:receive()
  if self.closed then return fail.new("CLOSED", "the reader is closed") end
  local g = self.group
  local ready = g:take(self)
  if ready then return ready end
  g.waiters[#g.waiters + 1] = { reader = self, co = coroutine.running() }
  local d = coroutine.yield()
  if not d then return fail.new("CLOSED", "the reader is closed") end
  return d
end

function Reader:health()
  if self.closed then return fail.new("CLOSED", "the reader is closed") end
  return true
end

--- Closes the reader: pending receive() calls return CLOSED and the messages it held unacknowledged
-- go back to the group for another reader.
function Reader:close()
  if self.closed then return true end
  self.closed = true
  local g = self.group
  local kept, mine = {}, {}
  for _, w in ipairs(g.waiters) do
    if w.reader == self then mine[#mine + 1] = w.co else kept[#kept + 1] = w end
  end
  g.waiters = kept
  local held = {}
  for d in pairs(self.holding) do held[#held + 1] = d end
  table.sort(held, function(a, b) return a._msg.id < b._msg.id end)
  for _, d in ipairs(held) do g:settle(d, false) end
  for _, co in ipairs(mine) do async.resume(co, nil) end
  return true
end

local function topic_name(u)
  local name = (u.host or "") .. (u.path or "")
  if name == "" then name = "autopgo" end
  return name
end

--- mem://topic: publishes to the in-process topic.
function M.writer(u)
  local name = topic_name(u)
  return setmetatable({ topic = topic_of(name), name = "mem://" .. name }, Writer)
end

--- mem://topic?group=g&ack_deadline=60s: a reader in group g (default "default").
function M.reader(u)
  local name = topic_name(u)
  local deadline = DEFAULT_DEADLINE
  if u.query.ack_deadline then
    local secs, err = units.parse_duration(u.query.ack_deadline)
    if not secs or secs <= 0 then
      return fail.new("INVALID", "mem:// ack_deadline %q: %s", u.query.ack_deadline, err or "must be positive")
    end
    deadline = secs
  end
  local group = group_of(topic_of(name), u.query.group or "default")
  return setmetatable({ group = group, deadline = deadline, holding = {}, name = "mem://" .. name }, Reader)
end

return M
