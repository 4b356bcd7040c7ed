-- Prometheus metrics: counters, gauges and histograms with labels in a registry, rendered in the
-- text exposition format (version 0.0.4) for GET /metrics. Defining a metric twice returns the
-- first definition, so the server and the embedded worker can share names.
local uv = require "luv"

local M = {}

M.content_type = "text/plain; version=0.0.4; charset=utf-8"
M.default_buckets = { 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10 }

local function format_value(v)
  if v == math.huge then return "+Inf" end
  if v == -math.huge then return "-Inf" end
  if v ~= v then return "NaN" end
  if math.type(v) == "integer" then return tostring(v) end
  if v == math.floor(v) and math.abs(v) < 2 ^ 53 then return ("%d"):format(v) end
  for digits = 1, 17 do -- the shortest text that reads back as the same number
    local s = ("%." .. digits .. "g"):format(v)
    if tonumber(s) == v then return s end
  end
  return ("%.17g"):format(v)
end

local function escape_label(s)
  return (tostring(s):gsub("[\\\"\n]", { ["\\"] = "\\\\", ['"'] = '\\"', ["\n"] = "\\n" }))
end

local function escape_help(s)
  return (s:gsub("[\\\n]", { ["\\"] = "\\\\", ["\n"] = "\\n" }))
end

local Registry = {}
Registry.__index = Registry

local Metric = {}
Metric.__index = Metric

-- The series key and label text for a label table, in the metric's label order.
function Metric:_series(labels)
  if #self.label_names == 0 then return "", "" end
  labels = labels or {}
  local values, parts = {}, {}
  for i, name in ipairs(self.label_names) do
    local v = labels[name]
    if v == nil then error(("metrics: %s needs label %q"):format(self.name, name), 3) end
    values[i] = tostring(v)
    parts[i] = ('%s="%s"'):format(name, escape_label(v))
  end
  return table.concat(values, "\0"), table.concat(parts, ",")
end

function Metric:_get(labels)
  local key, text = self:_series(labels)
  local s = self.series[key]
  if not s then
    s = { labels = text, value = 0 }
    if self.kind == "histogram" then
      s.counts, s.sum, s.count = {}, 0, 0
      for i = 1, #self.buckets do s.counts[i] = 0 end
    end
    self.series[key] = s
    self.order[#self.order + 1] = key
  end
  return s
end

--- counter:inc(labels, n) / gauge:inc: adds n (default 1); counters refuse negative steps.
function Metric:inc(labels, n)
  n = n or 1
  if self.kind == "counter" and n < 0 then error("metrics: counters only go up", 2) end
  local s = self:_get(labels)
  s.value = s.value + n
end

function Metric:dec(labels, n)
  assert(self.kind == "gauge", "metrics: only gauges go down")
  local s = self:_get(labels)
  s.value = s.value - (n or 1)
end

--- gauge:set(labels, v)
function Metric:set(labels, v)
  assert(self.kind == "gauge", "metrics: only gauges are set")
  self:_get(labels).value = v
end

--- histogram:observe(labels, v)
function Metric:observe(labels, v)
  assert(self.kind == "histogram", "metrics: only histograms observe")
  local s = self:_get(labels)
  for i, le in ipairs(self.buckets) do
    if v <= le then s.counts[i] = s.counts[i] + 1 end
  end
  s.sum = s.sum + v
  s.count = s.count + 1
end

--- The current value of a counter or gauge series (0 if never touched); for a histogram, its
-- count and sum.
function Metric:get(labels)
  local key = self:_series(labels)
  local s = self.series[key]
  if self.kind == "histogram" then return s and s.count or 0, s and s.sum or 0 end
  return s and s.value or 0
end

--- Forgets a series (e.g. the size of a deleted app's profile).
function Metric:remove(labels)
  local key = self:_series(labels)
  if not self.series[key] then return end
  self.series[key] = nil
  for i, k in ipairs(self.order) do
    if k == key then
      table.remove(self.order, i)
      break
    end
  end
end

function Registry:_define(kind, name, help, label_names, buckets)
  assert(type(name) == "string" and name:match("^[%a_:][%w_:]*$"), "metrics: invalid metric name " .. tostring(name))
  local existing = self.by_name[name]
  if existing then
    assert(existing.kind == kind, ("metrics: %s is already a %s"):format(name, existing.kind))
    return existing
  end
  local m = setmetatable({
    kind = kind, name = name, help = help or name, label_names = label_names or {},
    series = {}, order = {}, buckets = buckets,
  }, Metric)
  self.by_name[name] = m
  self.list[#self.list + 1] = m
  return m
end

function Registry:counter(name, help, label_names)
  return self:_define("counter", name, help, label_names)
end

function Registry:gauge(name, help, label_names)
  return self:_define("gauge", name, help, label_names)
end

function Registry:histogram(name, help, label_names, buckets)
  buckets = buckets or M.default_buckets
  for i = 2, #buckets do assert(buckets[i] > buckets[i - 1], "metrics: buckets must increase") end
  return self:_define("histogram", name, help, label_names, buckets)
end

--- Registers fn(), run before each render (e.g. to refresh process gauges).
function Registry:collect(fn)
  self.collectors[#self.collectors + 1] = fn
end

local function with_labels(labels, extra)
  if labels == "" then return "{" .. extra .. "}" end
  return "{" .. labels .. "," .. extra .. "}"
end

--- The text exposition of every metric.
function Registry:render()
  for _, fn in ipairs(self.collectors) do fn() end
  local out = {}
  for _, m in ipairs(self.list) do
    out[#out + 1] = ("# HELP %s %s"):format(m.name, escape_help(m.help))
    out[#out + 1] = ("# TYPE %s %s"):format(m.name, m.kind)
    for _, key in ipairs(m.order) do
      local s = m.series[key]
      local lbl = s.labels == "" and "" or ("{" .. s.labels .. "}")
      if m.kind == "histogram" then
        for i, le in ipairs(m.buckets) do
          out[#out + 1] = ("%s_bucket%s %s"):format(m.name, with_labels(s.labels, ('le="%s"'):format(format_value(le))),
            format_value(s.counts[i]))
        end
        out[#out + 1] = ("%s_bucket%s %s"):format(m.name, with_labels(s.labels, 'le="+Inf"'), format_value(s.count))
        out[#out + 1] = ("%s_sum%s %s"):format(m.name, lbl, format_value(s.sum))
        out[#out + 1] = ("%s_count%s %s"):format(m.name, lbl, format_value(s.count))
      else
        out[#out + 1] = ("%s%s %s"):format(m.name, lbl, format_value(s.value))
      end
    end
  end
  return table.concat(out, "\n") .. "\n"
end

--- An httpd handler serving render().
function Registry:handler()
  return function(_, res)
    res:header("content-type", M.content_type)
    return res:send(self:render())
  end
end

--- A new, empty registry (the module's functions use the process-wide default one).
function M.registry()
  return setmetatable({ by_name = {}, list = {}, collectors = {} }, Registry)
end

local default = M.registry()
M.default = default

function M.counter(...) return default:counter(...) end
function M.gauge(...) return default:gauge(...) end
function M.histogram(...) return default:histogram(...) end
function M.render() return default:render() end
function M.handler() return default:handler() end
function M.collect(fn) return default:collect(fn) end

-- Process gauges every exporter is expected to have.
local rss = default:gauge("process_resident_memory_bytes", "Resident memory size in bytes.")
local start = default:gauge("process_start_time_seconds", "Start time of the process since unix epoch in seconds.")
do -- close enough: this module loads as the process starts serving
  local sec, usec = uv.gettimeofday()
  start:set(nil, sec + usec / 1e6)
end
default:collect(function()
  local bytes = uv.resident_set_memory()
  if bytes then rss:set(nil, bytes) end
end)

return M
