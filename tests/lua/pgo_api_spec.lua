-- Specs of lua/autopgo/pgo_api.lua over a real HTTP server (through api.lua's routes):
-- ?format=pgo|preprofile, the policy's serve, no_inline and stable, and /decisions.
local support = require "tests.lua.support"
local httpc = require "tests.lua.httpc"
local profiles = require "tests.lua.profiles"
local httpd = require "autopgo.httpd"
local api = require "autopgo.api"
local blob = require "autopgo.blob"
local bus = require "autopgo.bus"
local json = require "autopgo.json"
local keys = require "autopgo.keys"
local metrics = require "autopgo.metrics"
local core = require "autopgo.core"
local pgo_stable = require "autopgo.pgo_stable"

local run = support.run

local function serve(policy)
  local id = core.crypto.hex(core.crypto.random(5))
  local e = { store = assert(blob.open("mem://pgoapi-" .. id)) }
  local writer = assert(bus.writer("mem://pgoapi-" .. id))
  local router = httpd.router()
  api.new({ store = e.store, writer = writer, policy = policy }):routes(router)
  e.srv = assert(httpd.listen { host = "127.0.0.1", port = 0, handler = router })
  function e.get(path, headers) return httpc.request(e.srv.port, "GET", path, { headers = headers }) end
  function e.put_base(app, bytes) assert(e.store:put(keys.base(app), bytes)) end
  function e.close() e.srv:shutdown() end
  return e
end

local function preprofile_of(bytes)
  return assert(core.pgo.shape(bytes, { format = "preprofile" })).bytes
end

local function etag_of(bytes)
  return '"sha256:' .. core.crypto.hex(core.crypto.digest("sha256", bytes)) .. '"'
end

local full = profiles.file("goapp-go123-cpu-1.pb.gz")

describe("pgo api", function()
  it("serves the minimal profile and GO PREPROFILE V1 of the merged profile", function()
    run(function()
      local e = serve()
      e.put_base("app", full)
      local r = e.get("/api/profile/app?format=pgo")
      assert.equals(200, r.status)
      assert.equals("application/x-gzip", r.headers["content-type"])
      assert.equals(etag_of(r.body), r.headers["etag"])
      assert.is_true(#r.body * 3 < #full)
      local want = preprofile_of(full)
      assert.equals(want, preprofile_of(r.body))
      local p = e.get("/api/profile/app?format=preprofile")
      assert.equals(200, p.status)
      assert.equals("text/plain; charset=utf-8", p.headers["content-type"])
      assert.equals(want, p.body)
      assert.equals(etag_of(want), p.headers["etag"])
      -- the plain download is still the full profile; format=pprof says so explicitly
      assert.equals(full, e.get("/api/profile/app").body)
      assert.equals(full, e.get("/api/profile/app?format=pprof").body)
      -- If-None-Match; the same version is shaped once
      local built = metrics.counter("autopgo_pgo_views_built_total"):get() or 0
      local nm = e.get("/api/profile/app?format=pgo", { ["if-none-match"] = r.headers["etag"] })
      assert.equals(304, nm.status)
      assert.equals(r.body, e.get("/api/profile/app?format=pgo").body)
      assert.equals(built, metrics.counter("autopgo_pgo_views_built_total"):get() or 0)
      e.close()
    end)
  end)

  it("answers 400 for an unknown format, 404 for an unknown app, 422 for a profile go cannot use", function()
    run(function()
      local e = serve()
      local r = e.get("/api/profile/app?format=svg")
      assert.equals(400, r.status)
      assert.matches("unknown format", r.body)
      assert.equals(404, e.get("/api/profile/none?format=pgo").status)
      assert.equals(404, e.get("/api/profile/none/decisions").status)
      e.put_base("old", profiles.file("goapp-cpu-1.pb.gz"))
      r = e.get("/api/profile/old?format=preprofile")
      assert.equals(422, r.status)
      assert.matches("start_line", r.body)
      e.close()
    end)
  end)

  it("serves the minimal form by default under serve = \"pgo\"", function()
    run(function()
      local e = serve({ ["*"] = { serve = "pgo" } })
      e.put_base("app", full)
      local r = e.get("/api/profile/app")
      assert.equals(200, r.status)
      assert.equals(preprofile_of(full), preprofile_of(r.body))
      assert.is_true(#r.body < #full)
      assert.equals(full, e.get("/api/profile/app?format=pprof").body)
      e.close()
    end)
  end)

  it("shows the decisions, with no_inline callees kept out of the hot functions", function()
    run(function()
      local e = serve({ app = { no_inline = { "regexp.(*machine).step" } } })
      e.put_base("app", full)
      e.put_base("other", full)
      local r = e.get("/api/profile/app/decisions")
      assert.equals(200, r.status)
      local d = assert(json.decode(r.body))
      local o = assert(json.decode(e.get("/api/profile/other/decisions").body))
      assert.equals(o.totalWeight, d.totalWeight)
      assert.equals(#o.hotCallSites, #d.hotCallSites)
      local function has(list, name)
        for _, f in ipairs(list) do if f == name then return true end end
        return false
      end
      assert.is_true(has(o.hotFunctions, "regexp.(*machine).step"))
      assert.is_false(has(d.hotFunctions, "regexp.(*machine).step"))
      assert.equals(#o.hotFunctions, #d.hotFunctions)
      assert.equals(etag_of(e.get("/api/profile/app?format=pgo").body), d.etag)
      assert.equals(400, e.get("/api/profile/Bad/decisions").status)
      e.close()
    end)
  end)

  it("under stable = true serves the bytes the worker recorded while they give the current decisions", function()
    run(function()
      local policy = { app = { stable = true } }
      local e = serve(policy)
      local changes = metrics.counter("autopgo_pgo_decision_changes_total")
      local before = changes:get({ app = "app" }) or 0
      -- what a merge pass does after each commit
      local function merged(bytes)
        e.put_base("app", bytes)
        return pgo_stable.after_merge(e.store, policy, "app", bytes)
      end
      assert.equals("recorded", merged(full))
      local first = e.get("/api/profile/app?format=pgo")
      assert.equals(200, first.status)
      -- every weight doubled: other bytes, the same decisions
      local twice = assert(core.pprof.merge({ full, full }))
      assert.equals("kept", merged(twice))
      local second = e.get("/api/profile/app?format=pgo")
      assert.equals(first.body, second.body)
      assert.equals(first.headers["etag"], second.headers["etag"])
      assert.not_equals(preprofile_of(twice), preprofile_of(second.body))
      assert.equals(before, changes:get({ app = "app" }) or 0)
      -- another profile committed, the worker not done deciding: its own minimal form, never
      -- bytes with other decisions
      local other = profiles.file("goapp-go123-cpu-2.pb.gz")
      e.put_base("app", other)
      assert.equals(preprofile_of(other), e.get("/api/profile/app?format=preprofile").body)
      assert.equals(before, changes:get({ app = "app" }) or 0)
      -- the worker's decision: counted once, the same bytes
      assert.equals("changed", pgo_stable.after_merge(e.store, policy, "app", other))
      assert.equals(before + 1, changes:get({ app = "app" }))
      assert.equals(preprofile_of(other), preprofile_of(assert(e.store:get(keys.pgo_served("app"))).body))
      assert.equals(preprofile_of(other), e.get("/api/profile/app?format=preprofile").body)
      -- an app without stable = true records nothing
      assert.is_nil(pgo_stable.after_merge(e.store, policy, "other", other))
      assert.is_nil(e.store:stat(keys.pgo_served("other")))
      e.close()
    end)
  end)

  it("never shapes a damaged merged profile, and reads exactly the version it checked", function()
    run(function()
      local e = serve()
      -- no ledger, does not parse: 500 for every format, as for the full profile
      e.put_base("app", full:sub(1, #full // 2))
      for _, f in ipairs { "pprof", "pgo", "preprofile" } do
        local r = e.get("/api/profile/app?format=" .. f)
        assert.equals(500, r.status, f)
        assert.matches("is damaged", r.body)
      end
      assert.equals(500, e.get("/api/profile/app/decisions").status)
      e.put_base("app", full)
      assert.equals(preprofile_of(full), e.get("/api/profile/app?format=preprofile").body)
      e.close()
    end)
  end)

  it("answers ?window= with 400 on a server that keeps no history, whatever the format", function()
    run(function()
      local e = serve()
      e.put_base("app", full)
      local r = e.get("/api/profile/app?window=72h&format=pgo")
      assert.equals(400, r.status)
      assert.matches("keeps no history", r.body)
      e.close()
    end)
  end)
end)
