-- `autopgo diff A B`: what the compiler would decide differently with profile B than with A: call
-- sites that became hot or cold, functions that became hot or cold, devirtualization targets that
-- changed. A and B are files (pprof or GO PREPROFILE V1) or app:NAME[?query] (the profile the
-- server serves for that app, as its minimal profile). The diff is one C job (autopgo.pgo.diff), the
-- one GET /api/profile/{app}/diff runs.
local cli = require "autopgo.cli"
local client = require "autopgo.client"
local fail = require "autopgo.fail"
local json = require "autopgo.json"
local pgo = require "autopgo.pgo"

local M = {}

-- What one side is for the C diff: a file ({file = path}) or the minimal profile the server
-- serves for app:NAME[?query] (GET /api/profile/NAME?format=pgo), the bytes /diff diffs too.
local function load(opts, spec)
  local app, query = spec:match("^app:([^?]+)(.*)$")
  if not app then return { file = spec } end
  local api = client.new(opts.api_url, client.options(opts, { timeout = 300 }))
  query = query .. (query == "" and "?" or "&") .. "format=pgo"
  local res, err, _, status = api:request { url = api:profile_url(app) .. query }
  if res and res.status ~= 200 then res, err, _, status = client.response_error(res) end
  if not res then cli.exit(1, ("autopgo diff: %s: %s"):format(spec, client.message(err, status))) end
  return res.body
end

function M.run(opts, args)
  local r, err = pgo.diff(load(opts, args[1]), load(opts, args[2]))
  if not r then
    -- the C job names the side: "a: ..." or "b: ..."
    local msg = fail.message(err)
    local side, why = msg:match("^([ab]): (.*)$")
    local spec = side == "b" and args[2] or args[1]
    cli.exit(1, ("autopgo diff: %s: %s"):format(spec, why or msg))
  end
  if opts.json then
    io.stdout:write(json.encode(pgo.diff_doc(r)), "\n")
  else
    io.stdout:write(pgo.render_diff(r, args[1], args[2]))
  end
  return 0
end

return M
