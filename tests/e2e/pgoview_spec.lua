-- End-to-end spec of the compiler's view of a large profile (autopgo.pgo_api): shaping the 50 MB
-- generated profile (235 703 hot call sites) runs on the thread pool and hands the loop only
-- bounded decisions and the shaped bytes, so /api/health stays live meanwhile; the merge's
-- warm-up (View:warm) builds the view once, and later requests are served from it. The unbounded
-- decisions (?limit=0, 57 MB of JSON) and the diff of two large versions are written and computed
-- on the pool too.
local support = require "tests.lua.support"
local httpc = require "tests.lua.httpc"
local serverproc = require "tests.e2e.serverproc"
local bigprofile = require "tests.e2e.bigprofile"
local cjson = require "cjson.safe"
local profiles = require "tests.lua.profiles"
local pprof = require("autopgo.core").pprof

local run = support.run

-- The big profile captured `age` seconds ago (gzip'd, under the upload limit): the history's
-- windows hold it or not.
local function captured(age)
  local raw = profiles.with_time(assert(support.read_file(bigprofile.path())), (os.time() - age) * 1000000000)
  return assert(pprof.merge({ raw }))
end

-- Times GET /api/health every 20 ms until stop() is called: stop() returns the sorted timings.
local function probe(s)
  local async, uv = require "autopgo.async", require "luv"
  local health, slow, probing, prober, start = {}, {}, true, async.event(), uv.hrtime()
  async.spawn(function()
    while probing do
      local t0 = uv.hrtime()
      assert.equals(200, httpc.request(s.port, "GET", "/api/health", { timeout = 60000 }).status)
      health[#health + 1] = (uv.hrtime() - t0) / 1e6
      if health[#health] > 100 then
        slow[#slow + 1] = ("%.0f ms at +%.1f s"):format(health[#health], (t0 - start) / 1e9)
      end
      async.sleep(20)
    end
    prober.set()
  end)
  return function()
    probing = false
    prober.wait()
    table.sort(health)
    return health, slow
  end
end

-- A liveness bound, not a timing claim: the per-edge work must not run on the loop.
local function assert_live(what, health, slow)
  assert.is_true(#health > 10, "health probes: " .. #health)
  assert.is_true(health[#health] < 500,
    ("/api/health took up to %.0f ms while %s (median %.1f ms, %d probes; over 100 ms: %s)"):format(health[#health],
      what, health[(#health + 1) // 2], #health, table.concat(slow, ", ")))
  io.stderr:write(("pgoview: /api/health while %s: %d probes, median %.1f ms, max %.1f ms\n"):format(what, #health,
    health[(#health + 1) // 2], health[#health]))
end

local function metric(s, name)
  local body = httpc.request(s.port, "GET", "/metrics").body
  return tonumber(body:match("\n" .. name .. " (%d+)")) or 0
end

describe("the compiler's view of a 50 MB profile", function()
  local dir
  before_each(function() dir = support.tmpdir() end)
  after_each(function()
    run(serverproc.cleanup)
    support.rm_rf(dir)
  end)

  it("is warmed on the pool once while /api/health answers, then served from memory", function()
    run(function()
      local s = serverproc.start(dir)
      assert.is_true(cjson.decode(httpc.request(s.port, "GET", "/ui/features.json").body).history,
        "the server keeps no history: no second version to diff")
      -- captured an hour ago: inside window=72h
      local res = httpc.request(s.port, "POST", "/api/profile/big", { body = captured(3600), timeout = 120000 })
      assert.equals(201, res.status, res.body)
      -- the merge's own work is not this spec's: from when it is seen (the warm-up's start),
      -- /api/health is timed every 20 ms while the warm-up and the requests run
      local function merged()
        serverproc.wait_until("big merged", function()
          local doc = cjson.decode(httpc.request(s.port, "GET", "/api/profile/big/uploads").body)
          return doc and type(doc.merged) == "table" and #doc.staged == 0
        end, 120000)
      end
      merged()
      local stop = probe(s)
      -- the merge's warm-up builds the compiler's view with no request for it
      serverproc.wait_until("the compiler's view warmed", function()
        return metric(s, "autopgo_pgo_views_built_total") == 1
      end, 240000)
      res = httpc.request(s.port, "GET", "/api/profile/big/decisions", { timeout = 120000 })
      assert.equals(200, res.status, res.body)
      local dec = assert(cjson.decode(res.body))
      assert.equals(500, #dec.hotCallSites)
      assert.is_true(dec.counts.hotCallSites > 100000, "hot call sites: " .. dec.counts.hotCallSites)
      assert.matches("^%x+$", dec.signature)
      local small = assert(cjson.decode(httpc.request(s.port, "GET", "/api/profile/big/decisions?limit=7",
        { timeout = 120000 }).body))
      assert.equals(7, #small.hotCallSites)
      assert.same(dec.hotCallSites[7], small.hotCallSites[7])
      assert.equals(dec.signature, small.signature)
      res = httpc.request(s.port, "GET", "/api/profile/big?format=pgo", { timeout = 120000 })
      assert.equals(200, res.status)
      assert_live("the 50 MB compiler's view was built", stop())
      -- (21 MB of text: fetched after the probes, whose client shares the loop that reads it)
      res = httpc.request(s.port, "GET", "/api/profile/big?format=preprofile", { timeout = 120000 })
      assert.equals(200, res.status)
      assert.equals("GO PREPROFILE V1\n", res.body:sub(1, 17))
      -- shaped once per version: the warm-up's job served every request
      assert.equals(1, metric(s, "autopgo_pgo_views_built_total"))

      -- a second large version: the same profile captured five days ago, so the merged base holds
      -- both (every weight doubled: the same decisions) and window=72h the first only
      res = httpc.request(s.port, "POST", "/api/profile/big", { body = captured(5 * 86400), timeout = 120000 })
      assert.equals(201, res.status, res.body)
      merged()
      serverproc.wait_until("the new base's view warmed", function()
        return metric(s, "autopgo_pgo_views_built_total") == 2
      end, 240000)
      -- the window's own merge is not this spec's either: its view is built before the probes
      res = httpc.request(s.port, "GET", "/api/profile/big/decisions?window=72h&limit=1", { timeout = 240000 })
      assert.equals(200, res.status, res.body)
      stop = probe(s)
      -- the 57 MB document is read by curl, not by this process (whose loop runs the probes)
      local file = dir .. "/decisions.json"
      local curl = support.spawn("curl", { "-sS", "-o", file, "-w", "%{http_code}",
        s.url .. "/api/profile/big/decisions?limit=0" })
      res = httpc.request(s.port, "GET", "/api/profile/big/diff?a=&b=window%3D72h&limit=0", { timeout = 240000 })
      local code, _, out, err = curl:wait(240000)
      local health, slow = stop()
      assert.equals(0, code, err)
      assert.equals("200", out)
      assert.equals(200, res.status, res.body)
      local diff = assert(cjson.decode(res.body))
      assert.is_true(diff.same)
      assert.not_equals(diff.a.etag, diff.b.etag)
      assert.equals(diff.a.signature, diff.b.signature)
      assert.same({ becameHot = 0, becameCold = 0, functionsHot = 0, functionsCold = 0, targetsChanged = 0 },
        diff.counts)
      assert.equals(2 * diff.totalWeight[2], diff.totalWeight[1])
      local all = assert(cjson.decode((assert(support.read_file(file)))))
      assert.equals(0, all.limit)
      assert.equals(all.counts.hotCallSites, #all.hotCallSites)
      assert.equals(all.counts.devirtualization, #all.devirtualization)
      assert.equals(diff.a.signature, all.signature)
      assert.same(dec.hotCallSites[500].caller, all.hotCallSites[500].caller)
      assert_live("/decisions?limit=0 and /diff of two 50 MB versions ran", health, slow)
    end, 900000)
  end)
end)
