-- What the web view reads of a merged profile, as JSON computed in C (autopgo.core.flame, on the
-- thread pool): GET /api/profile/{app}/flamegraph (the call tree, small frames folded into
-- "(other)" under a node budget) and GET /api/profile/{app}/top (go tool pprof -top's rows).
-- Answers are cached per stored version of the profile and carry an ETag derived from its sha256.
local async = require "autopgo.async"
local core = require "autopgo.core"
local keys = require "autopgo.keys"
local limits = require "autopgo.limits"
local log = require "autopgo.log"

local flame = core.flame

local M = {}

-- Answers kept per app (one profile version at a time); past this the app's cache starts over.
local MAX_CACHED = 16

local View = {}
View.__index = View

--- A view over an autopgo.api instance (its store and its per-version digests).
function M.new(api)
  return setmetatable({ api = api, cache = {}, building = {} }, View)
end

local function none_match(header, etag)
  if not header then return false end
  for candidate in header:gmatch("[^,]+") do
    candidate = candidate:match("^%s*(.-)%s*$"):gsub("^W/", "")
    if candidate == "*" or candidate == etag:gsub("^W/", "") then return true end
  end
  return false
end

-- An integer query parameter within lo..hi, or nil and a message for a 400.
local function int_param(req, name, lo, hi)
  local s = req.query and req.query[name]
  if s == nil or s == "" then return true end
  local n = tonumber(s)
  if not n or n ~= math.floor(n) or n < lo or n > hi then
    return nil, ("%s must be an integer from %d to %d"):format(name, lo, hi)
  end
  return math.tointeger(n)
end

-- The time-window parameters of a download: answered with 400 until the profile history is
-- there to serve them, so a client never mistakes the whole profile for a window of it.
local function window_problem(req)
  local q = req.query or {}
  for _, name in ipairs { "window", "from", "to" } do
    if q[name] ~= nil then
      return ("%s= needs the profile history, which is not available on this server"):format(name)
    end
  end
end

-- The answer `kind` with `params` for app's current profile: json, etag or nil, err, code.
function View:answer(app, kind, params, tag)
  local api = self.api
  local key = keys.base(app)
  local st, err, code = api.store:stat(key)
  if not st then return nil, err, code end
  local info
  info, err, code = api:version_info(app, key, st.etag)
  if not info then return nil, err, code end
  if info.damaged then return nil, "the merged profile is damaged", "DAMAGED" end
  local c = self.cache[app]
  if not c or c.version ~= st.etag then
    c = { version = st.etag, answers = {}, n = 0 }
    self.cache[app] = c
  end
  local hit = c.answers[tag]
  if hit then return hit.json, hit.etag end
  -- one computation per answer at a time; the others wait for it
  local bkey = app .. "\0" .. st.etag .. "\0" .. tag
  while self.building[bkey] do
    self.building[bkey].wait()
    hit = c.answers[tag]
    if hit then return hit.json, hit.etag end
  end
  local ev = async.event()
  self.building[bkey] = ev
  local ok, json, jerr, jcode = pcall(function()
    local got, gerr, gcode = api.store:get(key, { if_match = st.etag })
    if not got then return nil, gerr, gcode end
    local opts = { max_decompressed = limits.profile.max_decompressed, max_memory = limits.profile.max_memory }
    for k, v in pairs(params) do opts[k] = v end
    return async.await(kind == "top" and flame.top_async or flame.graph_async, got.body, opts)
  end)
  self.building[bkey] = nil
  ev.set()
  if not ok then error(json, 0) end
  if not json then return nil, jerr, jcode end
  local etag = info.etag:gsub('"$', "/" .. tag .. '"')
  if c.n >= MAX_CACHED then
    c.answers, c.n = {}, 0
  end
  c.answers[tag] = { json = json, etag = etag }
  c.n = c.n + 1
  return json, etag
end

function View:serve(req, res, kind, params, tag)
  local app = req.params.app
  if not keys.is_app_name(app) then
    return res:error(400, "invalid app name: " .. keys.app_name_problem(app))
  end
  local problem = window_problem(req)
  if problem then return res:error(400, problem) end
  for _ = 1, 5 do
    local json, etag, code = self:answer(app, kind, params, tag)
    if json then
      if none_match(req:header("if-none-match"), etag) then
        res:status(304):header("etag", etag)
        return res:send("")
      end
      res:status(200):header("content-type", "application/json"):header("etag", etag)
      res:header("cache-control", "no-cache")
      return res:send(json)
    end
    if code == "NOT_FOUND" then return res:error(404, ("no merged profile for app %s yet"):format(app)) end
    if code == "DAMAGED" then
      return res:error(500, ("the merged profile of app %s is damaged and is not served (details in the server log)")
        :format(app))
    end
    if code ~= "PRECONDITION_FAILED" then
      log.error("cannot compute a view of the merged profile", "app", app, "view", kind, "error", etag)
      return res:error(code == "TOO_LARGE" and 413 or 500,
        ("cannot compute the %s of app %s (%s); details are in the server log"):format(kind, app, code or "INTERNAL"))
    end
    -- replaced by a merge between two reads: again, with what is there now
  end
  return res:error(503, "the merged profile is being replaced too often to be read; try again")
end

--- GET /api/profile/{app}/flamegraph?max_nodes=N (default 4000, at most 20000)
function View:flamegraph(req, res)
  local n, why = int_param(req, "max_nodes", 2, flame.limit_nodes)
  if not n then return res:error(400, why) end
  n = n == true and flame.default_nodes or n
  return self:serve(req, res, "flamegraph", { max_nodes = n }, "flamegraph;n=" .. n)
end

--- GET /api/profile/{app}/top?limit=N (default 100, at most 5000)
function View:top(req, res)
  local n, why = int_param(req, "limit", 1, flame.limit_rows)
  if not n then return res:error(400, why) end
  n = n == true and flame.default_rows or n
  return self:serve(req, res, "top", { limit = n }, "top;n=" .. n)
end

--- Adds the view's routes to an httpd router.
function View:routes(router)
  router:add("GET", "/api/profile/{app}/flamegraph", function(req, res) return self:flamegraph(req, res) end)
  router:add("GET", "/api/profile/{app}/top", function(req, res) return self:top(req, res) end)
  return router
end

return M
