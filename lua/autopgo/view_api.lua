-- What the web view reads of a merged profile, as JSON computed in C (autopgo.core.flame, on the
-- thread pool): GET /api/profile/{app}/flamegraph (the call tree, small frames folded into
-- "(other)" under a node budget) and GET /api/profile/{app}/top (go tool pprof -top's rows).
-- A version is decoded once for both: the first request for either computes the flame graph and
-- the top table (the rows any limit up to M.VIEW_ROWS asks) in one job, kept by the digest, so the
-- page's other request (and every later one) is answered from memory; concurrent misses share
-- the one job. Answers carry an ETag derived from the digest. ?window= or ?from=&to= read the
-- time window the profile history merges, as downloads do (?to= alone: a version, see versions).
-- A version is also computed before its first visitor (View:warm): when the server learns of a new
-- merged profile (the embedded worker committed one, or a download hashed a new version), its
-- flame graph and top table are computed in the background, one warm-up per app at a time.
-- Also GET /api/profile/{app}/versions (the current profile and one per history segment) and
-- GET /api/profile/{app}/diff?a=&b= (the compiler's decisions of two of them compared, as
-- autopgo diff does).
local async = require "autopgo.async"
local core = require "autopgo.core"
local fail = require "autopgo.fail"
local httpd = require "autopgo.httpd"
local keys = require "autopgo.keys"
local json = require "autopgo.json"
local limits = require "autopgo.limits"
local log = require "autopgo.log"
local metrics = require "autopgo.metrics"
local pgo = require "autopgo.pgo"
local url = require "autopgo.url"
local utc = require "autopgo.utc"

local flame = core.flame

local M = {}

-- The views kept: at most MAX_BYTES of JSON (a 50 MB profile's top table and flame graph are
-- under 1 MB; a flame graph of 20000 nodes up to 10 MB), the least recently used version dropped
-- first, and at most MAX_MORE other answers (flame graph sizes, longer top tables) per version.
M.MAX_BYTES = 64 * 1024 * 1024
local MAX_MORE = 4

-- The rows of the top table computed with the flame graph: every limit up to this one (the page
-- asks 200, the default is 100) is cut from it; a longer one is a job of its own. (Annotating
-- 5000 rows' inline edges costs a 50 MB profile a fifth more CPU.)
M.VIEW_ROWS = 500

local warmups = metrics.counter("autopgo_view_warmups_total",
  "Versions whose flame graph and top table the server began computing before any request asked.", { "app" })

local View = {}
View.__index = View

--- A view over an autopgo.api instance (its store and its per-version digests); o.warm: warm a
-- version's views when the api learns of it (api.on_version).
function M.new(api, o)
  -- jobs: the C jobs run so far (each decodes a profile)
  -- warming: the apps being warmed ({ again = true } when asked again meanwhile)
  local self = setmetatable({ api = api, cache = {}, order = {}, building = {}, jobs = 0, warming = {} }, View)
  -- a new version's digest, learnt by a download or a view: warmed for the page
  if o and o.warm then api.on_version = function(app) self:warm(app) end end
  return self
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

-- The 400 for a path naming no valid app (every handler here checks it first).
local function bad_app(res, app)
  return res:error(400, "invalid app name: " .. keys.app_name_problem(app))
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

-- Marks the views of a version as the most recently used (adding them when new) and drops the
-- least recently used others while the kept JSON is over M.MAX_BYTES.
function View:keep(etag, entry)
  for i, e in ipairs(self.order) do
    if e == etag then
      table.remove(self.order, i)
      break
    end
  end
  self.order[#self.order + 1] = etag
  self.cache[etag] = entry
  local total = 0
  for _, e in ipairs(self.order) do total = total + self.cache[e].bytes end
  while total > M.MAX_BYTES and #self.order > 1 do
    local old = table.remove(self.order, 1)
    total = total - self.cache[old].bytes
    self.cache[old] = nil
  end
end

-- Runs fn() (-> result or nil, err, code) once for `key` at a time: a concurrent caller waits for
-- the running one and then finds its result with found(); returns found()'s or fn's result.
function View:once(key, found, fn)
  while self.building[key] do
    self.building[key].wait()
    local hit = found()
    if hit then return hit end
  end
  local hit = found()
  if hit then return hit end
  local ev = async.event()
  self.building[key] = ev
  local ok, r, err, code = pcall(fn)
  self.building[key] = nil
  ev.set()
  if not ok then error(r, 0) end
  return r, err, code
end

-- The decode options of a job: the profile limits and params.
local function job_opts(params)
  local opts = { max_decompressed = limits.profile.max_decompressed, max_memory = limits.profile.max_memory }
  for k, v in pairs(params or {}) do opts[k] = v end
  return opts
end

-- The views of the version src reads: { more = {[tag] = json}, nmore, top = json, ends = {...} },
-- or nil, err, code. The first request computes the top table (M.VIEW_ROWS rows) and the flame
-- graph of max_nodes together (one decode); another flame graph size or a longer top table later
-- is one more job (View:answer).
function View:views(src, max_nodes)
  local etag = src.etag
  local function found() return self.cache[etag] end
  local entry, err, code = self:once(etag, found, function()
    local bytes, rerr, rcode = src.read()
    if not bytes then return nil, rerr, rcode end
    self.jobs = self.jobs + 1
    local fjson, tjson, ends = async.await(flame.views_async, bytes,
      job_opts { max_nodes = max_nodes, limit = M.VIEW_ROWS })
    if not fjson then return nil, tjson, ends end
    local e = { more = { ["flamegraph;n=" .. max_nodes] = fjson }, nmore = 1, top = tjson, ends = ends,
      bytes = #fjson + #tjson }
    self:keep(etag, e)
    return e
  end)
  if entry then self:keep(etag, entry) end
  return entry, err, code
end

--- Computes the views of app's merged profile (flame graph and top table) in the background, into
-- the digest-keyed cache the requests read, so the first visitor of a new version finds them.
-- Returns at once; the work is on the thread pool and the loop only gets the JSON strings. One
-- warm-up per app at a time: asked again while one runs, it runs once more after. Failures are
-- only logged (a request meeting them again answers them). The compiler's view (autopgo.pgo_api)
-- is warmed too: its job hands the loop only bounded decisions and the shaped bytes.
function View:warm(app)
  local w = self.warming[app]
  if w then
    w.again = true
    return
  end
  w = {}
  self.warming[app] = w
  async.spawn(function()
    repeat
      w.again = false
      local ok, err = pcall(function()
        local src, serr, scode = self:source(app, { query = {} })
        if not src then return log.debug("no view to warm", "app", app, "error", tostring(serr), "code", scode) end
        -- counted when this warm-up starts the version's job (no request did before it)
        if not self.cache[src.etag] and not self.building[src.etag] then warmups:inc({ app = app }) end
        local e, verr, vcode = self:views(src, flame.default_nodes)
        if not e then
          log.warn("cannot warm the views of the merged profile", "app", app, "error", tostring(verr), "code", vcode)
        end
        if self.api.pgo then
          local v, perr, pcode = self.api.pgo:view(app, { etag = src.etag, base = true }, src.read)
          -- a profile go build -pgo cannot use is the request's 422, not a warning
          if not v and pcode ~= "INVALID" then
            log.warn("cannot warm the compiler's view", "app", app, "error", tostring(perr), "code", pcode)
          end
        end
      end)
      if not ok then log.error("warming the views failed", "app", app, "error", tostring(err)) end
    until not w.again
    self.warming[app] = nil
  end)
end

-- The top table with its first `limit` rows, cut from the kept one (see ap_pprof_views_json).
local function top_rows(e, limit)
  local n = math.min(limit, #e.ends)
  if n == #e.ends then return e.top end
  if n == 0 then return e.top:sub(1, select(2, e.top:find('"rows":[', 1, true))) .. "]}" end
  return e.top:sub(1, e.ends[n]) .. "]}"
end

-- The answer `kind` ("flamegraph" or "top") with `n` (max_nodes or limit) for what req reads of
-- app: json, etag or nil, err, code. The ETag is the content's digest and the question.
function View:answer(app, req, kind, n, tag)
  local src, err, code = self:source(app, req)
  if not src then return nil, err, code end
  local etag = src.etag:gsub('"$', "/" .. tag .. '"')
  local e
  e, err, code = self:views(src, kind == "flamegraph" and n or flame.default_nodes)
  if not e then return nil, err, code end
  -- every row when the table holds fewer than it was asked for
  if kind == "top" and (n <= #e.ends or #e.ends < M.VIEW_ROWS) then return top_rows(e, n), etag end
  local function found() return e.more[tag] end
  local body
  body, err, code = self:once(etag, found, function()
    local bytes, rerr, rcode = src.read()
    if not bytes then return nil, rerr, rcode end
    self.jobs = self.jobs + 1
    local j, jerr, jcode
    if kind == "top" then
      j, jerr, jcode = async.await(flame.top_async, bytes, job_opts { limit = n })
    else
      j, jerr, jcode = async.await(flame.graph_async, bytes, job_opts { max_nodes = n })
    end
    if not j then return nil, jerr, jcode end
    -- a bounded number per version: one other than the default flame graph makes room
    if e.nmore >= MAX_MORE then
      for k, old in pairs(e.more) do
        if k ~= "flamegraph;n=" .. flame.default_nodes then
          e.more[k] = nil
          e.nmore = e.nmore - 1
          e.bytes = e.bytes - #old
          break
        end
      end
    end
    e.more[tag] = j
    e.nmore = e.nmore + 1
    e.bytes = e.bytes + #j
    if self.cache[src.etag] == e then self:keep(src.etag, e) end
    return j
  end)
  if not body then return nil, err, code end
  return body, etag
end

function View:serve(req, res, kind, n, tag)
  local app = req.params.app
  if not keys.is_app_name(app) then return bad_app(res, app) end
  for _ = 1, 5 do
    local body, etag, code = self:answer(app, req, kind, n, tag)
    if body then
      if httpd.none_match(req:header("if-none-match"), etag) then
        res:status(304):header("etag", etag)
        return res:send("")
      end
      res:status(200):header("content-type", "application/json"):header("etag", etag)
      res:header("cache-control", "no-cache")
      return res:send(body)
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
  return self:serve(req, res, "flamegraph", n, "flamegraph;n=" .. n)
end

--- GET /api/profile/{app}/top?limit=N (default 100, at most 5000)
function View:top(req, res)
  local n, why = int_param(req, "limit", 1, flame.limit_rows)
  if not n then return res:error(400, why) end
  n = n == true and flame.default_rows or n
  return self:serve(req, res, "top", n, "top;n=" .. n)
end

-- ---- versions and the diff of two profiles' decisions ----

--- GET /api/profile/{app}/versions: the versions of the app's profile a page can show or compare,
-- newest first: "current" (the merged profile served now, selected by no query) and, per history
-- segment, the profile as of its end ("to=END": every upload captured before END that the history
-- keeps, merged under the app's prune rules, as a window download gives it; not byte for byte
-- what was served then). {app, versions: [{id, query, label, uploads, end}]}.
function View:versions(req, res)
  local app = req.params.app
  if not keys.is_app_name(app) then return bad_app(res, app) end
  local list = json.array()
  list[1] = json.object("id", "current", "query", "", "label", "served now (the merged profile)")
  local h = self.api.history
  if h then
    local segs, err = h:segments(app)
    if not segs then
      log.error("cannot read the history of the app", "app", app, "error", tostring(err))
      return res:error(500, "cannot read the history of app " .. app)
    end
    local uploads = 0
    local rows = {}
    for _, sg in ipairs(segs) do
      uploads = uploads + sg.doc.count
      local stop = utc.rfc3339(sg.start + h.seglen)
      rows[#rows + 1] = json.object("id", stop, "query", "to=" .. stop, "label", "as of " .. stop,
        "uploads", uploads, "end", stop)
    end
    for i = #rows, 1, -1 do list[#list + 1] = rows[i] end
  end
  return res:json(200, json.object("app", app, "versions", list))
end

-- The query a selector names (a query string of window=, from=, to=; "" for the current profile),
-- as a request's query map, or nil and why for a 400.
local function selector(s)
  local q = url.parse_query(s or "")
  for k in pairs(q) do
    if k ~= "window" and k ~= "from" and k ~= "to" then
      return nil, ("a profile is selected by window=, from= and to= only, not %s="):format(k)
    end
  end
  return q
end

-- The compiler's view of what sel (a query map) selects of app, the one GET /decisions serves for
-- that version (autopgo.pgo_api, computed once per content digest and policy): view, etag or nil,
-- err, code.
function View:served_view(app, sel)
  local src, err, code = self:source(app, { query = sel })
  if not src then return nil, err, code end
  local v
  v, err, code = self.api.pgo:view(app, { etag = src.etag, base = next(sel) == nil }, src.read)
  if not v then return nil, err, code end
  return v, src.etag
end

--- GET /api/profile/{app}/diff?a=SEL&b=SEL[&limit=N]: what the compiler decides differently with
-- profile b than with a, as `autopgo diff A B --json` (pgo.diff_doc), each list cut to N entries
-- (default pgo.decisions_limit, 0: all). SEL is a URL-encoded query selecting a profile: empty
-- for the current one, window=24h, from=..&to=.., or to=.. for a version (GET .../versions).
function View:diff(req, res)
  local app = req.params.app
  if not keys.is_app_name(app) then return bad_app(res, app) end
  local q = req.query or {}
  local limit, lwhy = pgo.limit_param(q)
  if not limit then return res:error(400, lwhy) end
  local sa, why = selector(q.a)
  if not sa then return res:error(400, "a: " .. why) end
  local sb
  sb, why = selector(q.b)
  if not sb then return res:error(400, "b: " .. why) end
  local sides = {}
  for i, sel in ipairs { sa, sb } do
    local v, etag, code = self:served_view(app, sel)
    local name = i == 1 and "a" or "b"
    if not v then
      if code == "BAD_REQUEST" then return res:error(400, name .. ": " .. etag) end
      if code == "NOT_FOUND" then return res:error(404, ("%s: no profile of app %s there"):format(name, app)) end
      if code == "INVALID" then return res:error(422, name .. ": " .. fail.message(etag)) end
      log.error("cannot compute the decisions of a profile", "app", app, "error", tostring(etag))
      return res:error(500, ("%s: cannot compute the decisions of app %s (%s)"):format(name, app, code or "INTERNAL"))
    end
    sides[i] = { v = v, etag = etag }
  end
  -- the whole diff of the two served minimal profiles is one job on the pool; the loop gets
  -- lists of at most `limit` entries
  local r, err, code = pgo.diff(sides[1].v.pgo, sides[2].v.pgo, limit)
  if not r then
    log.error("cannot diff the decisions of two profiles", "app", app, "error", tostring(err))
    return res:error(500, ("cannot diff the decisions of app %s (%s)"):format(app, code or "INTERNAL"))
  end
  local function side(i, sel)
    return json.object("select", sel or "", "etag", sides[i].etag, "signature", r.signatures[i])
  end
  return res:json(200, pgo.diff_doc(r, limit, { "a", side(1, q.a), "b", side(2, q.b), "limit", limit }))
end

--- Adds the view's routes to an httpd router: what a download token may read (scope download).
function View:routes(router)
  router:add("GET", "/api/profile/{app}/flamegraph", function(req, res) return self:flamegraph(req, res) end,
    "download")
  router:add("GET", "/api/profile/{app}/top", function(req, res) return self:top(req, res) end, "download")
  router:add("GET", "/api/profile/{app}/versions", function(req, res) return self:versions(req, res) end, "download")
  if self.api.pgo then
    router:add("GET", "/api/profile/{app}/diff", function(req, res) return self:diff(req, res) end, "download")
  end
  return router
end

return M
