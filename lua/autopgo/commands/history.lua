-- `autopgo history APP [--json]`: an application's profile history from the server's
-- GET /api/profile/{app}/history: the time segments (start, end, uploads, samples, bytes) and the
-- uploads still in retention (capture time, key, duration, size, source), as tables.
local cli = require "autopgo.cli"
local client = require "autopgo.client"
local json = require "autopgo.json"
local list = require "autopgo.commands.list"
local units = require "autopgo.units"

local M = {}

-- Times are printed as the server sent them (RFC 3339, UTC): what --from/--to take.
local function text(v)
  if v == nil or v == json.null then return "-" end
  return tostring(v)
end

local function count(n)
  local i = math.tointeger(n)
  return i and tostring(i) or text(n)
end

local function size(n)
  return type(n) == "number" and units.format_size(math.tointeger(n) or math.floor(n)) or text(n)
end

local function duration(s)
  return type(s) == "number" and s >= 0 and units.format_duration(s) or text(s)
end

local function plural(n, word)
  return ("%d %s%s"):format(n, word, n == 1 and "" or "s")
end

local function indent(s)
  return (s:gsub("[^\n]+", "  %0"))
end

--- The text printed for the server's answer `doc`.
function M.format(doc)
  local segments, uploads = doc.segments or {}, doc.uploads or {}
  if #segments == 0 then return ("%s: no history (no upload captured within retention)\n"):format(text(doc.app)) end
  local seglen = (doc.segment ~= nil and doc.segment ~= json.null) and (" of " .. text(doc.segment)) or ""
  local out = { ("%s: %s%s, %s\n"):format(text(doc.app), plural(#segments, "segment"), seglen,
    plural(#uploads, "upload")) }
  local rows = { { "START", "END", "UPLOADS", "SAMPLES", "SIZE" } }
  for _, s in ipairs(segments) do
    rows[#rows + 1] = { text(s.start), text(s["end"]), count(s.uploads), count(s.samples), size(s.bytes) }
  end
  out[#out + 1] = "\nsegments:\n" .. indent(list.format(rows))
  if #uploads == 0 then
    out[#out + 1] = "\nno uploads listed\n"
  else
    rows = { { "CAPTURED", "KEY", "DURATION", "SIZE", "SOURCE" } }
    for _, u in ipairs(uploads) do
      rows[#rows + 1] = { text(u.captured), text(u.key), duration(u.duration), size(u.size), text(u.source) }
    end
    out[#out + 1] = "\nuploads:\n" .. indent(list.format(rows))
  end
  return table.concat(out)
end

function M.run(opts, args)
  local app = args[1]
  local api = client.new(opts.api_url, client.options(opts))
  local doc, raw, _, status = api:history(app)
  if not doc then
    if status == 404 then
      cli.exit(1, ("autopgo history: no history for app %s: %s"):format(app, client.message(raw, status)))
    end
    cli.exit(1, "autopgo history: " .. client.message(raw, status))
  end
  if opts.json then
    io.stdout:write(raw, raw:sub(-1) == "\n" and "" or "\n")
  else
    io.stdout:write(M.format(doc))
  end
  io.stdout:flush()
  return 0
end

return M
