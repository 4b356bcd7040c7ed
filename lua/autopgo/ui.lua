-- The web view's static files under /ui/: lua/ui/ and its flame graph library (d3 and
-- d3-flame-graph from npm), embedded in the binary at build time (core/host/CMakeLists.txt).
-- Everything the page loads comes from here, so it works offline and never leaves the origin.
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

--- Adds GET /ui, /ui/ and /ui/<file> to a router.
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
  end)
  router:add("GET", "/ui/", function(_, res) return serve(res, "index.html") end)
  router:add("GET", "/ui/{file}", function(req, res) return serve(res, req.params.file) end)
  router:add("GET", "/ui/vendor/{file}", function(req, res) return serve(res, "vendor/" .. req.params.file) end)
  return router
end

return M
