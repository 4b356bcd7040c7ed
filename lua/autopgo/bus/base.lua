-- What the bus modules share beyond the inbox: the REST writers' publish/health/close, the
-- readers that hold what they fetch (SQS, Pub/Sub, Service Bus), and dead-lettering (Kafka, NATS).
local async = require "autopgo.async"
local fail = require "autopgo.fail"
local http = require "autopgo.http"
local log = require "autopgo.log"
local inbox = require "autopgo.bus.inbox"
local stats = require "autopgo.bus.stats"

local M = {}

-- REST writers -------------------------------------------------------------------------------------
-- A writer class made by M.writer_class() has publish, health and close; it defines
-- Writer:send(body, opts) (one publish call: ok | nil, err, code) and Writer:probe() (a cheap call
-- that proves the topic or queue is there: truthy | nil, err, code).
local Writer = {}
Writer.__index = Writer
M.Writer = Writer

function Writer:publish(body, opts)
  if self.closed then return fail.new("CLOSED", "the writer is closed") end
  return self.stats:count("published", "failed", self:send(body, opts))
end

function Writer:health()
  if self.closed then return fail.new("CLOSED", "the writer is closed") end
  local ok, err, code = self:probe()
  if not ok then return nil, err, code end
  return true
end

function Writer:close()
  self.closed = true
  return true
end

--- A new writer class inheriting publish, health and close.
function M.writer_class()
  local cls = setmetatable({}, { __index = Writer })
  cls.__index = cls
  return cls
end

--- A writer of class `cls`: `fields` (name and what send/probe need) plus counters under `bus`.
function M.new_writer(cls, bus, fields)
  fields.stats = stats.new(bus, "writer")
  return setmetatable(fields, cls)
end

-- Readers that hold what they fetch ---------------------------------------------------------------
-- The SQS, Pub/Sub and Service Bus readers fetch ahead (at most max_buffered messages waiting)
-- and hold every message, kept invisible / locked / within its ack deadline, from its arrival
-- until it is settled: reader.held is the set of them and reader.inflight counts those receive()
-- handed out. M.Held has the methods they share (setmetatable(Reader, { __index = base.Held }));
-- a reader has inbox, name, held = {}, inflight = 0, max_buffered, max_extension_ms, closed,
-- cancel (an http canceler for its fetches) and close_timeout_ms.
local Held = {}
Held.__index = Held
M.Held = Held

--- A new reader class inheriting Held's methods (and health through the class's probe()).
function M.held_reader_class()
  local cls = setmetatable({}, Held)
  cls.__index = cls
  return cls
end

--- A reader of class `cls` counted under `bus`: `fields` (name and what its calls need) plus the
-- state Held works on, from opts (max_attempts 5, max_buffered `buffered`, close_timeout 30 s,
-- max_extension 3600 s).
function M.new_held_reader(cls, bus, opts, buffered, fields)
  fields.inflight, fields.held = 0, {}
  fields.max_attempts = opts.max_attempts or 5
  fields.max_buffered = opts.max_buffered or buffered
  fields.close_timeout_ms = (opts.close_timeout or 30) * 1000
  fields.max_extension_ms = (opts.max_extension or 3600) * 1000
  fields.cancel = http.canceler()
  fields.inbox = inbox.new { bus = bus, high = math.huge }
  return setmetatable(fields, cls)
end

--- Like a writer's: CLOSED once closed, else the class's probe().
function Held:health()
  if self.closed then return fail.new("CLOSED", "the reader is closed") end
  local ok, err, code = self:probe()
  if not ok then return nil, err, code end
  return true
end

--- Takes in message m just fetched: counts a redelivery, holds it with extend() called every
-- interval_ms until it is settled (for at most max_extension_ms), and queues it.
function Held:hold(m, interval_ms, extend)
  if m.attempt > 1 then self.inbox.stats:inc("redelivered") end
  self.held[m] = true
  m.keepalive = self.inbox:keepalive(interval_ms, self.max_extension_ms, function()
    if m.settled then return true end
    return extend()
  end)
  self.inbox:push(m)
end

--- Stops holding m: it is acknowledged, or handed back to the bus.
function Held:settle(m)
  if m.keepalive then m.keepalive() end
  m.settled = true
  self.held[m] = nil
  if m.handed_out then
    self.inflight = self.inflight - 1
    if self.settled_ev then self.settled_ev.set() end
  end
end

function Held:receive()
  local m, err, code = self.inbox:receive()
  if not m then return nil, err, code end
  m.settled, m.handed_out = false, true
  self.inflight = self.inflight + 1
  if self.room then self.room.set() end
  return m
end

function Held:stats()
  return self.inbox.stats:snapshot()
end

--- Waits at most `ms` for the messages handed out to be settled.
function Held:wait_inflight(ms)
  return inbox.wait_settled(self, ms, function() return self.inflight end)
end

--- Closes the reader: stops fetching, refuses receive(), waits (at most close_timeout_ms) for
-- the messages handed out to be settled, then gives every message still held (queued ones too)
-- back to the bus with release(m), so that it comes again at once rather than when its lease
-- runs out.
function Held:close_held(release)
  if self.closed then return true end
  self.closed = true
  self.cancel:cancel("the reader is closed")
  self.inbox:close("CLOSED: the reader is closed")
  if coroutine.isyieldable() then
    self:wait_inflight(self.close_timeout_ms)
    local held = {}
    for m in pairs(self.held) do held[#held + 1] = m end
    for _, m in ipairs(held) do
      if not m.settled then
        self:settle(m)
        release(m)
      end
    end
  end
  return true
end

--- Fetches until the reader is closed, while fewer than max_buffered messages wait: fetch() ->
-- an answer | nil, err, then deliver(answer) takes in what it brought. A failure is retried
-- after a jittered backoff (0.5 s doubling to 10 s); the first of a run is logged as `failing`.
-- An answer that arrives once the reader is closed goes to late(answer) when given.
function Held:poll(failing, fetch, deliver, late)
  local failures = 0
  while not self.closed do
    if self.inbox:size() >= self.max_buffered then
      self.room = async.event()
      self.room.wait(1000)
    else
      local answer, err = fetch()
      if self.closed then
        if answer and late then late(answer) end
        break
      end
      if not answer then
        failures = failures + 1
        if failures == 1 then log.warn(failing, "reader", self.name, "error", err) end
        async.sleep(math.floor(inbox.backoff(failures, 0.5, 10) * 1000))
      else
        failures = 0
        deliver(answer)
      end
    end
  end
end

-- Dead letters ---------------------------------------------------------------------------------
--- Gives msg up: writes it to reader.dlq (a writer) when the reader has one, else logs and drops
-- it; counts it. `bus` ("kafka") and `place` ("topic") name things in the log, `where` is the
-- dead-letter destination. Returns true, or nil, err, code when the dead-letter write failed
-- (nothing done: the caller redelivers the message).
function M.dead_letter(r, msg, reason, bus, place, where)
  if r.dlq then
    local ok, err, code = r.dlq:publish(msg.body, { key = msg.key })
    if not ok then
      log.error(("%s: cannot write to the dead-letter %s; redelivering instead"):format(bus, place),
        "reader", r.name, "error", err)
      return nil, err, code
    end
    log.warn(("%s: message moved to the dead-letter %s"):format(bus, place), "reader", r.name, "id", msg.id,
      place, where, "reason", reason)
  else
    inbox.log_given_up(("%s: giving up on a message and there is no dead-letter %s; dropping it"):format(bus,
      place), r.name, msg, reason)
  end
  r.inbox.stats:inc("dead_lettered")
  return true
end

return M
