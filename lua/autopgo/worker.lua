-- The worker: consumes profile events and keeps one merged profile per application in
-- {app}/default.pgo. On profile.uploaded it merges every staged upload of the app that is not in
-- the base yet, in one pass (coalescing); profile.merged deletes the staged object;
-- profile.deleted deletes every object of the app.
--
-- Exactly once, with at-least-once delivery and several workers: each base has a ledger,
-- {app}/ledger/<sha256 of the base>.json, listing the staged keys it contains. A merge writes the
-- ledger of the new base first, then the base itself with a conditional write (if_match the etag
-- it read, or create-only), which is the commit point: a crash before it leaves an unused ledger,
-- a crash after it leaves a base whose ledger says what it holds, and a lost race is retried from
-- the new base. Staged keys already in the base's ledger are never merged again, only announced
-- (profile.merged) so they get deleted. Poison (a staged profile that no longer parses or cannot be
-- merged with the base) is moved to {app}/rejected/ and the worker carries on.
local async = require "autopgo.async"
local events = require "autopgo.events"
local json = require "autopgo.json"
local log = require "autopgo.log"
local metrics = require "autopgo.metrics"
local uv = require "luv"
local core = require "autopgo.core"

local pprof, crypto = core.pprof, core.crypto

local M = {}

M.MAX_ATTEMPTS = 20
-- The base is compressed again at every merge: gzip level 1 costs half the merge time of the
-- default level for a file some 7 % larger, which any gzip reader (go build -pgo) takes alike.
M.GZIP_LEVEL = 1

local m = {
  merges = metrics.counter("autopgo_merges_total", "Merge passes by result (merged, failed).", { "result" }),
  duration = metrics.histogram("autopgo_merge_duration_seconds", "Time to merge staged profiles into a base.",
    nil, { 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60 }),
  profiles = metrics.counter("autopgo_profiles_merged_total", "Staged profiles merged into a base."),
  per_merge = metrics.histogram("autopgo_merge_profiles", "Staged profiles merged in one pass (coalescing).",
    nil, { 1, 2, 4, 8, 16, 32, 64, 128 }),
  rejected = metrics.counter("autopgo_profiles_rejected_total", "Staged profiles moved to {app}/rejected/."),
  conflicts = metrics.counter("autopgo_merge_conflicts_total", "Merges retried because another wrote the base first."),
  size = metrics.gauge("autopgo_profile_size_bytes", "Size of the merged profile, per app.", { "app" }),
}

local Worker = {}
Worker.__index = Worker

--- A worker. o: store, writer, reader (nil for a worker only driven by merge_app), policy
-- (autopgo.policy), concurrency (messages handled at once, 4), batch_limit (staged profiles per
-- merge, 64), batch_bytes (their total size, 256 MiB), recover (merge staged uploads found at start,
-- for buses that lose events: the in-process one).
function M.new(o)
  return setmetatable({
    store = assert(o.store, "worker: store"), writer = assert(o.writer, "worker: writer"), reader = o.reader,
    policy = assert(o.policy, "worker: policy"),
    concurrency = o.concurrency or 4, batch_limit = o.batch_limit or 64,
    batch_bytes = o.batch_bytes or 256 * 1024 * 1024,
    recover = o.recover, announced = {}, announced_n = 0, locks = {}, bases = {}, busy = 0, loops = 0,
    stopping = false, ack_extend = o.ack_extend or 300,
  }, Worker)
end

-- Helpers ----------------------------------------------------------------------------------------

-- SHA-256 of a string in pieces, yielding between them so a large base does not hold the loop.
local function hash(data)
  local h = crypto.hasher("sha256")
  local piece = 1024 * 1024
  for i = 1, #data, piece do
    h:update(data:sub(i, i + piece - 1))
    if i + piece <= #data then async.sleep(0) end
  end
  return crypto.hex(h:digest())
end

local function ledger_key(app, h)
  return ("%s/ledger/%s.json"):format(app, h)
end

local function base_key(app)
  return app .. "/default.pgo"
end

-- pprof.merge_async keeps the failing input's index after the error: await without losing it.
local function merge(inputs, opts)
  local err, out, extra = async.await(function(cb)
    pprof.merge_async(inputs, opts, function(e, o, x) cb(nil, e, o, x) end)
  end)
  if err then return nil, err, async.error_code(err), extra end
  return out, extra
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

-- Publishes profile.merged for staged keys now in the base (once per key in this process).
function Worker:announce(app, keys)
  for _, key in ipairs(keys) do
    if not self.announced[key] then
      local ok, err = events.publish(self.writer, events.MERGED,
        { app = app, profileKey = key, mergedKey = base_key(app) })
      if ok then
        if self.announced_n > 100000 then self.announced, self.announced_n = {}, 0 end
        self.announced[key] = true
        self.announced_n = self.announced_n + 1
      else
        -- The staged object stays; the next merge of the app announces it again.
        log.warn("cannot publish profile.merged", "app", app, "key", key, "error", err)
      end
    end
  end
end

-- Moves a staged profile that cannot be merged to {app}/rejected/, with the reason beside it.
function Worker:reject(app, key, body, reason)
  local name = key:match("[^/]+$")
  local dest = ("%s/rejected/%s"):format(app, name)
  local ok, err = self.store:put(dest, body)
  if ok then ok, err = self.store:put(dest .. ".reason", reason .. "\n") end
  if not ok then
    log.error("cannot move a rejected profile aside; it stays staged", "key", key, "error", err)
    return nil, err
  end
  local dok, derr, dcode = self.store:delete(key)
  if not dok and dcode ~= "NOT_FOUND" then
    log.warn("cannot delete a rejected staged profile", "key", key, "error", derr)
  end
  m.rejected:inc()
  log.warn("rejected a staged profile", "app", app, "key", key, "moved_to", dest, "reason", reason)
  return true
end

-- Merging -----------------------------------------------------------------------------------------

-- Merges base (bytes or nil) with the staged batch ({ key, body } oldest first) under the app's
-- policy. Poison is rejected and left out. Returns the new base bytes and the keys in it, or
-- nil, err, code when the merge cannot go on (nothing is rejected for such failures).
function Worker:merge_batch(app, base, batch)
  local rules = self.policy:rules_for(app)
  local hook = self.policy:hook_for(app)
  local staged = {}
  for _, item in ipairs(batch) do
    local input = item.body
    if hook then
      local profile, err, code = async.await(pprof.decode_async, item.body, nil)
      if profile then
        profile, err, code = self.policy:apply_hook(app, profile)
      end
      if not profile then
        if code ~= "POLICY" and code ~= "MALFORMED" and code ~= "TOO_LARGE" then return nil, err, code end
        self:reject(app, item.key, item.body, err)
        input = nil
      else
        input = profile
      end
    end
    if input then staged[#staged + 1] = { key = item.key, body = item.body, input = input } end
  end
  while true do
    if #staged == 0 then return nil, nil, "EMPTY" end
    -- Base first, then the uploads oldest first: the order the original's one-by-one merges add up to.
    local inputs = {}
    if base then inputs[1] = base end
    for _, s in ipairs(staged) do inputs[#inputs + 1] = s.input end
    local out, summary, code, index = merge(inputs,
      { prune = rules, output = #rules > 0 and "profile" or "bytes", level = M.GZIP_LEVEL })
    if out then
      if #rules > 0 then
        -- Pruning can leave identical stacks apart; merging the result alone adds them up again,
        -- so a base pruned many times equals one merge of everything pruned once.
        local pruned = out
        out, summary, code = merge({ pruned }, { output = "bytes", level = M.GZIP_LEVEL })
        pruned:close()
        if not out then return nil, summary, code end
      end
      local keys = {}
      for i, s in ipairs(staged) do keys[i] = s.key end
      return out, keys
    end
    local err = summary
    local offset = base and 1 or 0
    if index and index > offset and (code == "MALFORMED" or code == "INCOMPATIBLE" or code == "TOO_LARGE") then
      local bad = table.remove(staged, index - offset)
      self:reject(app, bad.key, bad.body, err)
    elseif index == 1 and base and code == "MALFORMED" then
      -- The base itself no longer parses: keep it aside and start a new one.
      log.error("the merged profile is corrupt; moving it aside and starting again", "app", app, "error", err)
      local aside = ("%s/rejected/default.pgo.%d"):format(app, os.time())
      local ok, perr, pcode = self.store:put(aside, base)
      if not ok then return nil, perr, pcode end
      base = nil -- the commit still replaces the corrupt object by its etag
    else
      return nil, err, code
    end
  end
end

-- One merge pass for app: everything staged and not yet in the base goes in (up to the batch
-- limits). Returns true and the number of profiles merged, or nil, err, code.
-- The base of app and what its ledger says it holds: { etag, hash, merged = set, body } (body only
-- when with_body), or false when there is no base. The hash and ledger of the version seen last
-- are remembered, so the events of uploads already coalesced into a base cost a stat, not a read.
function Worker:base_state(app, with_body)
  local store = self.store
  local cached = self.bases[app]
  if not with_body and cached ~= nil then
    local st, err, code = store:stat(base_key(app))
    if not st and code ~= "NOT_FOUND" then return nil, err, code end
    if (not st and cached == false) or (st and cached and cached.etag == st.etag) then return cached end
  end
  local base, err, code = store:get(base_key(app))
  if not base then
    if code ~= "NOT_FOUND" then return nil, err, code end
    self.bases[app] = false
    return false
  end
  local state = { etag = base.etag, body = base.body }
  if cached and cached.etag == base.etag then
    state.hash, state.merged = cached.hash, cached.merged
  else
    state.hash, state.merged = hash(base.body), {}
    local ledger, lerr, lcode = store:get(ledger_key(app, state.hash))
    if ledger then
      local doc = json.decode(ledger.body)
      if type(doc) == "table" and type(doc.merged) == "table" then
        for _, k in ipairs(doc.merged) do state.merged[k] = true end
      else
        log.warn("unreadable ledger, treating the base as holding no staged upload", "app", app)
      end
    elseif lcode ~= "NOT_FOUND" then
      return nil, lerr, lcode
    end
  end
  self.bases[app] = { etag = state.etag, hash = state.hash, merged = state.merged }
  return state
end

-- One merge pass for app: everything staged and not yet in the base goes in (up to the batch
-- limits). Returns true and the number of profiles merged, or nil, err, code.
function Worker:merge_once(app)
  local store = self.store
  local with_body = false
  for _ = 1, M.MAX_ATTEMPTS do
    local base, err, code = self:base_state(app, with_body)
    if base == nil then return nil, err, code end
    local merged = base and base.merged or {}
    local base_hash = base and base.hash
    local staged, serr, scode = store:list(app .. "/staging/")
    if not staged then return nil, serr, scode end
    local present, pending, already = {}, {}, {}
    for _, item in ipairs(staged) do
      present[item.key] = true
      if merged[item.key] then already[#already + 1] = item.key else pending[#pending + 1] = item end
    end
    if #pending == 0 then
      self:announce(app, already)
      return true, 0
    end
    if base and not base.body then
      -- Work to do and only the remembered state at hand: read the base, then look again.
      with_body = true
      goto continue
    end
    local started = uv.hrtime()
    local batch, bytes = {}, 0
    for _, item in ipairs(pending) do
      if #batch >= self.batch_limit or (#batch > 0 and bytes + item.size > self.batch_bytes) then break end
      local got, gerr, gcode = store:get(item.key)
      if got then
        batch[#batch + 1] = { key = item.key, body = got.body }
        bytes = bytes + #got.body
      elseif gcode ~= "NOT_FOUND" then
        return nil, gerr, gcode
      end
    end
    local out, keys, mcode = self:merge_batch(app, base and base.body, batch)
    if not out then
      if mcode ~= "EMPTY" then
        m.merges:inc({ result = "failed" })
        return nil, keys, mcode
      end
      -- everything in the batch was rejected or vanished: look again
    else
      local new_hash = hash(out)
      local contents = {}
      for key in pairs(merged) do
        if present[key] then contents[#contents + 1] = key end
      end
      for _, k in ipairs(keys) do contents[#contents + 1] = k end
      table.sort(contents)
      local doc = json.encode(json.object("base", new_hash, "merged", json.array(contents)))
      local lok, lerr, lcode = store:put(ledger_key(app, new_hash), doc, { content_type = "application/json" })
      if not lok then return nil, lerr, lcode end
      local opts = base and { if_match = base.etag } or { if_none_match = "*" }
      local put, perr, pcode = store:put(base_key(app), out, opts)
      if put then
        local secs = (uv.hrtime() - started) / 1e9
        m.merges:inc({ result = "merged" })
        m.duration:observe(nil, secs)
        m.profiles:inc(nil, #keys)
        m.per_merge:observe(nil, #keys)
        m.size:set({ app = app }, #out)
        log.info("merged", "app", app, "profiles", #keys, "size", #out, "seconds", ("%.3f"):format(secs))
        local now_merged = {}
        for _, k in ipairs(contents) do now_merged[k] = true end
        self.bases[app] = { etag = put.etag, hash = new_hash, merged = now_merged }
        self:announce(app, keys)
        self:announce(app, already)
        if base_hash and base_hash ~= new_hash then store:delete(ledger_key(app, base_hash)) end
        return true, #keys
      end
      if pcode ~= "PRECONDITION_FAILED" and pcode ~= "NOT_FOUND" then return nil, perr, pcode end
      m.conflicts:inc()
      log.debug("another merge wrote the base first; merging again from it", "app", app)
    end
    ::continue::
  end
  m.merges:inc({ result = "failed" })
  return nil, ("CONFLICT: gave up merging %s after %d attempts"):format(app, M.MAX_ATTEMPTS), "CONFLICT"
end

--- Merges what is staged for app until nothing is left (or a pass fails). Serialised per app.
function Worker:merge_app(app)
  return self:locked(app, function()
    local total = 0
    while true do
      local done, n, c = self:merge_once(app)
      if not done then return nil, n, c end
      total = total + n
      if n < self.batch_limit then return total end
    end
  end)
end

-- Event handlers ------------------------------------------------------------------------------------

-- Whether an event's profileKey is in its app's staging area; logs the event ignored when not.
local function staged(kind, p)
  if p.profileKey:sub(1, #p.app + 9) == p.app .. "/staging/" then return true end
  log.warn(("ignoring %s for a key outside the app's staging area"):format(kind), "app", p.app, "key", p.profileKey)
  return false
end

function Worker:on_uploaded(p)
  if not staged(events.UPLOADED, p) then return true end
  local ok, err, code = self:merge_app(p.app)
  if not ok then return nil, err, code end
  return true
end

function Worker:on_merged(p)
  -- Only staged uploads are ever deleted here, whatever the event says.
  if not staged(events.MERGED, p) then return true end
  local ok, err, code = self.store:delete(p.profileKey)
  if not ok and code ~= "NOT_FOUND" then return nil, err, code end
  self.announced[p.profileKey] = nil
  return true
end

function Worker:on_deleted(p)
  return self:locked(p.app, function()
    local items, lerr, lcode = self.store:list(p.app .. "/")
    if not items then return nil, lerr, lcode end
    -- The base goes last and its ledger just before it: while the app still shows in the list
    -- something of it is left, and once it is gone everything is (a crash half-way leaves a
    -- base that a redelivered event deletes again, never uploads that could be merged twice).
    local function rank(key)
      if key == base_key(p.app) then return 2 end
      if key:sub(#p.app + 2, #p.app + 8) == "ledger/" then return 1 end
      return 0
    end
    table.sort(items, function(a, b)
      local ra, rb = rank(a.key), rank(b.key)
      if ra ~= rb then return ra < rb end
      return a.key < b.key
    end)
    for _, item in ipairs(items) do
      local dok, derr, dcode = self.store:delete(item.key)
      if not dok and dcode ~= "NOT_FOUND" then return nil, derr, dcode end
    end
    m.size:remove({ app = p.app })
    self.bases[p.app] = nil
    log.info("deleted every object of an app", "app", p.app, "objects", #items)
    return true
  end)
end

local handlers = {
  [events.UPLOADED] = Worker.on_uploaded,
  [events.MERGED] = Worker.on_merged,
  [events.DELETED] = Worker.on_deleted,
}

--- Handles one message: acknowledged when handled; rejected (dead-lettered where the bus can)
-- when malformed or of a type no handler knows, as no retry can help; handed back for a later
-- retry (with back-off) when handling failed.
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
    msg:reject(("UNSUPPORTED: unknown event type %q"):format(env.type))
    return
  end
  msg:extend(self.ack_extend)
  local ok, res, herr = pcall(fn, self, env.payload)
  if ok and res then
    events.count_handled(env.type, true)
    msg:ack()
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
    local app = item.key:match("^([a-z0-9%-]+)/staging/[^/]+$")
    if app and not apps[app] then
      apps[app] = true
      order[#order + 1] = app
    end
  end
  for _, app in ipairs(order) do
    if self.stopping then return end
    self.busy = self.busy + 1
    local ok, res, merr = pcall(self.merge_app, self, app)
    self.busy = self.busy - 1
    if self.busy == 0 and self.idle then self.idle.set() end
    if ok and res then
      log.info("recovered staged uploads", "app", app, "profiles", res)
    else
      log.error("recovering staged uploads failed", "app", app, "error", tostring(ok and merr or res))
    end
  end
end

--- Starts consuming (and recovering, if asked). Returns at once.
function Worker:start()
  self.finished = async.event()
  for _ = 1, self.concurrency do
    self.loops = self.loops + 1
    async.spawn(self.consume, self)
  end
  if self.recover then async.spawn(self.recover_staged, self) end
end

--- Stops receiving, lets the message being handled (a merge in progress) finish, then closes the
-- reader. Returns once everything is idle.
function Worker:stop()
  self.stopping = true
  while self.busy > 0 do
    self.idle = async.event()
    self.idle.wait()
  end
  if self.reader then self.reader:close() end
  if self.loops > 0 then self.finished.wait() end
  return true
end

return M
