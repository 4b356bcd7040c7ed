-- `autopgo status APP [--json]`: what became of an application's uploads, from the server's
-- GET /api/profile/{app}/uploads: the merged profile, the uploads waiting to be merged and the
-- ones the worker or the policy rejected, with why.
local cli = require "autopgo.cli"
local client = require "autopgo.client"
local json = require "autopgo.json"
local list = require "autopgo.commands.list"
local units = require "autopgo.units"

local M = {}

local function when(s)
  local t = list.parse_time(s)
  return t and os.date("%Y-%m-%d %H:%M:%S %Z", t) or tostring(s)
end

local function size(n)
  return math.type(n) and units.format_size(n) or tostring(n)
end

--- The text printed for the server's answer `doc`.
function M.format(doc)
  local out = {}
  local merged = doc.merged
  if type(merged) == "table" then
    out[#out + 1] = ("%s: merged profile of %s, last updated %s\n"):format(doc.app, size(merged.size),
      when(merged.lastModified))
  else
    out[#out + 1] = ("%s: no merged profile yet\n"):format(doc.app)
  end
  local staged, rejected = doc.staged or {}, doc.rejected or {}
  if #staged == 0 then
    out[#out + 1] = "\nno uploads waiting to be merged\n"
  else
    out[#out + 1] = ("\n%d upload%s waiting to be merged:\n"):format(#staged, #staged == 1 and "" or "s")
    local rows = { { "KEY", "SIZE", "UPLOADED" } }
    for _, u in ipairs(staged) do rows[#rows + 1] = { tostring(u.key), size(u.size), when(u.lastModified) } end
    out[#out + 1] = (list.format(rows):gsub("[^\n]+", "  %0"))
  end
  if #rejected == 0 then
    out[#out + 1] = "\nno rejected uploads\n"
  else
    out[#out + 1] = ("\n%d rejected upload%s:\n"):format(#rejected, #rejected == 1 and "" or "s")
    for _, u in ipairs(rejected) do
      local reason = tostring(u.reason):gsub("\n", "\n    ")
      out[#out + 1] = ("  %s  (rejected %s)\n    %s\n"):format(tostring(u.key), when(u.lastModified), reason)
    end
  end
  return table.concat(out)
end

function M.run(opts, args)
  local app = args[1]
  local api = client.new(opts.api_url, client.options(opts))
  local doc, raw, _, status = api:uploads(app)
  if not doc then cli.exit(1, "autopgo status: " .. client.message(raw, status)) end
  if opts.json then
    io.stdout:write(raw, raw:sub(-1) == "\n" and "" or "\n")
  else
    if doc.merged == json.null then doc.merged = nil end
    io.stdout:write(M.format(doc))
  end
  io.stdout:flush()
  return 0
end

return M
