-- `autopgo inspect PROFILE`: sample types, period, duration, table sizes, PGO usability with
-- the reason, and the top functions by flat and cumulative weight. `--pgo`: the decisions view
-- (autopgo.pgo: hot call sites, hot functions, devirtualization targets; --json as the API's).
local async = require "autopgo.async"
local cli = require "autopgo.cli"
local pprof = require("autopgo.core").pprof

local M = {}

local function human_bytes(n)
  local units = { "B", "KiB", "MiB", "GiB" }
  local i = 1
  while n >= 1024 and i < #units do
    n = n / 1024
    i = i + 1
  end
  return i == 1 and ("%d B"):format(n) or ("%.1f %s"):format(n, units[i])
end

-- A value of a sample type in its unit, the way pprof prints it.
local function human_value(v, unit)
  if unit == "nanoseconds" then
    local a = math.abs(v)
    if a >= 1e9 then return ("%.2fs"):format(v / 1e9) end
    if a >= 1e6 then return ("%.2fms"):format(v / 1e6) end
    if a >= 1e3 then return ("%.2fus"):format(v / 1e3) end
    return ("%dns"):format(v)
  elseif unit == "bytes" then
    return human_bytes(v)
  end
  return tostring(v)
end

local function pct(v, total)
  if total == 0 then return "-" end
  return ("%.2f%%"):format(100 * v / total)
end

local function top_table(out, p, info, by)
  local index = info.default_index
  if not index then return end
  local st = info.sample_types[index]
  local rows = p:top(10, { by = by, sample_type = index })
  out[#out + 1] = ""
  out[#out + 1] = ("Top %d functions by %s %s/%s (total %s):"):format(#rows,
    by == "cum" and "cumulative" or "flat", st.type, st.unit, human_value(st.total, st.unit))
  if #rows == 0 then
    out[#out + 1] = "  (no samples)"
    return
  end
  out[#out + 1] = ("  %10s %8s %10s %8s  %s"):format("flat", "flat%", "cum", "cum%", "function")
  for _, r in ipairs(rows) do
    out[#out + 1] = ("  %10s %8s %10s %8s  %s"):format(human_value(r.flat, st.unit),
      pct(r.flat, st.total), human_value(r.cum, st.unit), pct(r.cum, st.total), r.name)
  end
end

-- inspect --pgo: what go build -pgo will do with the profile (pprof or GO PREPROFILE V1).
local function inspect_pgo(opts, path)
  local pgo = require "autopgo.pgo"
  local input = { file = path }
  if path == "-" then input = io.stdin:read("a") end
  -- --json: the document GET /api/profile/{app}/decisions?limit=0 serves, written by the same C
  local r, err = pgo.shape(input, opts.json and { decisions_json = 0 } or { decisions = true })
  if not r then cli.exit(1, ("autopgo inspect: %s: %s"):format(path, err)) end
  if not r.info.usable then
    cli.exit(1, ("autopgo inspect: %s: not usable by go build -pgo: %s"):format(path, r.info.reason))
  end
  if opts.json then
    io.stdout:write(r.decisions_json, "\n")
  elseif r.info.empty then
    io.stdout:write(("%s: accepted by go build -pgo, but %s\n"):format(path, r.info.reason:gsub("^[^:]*: ", "")))
  else
    io.stdout:write(pgo.render(r.info, r.decisions, { limit = 50 }))
  end
  return 0
end

function M.run(opts, args)
  local path = args[1]
  if opts.pgo then return inspect_pgo(opts, path) end
  local f, err
  if path == "-" then
    f = io.stdin
  else
    f, err = io.open(path, "rb")
    if not f then cli.exit(1, ("autopgo inspect: cannot read %s: %s"):format(path, err)) end
  end
  local data = f:read("a")
  if f ~= io.stdin then f:close() end
  local p, derr = async.await(pprof.decode_async, data, nil)
  if not p then cli.exit(1, ("autopgo inspect: %s: %s"):format(path, derr)) end
  local info = p:info()
  local pgo = p:pgo()
  local out = {}
  local function add(k, v) out[#out + 1] = ("%-14s %s"):format(k ~= "" and k .. ":" or "", v) end
  add("File", ("%s (%s%s)"):format(path, human_bytes(info.size),
    info.gzipped and (", gzip, " .. human_bytes(info.decompressed_size) .. " uncompressed") or ", uncompressed"))
  local types = {}
  for i, st in ipairs(info.sample_types) do
    types[#types + 1] = ("%s/%s%s"):format(st.type, st.unit, i == info.default_index and " [default]" or "")
  end
  add("Sample types", #types > 0 and table.concat(types, ", ") or "(none)")
  add("Period", ("%d %s/%s"):format(info.period, info.period_type.type, info.period_type.unit))
  add("Duration", info.duration_nanos > 0 and human_value(info.duration_nanos, "nanoseconds") or "-")
  if info.time_nanos ~= 0 then
    add("Time", os.date("!%Y-%m-%dT%H:%M:%SZ", info.time_nanos // 1000000000))
  end
  add("Counts", ("%d samples, %d locations, %d functions, %d mappings, %d strings"):format(
    info.samples, info.locations, info.functions, info.mappings, info.strings))
  for i, st in ipairs(info.sample_types) do
    add(i == 1 and "Totals" or "", ("%s %s"):format(human_value(st.total, st.unit), st.type))
  end
  for _, c in ipairs(info.comments) do add("Comment", c) end
  if info.drop_frames ~= "" then add("Drop frames", info.drop_frames) end
  if info.keep_frames ~= "" then add("Keep frames", info.keep_frames) end
  add("Memory", human_bytes(info.memory) .. " decoded")
  if pgo.usable and not pgo.empty then
    add("PGO", ("usable by go build -pgo (%d weighted call edges)"):format(pgo.edges))
  elseif pgo.usable then
    add("PGO", "accepted by go build -pgo, but " .. pgo.reason:gsub("^[^:]*: ", ""))
  else
    add("PGO", "not usable by go build -pgo: " .. pgo.reason)
  end
  top_table(out, p, info, "flat")
  top_table(out, p, info, "cum")
  p:close()
  io.stdout:write(table.concat(out, "\n"), "\n")
  return 0
end

return M
