-- Specs of lua/autopgo/ui.lua: the embedded web view's files with their types and
-- Content-Security-Policy, /ui/features.json from the routes the server has, and the 404s.
local support = require "tests.lua.support"
local httpc = require "tests.lua.httpc"
local httpd = require "autopgo.httpd"
local ui = require "autopgo.ui"
local host = require "autopgo.host"
local cjson = require "cjson.safe"

local run = support.run

describe("ui", function()
  it("embeds the page, its script and styles and the flame graph library with its licence", function()
    local have = {}
    for _, f in ipairs(host.assets()) do have[f] = true end
    for _, f in ipairs { "index.html", "app.js", "style.css", "vendor/d3.min.js", "vendor/d3-flamegraph.min.js",
      "vendor/d3-flamegraph.css", "vendor/LICENSE-d3.txt", "vendor/LICENSE-d3-flame-graph.txt" } do
      assert.is_true(have[f] == true, f .. " is not embedded")
    end
    assert.equals(support.read_file(support.root .. "/lua/ui/app.js"), host.asset("app.js"))
    assert.is_nil(host.asset("nope.js"))
  end)

  it("serves them from this origin only, and says which API routes the server has", function()
    run(function()
      local router = httpd.router()
      ui.routes(router)
      router:add("GET", "/api/profile/{app}/top", function(_, res) return res:send("") end)
      local srv = assert(httpd.listen { host = "127.0.0.1", port = 0, handler = router })
      local function get(p) return httpc.request(srv.port, "GET", p) end
      local r = get("/ui/")
      assert.equals(200, r.status)
      assert.equals("text/html; charset=utf-8", r.headers["content-type"])
      assert.matches("^default%-src 'self';", r.headers["content-security-policy"])
      assert.matches('<script src="/ui/app.js"></script>', r.body)
      assert.is_nil(r.body:find("https?://"), "the page names no other host")
      assert.equals("text/javascript; charset=utf-8", get("/ui/vendor/d3.min.js").headers["content-type"])
      assert.equals("text/css; charset=utf-8", get("/ui/style.css").headers["content-type"])
      assert.equals(308, get("/ui").status)
      assert.equals(404, get("/ui/nope.js").status)
      assert.equals(404, get("/ui/vendor/nope.js").status)
      local f = cjson.decode(get("/ui/features.json").body)
      assert.same({ top = true, flamegraph = false, history = false, decisions = false, versions = false,
        diff = false }, f)
      srv:shutdown()
    end)
  end)
end)
