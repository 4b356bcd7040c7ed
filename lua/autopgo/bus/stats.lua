-- Counters of the bus modules: each reader and writer keeps its own (reader:stats(),
-- writer.stats) and adds to the process-wide Prometheus counters served on /metrics:
--   autopgo_bus_messages_total{bus, outcome}   received, acked, nacked, redelivered,
--                                               dead_lettered, ack_failed
--   autopgo_bus_publishes_total{bus, outcome}  published, failed
local metrics = require "autopgo.metrics"

local M = {}

local messages = metrics.counter("autopgo_bus_messages_total",
  "Messages a bus reader handled, by bus (URL scheme) and outcome.", { "bus", "outcome" })
local publishes = metrics.counter("autopgo_bus_publishes_total",
  "Messages a bus writer published, by bus (URL scheme) and outcome.", { "bus", "outcome" })

M.reader_outcomes = { "received", "acked", "nacked", "redelivered", "dead_lettered", "ack_failed" }
M.writer_outcomes = { "published", "failed" }

local Stats = {}
Stats.__index = function(t, k)
  local m = Stats[k]
  if m then return m end
  return rawget(t, "_counts")[k]
end

--- A counter set for one reader ("reader") or writer ("writer") of bus `bus` ("kafka", ...).
-- stats:inc(outcome) counts; stats.acked etc. read the reader's own counts.
function M.new(bus, kind)
  local counts = {}
  for _, o in ipairs(kind == "writer" and M.writer_outcomes or M.reader_outcomes) do counts[o] = 0 end
  return setmetatable({ _bus = bus, _metric = kind == "writer" and publishes or messages, _counts = counts },
    Stats)
end

function Stats:inc(outcome, n)
  n = n or 1
  local counts = rawget(self, "_counts")
  assert(counts[outcome], "bus stats: unknown outcome " .. tostring(outcome))
  counts[outcome] = counts[outcome] + n
  self._metric:inc({ bus = self._bus, outcome = outcome }, n)
end

--- Counts the outcome of an operation that returned ok[, err, code]: `good` when ok, else `bad`;
-- and passes it on: true, or nil, err, code.
--   return self.stats:count("published", "failed", client:call(...))
function Stats:count(good, bad, ok, err, code)
  if not ok then
    self:inc(bad)
    return nil, err, code
  end
  self:inc(good)
  return true
end

--- A plain table of this reader's or writer's counts.
function Stats:snapshot()
  local out = {}
  for k, v in pairs(rawget(self, "_counts")) do out[k] = v end
  return out
end

return M
