-- Specs of lua/autopgo/view_api.lua over a real HTTP server and an in-memory store: the flame
-- graph and top answers of a stored profile, their cache and ETags, a new version after a merge,
-- windows refused without history, and the 400/404 answers. (Against go tool pprof: e2e ui_spec.)
local support = require "tests.lua.support"
local httpc = require "tests.lua.httpc"
local httpd = require "autopgo.httpd"
local api = require "autopgo.api"
local view_api = require "autopgo.view_api"
local blob = require "autopgo.blob"
local bus = require "autopgo.bus"
local keys = require "autopgo.keys"
local cjson = require "cjson.safe"
local crypto = require("autopgo.core").crypto

local run = support.run

local function serve(o)
  local url = "mem://view-" .. crypto.hex(crypto.random(5))
  local e = { store = assert(blob.open(url)) }
  local router = httpd.router()
  local a = api.new({ store = e.store, writer = assert(bus.writer(url)) })
  a:routes(router)
  e.api = a
  e.view = view_api.new(a, o)
  e.view:routes(router)
  e.srv = assert(httpd.listen { host = "127.0.0.1", port = 0, handler = router })
  function e.get(path, headers) return httpc.request(e.srv.port, "GET", path, { headers = headers }) end
  return e
end

local function corpus(name)
  return assert(support.read_file(support.testdata .. "/" .. name), name)
end

describe("view_api", function()
  it("answers the flame graph and top of the merged profile, cached under an ETag of its digest", function()
    run(function()
      local e = serve()
      assert(e.store:put(keys.base("app"), corpus("edge/minimal.pb.gz")))
      local r = e.get("/api/profile/app/top")
      assert.equals(200, r.status, r.body)
      assert.equals("application/json", r.headers["content-type"])
      local doc = assert(cjson.decode(r.body))
      assert.equals(120000000, doc.total)
      assert.equals("crypto/sha256.block", doc.rows[1].name)
      assert.equals("inline", doc.rows[1].inline)
      local digest = crypto.hex(crypto.digest("sha256", corpus("edge/minimal.pb.gz")))
      assert.equals('"sha256:' .. digest .. '/top;n=100"', r.headers.etag)
      assert.equals(304, e.get("/api/profile/app/top", { ["if-none-match"] = r.headers.etag }).status)

      local f = e.get("/api/profile/app/flamegraph?max_nodes=3")
      assert.equals(200, f.status, f.body)
      local fg = assert(cjson.decode(f.body))
      assert.equals(3, fg.nodes)
      assert.equals("(other)", fg.root.children[1].children[1].name)
      assert.equals('"sha256:' .. digest .. '/flamegraph;n=3"', f.headers.etag)

      -- a merge writes a new version: the answers follow it
      assert(e.store:put(keys.base("app"), corpus("goapp-go123-cpu-1.pb.gz")))
      doc = assert(cjson.decode(e.get("/api/profile/app/top").body))
      assert.equals(9400000000, doc.total)
      e.srv:shutdown()
    end)
  end)

  it("decodes a version once for the flame graph and every top limit, concurrent misses included", function()
    run(function()
      local async = require "autopgo.async"
      local flame = require("autopgo.core").flame
      local e = serve()
      local bytes = corpus("goapp-go123-cpu-1.pb.gz")
      assert(e.store:put(keys.base("app"), bytes))
      -- the page's first requests arrive together: one job answers all of them
      local got = {}
      local waits = {}
      local paths = { "/api/profile/app/flamegraph", "/api/profile/app/top?limit=200", "/api/profile/app/top" }
      for i, path in ipairs(paths) do
        local done = async.event()
        waits[i] = done
        async.spawn(function()
          got[i] = e.get(path)
          done.set()
        end)
      end
      for _, w in ipairs(waits) do w.wait() end
      for i = 1, 3 do assert.equals(200, got[i].status, got[i].body) end
      assert.equals(1, e.view.jobs)
      -- every limit up to VIEW_ROWS is cut from the one top table, equal to computing it alone
      local rows = view_api.VIEW_ROWS
      view_api.VIEW_ROWS = 5
      local ok, err = pcall(function()
        for _, n in ipairs { 1, 2, 5 } do
          local want = assert(async.await(flame.top_async, bytes, { limit = n }))
          assert.equals(want, e.get("/api/profile/app/top?limit=" .. n).body, "limit " .. n)
        end
        assert.equals(1, e.view.jobs)
        -- a longer one is a job of its own, then kept too
        local want = assert(async.await(flame.top_async, bytes, { limit = 5000 }))
        assert.is_true(#cjson.decode(want).rows > 5)
        assert.equals(want, e.get("/api/profile/app/top?limit=5000").body)
        assert.equals(want, e.get("/api/profile/app/top?limit=5000").body)
        assert.equals(2, e.view.jobs)
      end)
      view_api.VIEW_ROWS = rows
      assert(ok, err)
      assert.equals(assert(async.await(flame.graph_async, bytes, {})), got[1].body)
      assert.equals(2, e.view.jobs)
      -- another flame graph size is one more job, then kept too
      assert.equals(200, e.get("/api/profile/app/flamegraph?max_nodes=10").status)
      assert.equals(200, e.get("/api/profile/app/flamegraph?max_nodes=10").status)
      assert.equals(3, e.view.jobs)
      e.srv:shutdown()
    end)
  end)

  it("keeps the views of the most recently used versions within a byte budget", function()
    run(function()
      local e = serve()
      assert(e.store:put(keys.base("one"), corpus("goapp-go123-cpu-1.pb.gz")))
      assert(e.store:put(keys.base("two"), corpus("goapp-go123-cpu-2.pb.gz")))
      local budget = view_api.MAX_BYTES
      for _, path in ipairs { "/api/profile/one/top", "/api/profile/two/top", "/api/profile/one/top" } do
        assert.equals(200, e.get(path).status)
      end
      assert.equals(2, e.view.jobs) -- both kept
      -- a budget smaller than one version's views keeps only the last one used
      view_api.MAX_BYTES = 1
      local ok, err = pcall(function()
        assert.equals(200, e.get("/api/profile/two/top").status) -- one is dropped
        assert.equals(200, e.get("/api/profile/two/flamegraph").status)
        assert.equals(2, e.view.jobs)
        assert.equals(200, e.get("/api/profile/one/top").status) -- computed again, two dropped
        assert.equals(3, e.view.jobs)
        assert.equals(200, e.get("/api/profile/two/top").status)
        assert.equals(4, e.view.jobs)
      end)
      view_api.MAX_BYTES = budget
      assert(ok, err)
      e.srv:shutdown()
    end)
  end)

  it("warms a new version's flame graph and top when the server learns of it, one app at a time", function()
    run(function()
      local async = require "autopgo.async"
      local function settled(e)
        for _ = 1, 400 do
          if not e.view.warming.app then return end
          async.sleep(10)
        end
        error("the warm-up did not finish")
      end
      -- without warm, a download computes no view
      local cold = serve()
      assert(cold.store:put(keys.base("app"), corpus("goapp-go123-cpu-1.pb.gz")))
      assert.equals(200, cold.get("/api/profile/app").status)
      settled(cold)
      assert.equals(0, cold.view.jobs)
      assert.is_nil(next(cold.api.pgo.cache))
      cold.srv:shutdown()

      local e = serve { warm = true }
      local bytes = corpus("goapp-go123-cpu-1.pb.gz")
      assert(e.store:put(keys.base("app"), bytes))
      -- a download meets the version first: its views are computed, the compiler's view too
      local metrics = require "autopgo.metrics"
      local built = metrics.counter("autopgo_pgo_views_built_total"):get() or 0
      assert.equals(200, e.get("/api/profile/app").status)
      assert.is_truthy(e.view.warming.app)
      settled(e)
      assert.equals(1, e.view.jobs)
      local digest = crypto.hex(crypto.digest("sha256", bytes))
      assert.is_truthy(e.view.cache['"sha256:' .. digest .. '"'])
      assert.is_truthy(next(e.api.pgo.cache))
      assert.equals(built + 1, metrics.counter("autopgo_pgo_views_built_total"):get())
      -- the page's requests find them: no job more
      assert.equals(200, e.get("/api/profile/app/flamegraph").status)
      assert.equals(200, e.get("/api/profile/app/top?limit=200").status)
      assert.equals(200, e.get("/api/profile/app/decisions").status)
      assert.equals(200, e.get("/api/profile/app?format=preprofile").status)
      assert.equals(1, e.view.jobs)
      assert.equals(built + 1, metrics.counter("autopgo_pgo_views_built_total"):get())
      -- asked again while running (a merge after a merge), it runs once more after, not at once
      assert(e.store:put(keys.base("app"), corpus("goapp-go123-cpu-2.pb.gz")))
      e.view:warm("app")
      local running = e.view.warming.app
      e.view:warm("app")
      e.view:warm("app")
      assert.equals(running, e.view.warming.app)
      assert.is_true(running.again)
      settled(e)
      assert.equals(2, e.view.jobs) -- the new version, computed once
      -- a version gone or never merged: nothing to warm, nothing kept
      e.view.warming.nope = nil
      e.view:warm("nope")
      for _ = 1, 100 do
        if not e.view.warming.nope then break end
        async.sleep(10)
      end
      assert.is_nil(e.view.warming.nope)
      assert.equals(2, e.view.jobs)
      e.srv:shutdown()
    end)
  end)

  it("lists the current version and diffs the decisions of two selections", function()
    run(function()
      local e = serve()
      assert(e.store:put(keys.base("app"), corpus("goapp-go123-cpu-1.pb.gz")))
      local v = assert(cjson.decode(e.get("/api/profile/app/versions").body))
      -- without the profile history there is only the current profile
      assert.same({ id = "current", query = "", label = "served now (the merged profile)" }, v.versions[1])
      assert.equals(1, #v.versions)
      local r = e.get("/api/profile/app/diff?a=&b=")
      assert.equals(200, r.status, r.body)
      local d = assert(cjson.decode(r.body))
      assert.is_true(d.same)
      assert.equals(500, d.limit)
      assert.equals(d.a.signature, d.b.signature)
      for path, want in pairs {
        ["/api/profile/app/diff?a=window%3D24h&b="] = "window= needs the profile history",
        ["/api/profile/app/diff?a=&b=x%3D1"] = "b: a profile is selected by window=, from= and to= only",
        ["/api/profile/app/diff?a=&b=&limit=x"] = "limit must be an integer",
      } do
        r = e.get(path)
        assert.equals(400, r.status, path)
        assert.truthy(cjson.decode(r.body).message:find(want, 1, true), path .. ": " .. r.body)
      end
      assert.equals(404, e.get("/api/profile/nope/diff?a=&b=").status)
      e.srv:shutdown()
    end)
  end)

  it("refuses windows without the profile history, bad parameters and unknown apps", function()
    run(function()
      local e = serve()
      assert(e.store:put(keys.base("app"), corpus("edge/minimal.pb.gz")))
      for path, want in pairs {
        ["/api/profile/app/top?window=24h"] = "window= needs the profile history",
        ["/api/profile/app/flamegraph?from=2026-01-01T00:00:00Z"] = "from= needs the profile history",
        ["/api/profile/app/flamegraph?max_nodes=1"] = "max_nodes must be an integer from 2 to 20000",
        ["/api/profile/app/top?limit=5001"] = "limit must be an integer from 1 to 5000",
        ["/api/profile/a%20b/top"] = "invalid app name",
      } do
        local r = e.get(path)
        assert.equals(400, r.status, path)
        assert.truthy(cjson.decode(r.body).message:find(want, 1, true), path .. ": " .. r.body)
      end
      local r = e.get("/api/profile/nope/flamegraph")
      assert.equals(404, r.status)
      assert.equals("no merged profile for app nope yet", cjson.decode(r.body).message)
      -- a stored object that is not a profile is never served as one
      assert(e.store:put(keys.base("bad"), "not a profile"))
      assert.equals(500, e.get("/api/profile/bad/top").status)
      e.srv:shutdown()
    end)
  end)
end)
