-- Admission for work that costs CPU and memory (validating uploads): at most `slots` jobs at once
-- and at most `bytes` reserved by them together. Callers queue first come, first served, up to
-- `max_waiting` of them and each for at most `wait_timeout` seconds; past either the answer is
-- BUSY (the API turns it into 503 with Retry-After), never more memory.
--
--   local b = budget.new { slots = 2, bytes = 768 * 2^20, max_waiting = 64, wait_timeout = 10 }
--   local ticket, err = b:acquire(n)   -- in a coroutine; n is clamped to `bytes`
--   ...; b:release(ticket)
local async = require "autopgo.async"
local fail = require "autopgo.fail"

local M = {}

local Budget = {}
Budget.__index = Budget

--- A budget. o: slots (jobs at once, default 2), bytes (reserved at once, default unbounded),
-- max_waiting (queued callers, default 64), wait_timeout (seconds in the queue, default 10).
function M.new(o)
  o = o or {}
  return setmetatable({
    slots = o.slots or 2, bytes = o.bytes or math.huge, max_waiting = o.max_waiting or 64,
    wait_timeout = o.wait_timeout or 10,
    running = 0, reserved = 0, queue = {}, refused = 0, admitted = 0, peak_reserved = 0,
  }, Budget)
end

function Budget:_fits(n)
  return self.running < self.slots and self.reserved + n <= self.bytes
end

function Budget:_take(n)
  self.running = self.running + 1
  self.reserved = self.reserved + n
  self.admitted = self.admitted + 1
  if self.reserved > self.peak_reserved then self.peak_reserved = self.reserved end
  return { n = n }
end

-- Admits queued callers in order while the first one fits (no overtaking: a large reservation is
-- not starved by a stream of small ones).
function Budget:_pump()
  while self.queue[1] and self:_fits(self.queue[1].n) do
    local w = table.remove(self.queue, 1)
    w.ticket = self:_take(w.n)
    w.ev.set(true)
  end
end

--- Waits for a slot and `n` bytes. Returns a ticket, or nil, "BUSY: ...", "BUSY" when the queue is
-- full or the wait times out. Must be called from a coroutine.
function Budget:acquire(n)
  n = math.min(math.max(n or 0, 0), self.bytes)
  if #self.queue == 0 and self:_fits(n) then return self:_take(n) end
  if #self.queue >= self.max_waiting then
    self.refused = self.refused + 1
    return fail.new("BUSY", "%d uploads are already waiting to be validated", #self.queue)
  end
  local w = { n = n, ev = async.event() }
  self.queue[#self.queue + 1] = w
  w.ev.wait(math.floor(self.wait_timeout * 1000))
  if w.ticket then return w.ticket end
  for i, q in ipairs(self.queue) do
    if q == w then table.remove(self.queue, i) break end
  end
  self.refused = self.refused + 1
  return fail.new("BUSY", "no room to validate the upload within %gs", self.wait_timeout)
end

--- Gives back a ticket's slot and bytes (a second release of the same ticket does nothing).
function Budget:release(ticket)
  if not ticket or ticket.released then return end
  ticket.released = true
  self.running = self.running - 1
  self.reserved = self.reserved - ticket.n
  self:_pump()
end

--- { running, reserved, waiting, refused, admitted, peak_reserved }
function Budget:stats()
  return { running = self.running, reserved = self.reserved, waiting = #self.queue, refused = self.refused,
    admitted = self.admitted, peak_reserved = self.peak_reserved }
end

return M
