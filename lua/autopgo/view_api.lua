-- What the web view reads of a merged profile, as JSON computed in C (autopgo.core.flame, on the
-- thread pool): GET /api/profile/{app}/flamegraph (the call tree, small frames folded into
-- "(other)" under a node budget) and GET /api/profile/{app}/top (go tool pprof -top's rows).
-- Answers are cached by the profile's sha256 and carry an ETag derived from it. ?window= or
-- ?from=&to= read the time window the profile history merges, as downloads do.
local async = require "autopgo.async"
local core = require "autopgo.core"
local httpd = require "autopgo.httpd"
local keys = require "autopgo.keys"
local limits = require "autopgo.limits"
local log = require "autopgo.log"

local flame = core.flame

local M = {}

-- Answers kept (JSON of at most 2 MB each), the oldest dropped first.
local MAX_CACHED = 32

local View = {}
View.__index = View

--- A view over an autopgo.api instance (its store and its per-version digests).
function M.new(api)
  return setmetatable({ api = api, cache = {}, order = {}, building = {} }, View)
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

local function wants_window(req)
  local q = req.query or {}
  return q.window ~= nil or q.from ~= nil or q.to ~= nil
end

-- What a request reads: { etag, read = function() -> bytes | nil, err, code }, or nil, err, code
-- (code "BAD_REQUEST" for a 400). The merged profile, or with window=/from=&to= the merged time
-- window the profile history serves for a download (api.history, when the server keeps one):
-- a server without history answers 400, so a client never takes the whole profile for a window.
function View:source(app, req)
  local api = self.api
  if wants_window(req) then
    if not api.history then
      local q = req.query
      local name = q.window and "window" or q.from and "from" or "to"
      return nil, ("%s= needs the profile history, which is not available on this server"):format(name), "BAD_REQUEST"
    end
    local from, to = require("autopgo.api").parse_range(req.query, require("autopgo.history").now_nanos() / 1e9)
    if from == nil and type(to) == "string" then return nil, to, "BAD_REQUEST" end
    -- the app's prune rules, as the window download applies them (Api:download_window)
    local pol = api.policy
    local rules = type(pol) == "table" and type(pol.rules_for) == "function" and pol:rules_for(app) or nil
    local w, err, code = api.history:window(app, from, to, rules)
    if not w then return nil, err, code end
    return { etag = w.etag, read = function()
      if w.bytes then return w.bytes end
      local got, gerr, gcode = api.store:get(w.key, { if_match = w.version })
      if not got then return nil, gerr, gcode end
      return got.body
    end }
  end
  local key = keys.base(app)
  local st, err, code = api.store:stat(key)
  if not st then return nil, err, code end
  local info
  info, err, code = api:version_info(app, key, st.etag)
  if not info then return nil, err, code end
  if info.damaged then return nil, "the merged profile is damaged", "DAMAGED" end
  return { etag = info.etag, read = function()
    local got, gerr, gcode = api.store:get(key, { if_match = st.etag })
    if not got then return nil, gerr, gcode end
    return got.body
  end }
end

-- The answer `kind` with `params` for what req reads of app: json, etag or nil, err, code. Answers
-- are cached by the content's digest (the source's ETag) and the question.
function View:answer(app, req, kind, params, tag)
  local src, err, code = self:source(app, req)
  if not src then return nil, err, code end
  local etag = src.etag:gsub('"$', "/" .. tag .. '"')
  local hit = self.cache[etag]
  if hit then return hit, etag end
  -- one computation per answer at a time; the others wait for it
  while self.building[etag] do
    self.building[etag].wait()
    if self.cache[etag] then return self.cache[etag], etag end
  end
  local ev = async.event()
  self.building[etag] = ev
  local ok, json, jerr, jcode = pcall(function()
    local bytes, rerr, rcode = src.read()
    if not bytes then return nil, rerr, rcode end
    local opts = { max_decompressed = limits.profile.max_decompressed, max_memory = limits.profile.max_memory }
    for k, v in pairs(params) do opts[k] = v end
    return async.await(kind == "top" and flame.top_async or flame.graph_async, bytes, opts)
  end)
  self.building[etag] = nil
  ev.set()
  if not ok then error(json, 0) end
  if not json then return nil, jerr, jcode end
  -- a bounded cache: the oldest answer goes first
  self.order[#self.order + 1] = etag
  self.cache[etag] = json
  while #self.order > MAX_CACHED do
    self.cache[table.remove(self.order, 1)] = nil
  end
  return json, etag
end

function View:serve(req, res, kind, params, tag)
  local app = req.params.app
  if not keys.is_app_name(app) then
    return res:error(400, "invalid app name: " .. keys.app_name_problem(app))
  end
  for _ = 1, 5 do
    local json, etag, code = self:answer(app, req, kind, params, tag)
    if json then
      if httpd.none_match(req:header("if-none-match"), etag) then
        res:status(304):header("etag", etag)
        return res:send("")
      end
      res:status(200):header("content-type", "application/json"):header("etag", etag)
      res:header("cache-control", "no-cache")
      return res:send(json)
    end
    if code == "BAD_REQUEST" then return res:error(400, etag) end
    if code == "NOT_FOUND" then
      if wants_window(req) then return res:error(404, ("no profile for app %s in that window"):format(app)) end
      return res:error(404, ("no merged profile for app %s yet"):format(app))
    end
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

--- Adds the view's routes to an httpd router: what a download token may read (scope download).
function View:routes(router)
  router:add("GET", "/api/profile/{app}/flamegraph", function(req, res) return self:flamegraph(req, res) end,
    "download")
  router:add("GET", "/api/profile/{app}/top", function(req, res) return self:top(req, res) end, "download")
  return router
end

return M
