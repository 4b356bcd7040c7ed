-- NATS event bus over libnats (autopgo.core.nats), with gocloud.dev's URLs:
--   nats://subject                     writer (core NATS publish)
--   nats://subject?queue=group         reader in a queue group (each message to one member)
-- The server comes from NATS_SERVER_URL (comma-separated URLs, credentials allowed), as in
-- gocloud.dev; `natsv2` is accepted (headers are always used). Core NATS is at most once: a
-- message published while no reader is connected is gone.
--
-- JetStream, the recommended at-least-once mode, is our extension:
--   nats://subject?jetstream=true                           writer: stored, with PubAck
--   nats://subject?jetstream=true&queue=workers             reader: durable pull consumer
-- with optional stream=NAME (default: the subject in capitals, non-alphanumerics as "_"),
-- durable=NAME (default: queue, else "autopgo"), ack_wait=30s, max_ack_pending=1000,
-- max_age=168h (stream retention), dead_letter=subject. The stream is created if missing.
-- Messages carry the app in an Autopgo-Key header and, on JetStream, the envelope id as
-- Nats-Msg-Id so a retried publish is stored once.
local fail = require "autopgo.fail"
local core = require "autopgo.core"
local async = require "autopgo.async"
local log = require "autopgo.log"
local url = require "autopgo.url"
local events = require "autopgo.events"
local units = require "autopgo.units"
local inbox_mod = require "autopgo.bus.inbox"
local stats = require "autopgo.bus.stats"
local base = require "autopgo.bus.base"

local natsc = core.nats

local M = {}

local function truthy(v)
  return v == "" or v == "1" or v == "true" or v == "yes"
end

-- Parses the URL into settings; returns them or nil, err, code.
local function settings(u, role, opts)
  local server = opts.server_url or os.getenv("NATS_SERVER_URL")
  if not server or server == "" then
    return fail.new("INVALID", "NATS_SERVER_URL environment variable not set")
  end
  local subject = url.unescape((u.host or "") .. (u.path or "")):gsub("^/+", ""):gsub("/+$", "")
  if subject == "" then return fail.new("INVALID", "%s: no subject", u.raw) end
  local allowed = {
    natsv2 = true, jetstream = true, stream = true, max_age = true,
    queue = role == "reader", durable = role == "reader", ack_wait = role == "reader",
    max_ack_pending = role == "reader", dead_letter = role == "reader",
  }
  local q = {}
  for _, kv in ipairs(u.query_list or {}) do
    local k = kv[1]:lower()
    if not allowed[k] then
      return fail.new("INVALID", "%s: invalid query parameter %q", u.raw, kv[1])
    end
    q[k] = kv[2]
  end
  local s = {
    server = server, subject = subject, queue = q.queue,
    jetstream = q.jetstream ~= nil and truthy(q.jetstream),
    stream = q.stream or subject:upper():gsub("[^%w]", "_"),
    dead_letter = q.dead_letter,
  }
  s.durable = q.durable or q.queue or "autopgo"
  if s.jetstream and (s.durable:find("[%.%*>%s]")) then
    return fail.new("INVALID", "%s: durable name %q may not contain '.', '*', '>' or spaces", u.raw,
      s.durable)
  end
  local function duration(name, default)
    if not q[name] then return default end
    local secs, err = units.parse_duration(q[name])
    if not secs or secs <= 0 then
      return fail.new("INVALID", "%s: %s: %s", u.raw, name, err or "must be positive")
    end
    return secs
  end
  local err
  s.ack_wait, err = duration("ack_wait", 30)
  if not s.ack_wait then return nil, err, "INVALID" end
  s.max_age, err = duration("max_age", 7 * 24 * 3600)
  if not s.max_age then return nil, err, "INVALID" end
  s.max_ack_pending = tonumber(q.max_ack_pending or "1000")
  if not s.max_ack_pending or s.max_ack_pending < 1 then
    return fail.new("INVALID", "%s: max_ack_pending must be a positive number", u.raw)
  end
  return s
end

-- A connection that is made on first use (or at once when the caller can wait).
local function connector(s, name)
  local c = { conn = nil, last_error = nil, connecting = nil }
  function c.get()
    if c.conn then return c.conn end
    if c.closed then return fail.new("CLOSED", "closed") end
    if c.connecting then return c.connecting.wait() end
    c.connecting = async.event()
    local conn, err, code = async.await(natsc.connect, s.server, { name = name }, function(kind, text)
      if kind == "disconnected" or kind == "closed" then
        c.last_error = "UNAVAILABLE: nats " .. kind
      elseif kind == "reconnected" then
        c.last_error = nil
        log.info("nats reconnected", "bus", name)
      elseif kind == "error" then
        log.warn("nats error", "bus", name, "error", text)
      end
      if kind ~= "error" and kind ~= "reconnected" then log.warn("nats " .. kind, "bus", name) end
    end)
    local ev = c.connecting
    c.connecting = nil
    if conn and c.closed then -- closed while connecting
      conn:close()
      conn, err, code = fail.new("CLOSED", "closed")
    end
    if not conn then
      ev.set(nil, err, code)
      return nil, err, code
    end
    c.conn = conn
    ev.set(conn)
    return conn
  end
  function c.health()
    if c.closed then return fail.new("CLOSED", "closed") end
    local conn, err, code = c.get()
    if not conn then return nil, err, code end
    if not conn:connected() then return nil, c.last_error or "UNAVAILABLE: nats disconnected", "UNAVAILABLE" end
    return true
  end
  function c.close()
    c.closed = true
    if c.conn then
      if coroutine.isyieldable() then
        async.await(function(cb) c.conn:close(function() cb(nil) end) end)
      else
        c.conn:close()
      end
    end
  end
  return c
end

local ensured = {} -- streams created by this process, "server\0stream" -> true

local function ensure_stream(conn, s)
  local k = s.server .. "\0" .. s.stream
  if ensured[k] then return true end
  local _, err, code = async.await_start(function(cb)
    conn:ensure_stream(s.stream, s.subject, math.floor(s.max_age * 1000), 120000, cb)
    return true
  end)
  if err then return nil, err, code end
  ensured[k] = true
  return true
end

---------------------------------------------------------------------------------------------
-- writer

local Writer = {}
Writer.__index = Writer

function Writer:publish(body, opts)
  if self.closed then return fail.new("CLOSED", "the writer is closed") end
  local conn, err, code = self.c.get()
  if conn and self.s.jetstream then
    local ok
    ok, err, code = ensure_stream(conn, self.s)
    if ok then
      local seq
      seq, err, code = async.await_start(function(cb)
        return conn:js_publish(self.s.subject, body, opts and opts.key, (opts and opts.id) or events.id_of(body),
          10000, cb)
      end)
      if seq then err = nil end
    end
  elseif conn then
    local ok
    ok, err, code = conn:publish(self.s.subject, body, opts and opts.key)
    if ok then err = nil end
  end
  return self.stats:count("published", "failed", err == nil, err, code)
end

function Writer:health()
  if self.closed then return fail.new("CLOSED", "the writer is closed") end
  return self.c.health()
end

function Writer:close()
  if self.closed then return true end
  self.closed = true
  self.c.close()
  return true
end

function M.writer(u, opts)
  local s, err, code = settings(u, "writer", opts)
  if not s then return nil, err, code end
  local name = "nats://" .. s.subject .. (s.jetstream and "?jetstream=true" or "")
  local w = setmetatable({ name = name, s = s, c = connector(s, name), stats = stats.new("nats", "writer") },
    Writer)
  -- connect in the background (the constructor never waits); the first publish waits for it
  async.spawn(function()
    local conn = w.c.get()
    if conn and s.jetstream then ensure_stream(conn, s) end
  end)
  return w
end

---------------------------------------------------------------------------------------------
-- reader

local Reader = {}
Reader.__index = Reader
local Msg = {}
Msg.__index = Msg

function Reader:settle(m)
  if m.keepalive then m.keepalive() end
  m.settled = true
  self.held[m] = nil
  self.inflight = self.inflight - 1
  if self.settled_ev then self.settled_ev.set() end
end

function Msg:ack()
  if self.settled then return true end
  local r = self.reader
  r:settle(self)
  r.inbox.stats:inc("acked")
  if not self.nmsg then return true end -- core NATS: nothing to acknowledge
  local ok, err, code = self.nmsg:ack()
  self.nmsg:destroy()
  if not ok then
    r.inbox.stats:inc("ack_failed")
    return nil, err, code
  end
  return true
end

function Msg:extend()
  if self.settled or not self.nmsg then return true end
  return self.nmsg:in_progress()
end

function Msg:dead_letter(reason)
  local r = self.reader
  return base.dead_letter(r, self, reason, "nats", "subject", r.s.dead_letter)
end

-- Dead-letters the message and ends it (+TERM: JetStream never delivers it again). Returns false
-- when the dead-letter subject could not be written (nothing done; the caller redelivers it),
-- else true, plus err, code when the +TERM failed.
local function give_up(self, reason)
  local r = self.reader
  if not self:dead_letter(reason) then return false end
  r:settle(self)
  if self.nmsg then
    local done, err, code = self.nmsg:term()
    self.nmsg:destroy()
    if not done then return true, err, code end
  end
  return true
end

function Msg:nack(delay)
  if self.settled then return true end
  local r = self.reader
  r.inbox.stats:inc("nacked")
  delay = delay or inbox_mod.backoff(self.attempt)
  if self.attempt >= r.max_attempts then
    local gave_up, err, code = give_up(self, ("failed %d times"):format(self.attempt))
    if gave_up then
      if err then return nil, err, code end
      return true
    end
  end
  r:settle(self)
  if self.nmsg then
    -- JetStream redelivers after the delay and counts the delivery
    local ok, err, code = self.nmsg:nak(math.floor(delay * 1000))
    self.nmsg:destroy()
    if not ok then return nil, err, code end
    return true
  end
  -- core NATS has no redelivery: keep it here and hand it out again (lost if we stop)
  r.inbox:later(delay * 1000, function()
    r.inbox.stats:inc("redelivered")
    r.inbox:push_front(setmetatable({ body = self.body, key = self.key, id = self.id, attempt = self.attempt + 1,
      reader = r }, Msg))
  end)
  return true
end

--- Gives up on the message now: to the dead-letter subject (or logged), then +TERM (JetStream)
-- or dropped (core NATS). Redelivered later when the dead-letter subject cannot be written.
function Msg:reject(reason)
  if self.settled then return true end
  local gave_up, err, code = give_up(self, reason)
  if not gave_up then return self:nack() end
  if err then return nil, err, code end
  return true
end

function Reader:on_msg(nmsg)
  if self.closed then
    -- fetched while stopping: hand it straight back
    if self.s.jetstream then nmsg:nak() end
    nmsg:destroy()
    return
  end
  local body, key = nmsg:data(), nmsg:key()
  local m = setmetatable({ body = body, key = key, reader = self }, Msg)
  if self.s.jetstream then
    local deliveries, seq = nmsg:meta()
    m.nmsg, m.attempt, m.id = nmsg, math.max(1, deliveries), ("%s/%d"):format(self.s.stream, seq)
    if deliveries > 1 then self.inbox.stats:inc("redelivered") end
  else
    self.seq = self.seq + 1
    m.attempt, m.id = 1, ("%s/%d"):format(self.s.subject, self.seq)
    nmsg:destroy()
  end
  self.inbox:push(m)
end

function Reader:receive()
  if not self.started then
    local ok, err, code = self:start()
    if not ok then return nil, err, code end
  end
  local m, err, code = self.inbox:receive()
  if not m then return nil, err, code end
  m.settled = false
  self.held[m] = true
  self.inflight = self.inflight + 1
  if m.nmsg then
    -- JetStream: keep the message ours while it is being handled, however long that takes
    m.keepalive = self.inbox:keepalive(self.s.ack_wait * 1000 / 2, self.max_extension_ms, function()
      if m.settled or not m.nmsg then return true end
      return m.nmsg:in_progress()
    end)
  end
  if self.sub and self.s.jetstream then self.sub:want(1) end
  return m
end

function Reader:start()
  if self.started then return true end
  if self.starting then return self.starting.wait() end
  self.starting = async.event()
  local ok, err, code = self:subscribe()
  local ev = self.starting
  self.starting = nil
  if ok then self.started = true end
  ev.set(ok, err, code)
  return ok, err, code
end

function Reader:subscribe()
  local conn, err, code = self.c.get()
  if not conn then return nil, err, code end
  local s = self.s
  local on_msg = function(nmsg) self:on_msg(nmsg) end
  if not s.jetstream then
    local sub
    sub, err, code = conn:subscribe(s.subject, s.queue, on_msg)
    if not sub then return nil, err, code end
    self.sub = sub
    -- subscribed at the server (not only queued to be sent) before we say we are ready
    local _
    _, err, code = async.await_start(function(cb) conn:flush(5000, cb) return true end)
    if err then return nil, err, code end
    return true
  end
  local ok
  ok, err, code = ensure_stream(conn, s)
  if not ok then return nil, err, code end
  self.stopped = async.event()
  local sub
  sub, err, code = async.await(function(cb)
    conn:pull_subscribe(s.stream, s.subject, s.durable, math.floor(s.ack_wait * 1000), s.max_ack_pending,
      on_msg, function() self.stopped.set() end, cb)
  end)
  if not sub then return nil, err, code end
  self.sub = sub
  sub:want(self.max_buffered)
  return true
end

function Reader:health()
  if self.closed then return fail.new("CLOSED", "the reader is closed") end
  local ok, err, code = self:start()
  if not ok then return nil, err, code end
  return self.c.health()
end

function Reader:stats()
  return self.inbox.stats:snapshot()
end

--- Stops fetching, waits (bounded) for messages in flight, hands back what was not settled
-- (JetStream redelivers it at once to another member) and closes the connection.
function Reader:close()
  if self.closed then return true end
  self.closed = true
  local queued = {}
  self.inbox:remove_if(function(m) queued[#queued + 1] = m return true end)
  self.inbox:close("CLOSED: the reader is closed")
  if coroutine.isyieldable() and self.sub then
    if self.s.jetstream then
      self.sub:stop()
      self.stopped.wait(3000)
    end
    inbox_mod.wait_settled(self, self.close_timeout_ms, function() return self.inflight end)
  end
  for m in pairs(self.held) do queued[#queued + 1] = m end -- in flight past the deadline
  for _, m in ipairs(queued) do
    if m.nmsg then m.nmsg:nak() end
  end
  if self.dlq then self.dlq:close() end
  self.c.close()
  return true
end

function M.reader(u, opts)
  local s, err, code = settings(u, "reader", opts)
  if not s then return nil, err, code end
  local name = "nats://" .. s.subject .. (s.queue and ("?queue=" .. s.queue) or "")
  if s.jetstream then name = name .. (s.queue and "&" or "?") .. "jetstream=true" end
  local r = setmetatable({
    name = name, s = s, c = connector(s, name), inflight = 0, seq = 0, held = {},
    max_attempts = opts.max_attempts or 5,
    max_buffered = opts.max_buffered or 64,
    close_timeout_ms = (opts.close_timeout or 30) * 1000,
    max_extension_ms = (opts.max_extension or 3600) * 1000,
  }, Reader)
  r.inbox = inbox_mod.new { bus = "nats", high = math.huge }
  if s.dead_letter then
    local dlq
    dlq, err, code = M.writer(url.parse(("nats://%s%s"):format(s.dead_letter, s.jetstream and "?jetstream=true" or "")),
      { server_url = s.server })
    if not dlq then return nil, err, code end
    r.dlq = dlq
  end
  -- connect and subscribe in the background; receive() waits for it (and retries on failure)
  async.spawn(function() r:start() end)
  return r
end

return M
