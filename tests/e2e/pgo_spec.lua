-- End-to-end: the compiler's view through a running `autopgo server` (embedded default) with a
-- config policy: `autopgo download --format pgo|preprofile|pprof`, serve = "pgo" for a plain
-- download, no_inline, /decisions, and 304s on the minimal form; every format of a time window
-- (`--window 72h --format pgo`, ?from=&to=), shaped once per window content; stable = true decided
-- by the worker at each merge and counted in /metrics. The exactness against the Go toolchain
-- itself is tests/pgo/run.sh.
local http = require "autopgo.http"
local cjson = require "cjson"
local support = require "tests.lua.support"
local e2e = require "tests.e2e.scrape_support"
local profiles = require "tests.lua.profiles"
local utc = require "autopgo.utc"
local uv = require "luv"
local cpgo = require("autopgo.core").pgo

local run = support.run
local corpus = support.root .. "/tests/testdata/pprof"
local profile = corpus .. "/goapp-go123-cpu-1.pb.gz"

-- How many entries a directory has.
local function entries(path)
  local n, it = 0, assert(uv.fs_scandir(path))
  while uv.fs_scandir_next(it) do n = n + 1 end
  return n
end

local function preprofile_of(bytes)
  return assert(cpgo.shape(bytes, { format = "preprofile" })).bytes
end

describe("the compiler's view (end to end)", function()
  local dir, server

  local function cli(args)
    local all = { table.unpack(args) }
    all[#all + 1] = "--api-url"
    all[#all + 1] = server.url
    return support.autopgo(all)
  end

  local function upload_and_merge(app, file)
    local code, _, err = cli { "upload", "--app", app, file or profile }
    assert.equals(0, code, err)
    e2e.wait_for(function()
      local res = http.request { url = server.url .. "/api/profile/" .. app .. "?format=pprof" }
      return res and res.status == 200
    end, 30000, "the merge of " .. app)
  end

  setup(function()
    dir = support.tmpdir()
    support.write_file(dir .. "/config.lua", [[return { policy = {
      minimal = { serve = "pgo" },
      noinl = { no_inline = { "regexp.(*machine).step" } },
      stab = { stable = true },
    } }]])
    run(function() server = e2e.start_server(dir, { "--config", dir .. "/config.lua" }) end)
  end)
  teardown(function()
    run(function() e2e.stop(server.proc) end)
    support.rm_rf(dir)
  end)

  it("downloads each format; the minimal one holds exactly the merged profile's edges", function()
    run(function()
      upload_and_merge("full")
      local full = assert(http.request { url = server.url .. "/api/profile/full" }).body
      local code, _, err = cli { "download", "full", "--format", "pgo", "-o", dir .. "/min.pgo" }
      assert.equals(0, code, err)
      local min = support.read_file(dir .. "/min.pgo")
      assert.is_true(#min * 3 < #full)
      assert.equals(preprofile_of(full), preprofile_of(min))
      -- again: 304, the file untouched
      code, _, err = cli { "download", "full", "--format", "pgo", "-o", dir .. "/min.pgo" }
      assert.equals(0, code, err)
      assert.matches("profile unchanged", err)
      code, _, err = cli { "download", "full", "--format", "preprofile", "-o", dir .. "/pp.txt" }
      assert.equals(0, code, err)
      assert.matches("go build %-pgo does not read it", err)
      assert.equals(preprofile_of(full), support.read_file(dir .. "/pp.txt"))
      code = cli { "download", "full", "--format", "pprof", "-o", dir .. "/full.pgo" }
      assert.equals(0, code)
      assert.is_true(support.read_file(dir .. "/full.pgo") == full)
      code, _, err = cli { "download", "full", "--format", "svg", "-o", dir .. "/x" }
      assert.equals(2, code)
      assert.matches("invalid value for %-%-format", err)
    end)
  end)

  it("serves the minimal form by default under serve = \"pgo\", and applies no_inline", function()
    run(function()
      upload_and_merge("minimal")
      local code, _, err = cli { "download", "minimal", "-o", dir .. "/default.pgo" }
      assert.equals(0, code, err)
      local full = assert(http.request { url = server.url .. "/api/profile/minimal?format=pprof" }).body
      assert.equals(preprofile_of(full), preprofile_of(support.read_file(dir .. "/default.pgo")))
      upload_and_merge("noinl")
      local res = assert(http.request { url = server.url .. "/api/profile/noinl/decisions" })
      assert.equals(200, res.status)
      local doc = cjson.decode(res.body)
      for _, f in ipairs(doc.hotFunctions) do assert.not_equals("regexp.(*machine).step", f) end
      assert.equals(1121, doc.totalWeight)
      local out
      code, out, err = cli { "diff", "app:full", "app:noinl" }
      assert.equals(0, code, err)
      assert.matches("Functions that became cold: 1\n%- regexp.%(%*machine%).step\n", out)
    end)
  end)

  local function get(path, headers)
    return assert(http.request { url = server.url .. path, headers = headers })
  end

  -- The value of a metric line (name{labels}) in /metrics, 0 when absent.
  local function metric(line)
    local body = get("/metrics").body
    local v = body:match("\n" .. line:gsub("%p", "%%%0") .. " (%d+)")
    return tonumber(v) or 0
  end

  it("serves every format of a time window, with ETags and 304s, shaping an unchanged window once", function()
    run(function()
      local now = os.time()
      -- one capture an hour ago (inside 72h), one five days ago (outside)
      local recent = support.write_file(dir .. "/recent.pb", profiles.with_time(support.read_file(profile),
        (now - 3600) * 1000000000))
      local old = support.write_file(dir .. "/old.pb", profiles.with_time(support.read_file(corpus ..
        "/goapp-go123-cpu-2.pb.gz"), (now - 5 * 86400) * 1000000000))
      upload_and_merge("win", recent)
      local code, _, err = cli { "upload", "--app", "win", old }
      assert.equals(0, code, err)
      e2e.wait_for(function()
        return #cjson.decode(get("/api/profile/win/history").body).uploads == 2
          and get("/api/profile/win?window=200h").status == 200
      end, 30000, "both uploads in the history")

      local window = get("/api/profile/win?window=72h&format=pprof")
      assert.equals(200, window.status, window.body)
      local want = preprofile_of(window.body)
      assert.not_equals(preprofile_of(get("/api/profile/win?format=pprof").body), want)
      code, _, err = cli { "download", "win", "--window", "72h", "--format", "pgo", "-o", dir .. "/win.pgo" }
      assert.equals(0, code, err)
      local min = support.read_file(dir .. "/win.pgo")
      assert.equals(want, preprofile_of(min))
      assert.is_true(#min * 3 < #window.body)
      local base_decisions = cjson.decode(get("/api/profile/win/decisions").body)
      -- the same window again: 304 (the file kept), nothing merged or shaped again
      local built = metric("autopgo_pgo_views_built_total")
      local cached = entries(dir .. "/data/win/cache")
      code, _, err = cli { "download", "win", "--window", "72h", "--format", "pgo", "-o", dir .. "/win.pgo" }
      assert.equals(0, code, err)
      assert.matches("profile unchanged", err)
      local r = get("/api/profile/win?window=72h&format=preprofile")
      assert.equals(200, r.status)
      assert.equals(want, r.body)
      assert.equals("text/plain; charset=utf-8", r.headers["content-type"])
      assert.equals(304, get("/api/profile/win?window=72h&format=preprofile",
        { ["if-none-match"] = r.headers.etag }).status)
      local d = cjson.decode(get("/api/profile/win/decisions?window=72h").body)
      assert.not_equals(base_decisions.etag, d.etag)
      assert.equals(preprofile_of(window.body), preprofile_of(get("/api/profile/win?window=72h&format=pgo").body))
      assert.equals(built, metric("autopgo_pgo_views_built_total"))
      assert.equals(cached, entries(dir .. "/data/win/cache"))

      -- from/to around the old capture: its minimal form, under its own ETag
      local range = ("?from=%s&to=%s"):format(utc.rfc3339(now - 6 * 86400), utc.rfc3339(now - 4 * 86400))
      local full = get("/api/profile/win" .. range .. "&format=pprof")
      assert.equals(200, full.status, full.body)
      local pg = get("/api/profile/win" .. range .. "&format=pgo")
      assert.equals(200, pg.status, pg.body)
      assert.equals(preprofile_of(full.body), preprofile_of(pg.body))
      assert.not_equals(want, preprofile_of(pg.body))
      assert.equals(304, get("/api/profile/win" .. range .. "&format=pgo",
        { ["if-none-match"] = pg.headers.etag }).status)
      -- a window with nothing in it, or a format nobody knows
      assert.equals(404, get("/api/profile/win?window=1m&format=pgo").status)
      assert.equals(400, get("/api/profile/win?window=72h&format=svg").status)
    end)
  end)

  it("decides stable serving at each merge, counting decision changes without any download", function()
    run(function()
      local line_kept, line_changed = 'autopgo_pgo_stable_kept_total{app="stab"}',
        'autopgo_pgo_decision_changes_total{app="stab"}'
      upload_and_merge("stab")
      local first = get("/api/profile/stab?format=pgo")
      assert.equals(200, first.status)
      -- the same capture again: every weight doubled, the same decisions: the same bytes
      local code, _, err = cli { "upload", "--app", "stab", profile }
      assert.equals(0, code, err)
      e2e.wait_for(function() return metric(line_kept) == 1 end, 30000, "the second merge")
      local second = get("/api/profile/stab?format=pgo")
      assert.equals(first.body, second.body)
      assert.equals(first.headers.etag, second.headers.etag)
      assert.equals(0, metric(line_changed))
      -- two more merges with other decisions and no download between them: both counted
      for _, name in ipairs { "goapp-go123-cpu-2.pb.gz", "goapp-go123-cpu-3.pb.gz" } do
        local before = metric(line_changed)
        code, _, err = cli { "upload", "--app", "stab", corpus .. "/" .. name }
        assert.equals(0, code, err)
        e2e.wait_for(function() return metric(line_changed) == before + 1 end, 30000, "the merge of " .. name)
      end
      local full = get("/api/profile/stab?format=pprof").body
      assert.equals(preprofile_of(full), get("/api/profile/stab?format=preprofile").body)
    end)
  end)
end)
