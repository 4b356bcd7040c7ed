-- `autopgo list [--json]`: the merged profiles on the server as a table APP  SIZE  LAST MODIFIED
-- (sizes for people, times in the local time zone), or the server's JSON as it came.
local cli = require "autopgo.cli"
local client = require "autopgo.client"
local units = require "autopgo.units"
local utc = require "autopgo.utc"

local M = {}

--- Unix seconds (whole) of an RFC 3339 time as Go's encoding/json writes time.Time, or nil.
function M.parse_time(s)
  local t = utc.parse_rfc3339(s)
  return t and math.floor(t)
end

--- The rows printed for a list of profiles (sorted by app), header first.
function M.rows(profiles)
  local sorted = {}
  for _, p in ipairs(profiles) do sorted[#sorted + 1] = p end
  table.sort(sorted, function(a, b) return a.key < b.key end)
  local rows = { { "APP", "SIZE", "LAST MODIFIED" } }
  for _, p in ipairs(sorted) do
    local t = M.parse_time(p.lastModified)
    rows[#rows + 1] = {
      p.key,
      math.type(p.size) and units.format_size(p.size) or tostring(p.size),
      t and os.date("%Y-%m-%d %H:%M:%S %Z", t) or tostring(p.lastModified),
    }
  end
  return rows
end

--- Columns two spaces apart, the last one unpadded.
function M.format(rows)
  local widths = {}
  for _, r in ipairs(rows) do
    for i, v in ipairs(r) do widths[i] = math.max(widths[i] or 0, utf8.len(v) or #v) end
  end
  local out = {}
  for _, r in ipairs(rows) do
    local cells = {}
    for i, v in ipairs(r) do
      cells[i] = i < #r and (v .. (" "):rep(widths[i] - (utf8.len(v) or #v))) or v
    end
    out[#out + 1] = table.concat(cells, "  ")
  end
  return table.concat(out, "\n") .. "\n"
end

function M.run(opts)
  local api = client.new(opts.api_url, client.options(opts))
  local profiles, raw, _, status = api:list()
  if not profiles then cli.exit(1, "autopgo list: " .. client.message(raw, status)) end
  if opts.json then
    io.stdout:write(raw, raw:sub(-1) == "\n" and "" or "\n")
  else
    io.stdout:write(M.format(M.rows(profiles)))
  end
  io.stdout:flush()
  return 0
end

return M
