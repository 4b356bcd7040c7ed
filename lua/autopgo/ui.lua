-- The web view's static files under /ui/: lua/ui/ and its flame graph library (d3 and
-- d3-flame-graph from npm), embedded in the binary at build time (core/host/CMakeLists.txt).
-- Everything the page loads comes from here, so it works offline and never leaves the origin.
local auth = require "autopgo.auth"
local json = require "autopgo.json"

local M = {}

local types = {
  html = "text/html; charset=utf-8",
  js = "text/javascript; charset=utf-8",
  css = "text/css; charset=utf-8",
  txt = "text/plain; charset=utf-8",
}

-- Nothing but this origin, for scripts, styles, images and API calls alike.
local CSP = "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; script-src 'self'; "
  .. "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"

-- The embedded assets: the host binary's, or nil when Lua runs without it (plain lua5.4).
local function host()
  local ok, h = pcall(require, "autopgo.host")
  if ok and type(h) == "table" and h.asset then return h end
end

-- Whether the router has a route for method and pattern (e.g. "/api/profile/{app}/history").
local function has_route(router, method, pattern)
  for _, r in ipairs(router.routes or {}) do
    local parts = {}
    for i, seg in ipairs(r.segs) do parts[i] = seg.param and ("{" .. seg.param .. "}") or seg.literal end
    if r.method == method and "/" .. table.concat(parts, "/") == pattern then return true end
  end
  return false
end

--- What this server offers the page, from the routes it has at the time of the request (so the
-- page never calls an endpoint that is not there): {history, decisions, flamegraph, top, versions,
-- diff}.
function M.features(router)
  local function has(p) return has_route(router, "GET", p) end
  return {
    history = has("/api/profile/{app}/history"),
    decisions = has("/api/profile/{app}/decisions"),
    flamegraph = has("/api/profile/{app}/flamegraph"),
    top = has("/api/profile/{app}/top"),
    versions = has("/api/profile/{app}/versions"),
    diff = has("/api/profile/{app}/diff"),
  }
end

--- Adds GET /ui, /ui/, /ui/features.json and /ui/<file> to a router. They are open (the page
-- holds no data: it asks for a token when the API answers 401; features.json names routes only).
function M.routes(router)
  local h = host()
  local function serve(res, path)
    local body = h and h.asset(path)
    if not body then
      res:status(404):header("content-type", "text/plain; charset=utf-8")
      return res:send(h and "404 page not found\n" or "the web view is not part of this build\n")
    end
    res:status(200):header("content-type", types[path:match("%.(%w+)$")] or "application/octet-stream")
    res:header("content-security-policy", CSP):header("x-content-type-options", "nosniff")
    res:header("cache-control", "no-cache")
    return res:send(body)
  end
  router:add("GET", "/ui", function(_, res)
    res:status(308):header("location", "/ui/")
    return res:send("")
  end, auth.OPEN)
  router:add("GET", "/ui/", function(_, res) return serve(res, "index.html") end, auth.OPEN)
  router:add("GET", "/ui/features.json", function(_, res)
    local f = M.features(router)
    res:header("cache-control", "no-cache")
    return res:json(200, json.object("history", f.history, "decisions", f.decisions, "flamegraph", f.flamegraph,
      "top", f.top, "versions", f.versions, "diff", f.diff))
  end, auth.OPEN)
  router:add("GET", "/ui/{file}", function(req, res) return serve(res, req.params.file) end, auth.OPEN)
  router:add("GET", "/ui/vendor/{file}", function(req, res) return serve(res, "vendor/" .. req.params.file) end,
    auth.OPEN)
  return router
end

return M
