-- The compiler's view over HTTP: the minimal pprof and GO PREPROFILE V1 (?format=pgo|preprofile)
-- and the decisions (GET /api/profile/{app}/decisions, JSON) of one version of a profile, the
-- merged base or a merged window, that api.lua has found (and checked) and hands here with a way to
-- read exactly that version. Computed once per content (the version's digest) and policy.
local async = require "autopgo.async"
local core = require "autopgo.core"
local fail = require "autopgo.fail"
local httpd = require "autopgo.httpd"
local json = require "autopgo.json"
local metrics = require "autopgo.metrics"
local pgo = require "autopgo.pgo"
local pgo_stable = require "autopgo.pgo_stable"

local M = {}

--- Shaped views kept in memory per app (its base and a few windows; each a few minimal profiles'
-- worth), the oldest dropped first.
M.CACHE_KEEP = 4

local m = {
  downloads = metrics.counter("autopgo_pgo_downloads_total", "Downloads of the compiler's view by format and status.",
    { "format", "status" }),
  built = metrics.counter("autopgo_pgo_views_built_total",
    "Versions of a profile (base or window) shaped into the compiler's view (then served from memory)."),
}

local View = {}
View.__index = View

--- A view over api's store; policy is the config's policy table ({ [app] = {...}, ["*"] = ... }).
function M.new(store, policy)
  return setmetatable({ store = store, policy = policy or {}, cache = {}, order = {}, building = {} }, View)
end

local function sha256_etag(bytes)
  return httpd.digest_etag(core.crypto.hex(core.crypto.digest("sha256", bytes)))
end

--- The format a download asks for: ?format=, else the app's policy serve (default "pprof").
-- Returns it, or nil and a message for a 400.
function View:format_for(req, app)
  local f = req.query and req.query.format
  if f == nil or f == "" then return pgo.app_policy(self.policy, app).serve end
  if not pgo.formats[f] then
    return nil, ("unknown format %q (want pprof, pgo or preprofile)"):format(f)
  end
  return f
end

--- Counts a download of the compiler's view answered with status.
function M.count(format, status)
  m.downloads:inc({ format = format, status = tostring(status) })
end

local function policy_key(pol, stable)
  local names = {}
  for i, n in ipairs(pol.no_inline) do names[i] = n end
  table.sort(names)
  return (stable and "stable" or "") .. "\0" .. table.concat(names, "\0")
end

function View:remember(app, key, v)
  local order = self.order[app] or {}
  self.order[app] = order
  if not self.cache[key] then order[#order + 1] = key end
  self.cache[key] = v
  while #order > M.CACHE_KEEP do self.cache[table.remove(order, 1)] = nil end
end

-- The compiler's view of one version of app's profile: src = { etag (the content's digest),
-- base (true for the merged base, where stable = true applies) }, read() its bytes (or nil, err,
-- code). Returns { pgo, preprofile, info, etags } or
-- nil, err, code.
-- (The /diff route, autopgo.view_api, diffs two of these.)
function View:view(app, src, read)
  local pol = pgo.app_policy(self.policy, app)
  local stable = src.base and pol.stable
  local key = app .. "\0" .. src.etag .. "\0" .. policy_key(pol, stable)
  while not self.cache[key] and self.building[key] do self.building[key].wait() end
  if self.cache[key] then return self.cache[key] end
  local ev = async.event()
  self.building[key] = ev
  local function done(...)
    self.building[key] = nil
    ev.set()
    return ...
  end
  local body, err, code = read()
  if not body then return done(nil, err, code) end
  -- One job on the pool: the minimal pprof, the preprofile and the decisions' signature (computed
  -- in C from the full lists, cut to one entry), so the loop never holds a table per edge; the
  -- decisions' documents are written from the minimal pprof (View:decisions).
  local r
  r, err, code = pgo.shape(body, { format = "pgo", preprofile = true, decisions = true, decisions_limit = 1,
    no_inline = pol.no_inline })
  body = nil -- luacheck: ignore 311 (the full profile need not live through the next job)
  if not r then return done(nil, err, code) end
  if not r.info.usable then
    return done(fail.new("INVALID", "the merged profile cannot be used by go build -pgo: %s", tostring(r.info.reason)))
  end
  local v = { pgo = r.bytes, preprofile = r.preprofile, info = r.info }
  if stable then
    v.pgo = pgo_stable.pick(self.store, app, r.bytes, pgo.signature(r.decisions))
    if v.pgo ~= r.bytes then
      -- the previous bytes are served: the preprofile is theirs
      local served
      served, err, code = pgo.shape(v.pgo, { format = "preprofile" })
      if not served then return done(nil, err, code) end
      v.preprofile = served.bytes
    end
  end
  m.built:inc()
  v.etags = { pgo = sha256_etag(v.pgo), preprofile = sha256_etag(v.preprofile) }
  self:remember(app, key, v)
  return done(v)
end

-- Answers a failure to compute the view: 422 when go could not use the profile. Returns true when
-- it answered, else nil, err, code for the caller (a version gone meanwhile, a store failure).
local function refuse(res, err, code, count)
  if code ~= "INVALID" then return nil, err, code end
  if count then count(422) end
  res:error(422, fail.message(err))
  return true
end

--- Serves the view of src in `format` ("pgo" or "preprofile"), 304 on a matching If-None-Match.
-- Returns true once answered, or nil, err, code (see refuse).
function View:download(req, res, app, format, src, read)
  local function count(status) M.count(format, status) end
  local v, err, code = self:view(app, src, read)
  if not v then return refuse(res, err, code, count) end
  local etag = v.etags[format]
  if httpd.none_match(req:header("if-none-match"), etag) then
    count(304)
    res:status(304):header("etag", etag)
    res:send("")
    return true
  end
  count(200)
  res:status(200):header("etag", etag):header("content-type", pgo.formats[format])
  res:send(v[format])
  return true
end

--- GET /api/profile/{app}/decisions?limit=N: what the compiler will do with the profile served
-- for src, each list cut to its first `limit` entries (pgo.limit_param: default
-- pgo.decisions_limit, 0 all). The document is written in C on the pool from the served minimal
-- profile (a flat 50 MB profile's is 57 MB unbounded); the one of the default limit is kept with
-- the view.
function View:decisions(res, app, src, read, limit)
  local v, err, code = self:view(app, src, read)
  if not v then return refuse(res, err, code) end
  local body = limit == pgo.decisions_limit and v.doc or nil
  if not body then
    local r
    r, err, code = pgo.shape(v.pgo, { decisions_json = limit, json_extra = ',"etag":' .. json.encode(v.etags.pgo) })
    if not r then return refuse(res, err, code) end
    body = r.decisions_json .. "\n"
    if limit == pgo.decisions_limit then v.doc = body end
  end
  res:status(200):header("content-type", "application/json")
  res:send(body)
  return true
end

return M
