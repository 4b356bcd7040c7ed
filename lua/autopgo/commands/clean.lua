-- `autopgo clean --older-than 24h --larger-than 10240 [--dry-run]`: deletes every merged
-- profile not updated for longer than --older-than or larger than --larger-than bytes (either
-- condition; at least one flag is required, and 0 leaves a condition out as in the original).
-- It lists the profiles and deletes the matching ones one by one, so --dry-run shows exactly the
-- selection a real run would delete; when nothing matches it says so.
local cli = require "autopgo.cli"
local client = require "autopgo.client"
local list = require "autopgo.commands.list"
local units = require "autopgo.units"

local M = {}

--- The profiles a clean would delete at time `now` (Unix seconds), sorted by app.
function M.select(profiles, older_than, larger_than, now)
  local out = {}
  for _, p in ipairs(profiles) do
    local size = math.tointeger(p.size)
    local modified = list.parse_time(p.lastModified)
    local big = larger_than and larger_than > 0 and size and size > larger_than
    local old = older_than and older_than > 0 and modified and modified + older_than < now
    if big or old then out[#out + 1] = p.key end
  end
  table.sort(out)
  return out
end

--- What a clean selects, in words: "not updated for 24h0m0s or larger than 10240 bytes".
function M.describe(older_than, larger_than)
  local parts = {}
  if older_than and older_than > 0 then
    parts[#parts + 1] = "not updated for " .. units.format_duration(older_than)
  end
  if larger_than and larger_than > 0 then
    parts[#parts + 1] = ("larger than %d bytes"):format(larger_than)
  end
  return table.concat(parts, " or ")
end

function M.run(opts)
  local older, larger = opts.older_than, opts.larger_than
  if not ((older and older > 0) or (larger and larger > 0)) then
    cli.exit(2, "autopgo clean: one of --older-than or --larger-than must be set (see autopgo clean --help)")
  end
  local api = client.new(opts.api_url, client.options(opts))
  local profiles, err, _, status = api:list()
  if not profiles then cli.exit(1, "autopgo clean: " .. client.message(err, status)) end
  local failed = 0
  local selected = M.select(profiles, older, larger, os.time())
  if #selected == 0 then
    io.stdout:write(("No profile matches (%s): nothing %s\n"):format(M.describe(older, larger),
      opts.dry_run and "would be deleted" or "deleted"))
    io.stdout:flush()
    return 0
  end
  for _, app in ipairs(selected) do
    if opts.dry_run then
      io.stdout:write(("Would delete profile '%s'\n"):format(app))
    else
      local ok, derr, _, dstatus = api:delete(app)
      if ok then
        io.stdout:write(("Deleted profile '%s'\n"):format(app))
      elseif dstatus == 404 then
        -- gone since the listing: nothing left to do
        io.stdout:write(("Deleted profile '%s'\n"):format(app))
      else
        failed = failed + 1
        io.stderr:write(("autopgo clean: cannot delete profile '%s': %s\n"):format(app, client.message(derr, dstatus)))
      end
    end
    io.stdout:flush()
  end
  return failed == 0 and 0 or 1
end

return M
