-- `autopgo diff A B`: what the compiler would decide differently with profile B than with A: call
-- sites that became hot or cold, functions that became hot or cold, devirtualization targets that
-- changed. A and B are files (pprof or GO PREPROFILE V1) or app:NAME[?query] (the decisions the
-- server serves for that app, through GET /api/profile/NAME/decisions).
local cli = require "autopgo.cli"
local client = require "autopgo.client"
local json = require "autopgo.json"
local pgo = require "autopgo.pgo"

local M = {}

local int = math.tointeger

-- The decisions document of the API back in the shape autopgo.core.pgo gives (JSON numbers come
-- back as floats).
local function from_doc(doc)
  local d = { total_weight = int(doc.totalWeight), edges = int(doc.edges), threshold = doc.threshold, hot = {},
    hot_functions = doc.hotFunctions or {}, sites = {} }
  for i, e in ipairs(doc.hotCallSites or {}) do
    d.hot[i] = { caller = e.caller, callee = e.callee, offset = int(e.offset), weight = int(e.weight),
      cum = e.cumulative }
  end
  for i, s in ipairs(doc.devirtualization or {}) do
    d.sites[i] = { caller = s.caller, offset = int(s.offset), callee = s.callee, weight = int(s.weight),
      site_weight = int(s.siteWeight), callees = int(s.callees), ties = int(s.ties) }
  end
  return d
end

local function load(opts, spec)
  local app, query = spec:match("^app:([^?]+)(.*)$")
  if app then
    local api = client.new(opts.api_url, client.options(opts, { timeout = 300 }))
    -- every decision (limit=0): the API lists only the heaviest by default
    query = query .. (query == "" and "?" or "&") .. "limit=0"
    local res, err, _, status = api:request { url = api:profile_url(app) .. "/decisions" .. query }
    if res and res.status ~= 200 then res, err, _, status = client.response_error(res) end
    if not res then cli.exit(1, ("autopgo diff: %s: %s"):format(spec, client.message(err, status))) end
    local doc, derr = json.decode(res.body or "")
    if type(doc) ~= "table" then cli.exit(1, ("autopgo diff: %s: bad decisions document: %s"):format(spec, derr)) end
    return from_doc(doc)
  end
  local r, err = pgo.shape({ file = spec }, { decisions = true })
  if not r then cli.exit(1, ("autopgo diff: %s: %s"):format(spec, err)) end
  if not r.info.usable then
    cli.exit(1, ("autopgo diff: %s: not usable by go build -pgo: %s"):format(spec, r.info.reason))
  end
  return r.decisions
end

function M.run(opts, args)
  local a, b = load(opts, args[1]), load(opts, args[2])
  local r = pgo.diff(a, b)
  if opts.json then
    io.stdout:write(json.encode(pgo.diff_doc(r)), "\n")
  else
    io.stdout:write(pgo.render_diff(r, args[1], args[2]))
  end
  return 0
end

return M
