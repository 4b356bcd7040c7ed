-- End-to-end specs of the web view (/ui/) in real headless Chromium (tests/e2e/ui_browser.js):
-- a server fed with the shared corpus, the numbers on its pages against the API's and the top
-- functions against `go tool pprof -top` of the same merged file, the window picker, no console
-- error, no request leaving the origin, screenshots in the test logs and a 50 MB profile's page
-- load time (reported, not asserted). Also /api/profile/{app}/flamegraph and /top on their own.
local support = require "tests.lua.support"
local profiles = require "tests.lua.profiles"
local httpc = require "tests.lua.httpc"
local serverproc = require "tests.e2e.serverproc"
local bigprofile = require "tests.e2e.bigprofile"
local cjson = require "cjson.safe"

local run = support.run
local root = support.root
local logdir = os.getenv("AUTOPGO_TEST_LOGS") or (root .. "/build/test-logs")

local function go_binary()
  for _, g in ipairs { "/usr/lib/go-1.23/bin/go", "/usr/lib/go-1.19/bin/go" } do
    if support.read_file(g) then return g end
  end
  error("Go is not installed (scripts/deps.sh test)")
end

local function exec(cmd, args, timeout, env)
  local proc = support.spawn(cmd, args, { env = env })
  local code, _, out, err = proc:wait(timeout or 120000)
  return code, out, err
end

local function upload(s, app, path, age)
  local body = assert(support.read_file(path), path)
  -- captured `age` seconds ago, so the history's windows hold it (the corpus's own times are old)
  if age then body = profiles.with_time(body, (os.time() - age) * 1000000000) end
  local res = httpc.request(s.port, "POST", "/api/profile/" .. app, { body = body, timeout = 120000 })
  assert.equals(201, res.status, res.body)
end

local function get_json(s, path)
  local res = httpc.request(s.port, "GET", path, { timeout = 120000 })
  assert.equals(200, res.status, path .. ": " .. tostring(res.body))
  return assert(cjson.decode(res.body), res.body), res
end

-- Waits until every upload of app is merged (nothing staged, a merged profile there).
local function wait_merged(s, app, timeout)
  serverproc.wait_until(app .. " merged", function()
    local res = httpc.request(s.port, "GET", "/api/profile/" .. app .. "/uploads")
    local doc = res.status == 200 and cjson.decode(res.body)
    return doc and type(doc.merged) == "table" and #doc.staged == 0
  end, timeout or 60000)
end

-- `go tool pprof -top` of a file, every function (nodefraction=0), values in nanoseconds:
-- { {name=, flat=, cum=}, ... } in its order.
local function pprof_top(path)
  local code, out, err = exec(go_binary(), { "tool", "pprof", "-top", "-nodefraction=0", "-nodecount=100000",
    "-unit=ns", "-symbolize=none", path }, 120000, { "PPROF_TMPDIR=" .. support.tmpdir(), "HOME=" .. support.tmpdir() })
  assert(code == 0, "go tool pprof failed: " .. out .. err)
  local rows, started = {}, false
  for line in out:gmatch("[^\n]+") do
    if started then
      local flat, cum, name = line:match("^%s*(%-?%d+)n?s?%s+%S+%s+%S+%s+(%-?%d+)n?s?%s+%S+%s+(.+)$")
      assert(flat, "unexpected pprof line: " .. line)
      rows[#rows + 1] = { name = name, flat = tonumber(flat), cum = tonumber(cum) }
    elseif line:match("^%s*flat%s+flat%%") then
      started = true
    end
  end
  return rows
end

local function api_rows(doc)
  local rows = {}
  for i, r in ipairs(doc.rows) do
    rows[i] = { name = r.name .. (r.inline and (" (" .. r.inline .. ")") or ""), flat = r.flat, cum = r.cum }
  end
  return rows
end

local big_profile = bigprofile.path

describe("web view", function()
  local dir
  before_each(function() dir = support.tmpdir() end)
  after_each(function()
    run(serverproc.cleanup)
    support.rm_rf(dir)
  end)

  it("serves flame graph and top JSON that agree with go tool pprof -top, bounded, cached by ETag", function()
    run(function()
      local s = serverproc.start(dir)
      for i = 1, 3 do upload(s, "goapp", ("%s/goapp-go123-cpu-%d.pb.gz"):format(support.testdata, i)) end
      wait_merged(s, "goapp")
      local merged = dir .. "/merged.pb.gz"
      local got = httpc.request(s.port, "GET", "/api/profile/goapp")
      assert.equals(200, got.status)
      support.write_file(merged, got.body)
      local want = pprof_top(merged)
      local top, res = get_json(s, "/api/profile/goapp/top?limit=5000")
      assert.equals(#want, top.functions)
      assert.same(want, api_rows(top))
      assert.equals("cpu", top.sampleType)
      assert.equals("nanoseconds", top.unit)
      -- the ETag names the profile's version; asking again with it is a 304
      local etag = res.headers.etag
      assert.matches('^"sha256:%x+/top;n=5000"$', etag)
      local again = httpc.request(s.port, "GET", "/api/profile/goapp/top?limit=5000",
        { headers = { ["if-none-match"] = etag } })
      assert.equals(304, again.status)
      assert.equals(100, #get_json(s, "/api/profile/goapp/top").rows)

      local fg = get_json(s, "/api/profile/goapp/flamegraph?max_nodes=50")
      assert.equals(top.total, fg.total)
      assert.equals(top.total, fg.root.value)
      local nodes = 0
      local function walk(n)
        nodes = nodes + 1
        local sum = n.self
        for _, c in ipairs(n.children) do
          sum = sum + c.value
          walk(c)
        end
        assert.equals(n.value, sum, n.name)
      end
      walk(fg.root)
      assert.equals(fg.nodes, nodes)
      assert.is_true(nodes <= 50)
      assert.equals(50, fg.maxNodes)
      assert.is_true(fg.frames > 50)

      for _, bad in ipairs { "/api/profile/goapp/flamegraph?max_nodes=1", "/api/profile/goapp/top?limit=0",
        "/api/profile/goapp/top?limit=x", "/api/profile/bad%20name/top" } do
        local r = httpc.request(s.port, "GET", bad)
        assert.equals(400, r.status, bad)
        assert.is_string(cjson.decode(r.body).message, r.body)
      end
      -- windows need the profile history: a server without it says so rather than serve it all
      if not get_json(s, "/ui/features.json").history then
        for _, q in ipairs { "window=24h", "from=2026-01-01T00:00:00Z&to=2026-01-02T00:00:00Z" } do
          local r = httpc.request(s.port, "GET", "/api/profile/goapp/top?" .. q)
          assert.equals(400, r.status, q)
          assert.matches("needs the profile history", r.body)
        end
      end
      assert.equals(404, httpc.request(s.port, "GET", "/api/profile/nope/top").status)

      -- versions: the current profile first; the diff of a profile with itself is empty
      local v = get_json(s, "/api/profile/goapp/versions")
      assert.same({ id = "current", query = "", label = "served now (the merged profile)" }, v.versions[1])
      local same = get_json(s, "/api/profile/goapp/diff?a=&b=")
      assert.is_true(same.same)
      assert.same({ becameHot = 0, becameCold = 0, functionsHot = 0, functionsCold = 0, targetsChanged = 0 },
        same.counts)
      assert.equals(same.a.signature, same.b.signature)
      for _, bad in ipairs { "a=foo%3D1&b=", "a=&b=window%3Dx", "a=&b=&limit=-1" } do
        local r = httpc.request(s.port, "GET", "/api/profile/goapp/diff?" .. bad)
        assert.equals(400, r.status, bad)
      end
    end, 180000)
  end)

  it("keeps the flame graph of a 50 MB profile under its documented bound", function()
    run(function()
      local s = serverproc.start(dir)
      upload(s, "big", big_profile())
      wait_merged(s, "big", 120000)
      local res = httpc.request(s.port, "GET", "/api/profile/big/flamegraph", { timeout = 120000 })
      assert.equals(200, res.status)
      assert.is_true(#res.body < 2000000, "flame graph answer of " .. #res.body .. " bytes")
      local doc = cjson.decode(res.body)
      assert.equals(4000, doc.maxNodes)
      assert.is_true(doc.nodes <= 4000)
      assert.is_true(doc.frames > 100000)
      -- the compiler's view is bounded too: the heaviest 500 of each list, the counts of all
      res = httpc.request(s.port, "GET", "/api/profile/big/decisions", { timeout = 120000 })
      assert.equals(200, res.status)
      assert.is_true(#res.body < 1000000, "decisions answer of " .. #res.body .. " bytes")
      local dec = cjson.decode(res.body)
      assert.equals(500, dec.limit)
      assert.equals(500, #dec.hotCallSites)
      assert.is_true(dec.counts.hotCallSites > 100000, "hot call sites: " .. dec.counts.hotCallSites)
      assert.is_true(#dec.cdf <= 257)
      assert.equals(dec.counts.hotCallSites, dec.cdf[#dec.cdf][1])
      assert.equals(dec.boundary.lastHot.cumulative, dec.cdf[#dec.cdf][2])
      local all = cjson.decode(httpc.request(s.port, "GET", "/api/profile/big/decisions?limit=0",
        { timeout = 120000 }).body)
      assert.equals(dec.counts.hotCallSites, #all.hotCallSites)
      assert.equals(dec.counts.devirtualization, #all.devirtualization)
      assert.equals(dec.signature, all.signature)
      for i = 1, 500 do assert.same(all.hotCallSites[i], dec.hotCallSites[i]) end
    end, 300000)
  end)

  it("shows the API's numbers and go tool pprof's top functions in headless Chromium", function()
    run(function()
      local s = serverproc.start(dir)
      -- three history segments (5 h, 3 h and a minute ago): the versions and windows the diff compares
      for i, age in ipairs { 5 * 3600, 3 * 3600, 60 } do
        upload(s, "goapp", ("%s/goapp-go123-cpu-%d.pb.gz"):format(support.testdata, i), age)
      end
      upload(s, "big", big_profile())
      wait_merged(s, "goapp")
      wait_merged(s, "big", 120000)
      -- the embedded worker's merge started warming the big version's views: /api/health is timed
      -- until they are there (the work is on the thread pool, not the loop); a request for them
      -- meanwhile joins the warm-up's job, so the views are ready when it answers
      local async, uv = require "autopgo.async", require "luv"
      local health, probing, prober = {}, true, async.event()
      async.spawn(function()
        while probing do
          local t0 = uv.hrtime()
          assert.equals(200, httpc.request(s.port, "GET", "/api/health").status)
          health[#health + 1] = (uv.hrtime() - t0) / 1e6
          async.sleep(50)
        end
        prober.set()
      end)
      local t0 = uv.hrtime()
      -- the merge itself started it: no request for the views has been made yet
      serverproc.wait_until("the big version warmed", function()
        local m = httpc.request(s.port, "GET", "/metrics").body
        return tonumber(m:match('\nautopgo_view_warmups_total{app="big"} (%d+)')) == 1
      end, 60000)
      get_json(s, "/api/profile/big/top?limit=1")
      local warmed_ms = (uv.hrtime() - t0) / 1e6
      probing = false
      prober.wait()
      local features = get_json(s, "/ui/features.json")

      os.execute("mkdir -p '" .. logdir .. "'")
      local node_env = { "NODE_PATH=" .. root .. "/.deps/npm/node_modules" }
      local code, out, err = exec("node", { root .. "/tests/e2e/ui_browser.js", s.url, logdir, "goapp", "big" }, 240000,
        node_env)
      assert(code == 0, "the browser run failed: " .. err .. out)
      local r = assert(cjson.decode(out), out)

      -- the overview: every number as the API gives it
      local list = get_json(s, "/api/profile")
      local by_app = {}
      for _, row in ipairs(r.pages.overview) do by_app[row.app] = row end
      assert.equals(#list.profiles, #r.pages.overview)
      for _, p in ipairs(list.profiles) do
        local row = assert(by_app[p.key], p.key)
        assert.equals(("%d"):format(p.size), row.size)
        assert.equals(p.lastModified, row.merged)
        local top = get_json(s, "/api/profile/" .. p.key .. "/top?limit=200")
        assert.equals(("%d"):format(top.total), row.total)
        if not features.history then
          local ups = get_json(s, "/api/profile/" .. p.key .. "/uploads")
          assert.equals(tostring(#ups.staged + #ups.rejected), row.uploads24h)
          assert.equals("uploads", row.uploadsSource)
        end
      end

      -- the app page: the total, and the top functions equal go tool pprof -top's on the merged file
      local merged = dir .. "/merged.pb.gz"
      support.write_file(merged, httpc.request(s.port, "GET", "/api/profile/goapp").body)
      local want = pprof_top(merged)
      local app = r.pages.app
      local top = get_json(s, "/api/profile/goapp/top?limit=200")
      assert.equals(("%d"):format(top.total), app.total)
      assert.equals(("%d"):format(top.total), app.flameTotal)
      assert.equals(200, #app.top)
      for i, row in ipairs(app.top) do
        assert.same({ name = want[i].name, flat = tostring(want[i].flat), cum = tostring(want[i].cum) }, row)
      end
      assert.is_true(app.flameFrames > 100, "flame graph frames drawn: " .. app.flameFrames)
      -- the download buttons save what the API serves for each format
      local pprof_dl = assert(app.downloads.pprof, "no pprof download")
      assert.equals("goapp.pgo", pprof_dl.name)
      assert.equals(support.read_file(merged), support.read_file(pprof_dl.path))
      for _, f in ipairs(features.decisions and { "pgo", "preprofile" } or {}) do
        local dl = assert(app.downloads[f], "no " .. f .. " download")
        local want_body = httpc.request(s.port, "GET", "/api/profile/goapp?format=" .. f).body
        assert.equals(want_body, support.read_file(dl.path), f)
      end
      -- the compiler's view, where the server has it: the API's hot call sites
      if features.decisions then
        local dec = get_json(s, "/api/profile/goapp/decisions")
        assert.equals(math.min(200, #dec.hotCallSites), app.hotRows)
        local says = ("%d hot call sites of %d edges"):format(dec.counts.hotCallSites, dec.edges)
        assert.truthy(app.decisions:find(says, 1, true), app.decisions)
      else
        assert.equals(0, app.hotRows)
      end
      assert.is_true(app.searchMatches > 0, "search highlighted nothing")

      -- the window picker: every panel asks again with the window
      local win = r.pages.window
      assert.equals("showing last 24 h", win.windowNow)
      local asked = {}
      for _, u in ipairs(win.requests) do
        local what = u:match("/api/profile/goapp/(%a+)")
        if what then
          asked[what] = true
          -- uploads and versions are the app's whatever the window
          if what ~= "uploads" and what ~= "versions" then assert.truthy(u:find("window=24h", 1, true), u) end
        end
      end
      assert.is_true(asked.flamegraph and asked.top, "the window picker did not ask for the panels again")
      if not features.history then
        assert.matches("needs the profile history", win.topText)
      end

      -- no console error (without the history, the only ones are the 400s of windowed requests)
      for _, c in ipairs(r.console) do
        local expected = not features.history and c.type == "error" and c.url:find("window=24h", 1, true)
          and r.responses[c.url] == 400 and c.text:find("status of 400", 1, true)
        assert.is_truthy(expected, "console: " .. c.type .. ": " .. c.text .. " " .. c.url)
      end
      -- no request leaves the origin
      assert.is_true(#r.requests > 10)
      for _, u in ipairs(r.requests) do
        assert.equals(s.url .. "/", u:sub(1, #s.url + 1), "request off the origin: " .. u)
      end
      for _, shot in ipairs { "ui-overview.png", "ui-app.png", "ui-app-search.png", "ui-app-window.png",
        "ui-app-big.png" } do
        assert.is_truthy(support.read_file(logdir .. "/" .. shot), shot .. " is missing")
      end
      -- the decisions diff between two windows and between two versions, as the page shows it, is
      -- `autopgo diff --json` of the same two profiles downloaded
      if features.diff and features.history then
        assert.equals(2, #r.pages.diffs, "a diff of two windows and one of two versions")
        local kinds = { becameHot = "became hot", becameCold = "became cold", functionsHot = "function hot",
          functionsCold = "function cold", targetsChanged = "target changed" }
        local differ = false
        for i, d in ipairs(r.pages.diffs) do
          assert.equals("1", d.ready, d.text)
          local files = {}
          for k, sel in ipairs { d.a, d.b } do
            local res = httpc.request(s.port, "GET", "/api/profile/goapp?" .. sel, { timeout = 120000 })
            assert.equals(200, res.status, sel)
            files[k] = ("%s/diff-%d-%d.pb.gz"):format(dir, i, k)
            support.write_file(files[k], res.body)
          end
          local dcode, dout, derr = exec(support.bin, { "diff", "--json", files[1], files[2] })
          assert(dcode == 0, "autopgo diff failed: " .. dout .. derr)
          local cli_diff = assert(cjson.decode(dout), dout)
          local rows = {}
          for _, k in ipairs { "becameHot", "becameCold", "functionsHot", "functionsCold", "targetsChanged" } do
            assert.equals(tostring(#cli_diff[k]), d.counts[k], d.a .. " vs " .. d.b .. ": " .. k)
            for _, x in ipairs(cli_diff[k]) do
              local what = type(x) == "string" and x
                or k == "targetsChanged" and ("%s +%d: %s → %s"):format(x.caller, x.offset, x.from, x.to)
                or ("%s +%d → %s"):format(x.caller, x.offset, x.callee)
              rows[#rows + 1] = { kind = kinds[k], what = what }
            end
          end
          assert.same(rows, d.rows)
          differ = differ or #rows > 0
        end
        assert.matches("^to=", r.pages.diffs[2].a)
        assert.is_true(differ, "both diffs are empty: the test compares nothing")
      end

      -- cold: the same data under a server started again, which never saw the version (no merge
      -- happens, so nothing warms it before the page asks)
      assert.equals(0, (serverproc.stop(s)))
      local s2 = serverproc.start(dir)
      code, out, err = exec("node", { root .. "/tests/e2e/ui_browser.js", s2.url, logdir, "-", "big" }, 240000,
        node_env)
      assert(code == 0, "the browser run failed: " .. err .. out)
      local cold = assert(cjson.decode(out), out).pages.bigCold
      local big, first = r.pages.big, r.pages.bigFirst
      for _, p in ipairs { big, first, cold } do assert.is_true(p.flameFrames > 100 and p.topRows == 200) end
      table.sort(health)
      assert.is_true(#health > 0)
      local uptime = io.popen("uptime"):read("a"):gsub("%s+$", "")
      local note = ("web view: app page load of a %d-byte profile (50 MB generated): %d ms cold (a server that never "
        .. "saw the version), %d ms warm (%d ms on the first page of the run); the server's own warm-up was done "
        .. "%.0f ms after the merge was seen (/api/health meanwhile: %d requests, median %.1f ms, max %.1f ms); "
        .. "compiler's view in %d ms cold; corpus app: %d ms; load: %s\n")
        :format(#support.read_file(big_profile()), cold.loadMs, big.loadMs, first.loadMs, warmed_ms, #health,
          health[(#health + 1) // 2], health[#health], cold.completeMs, app.loadMs, uptime)
      support.write_file(logdir .. "/ui-timing.txt", note)
      io.stderr:write(note)
    end, 420000)
  end)

  it("asks for a token when the API answers 401 and keeps it in sessionStorage only", function()
    run(function()
      local crypto = require("autopgo.core").crypto
      local token = crypto.hex(crypto.random(16))
      support.write_file(dir .. "/auth.json", ('[{"name": "ui", "sha256": "%s", "scopes": ["upload", "download"], '
        .. '"apps": ["*"]}]'):format(crypto.hex(crypto.digest("sha256", token))))
      local s = serverproc.start(dir, { "--auth-file", dir .. "/auth.json" })
      local res = httpc.request(s.port, "POST", "/api/profile/goapp", { body = support.read_file(support.testdata
        .. "/goapp-go123-cpu-1.pb.gz"), headers = { authorization = "Bearer " .. token } })
      assert.equals(201, res.status, res.body)
      serverproc.wait_until("goapp merged", function()
        return httpc.request(s.port, "GET", "/api/profile/goapp", { headers = { authorization = "Bearer " .. token } })
          .status == 200
      end)
      assert.equals(401, httpc.request(s.port, "GET", "/api/profile").status)
      assert.equals(200, httpc.request(s.port, "GET", "/ui/").status, "the page itself is open")
      local code, out, err = exec("node", { root .. "/tests/e2e/ui_browser.js", s.url, logdir, "goapp" }, 120000,
        { "NODE_PATH=" .. root .. "/.deps/npm/node_modules", "UI_TOKEN=" .. token })
      assert(code == 0, "the browser run failed: " .. err .. out)
      local t = assert(cjson.decode(out), out).token
      assert.same({ "goapp" }, t.apps)
      assert.equals(token, t.session)
      assert.equals(0, t["local"])
      assert.equals(0, t.cookies)
      assert.matches("bearer token is required", t.why)
      -- the first call went without a token and was refused; every later one carried it
      assert.equals("", t.api[1].auth)
      assert.is_true(#t.api > 2)
      for i = 2, #t.api do assert.equals("Bearer " .. token, t.api[i].auth, t.api[i].url) end
      for _, c in ipairs(t.console) do
        assert.truthy(c.text:find("status of 401", 1, true), c.text .. " " .. c.url)
      end
    end, 180000)
  end)

  it("leaves /ui/ out with --ui=false", function()
    run(function()
      local s = serverproc.start(dir, { "--ui=false" })
      assert.equals(404, httpc.request(s.port, "GET", "/ui/").status)
      assert.equals(404, httpc.request(s.port, "GET", "/ui/app.js").status)
      os.execute("mkdir -p '" .. dir .. "/on'")
      local on = serverproc.start(dir .. "/on")
      local res = httpc.request(on.port, "GET", "/ui/")
      assert.equals(200, res.status)
      assert.matches("default%-src 'self'", res.headers["content-security-policy"])
      assert.equals(200, httpc.request(on.port, "GET", "/ui/vendor/d3-flamegraph.min.js").status)
    end, 60000)
  end)
end)
