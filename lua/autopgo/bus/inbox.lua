-- The local side of a bus reader, shared by the bus modules: messages fetched from the bus wait
-- here until receive() takes them, receivers wait for messages, messages can come back after a
-- delay (local redelivery), and the reader's counters live here.
local uv = require "luv"
local async = require "autopgo.async"
local log = require "autopgo.log"
local stats = require "autopgo.bus.stats"

local M = {}

local Inbox = {}
Inbox.__index = Inbox

--- opts.bus: the bus's name for the counters ("kafka", ...). opts.high / opts.low: buffer
-- watermarks; opts.on_full() is called when the buffer reaches `high` and opts.on_drained() when
-- it falls back to `low` (pause/resume fetching).
function M.new(opts)
  opts = opts or {}
  return setmetatable({
    items = {}, head = 1, tail = 0,
    waiters = {},
    timers = {},
    high = opts.high or 512, low = opts.low or 128,
    on_full = opts.on_full, on_drained = opts.on_drained, full = false,
    closed_err = nil,
    stats = stats.new(opts.bus or "unknown", "reader"),
  }, Inbox)
end

function Inbox:size()
  return self.tail - self.head + 1
end

local function wake(self)
  local co = table.remove(self.waiters, 1)
  if co then async.resume(co) end
end

local function check_full(self)
  if not self.full and self:size() >= self.high then
    self.full = true
    if self.on_full then self.on_full() end
  end
end

--- Appends a message fetched from the bus.
function Inbox:push(msg)
  if self.closed_err then return end
  self.tail = self.tail + 1
  self.items[self.tail] = msg
  check_full(self)
  wake(self)
end

--- Puts a message back at the front (a redelivery goes before newer messages).
function Inbox:push_front(msg)
  if self.closed_err then return end
  self.head = self.head - 1
  self.items[self.head] = msg
  check_full(self)
  wake(self)
end

--- Drops every queued message for which pred(msg) is true; returns how many.
function Inbox:remove_if(pred)
  local kept, n = {}, 0
  for i = self.head, self.tail do
    local m = self.items[i]
    if pred(m) then n = n + 1 else kept[#kept + 1] = m end
  end
  self.items, self.head, self.tail = {}, 1, 0
  for _, m in ipairs(kept) do
    self.tail = self.tail + 1
    self.items[self.tail] = m
  end
  return n
end

local function pop(self)
  if self.head > self.tail then return nil end
  local m = self.items[self.head]
  self.items[self.head] = nil
  self.head = self.head + 1
  if self.full and self:size() <= self.low then
    self.full = false
    if self.on_drained then self.on_drained() end
  end
  return m
end

--- Waits for the next message. `skip(msg)` (optional) discards stale messages. Returns the
-- message, or fail.new("CLOSED", "...") once the inbox is closed.
function Inbox:receive(skip)
  while true do
    if self.closed_err then return nil, self.closed_err, "CLOSED" end
    local m = pop(self)
    if m and not (skip and skip(m)) then
      self.stats:inc("received")
      return m
    end
    if not m then
      local co = coroutine.running()
      self.waiters[#self.waiters + 1] = co
      coroutine.yield()
    end
  end
end

-- A new timer that closes with the inbox, and the function that cancels it.
local function new_timer(self)
  local timer = uv.new_timer()
  self.timers[timer] = true
  return timer, function()
    if self.timers[timer] then
      self.timers[timer] = nil
      timer:close()
    end
  end
end

--- Calls fn() after `ms` milliseconds on the loop (in a coroutine), unless the inbox closes
-- first. Returns a cancel function.
function Inbox:later(ms, fn)
  local timer, cancel = new_timer(self)
  timer:start(math.max(0, math.floor(ms)), 0, function()
    cancel()
    async.spawn(fn)
  end)
  return cancel
end

--- Calls fn() every `interval_ms` until the returned cancel function is called, the inbox closes
-- or `max_ms` have passed: keeps a message's lock, visibility or ack deadline alive while its
-- work goes on, but not for ever (a handler that hangs must not hold a message for good).
function Inbox:keepalive(interval_ms, max_ms, fn)
  if max_ms <= 0 then return function() end end
  local timer, cancel = new_timer(self)
  local deadline = uv.now() + max_ms
  interval_ms = math.max(100, math.floor(interval_ms))
  timer:start(interval_ms, interval_ms, function()
    if uv.now() >= deadline then
      cancel()
      return
    end
    async.spawn(function()
      local ok, err = fn()
      if not ok and err then log.warn("could not extend a message's lease", "error", err) end
    end)
  end)
  return cancel
end

--- Closes: receivers get nil, err; pending timers are cancelled; queued messages are dropped
-- (the bus redelivers what was never acknowledged).
function Inbox:close(err)
  if self.closed_err then return end
  self.closed_err = err or "CLOSED: the reader is closed"
  for timer in pairs(self.timers) do timer:close() end
  self.timers = {}
  self.items, self.head, self.tail = {}, 1, 0
  local waiters = self.waiters
  self.waiters = {}
  for _, co in ipairs(waiters) do async.resume(co) end
end

--- The delay before redelivering a message that failed `attempt` times: exponential from
-- `base` seconds, capped at `cap`, with full jitter on the upper half so that a crowd of
-- failures does not come back at once.
function M.backoff(attempt, base, cap)
  base, cap = base or 1, cap or 60
  local d = math.min(cap, base * 2 ^ math.max(0, attempt - 1))
  return d / 2 + math.random() * d / 2
end

--- Waits at most `ms` for a reader's messages in flight to be settled: until busy() (how many
-- are) is 0, woken by reader.settled_ev, which the reader sets whenever it settles one. Returns
-- what busy() said last.
function M.wait_settled(reader, ms, busy)
  local deadline = uv.now() + ms
  local n = busy()
  while n > 0 and uv.now() < deadline do
    reader.settled_ev = async.event()
    reader.settled_ev.wait(math.max(1, deadline - uv.now()))
    n = busy()
  end
  return n
end

--- Logs a message that is given up on (dead-lettered or dropped) with enough to find it again.
function M.log_given_up(what, reader_name, msg, reason)
  local body = msg.body or ""
  log.error(what, "reader", reader_name, "id", msg.id, "key", msg.key, "attempt", msg.attempt,
    "reason", reason, "body", #body > 512 and (body:sub(1, 512) .. "...") or body)
end

return M
