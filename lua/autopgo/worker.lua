-- The worker: consumes profile events and keeps one merged profile per application in
-- {app}/default.pgo. On profile.uploaded it runs merge passes (autopgo.merge_pass: ledger,
-- batching, policy) until every staged upload of the app is in the base (coalescing);
-- profile.merged deletes the staged object; profile.deleted deletes every object of the app.
-- Stopping (SIGTERM) finishes the pass in progress and leaves the rest staged for the next start.
-- With history (autopgo.history): each pass also fills the time segments; profile.range_deleted
-- removes the segments of a range and rebuilds the base from what is left; a timer sweeps
-- history past retention (and leftovers of crashes) every M.SWEEP_EVERY seconds.
local async = require "autopgo.async"
local events = require "autopgo.events"
local fail = require "autopgo.fail"
local keys = require "autopgo.keys"
local log = require "autopgo.log"
local merge_pass = require "autopgo.merge_pass"
local utc = require "autopgo.utc"

local M = {}

M.SWEEP_EVERY = 300

local Worker = {}
Worker.__index = Worker

--- A worker. o: store, writer, reader (nil for a worker only driven by merge_app), policy
-- (autopgo.policy), concurrency (messages handled at once, 4), batch_limit (staged profiles per
-- pass, merge_pass.BATCH), batch_bytes (their total size, 256 MiB), recover (merge staged uploads
-- found at start, for buses that lose events: the in-process one), history (an autopgo.history,
-- or nil).
function M.new(o)
  local self = setmetatable({
    store = assert(o.store, "worker: store"), writer = assert(o.writer, "worker: writer"), reader = o.reader,
    policy = assert(o.policy, "worker: policy"),
    concurrency = o.concurrency or 4, batch_limit = o.batch_limit,
    recover = o.recover, locks = {}, busy = 0, loops = 0, history = o.history,
    stopping = false, ack_extend = o.ack_extend or 300,
  }, Worker)
  self.pass = merge_pass.new { store = self.store, writer = self.writer, policy = self.policy,
    batch_limit = self.batch_limit, batch_bytes = o.batch_bytes, history = o.history,
    stopping = function() return self.stopping end }
  return self
end

-- Runs fn() holding a per-app mutex inside this process (concurrent handlers of one app would
-- only race each other), released even when fn raises; returns what fn returns.
function Worker:locked(app, fn)
  while self.locks[app] do self.locks[app].wait() end
  local ev = async.event()
  self.locks[app] = ev
  local ok, res, err, code = pcall(fn)
  self.locks[app] = nil
  ev.set()
  if not ok then error(res, 0) end
  return res, err, code
end

--- Merges what is staged for app until nothing is left, a pass fails, or the worker is stopping
-- (the pass in progress finishes; the rest stays staged and this fails with CANCELED, so the
-- event is handed back for the next start). Serialised per app. With key (the upload an event
-- announced), nothing is done when that upload is already merged or no longer staged: the
-- events of uploads a pass coalesced cost a stat, not a listing. Returns the profiles merged.
function Worker:merge_app(app, key)
  return self:locked(app, function()
    if key then
      local settled, err, code = self.pass:settled(app, key)
      if settled == nil then return nil, err, code end
      if settled then return 0 end
    end
    local total = 0
    while true do
      if self.stopping then
        return fail.new("CANCELED", "stopping: what is staged for %s stays staged for the next start", app)
      end
      local done, n, more = self.pass:run(app)
      if not done then return nil, n, more end
      total = total + n
      if not more then return total end
    end
  end)
end

-- Event handlers ------------------------------------------------------------------------------------

-- Whether an event's profileKey is in its app's staging area; logs the event ignored when not.
local function staged(kind, p)
  if keys.is_staging_of(p.app, p.profileKey) then return true end
  log.warn(("ignoring %s for a key outside the app's staging area"):format(kind), "app", p.app, "key", p.profileKey)
  return false
end

function Worker:on_uploaded(p)
  if not staged(events.UPLOADED, p) then return true end
  local ok, err, code = self:merge_app(p.app, p.profileKey)
  if not ok then return nil, err, code end
  return true
end

function Worker:on_merged(p)
  -- Only staged uploads are ever deleted here, whatever the event says.
  if not staged(events.MERGED, p) then return true end
  local ok, err, code = self.store:delete(p.profileKey)
  if not ok and code ~= "NOT_FOUND" then return nil, err, code end
  self.pass:forget(p.profileKey)
  return true
end

-- The base goes last and its ledger just before it: while the app still shows in the list
-- something of it is left, and once it is gone everything is (a crash half-way leaves a base
-- that a redelivered event deletes again, never uploads that could be merged twice).
local delete_rank = { base = 2, ledger = 1 }

function Worker:on_deleted(p)
  return self:locked(p.app, function()
    local items, lerr, lcode = self.store:list(keys.app_prefix(p.app))
    if not items then return nil, lerr, lcode end
    local function rank(key) return delete_rank[keys.kind_of(key)] or 0 end
    table.sort(items, function(a, b)
      local ra, rb = rank(a.key), rank(b.key)
      if ra ~= rb then return ra < rb end
      return a.key < b.key
    end)
    for _, item in ipairs(items) do
      local dok, derr, dcode = self.store:delete(item.key)
      if not dok and dcode ~= "NOT_FOUND" then return nil, derr, dcode end
    end
    self.pass:forget_app(p.app)
    log.info("deleted every object of an app", "app", p.app, "objects", #items)
    return true
  end)
end

-- profile.range_deleted: the segments overlapping [from, to) go, and the base is rebuilt from
-- the rest of the history. Without history nothing is kept per time, so nothing can be removed.
function Worker:on_range_deleted(p)
  if not self.history then
    log.warn("ignoring profile.range_deleted: this worker keeps no history", "app", p.app)
    return true
  end
  local from, ferr = utc.parse_rfc3339(p.from)
  local to, terr = utc.parse_rfc3339(p.to)
  if not (from and to) then
    -- no retry can help
    log.warn("ignoring profile.range_deleted with a bad range", "app", p.app, "error", ferr or terr)
    return true
  end
  return self:locked(p.app, function()
    local n, err, code = self.history:delete_range(p.app, from, to)
    if not n then return nil, err, code end
    local ok, rerr, rcode = self.pass:rebuild(p.app)
    if not ok then return nil, rerr, rcode end
    log.info("deleted a time range of an app's history", "app", p.app, "from", p.from, "to", p.to, "segments", n)
    return true
  end)
end

local handlers = {
  [events.UPLOADED] = Worker.on_uploaded,
  [events.MERGED] = Worker.on_merged,
  [events.DELETED] = Worker.on_deleted,
  [events.RANGE_DELETED] = Worker.on_range_deleted,
}

--- Handles one message: acknowledged when handled; rejected (dead-lettered where the bus can)
-- when malformed or of a type no handler knows, as no retry can help; handed back for a later
-- retry (with back-off) when handling failed, at once when the worker is stopping.
function Worker:handle_message(msg)
  local env, err = events.parse(msg.body)
  if not env then
    log.warn("rejecting a malformed event", "id", msg.id, "error", err)
    events.count_handled("malformed", false)
    msg:reject(err)
    return
  end
  local fn = handlers[env.type]
  if not fn then
    log.warn("rejecting an event of an unknown type", "id", env.id, "type", env.type)
    events.count_handled("unknown", false)
    msg:reject(select(2, fail.new("UNSUPPORTED", "unknown event type %q", env.type)))
    return
  end
  msg:extend(self.ack_extend)
  local ok, res, herr, hcode = pcall(fn, self, env.payload)
  if ok and res then
    events.count_handled(env.type, true)
    msg:ack()
    return
  end
  if ok and hcode == "CANCELED" and self.stopping then
    log.info("stopping: handing an event back", "id", env.id, "type", env.type, "app", env.payload.app)
    msg:nack(0)
    return
  end
  events.count_handled(env.type, false)
  local why = ok and herr or res
  local delay = math.min(2 ^ ((msg.attempt or 1) - 1), 60)
  log.error("event handling failed; it will be retried", "id", env.id, "type", env.type, "app", env.payload.app,
    "attempt", msg.attempt, "retry_in", delay, "error", tostring(why))
  msg:nack(delay)
end

-- Running -----------------------------------------------------------------------------------------------

function Worker:consume()
  local backoff = 0.1
  while not self.stopping do
    local msg, err, code = self.reader:receive()
    if not msg then
      if code == "CLOSED" or self.stopping then break end
      log.warn("receiving events failed", "error", err)
      async.sleep(math.floor(backoff * 1000))
      backoff = math.min(backoff * 2, 30)
    elseif self.stopping then
      msg:nack(0)
      break
    else
      backoff = 0.1
      self.busy = self.busy + 1
      local ok, perr = pcall(self.handle_message, self, msg)
      if not ok then log.error("event handler crashed", "error", tostring(perr)) end
      self.busy = self.busy - 1
      if self.busy == 0 and self.idle then self.idle.set() end
    end
  end
  self.loops = self.loops - 1
  if self.loops == 0 and self.finished then self.finished.set() end
end

--- Merges the staged uploads of every app found in the store (for buses that lost their events).
function Worker:recover_staged()
  local items, err = self.store:list("")
  if not items then
    log.error("cannot list staged uploads to recover them", "error", err)
    return
  end
  local apps, order = {}, {}
  for _, item in ipairs(items) do
    local kind, app = keys.kind_of(item.key)
    if kind == "staging" and not apps[app] then
      apps[app] = true
      order[#order + 1] = app
    end
  end
  for _, app in ipairs(order) do
    if self.stopping then return end
    self.busy = self.busy + 1
    local ok, res, merr, mcode = pcall(self.merge_app, self, app)
    self.busy = self.busy - 1
    if self.busy == 0 and self.idle then self.idle.set() end
    if ok and res then
      log.info("recovered staged uploads", "app", app, "profiles", res)
    elseif ok and mcode == "CANCELED" then
      log.info("stopping: staged uploads left for the next start", "app", app)
    else
      log.error("recovering staged uploads failed", "app", app, "error", tostring(ok and merr or res))
    end
  end
end

--- One history sweep (retention, leftovers); returns what autopgo.history's sweep returns.
function Worker:sweep()
  self.busy = self.busy + 1
  local ok, n, err = pcall(self.history.sweep, self.history)
  self.busy = self.busy - 1
  if self.busy == 0 and self.idle then self.idle.set() end
  if not ok or not n then
    log.error("sweeping the history failed", "error", tostring(ok and err or n))
    return nil
  end
  if n > 0 then log.info("swept the history", "removed", n) end
  return n
end

--- Recomputes default.pgo of every app whose policy makes it a rolling window or a decayed sum
-- (autopgo.policy view_for), so it follows the clock, not only the uploads. Returns how many.
function Worker:refresh_views()
  local items, err = self.store:list("")
  if not items then
    log.error("cannot list the apps to refresh their default profiles", "error", err)
    return 0
  end
  local apps, n = {}, 0
  for _, item in ipairs(items) do
    local kind, app = keys.kind_of(item.key)
    if kind == "history" and not apps[app] and self.policy:view_for(app).kind ~= "all" then apps[app] = true end
  end
  for app in pairs(apps) do
    if self.stopping then break end
    self.busy = self.busy + 1
    local ok, res, rerr = pcall(self.locked, self, app, function() return self.pass:rebuild(app) end)
    self.busy = self.busy - 1
    if self.busy == 0 and self.idle then self.idle.set() end
    if ok and res then
      n = n + 1
    else
      log.error("refreshing the default profile failed", "app", app, "error", tostring(ok and rerr or res))
    end
  end
  return n
end

-- Sweeps at start and every M.SWEEP_EVERY seconds, and refreshes rolling or decayed default
-- profiles at start and at every segment boundary, until stopping.
function Worker:sweeper()
  local h = self.history
  local segment, last_sweep = nil, nil
  while not self.stopping do
    local now = h.now() // 1000000000
    if not last_sweep or now - last_sweep >= M.SWEEP_EVERY then
      self:sweep()
      last_sweep = now
    end
    local current = now // h.seglen
    if current ~= segment then
      segment = current
      if self.policy:needs_history() then self:refresh_views() end
    end
    async.sleep(1000)
  end
end

--- Starts consuming (and recovering, if asked; and sweeping the history, if any). Returns at once.
function Worker:start()
  self.finished = async.event()
  for _ = 1, self.concurrency do
    self.loops = self.loops + 1
    async.spawn(self.consume, self)
  end
  if self.recover then async.spawn(self.recover_staged, self) end
  if self.history then async.spawn(self.sweeper, self) end
end

--- Asks the worker to stop without waiting: no new event is taken and no new pass starts.
function Worker:request_stop()
  self.stopping = true
end

--- Stops receiving, lets the merge pass in progress finish (what is left stays staged) and the
-- deletes of what it merged, then closes the reader. Returns once everything is idle.
function Worker:stop()
  self.stopping = true
  while self.busy > 0 do
    self.idle = async.event()
    self.idle.wait()
  end
  self.pass:flush()
  if self.reader then self.reader:close() end
  if self.loops > 0 then self.finished.wait() end
  return true
end

return M
