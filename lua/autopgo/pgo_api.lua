-- The compiler's view over HTTP: GET /api/profile/{app}?format=pgo|preprofile (the minimal pprof
-- and GO PREPROFILE V1 of the merged profile) and GET /api/profile/{app}/decisions (JSON), with
-- the per-app policy: serve = "pgo" makes the minimal form the default download, no_inline keeps
-- callees out of the hot set, stable = true keeps serving the same bytes while decisions hold.
-- api.lua hands requests here; the full profile (format=pprof) stays api.lua's.
local async = require "autopgo.async"
local core = require "autopgo.core"
local fail = require "autopgo.fail"
local httpd = require "autopgo.httpd"
local keys = require "autopgo.keys"
local log = require "autopgo.log"
local metrics = require "autopgo.metrics"
local pgo = require "autopgo.pgo"

local M = {}

local m = {
  downloads = metrics.counter("autopgo_pgo_downloads_total", "Downloads of the compiler's view by format and status.",
    { "format", "status" }),
  changes = metrics.counter("autopgo_pgo_decision_changes_total",
    "Merges that changed the compiler's decisions (hot call sites, hot functions, devirtualization targets), by app.",
    { "app" }),
  kept = metrics.counter("autopgo_pgo_stable_kept_total",
    "Merges after which the previous minimal profile was kept (stable = true: same decisions), by app.", { "app" }),
}

local View = {}
View.__index = View

--- A view over api's store; policy is the config's policy table ({ [app] = {...}, ["*"] = ... }).
function M.new(store, policy)
  return setmetatable({ store = store, policy = policy or {}, cache = {}, building = {} }, View)
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

local function policy_key(pol)
  local names = {}
  for i, n in ipairs(pol.no_inline) do names[i] = n end
  table.sort(names)
  return (pol.stable and "stable" or "") .. "\0" .. table.concat(names, "\0")
end

-- Keeps the previously served minimal profile when its decisions equal the new one's (stable =
-- true); otherwise records the new one as served. Returns the bytes to serve.
function View:stabilize(app, fresh, signature)
  local key = keys.pgo_served(app)
  local old, err, code = self.store:get(key)
  if old and old.body then
    local prev = pgo.shape(old.body, { decisions = true })
    if prev and prev.decisions and pgo.signature(prev.decisions) == signature then
      m.kept:inc({ app = app })
      return old.body
    end
  elseif code ~= "NOT_FOUND" then
    log.warn("cannot read the served minimal profile; serving the new one", "app", app, "error", err)
    return fresh
  end
  if old then m.changes:inc({ app = app }) end
  local ok, perr = self.store:put(key, fresh, old and { if_match = old.etag } or { if_none_match = "*" })
  if not ok then log.warn("cannot record the served minimal profile", "app", app, "error", perr) end
  return fresh
end

-- The compiler's view of app's merged profile: { version, pgo, preprofile, decisions, info,
-- etags }, computed once per stored version and policy. Returns it or nil, err, code.
function View:view(app)
  local pol = pgo.app_policy(self.policy, app)
  local pkey = policy_key(pol)
  local base = keys.base(app)
  while true do
    local st, err, code = self.store:stat(base)
    if not st then return nil, err, code end
    local c = self.cache[app]
    if c and c.version == st.etag and c.policy == pkey then return c end
    local ev = self.building[app]
    if not ev then break end
    ev.wait()
  end
  local ev = async.event()
  self.building[app] = ev
  local function done(...)
    if self.building[app] == ev then self.building[app] = nil end
    ev.set()
    return ...
  end
  local got, err, code = self.store:get(base)
  if not got then return done(nil, err, code) end
  local r
  r, err, code = pgo.shape(got.body, { format = "pgo", decisions = true, no_inline = pol.no_inline })
  if not r then return done(nil, err, code) end
  if not r.info.usable then
    return done(fail.new("INVALID", "the merged profile cannot be used by go build -pgo: %s", tostring(r.info.reason)))
  end
  local minimal = r.bytes
  if pol.stable then minimal = self:stabilize(app, minimal, pgo.signature(r.decisions)) end
  -- The preprofile and the decisions are read back from the bytes served, so all three agree.
  local served
  served, err, code = pgo.shape(minimal, { format = "preprofile", decisions = true })
  if not served then return done(nil, err, code) end
  local v = { version = got.etag, policy = pkey, pgo = minimal, preprofile = served.bytes,
    decisions = served.decisions, info = r.info, renamed = r.renamed }
  v.etags = { pgo = sha256_etag(v.pgo), preprofile = sha256_etag(v.preprofile) }
  self.cache[app] = v
  return done(v)
end

local function status_of(code)
  if code == "NOT_FOUND" then return 404, "Not Found" end
  if code == "INVALID" then return 422 end
  return 500
end

--- Serves app's profile in `format` ("pgo" or "preprofile").
function View:download(req, res, app, format)
  local v, err, code = self:view(app)
  if not v then
    local status, msg = status_of(code)
    m.downloads:inc({ format = format, status = tostring(status) })
    return res:error(status, msg or tostring(err))
  end
  local etag = v.etags[format]
  if httpd.none_match(req:header("if-none-match"), etag) then
    m.downloads:inc({ format = format, status = "304" })
    res:status(304):header("etag", etag)
    return res:send("")
  end
  m.downloads:inc({ format = format, status = "200" })
  res:status(200):header("etag", etag):header("content-type", pgo.formats[format])
  return res:send(v[format])
end

--- GET /api/profile/{app}/decisions?limit=N: what the compiler will do with the served profile,
-- each list cut to its first N entries (default pgo.decisions_limit, 0: all). The JSON of the
-- default is kept with the version's view.
function View:decisions(req, res)
  local app = req.params.app
  if not keys.is_app_name(app) then return res:error(400, "invalid app name") end
  local q = req.query and req.query.limit
  local limit = (q == nil or q == "") and pgo.decisions_limit or math.tointeger(tonumber(q))
  if not limit or limit < 0 then return res:error(400, "limit must be an integer from 0 (all)") end
  local v, err, code = self:view(app)
  if not v then
    local status, msg = status_of(code)
    return res:error(status, msg or tostring(err))
  end
  local body = limit == pgo.decisions_limit and v.doc or nil
  if not body then
    body = require("autopgo.json").encode_line(pgo.decisions_doc(v.info, v.decisions, { "etag", v.etags.pgo }, limit))
    if limit == pgo.decisions_limit then v.doc = body end
  end
  res:status(200):header("content-type", "application/json")
  return res:send(body)
end

--- The handler for GET /api/profile/{app} when it serves the compiler's view: returns true when
-- it answered (format pgo or preprofile, asked or by policy), false to leave the full profile to
-- the caller.
function View:maybe_download(req, res)
  local app = req.params.app
  if not keys.is_app_name(app) then return false end
  local format, why = self:format_for(req, app)
  if not format then
    res:error(400, why)
    return true
  end
  if format == "pprof" then return false end
  self:download(req, res, app, format)
  return true
end

--- Adds GET /api/profile/{app}/decisions to an httpd router.
function View:routes(router)
  router:add("GET", "/api/profile/{app}/decisions", function(req, res) return self:decisions(req, res) end,
    "download")
  return router
end

return M
