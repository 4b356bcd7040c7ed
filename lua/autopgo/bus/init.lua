-- Event buses behind one interface, chosen by the URL scheme of --event-writer-url and
-- --event-reader-url (the same URL strings as gocloud.dev pubsub): mem://topic, kafka://topic,
-- kafka://group?topic=t, nats://subject[?queue=q], awssns:///arn:..., awssqs://host/acct/queue,
-- gcppubsub://projects/P/topics/T or .../subscriptions/S, azuresb://topic[?subscription=S].
-- Adding a bus is adding lua/autopgo/bus/<module>.lua and a line below.
--
-- A bus module returns { writer = function(u, opts) -> writer | nil, err, code,
--                        reader = function(u, opts) -> reader | nil, err, code }
-- (u is autopgo.url.parse(url)). Methods run in a coroutine and may yield; failures are
-- fail.new("CODE", "message"). Delivery is at least once.
--
--   writer:publish(body, { key = app }) -> true    body is the envelope JSON (autopgo.events);
--       key is the ordering/partition key where the bus has one
--   writer:health() -> true | nil, err;  writer:close()
--   reader:receive() -> msg      waits for the next message; nil, "CLOSED: ..." once closed
--       msg.body (string), msg.key (string or nil), msg.id, msg.attempt (1 on first delivery
--       when the bus knows), msg:ack() -> true, msg:nack(delay_seconds) -> true (redeliver later;
--       dead-letter where the bus has one after too many attempts),
--       msg:reject(reason) -> true (give up on a message that can never be handled: to the
--       dead-letter place now where the bus has one, handed back at once where the bus only
--       dead-letters by delivery count, logged and acknowledged where there is none),
--       msg:extend(seconds) -> true (keep it locked/invisible while work goes on; no-op where
--       the bus has no such notion)
--   reader:health() -> true | nil, err;  reader:close()
--   writer.name / reader.name: a short description for logs and /api/health
local fail = require "autopgo.fail"
local modules = require "autopgo.modules"

local M = {}

M.schemes = {
  mem = "autopgo.bus.mem",
  kafka = "autopgo.bus.kafka",
  nats = "autopgo.bus.nats",
  awssns = "autopgo.bus.sns",
  awssqs = "autopgo.bus.sqs",
  gcppubsub = "autopgo.bus.pubsub",
  azuresb = "autopgo.bus.servicebus",
}

local function load(raw_url, role)
  local mod, u, code = modules.by_scheme(M.schemes, raw_url, "event bus")
  if not mod then return nil, u, code end
  if not mod[role] then
    return fail.new("UNSUPPORTED", "%s:// cannot be used as an event %s", u.scheme, role)
  end
  return mod, u
end

--- Opens a writer for `raw_url`; returns it or fail.new("CODE", "message").
function M.writer(raw_url, opts)
  local mod, u, code = load(raw_url, "writer")
  if not mod then return nil, u, code end
  return mod.writer(u, opts or {})
end

--- Opens a reader for `raw_url`; returns it or fail.new("CODE", "message").
function M.reader(raw_url, opts)
  local mod, u, code = load(raw_url, "reader")
  if not mod then return nil, u, code end
  return mod.reader(u, opts or {})
end

return M
