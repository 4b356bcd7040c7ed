-- End-to-end: profile history on the embedded default (file store) and on S3 (Ceph RGW). Uploads
-- with chosen time_nanos (tests/goref pprofgen) land in the hour segments of their capture time;
-- window downloads equal the Go reference's merge (+ Prune) of exactly the uploads of the covered
-- segments, also after a kill -9 mid-merge and a restart, a range delete (the default profile is
-- rebuilt without it) and a retention pass; provenance via GET /api/profile/{app}/history.
local cjson = require "cjson"
local url = require "autopgo.url"
local http = require "autopgo.http"
local utc = require "autopgo.utc"
local crypto = require("autopgo.core").crypto
local s3 = require "autopgo.blob.s3"
local support = require "tests.lua.support"
local services = require "tests.lua.services"
local serverproc = require "tests.e2e.serverproc"
local goref = require "tests.e2e.goref"

local run = support.run
local NS = 1000000000

-- A deterministic profile captured at unix second t (pprofgen adds the seed in seconds).
local function gen(dir, name, seed, t)
  local out = dir .. "/" .. name .. ".pb.gz"
  local code, _, stdout, stderr = support.spawn(support.root .. "/build/goref/bin/pprofgen", {
    "-o", out, "-seed", tostring(seed), "-universe", "7", "-samples", "400", "-functions", "300",
    "-locations", "800", "-time", tostring(t * NS - seed * NS) }):wait(60000)
  assert(code == 0, stdout .. stderr)
  return out
end

local PRUNE = '[{"app":"hist","rules":[{"drop":"^runtime\\\\.alpha","keep":null}]}]'

-- The whole story against servers started by start(extra_args) over one store; keys(prefix) lists it.
local function story(dir, start, keys)
  local now = os.time()
  local H = now // 3600 * 3600
  local rules = support.write_file(dir .. "/prune.json", PRUNE)
  local p = {
    a1 = gen(dir, "a1", 1, H - 5 * 3600 + 600), a2 = gen(dir, "a2", 2, H - 5 * 3600 + 1200),
    b1 = gen(dir, "b1", 3, H - 2 * 3600 + 600),
    c1 = gen(dir, "c1", 4, H - 3600 + 600), c2 = gen(dir, "c2", 5, H - 3600 + 900),
    -- time_nanos two hours in the future: captured at its arrival, in the current hour
    d1 = gen(dir, "d1", 6, now + 7200),
  }
  local function want(names)
    local files = {}
    for _, n in ipairs(names) do files[#files + 1] = p[n] end
    return goref.canon(goref.merge(dir .. "/want.pgo", files, { prune = rules, app = "hist", compact = true }))
  end
  local function get(s, query, headers)
    return assert(http.request { url = s.url .. "/api/profile/hist" .. (query or ""), headers = headers })
  end
  local function canon_of(body)
    support.write_file(dir .. "/got.pgo", body)
    return goref.canon(dir .. "/got.pgo")
  end
  -- asserts two canonical dumps are equal, showing where they first differ
  local function same(a, b, what)
    if a == b then return end
    local la, lb = {}, {}
    for l in a:gmatch("[^\n]+") do la[#la + 1] = l end
    for l in b:gmatch("[^\n]+") do lb[#lb + 1] = l end
    for i = 1, math.max(#la, #lb) do
      if la[i] ~= lb[i] then
        error(("%s: differs at line %d of %d/%d:\n want %s\n got  %s"):format(what, i, #la, #lb,
          tostring(la[i]):sub(1, 300), tostring(lb[i]):sub(1, 300)), 2)
      end
    end
  end
  local function upload(s, name)
    local r = assert(http.request { method = "POST", url = s.url .. "/api/profile/hist",
      body = support.read_file(p[name]), headers = { ["x-autopgo-source"] = "test:" .. name } })
    assert.equals(201, r.status, r.body)
  end
  local function settled()
    serverproc.wait_until("every staged upload is merged", function()
      return #keys("hist/staging/") == 0 and #keys("hist/default.pgo") == 1
    end, 120000)
  end
  local function range(from, to)
    return ("?from=%s&to=%s"):format(utc.rfc3339(from), utc.rfc3339(to))
  end

  -- a crash (kill -9) while the first uploads merge, then a restart that recovers what is staged
  local s = start { "--prune", rules }
  for _, n in ipairs { "a1", "b1", "c1" } do upload(s, n) end
  serverproc.kill(s)
  s = start { "--prune", rules }
  for _, n in ipairs { "a2", "c2", "d1" } do upload(s, n) end
  settled()

  -- windows: exactly the uploads of the covered segments, pruned, as Go merges them
  local r = get(s, range(H - 5 * 3600, H - 4 * 3600))
  assert.equals(200, r.status, r.body)
  same(want { "a1", "a2" }, canon_of(r.body), 'want { "a1", "a2" }')
  local etag = r.headers.etag
  assert.matches('^"sha256:%x+"$', etag)
  assert.equals(etag, '"sha256:' .. crypto.hex(crypto.digest("sha256", r.body)) .. '"')
  assert.equals(304, get(s, range(H - 5 * 3600, H - 4 * 3600), { ["if-none-match"] = etag }).status)
  local again = get(s, range(H - 5 * 3600, H - 4 * 3600))
  assert.equals(etag, again.headers.etag)
  assert.equals(r.body, again.body)
  r = get(s, "?window=3h") -- [now-3h, ...) overlaps the segments of b, c and d
  assert.equals(200, r.status, r.body)
  same(want { "b1", "c1", "c2", "d1" }, canon_of(r.body), 'want { "b1", "c1", "c2", "d1" }')
  r = get(s, "?from=" .. utc.rfc3339(H - 3600 + 1800)) -- inside c's segment: all of it counts
  same(want { "c1", "c2", "d1" }, canon_of(r.body), 'want { "c1", "c2", "d1" }')
  same(want { "a1", "a2", "b1", "c1", "c2", "d1" }, canon_of(get(s).body), 'all')

  -- provenance
  r = get(s, "/history")
  assert.equals(200, r.status, r.body)
  local h = cjson.decode(r.body)
  assert.equals("hist", h.app)
  assert.equals("1h", h.segment)
  local starts = {}
  for _, seg in ipairs(h.segments) do starts[#starts + 1] = seg.start end
  assert.same({ utc.rfc3339(H - 5 * 3600), utc.rfc3339(H - 2 * 3600), utc.rfc3339(H - 3600), utc.rfc3339(H) }, starts)
  assert.same({ 2, 1, 2, 1 }, { h.segments[1].uploads, h.segments[2].uploads, h.segments[3].uploads,
    h.segments[4].uploads })
  assert.equals(6, #h.uploads)
  local sources = {}
  for _, u in ipairs(h.uploads) do
    sources[u.source] = u
    assert.equals(30, u.duration)
  end
  assert.equals(utc.rfc3339(H - 2 * 3600 + 600), sources["test:b1"].captured)
  assert.equals(utc.rfc3339(H - 2 * 3600), sources["test:b1"].segment)
  assert.equals(utc.rfc3339(H), sources["test:d1"].segment)

  -- the CLI against this server: `autopgo history` and `autopgo download --from/--to`, `--window`
  local code, out, err = support.autopgo { "history", "hist", "--api-url", s.url }
  assert.equals(0, code, err)
  assert.matches("hist: 4 segments of 1h, 6 uploads\n", out, 1, true)
  local b1 = out:match("\n  ([^\n]*test:b1)\n")
  assert.is_string(b1, out)
  assert.equals(utc.rfc3339(H - 2 * 3600 + 600), b1:match("^%S+"))
  assert.matches("^%S+%s+hist/staging/%d+%s+30s%s+[%d.]+ KiB%s+test:b1$", b1)
  code, out, err = support.autopgo { "download", "hist", "--api-url", s.url, "-o", dir .. "/cli.pgo",
    "--from", utc.rfc3339(H - 5 * 3600), "--to", utc.rfc3339(H - 4 * 3600) }
  assert.equals(0, code, err .. out)
  same(want { "a1", "a2" }, goref.canon(dir .. "/cli.pgo"), "autopgo download --from/--to")
  code, out, err = support.autopgo { "download", "hist", "--api-url", s.url, "-o", dir .. "/cli.pgo", "--window", "3h" }
  assert.equals(0, code, err .. out)
  same(want { "b1", "c1", "c2", "d1" }, goref.canon(dir .. "/cli.pgo"), "autopgo download --window")

  -- bad input
  for _, q in ipairs { "?window=soon", "?from=yesterday", "?window=1h&from=" .. utc.rfc3339(H),
    range(H, H - 3600) } do
    r = get(s, q)
    assert.equals(400, r.status, q)
    assert.is_string(cjson.decode(r.body).message)
  end
  r = get(s, range(H - 30 * 3600, H - 29 * 3600))
  assert.equals(404, r.status)
  assert.matches("no profile for app hist in that window", r.body, 1, true)

  -- a range delete: the segment goes, and the default profile no longer holds it
  r = assert(http.request { method = "DELETE", url = s.url .. "/api/profile/hist" .. range(H - 2 * 3600, H - 3600) })
  assert.equals(200, r.status, r.body)
  serverproc.wait_until("the range is deleted", function()
    return get(s, range(H - 2 * 3600, H - 3600)).status == 404
  end, 60000)
  local rest = want { "a1", "a2", "c1", "c2", "d1" }
  serverproc.wait_until("the default profile is rebuilt", function() return canon_of(get(s).body) == rest end, 60000)
  same(want { "c1", "c2", "d1" }, canon_of(get(s, "?window=3h").body), 'want { "c1", "c2", "d1" }')
  assert.equals(0, (serverproc.stop(s)))

  -- retention (3h): the segment of a (5 hours ago) goes at the next start, the rest stays
  s = start { "--prune", rules, "--retention", "3h" }
  serverproc.wait_until("the expired segment is swept", function()
    return get(s, range(H - 5 * 3600, H - 4 * 3600)).status == 404
  end, 60000)
  same(want { "c1", "c2", "d1" }, canon_of(get(s, "?window=3h").body), 'want { "c1", "c2", "d1" }')
  same(rest, canon_of(get(s).body), 'rest') -- the default ("all") is not rebuilt by retention
  assert.equals(2, #cjson.decode(get(s, "/history").body).segments)
  assert.equals(0, (serverproc.stop(s)))
end

describe("profile history", function()
  local dir
  setup(function() run(function() goref.ensure() end, 600000) end)
  before_each(function() dir = support.tmpdir() end)
  after_each(function()
    run(serverproc.cleanup)
    support.rm_rf(dir)
  end)

  it("on the embedded default: windows, provenance, kill -9, range delete and retention", function()
    run(function()
      local function start(args) return serverproc.start(dir, args) end
      local function keys(prefix)
        return serverproc.files({ data = dir .. "/autopgo-data" }, prefix)
      end
      story(dir, start, keys)
    end, 600000)
  end)

  it("normalizes uploads and decays the default profile exactly as Go's Profile.Scale does", function()
    run(function()
      local now = os.time()
      local H = now // 3600 * 3600
      local cfg = support.write_file(dir .. "/autopgo.lua", [[return { policy = {
        nrm = { normalize = "duration" }, eq = { normalize = "equal" }, dec = { half_life = "2h" },
        win = { window = "2h" } } }]])
      local s = serverproc.start(dir, { "--config", cfg })
      -- three uploads of different durations and hours
      local files, durations, hours = {}, { 10, 60, 30 }, { 3, 1, 0 }
      for i = 1, 3 do
        local out = dir .. "/u" .. i .. ".pb.gz"
        local t = H - hours[i] * 3600 + 300
        local code, _, so, se = support.spawn(support.root .. "/build/goref/bin/pprofgen", { "-o", out, "-seed",
          tostring(i), "-universe", "3", "-samples", "300", "-functions", "200", "-locations", "500",
          "-time", tostring(t * NS - i * NS), "-duration", tostring(durations[i] * NS) }):wait(60000)
        assert(code == 0, so .. se)
        files[i] = out
      end
      for _, app in ipairs { "nrm", "eq", "dec", "win" } do
        for i = 1, 3 do
          local r = assert(http.request { method = "POST", url = s.url .. "/api/profile/" .. app,
            body = support.read_file(files[i]) })
          assert.equals(201, r.status, r.body)
        end
      end
      serverproc.wait_until("everything is merged", function()
        return #serverproc.files(s, "nrm/staging eq/staging dec/staging win/staging") == 0
          and #serverproc.files(s, "nrm/default.pgo eq/default.pgo dec/default.pgo win/default.pgo") == 4
      end, 120000)
      local function canon_of(app, query)
        local r = assert(http.request { url = s.url .. "/api/profile/" .. app .. (query or "") })
        assert.equals(200, r.status, r.body)
        support.write_file(dir .. "/got.pgo", r.body)
        return goref.canon(dir .. "/got.pgo")
      end
      -- duration: each upload scaled to 30 s
      local want = goref.canon(goref.merge(dir .. "/want.pgo", files,
        { scale = { 30 / durations[1], 30 / durations[2], 30 / durations[3] } }))
      assert.equals(want, canon_of("nrm"))
      assert.equals(want, canon_of("nrm", "?from=" .. utc.rfc3339(H - 4 * 3600)))
      -- equal: each upload's cpu/nanoseconds total scaled to 30 s of CPU
      local eq = {}
      for i, f in ipairs(files) do
        local info = assert(require("autopgo.core").pprof.validate(support.read_file(f)))
        eq[i] = 30e9 / info.sample_types[2].total
      end
      assert.equals(goref.canon(goref.merge(dir .. "/want.pgo", files, { scale = eq })), canon_of("eq"))
      -- decay: each hour segment weighted by 0.5^(age/2h) at the time the worker wrote the default,
      -- which its ledger records
      local ledger = serverproc.files(s, "dec/ledger")
      assert.equals(1, #ledger)
      local view = cjson.decode(support.read_file(s.data .. "/" .. ledger[1])).view
      assert.equals("decay", view.kind)
      local segs, weights = {}, {}
      for k, seg in ipairs(view.segments) do
        local i
        for j = 1, 3 do
          if H - hours[j] * 3600 == seg.start then i = j end
        end
        assert.is_not_nil(i, "a segment of no upload")
        assert.equals(0.5 ^ ((view.now - (seg.start + 1800)) / 7200), seg.weight)
        segs[k] = goref.merge(dir .. "/seg" .. k .. ".pgo", { files[i] })
        weights[k] = seg.weight
      end
      assert.equals(3, #segs)
      assert.equals(goref.canon(goref.merge(dir .. "/want.pgo", segs, { scale = weights })), canon_of("dec"))
      -- a rolling window: the segments overlapping the last 2 hours (the uploads 1 and 0 hours
      -- ago; the one 3 hours ago is left out), however the clock moved since
      assert.equals(goref.canon(goref.merge(dir .. "/want.pgo", { files[2], files[3] })), canon_of("win"))
      -- windows stay unweighted (the merge of the uploads as they are, normalized or not)
      assert.equals(goref.canon(goref.merge(dir .. "/want.pgo", files)), canon_of("dec", "?window=5h"))
      assert.equals(0, (serverproc.stop(s)))
    end, 600000)
  end)

  it("on S3 (Ceph RGW): the same, and two servers filling one history", function()
    run(function()
      local rgw = services.get("rgw")
      local bucket = "autopgo-hist-" .. crypto.hex(crypto.random(4))
      local store_url = ("s3://%s?endpoint=%s&use_path_style=true&region=us-east-1"):format(bucket,
        url.escape(rgw.AUTOPGO_TEST_S3_ENDPOINT))
      local env = { "AWS_ACCESS_KEY_ID=" .. rgw.AUTOPGO_TEST_S3_ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY=" .. rgw.AUTOPGO_TEST_S3_SECRET_KEY, "AWS_EC2_METADATA_DISABLED=true",
        "AWS_CONFIG_FILE=/nonexistent", "AWS_SHARED_CREDENTIALS_FILE=/nonexistent" }
      local store = assert(s3.open(assert(url.parse(store_url)), { home = "/nonexistent", getenv = function(k)
        for _, kv in ipairs(env) do
          local name, v = kv:match("^([^=]+)=(.*)$")
          if name == k then return v end
        end
      end }))
      assert(store:create_bucket())
      local function start(args)
        local all = { "--blob-store-url", store_url }
        for _, a in ipairs(args) do all[#all + 1] = a end
        return serverproc.start(dir, all, env)
      end
      local function keys(prefix)
        local out = {}
        for _, item in ipairs(assert(store:list(prefix))) do out[#out + 1] = item.key end
        return out
      end
      story(dir, start, keys)

      -- two servers (two embedded workers) filling the same segments at once lose and double nothing
      local a, b = start {}, serverproc.start(support.tmpdir(), { "--blob-store-url", store_url }, env)
      local H = os.time() // 3600 * 3600
      local files, by_hour = {}, { {}, {} }
      for i = 1, 8 do
        local hour = i % 2 + 1
        files[i] = gen(dir, "r" .. i, 10 + i, H - hour * 3600 + 60 * i)
        table.insert(by_hour[hour], files[i])
      end
      local done = 0
      for i = 1, 8 do
        require("autopgo.async").spawn(function()
          local r = assert(http.request { method = "POST", url = (i % 2 == 0 and a or b).url .. "/api/profile/race",
            body = support.read_file(files[i]) })
          assert.equals(201, r.status, r.body)
          done = done + 1
        end)
      end
      serverproc.wait_until("every upload is accepted", function() return done == 8 end, 60000)
      serverproc.wait_until("both workers are done", function()
        return #keys("race/staging/") == 0 and #keys("race/default.pgo") == 1
      end, 120000)
      for hour = 1, 2 do
        local r = assert(http.request { url = a.url .. "/api/profile/race" .. ("?from=%s&to=%s"):format(
          utc.rfc3339(H - hour * 3600), utc.rfc3339(H - hour * 3600 + 3600)) })
        assert.equals(200, r.status, r.body)
        support.write_file(dir .. "/got.pgo", r.body)
        assert.equals(goref.canon(goref.merge(dir .. "/want.pgo", by_hour[hour])), goref.canon(dir .. "/got.pgo"))
      end
      local h = cjson.decode(assert(http.request { url = b.url .. "/api/profile/race/history" }).body)
      assert.equals(8, #h.uploads)
      assert.same({ 4, 4 }, { h.segments[1].uploads, h.segments[2].uploads })
      support.write_file(dir .. "/got.pgo", assert(store:get("race/default.pgo")).body)
      assert.equals(goref.canon(goref.merge(dir .. "/want.pgo", files)), goref.canon(dir .. "/got.pgo"))
    end, 900000)
  end)
end)
