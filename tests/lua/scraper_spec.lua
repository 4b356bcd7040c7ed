-- Specs for lua/autopgo/scraper.lua: sampling, the target URL, and how one forward reacts to
-- what targets and the server do, with the HTTP test server playing targets that misbehave
-- and a server that rejects or drops an upload half-way (the end-to-end specs use the real
-- server and real Go programs). Also: rounds never overlap and stop() aborts what is in flight.
local uv = require "luv"
local async = require "autopgo.async"
local http = require "autopgo.http"
local scraper = require "autopgo.scraper"
local discovery = require "autopgo.discovery"
local support = require "tests.lua.support"
local fixture = require "tests.lua.http_fixture"

local run = support.run

local function source_for(...)
  local list = {}
  for _, srv in ipairs { ... } do list[#list + 1] = { address = srv.url } end
  local dir = support.tmpdir()
  local path = dir .. "/mode.lua"
  support.write_file(path, "return { list = function(ctx) return ctx.state.targets end }")
  local src = assert(discovery.open(path, nil, { state = { targets = list } }))
  assert(src:start())
  support.rm_rf(dir)
  return src
end

-- An API server that stores complete uploads and notes broken ones. behaviour: nil, "reject"
-- (413 at once), or a list of statuses to answer the first requests with (then 201).
local function api_server(behaviour, port)
  local api = { uploads = {}, broken = 0 }
  api.srv = fixture.start(function(req, conn)
    if behaviour == "reject" then
      conn:read_body_chunk()
      conn:respond(413, nil, '{"message":"profile too large","code":413}')
      while conn:read_body_chunk() do end -- until the client hangs up
      return
    end
    local answer = type(behaviour) == "table" and behaviour[#api.srv.requests]
    if answer then
      while conn:read_body_chunk() do end
      return conn:respond(answer, nil, ('{"message":"status %d","code":%d}'):format(answer, answer))
    end
    local parts = {}
    while true do
      local chunk = conn:read_body_chunk()
      if not chunk then break end
      parts[#parts + 1] = chunk
    end
    if conn.eof then
      api.broken = api.broken + 1
      return
    end
    api.uploads[#api.uploads + 1] = { path = req.path, body = table.concat(parts),
      source = req.headers["x-autopgo-source"] }
    conn:respond(201, nil, ('{"key":"%s/staging/%d"}'):format(req.path:match("[^/]+$"), #api.uploads))
  end, { stream_body = true, port = port })
  api.url = api.srv.url
  return api
end

local function payload(n)
  local t = {}
  for i = 1, n // 16 do t[i] = ("%015d\n"):format(i) end
  return table.concat(t)
end

local function serve_profile(body, opts)
  opts = opts or {}
  return fixture.start(function(req, conn)
    if opts.seen then opts.seen[#opts.seen + 1] = req.target end
    if opts.status then return conn:respond(opts.status, nil, opts.error_body or "") end
    conn:write(("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n"):format(#body))
    local sent = 0
    for i = 1, #body, 32768 do
      if opts.reset_after and sent >= opts.reset_after then
        conn:reset()
        return
      end
      if not conn:write(body:sub(i, i + 32767)) then break end
      sent = sent + 32768
      if opts.sent then opts.sent[1] = sent end
    end
  end)
end

describe("autopgo.scraper", function()
  local servers
  before_each(function() servers = {} end)
  after_each(function()
    for _, s in ipairs(servers) do s.close() end
  end)
  local function keep(srv)
    servers[#servers + 1] = srv.srv or srv
    return srv
  end

  it("samples up to n distinct targets at random", function()
    local targets = { "a", "b", "c" }
    assert.equals(3, #scraper.sample(targets, 5))
    assert.equals(0, #scraper.sample({}, 2))
    local seen = {}
    for _ = 1, 300 do
      local pick = scraper.sample(targets, 2)
      assert.equals(2, #pick)
      assert.are_not.equal(pick[1], pick[2])
      seen[pick[1]] = true
    end
    assert.same({ a = true, b = true, c = true }, seen)
    assert.same({ "a", "b", "c" }, targets, "the source's list is left alone")
  end)

  it("asks for {address}{path}?seconds={duration}", function()
    local t = { address = "http://h:1", path = "/debug/pprof/profile" }
    assert.equals("http://h:1/debug/pprof/profile?seconds=30", scraper.profile_url(t, 30))
    assert.equals("http://h:1/debug/pprof/profile?seconds=0.5", scraper.profile_url(t, 0.5))
    assert.equals("http://h:1/p?debug=0&seconds=90",
      scraper.profile_url({ address = "http://h:1", path = "/p?debug=0" }, 90))
  end)

  it("streams a profile from the target to the server unchanged", function()
    local body = payload(3 * 1024 * 1024)
    local seen = {}
    local target = keep(serve_profile(body, { seen = seen }))
    local api = keep(api_server())
    run(function()
      local s = scraper.new({ app = "svc", api_url = api.url, sample_size = 2, frequency = 60, duration = 1 },
        source_for(target))
      assert.equals(1, s:run_round())
      assert.equals(1, s.stats.success)
      assert.equals(#body, s.stats.bytes)
      assert.equals(1, #api.uploads)
      assert.equals("/api/profile/svc", api.uploads[1].path)
      assert.is_true(api.uploads[1].body == body)
      assert.equals(target.url .. "/debug/pprof/profile", api.uploads[1].source) -- for the history
      assert.same({ "/debug/pprof/profile?seconds=1" }, seen)
    end, 60000)
  end)

  it("counts a target's error answer and uploads nothing", function()
    local target = keep(serve_profile("", { status = 500,
      error_body = "Could not enable CPU profiling: cpu profiling already in use\n" }))
    local api = keep(api_server())
    run(function()
      local results = {}
      local s = scraper.new({ app = "svc", api_url = api.url, sample_size = 1, frequency = 60, duration = 1 },
        source_for(target), { on_result = function(kind, _, _, detail) results[#results + 1] = { kind, detail } end })
      s:run_round()
      assert.equals("target_error", results[1][1])
      assert.equals("the target answered 500: Could not enable CPU profiling: cpu profiling already in use",
        results[1][2])
      assert.equals(0, #api.srv.requests)
    end)
  end)

  it("aborts the upload when the target breaks off, so nothing truncated is staged", function()
    -- past hold_limit, so the upload is under way when the target breaks off
    local target = keep(serve_profile(payload(4 * 1024 * 1024), { reset_after = 2 * scraper.hold_limit }))
    local api = keep(api_server())
    run(function()
      local s = scraper.new({ app = "svc", api_url = api.url, sample_size = 1, frequency = 60, duration = 1 },
        source_for(target))
      s:run_round()
      assert.equals(1, s.stats.target_error)
      assert.equals(0, #api.uploads)
      local deadline = uv.now() + 5000
      while api.broken == 0 and uv.now() < deadline do async.sleep(10) end
      assert.equals(1, api.broken, "the server saw the upload end before its last chunk")
    end)
  end)

  it("stops downloading when the server rejects the upload", function()
    local sent = { 0 }
    local total = 64 * 1024 * 1024
    local target = keep(serve_profile(("p"):rep(total), { sent = sent }))
    local api = keep(api_server("reject"))
    run(function()
      local results = {}
      local s = scraper.new({ app = "svc", api_url = api.url, sample_size = 1, frequency = 60, duration = 1 },
        source_for(target), { on_result = function(kind, _, _, detail) results[#results + 1] = { kind, detail } end })
      s:run_round()
      assert.equals("upload_error", results[1][1])
      assert.matches("profile too large %(413%)", results[1][2])
      assert.is_true(sent[1] < total / 2, ("the target sent %d of %d bytes"):format(sent[1], total))
    end, 60000)
  end)

  local fast_retry = { base = 0.01, cap = 0.05, attempts = 6, deadline = 30 }

  local function scrape_once(api_url, target, hooks, extra)
    local opts = { app = "svc", api_url = api_url, sample_size = 1, frequency = 60, duration = 1,
      upload_retry = fast_retry }
    for k, v in pairs(extra or {}) do opts[k] = v end
    local results = {}
    local all = { on_result = function(kind, _, bytes, detail) results[#results + 1] = { kind, detail, bytes } end }
    for k, v in pairs(hooks or {}) do all[k] = v end
    local s = scraper.new(opts, source_for(target), all)
    s:run_round()
    return results[1], s
  end

  it("skips a profile without samples (an idle service) and says so", function()
    local target = keep(serve_profile(support.read_file(support.testdata .. "/edge/no-samples.pb.gz")))
    local api = keep(api_server())
    run(function()
      local result, s = scrape_once(api.url, target)
      assert.equals("empty", result[1])
      assert.equals("the profile has no samples (the target was idle)", result[2])
      assert.equals(1, s.stats.empty)
      assert.same({ success = 0, empty = 1, target_error = 0, upload_error = 0, canceled = 0 }, s.last_round)
      assert.equals(0, #api.srv.requests)
    end)
  end)

  it("forwards a profile with samples whole, and one that does not parse for the server to judge", function()
    local profile = support.read_file(support.testdata .. "/goapp-go123-cpu-1.pb.gz")
    local api = keep(api_server())
    run(function()
      local result = scrape_once(api.url, keep(serve_profile(profile)))
      assert.equals("success", result[1])
      result = scrape_once(api.url, keep(serve_profile("not a profile")))
      assert.equals("success", result[1])
      assert.equals(2, #api.uploads)
      assert.is_true(api.uploads[1].body == profile)
      assert.equals("not a profile", api.uploads[2].body)
    end)
  end)

  it("retries the upload with back-off while the server is down, then forwards the profile", function()
    local profile = support.read_file(support.testdata .. "/goapp-go123-cpu-2.pb.gz")
    local target = keep(serve_profile(profile))
    local port = support.free_port()
    run(function()
      local api, retries = nil, {}
      local result = scrape_once("http://127.0.0.1:" .. port, target, {
        on_retry = function(_, attempt, delay, err)
          retries[#retries + 1] = { attempt, delay, err }
          if attempt == 2 then api = keep(api_server(nil, port)) end -- the server comes back
        end,
      })
      assert.equals("success", result[1], result[2])
      assert.equals(2, #retries)
      assert.matches("^UNAVAILABLE: ", retries[1][3])
      assert.is_true(retries[2][2] <= fast_retry.cap)
      assert.equals(1, #api.uploads)
      assert.is_true(api.uploads[1].body == profile)
    end)
  end)

  it("retries a 503 but gives up after its bound, and never retries a refusal", function()
    local profile = support.read_file(support.testdata .. "/goapp-go123-cpu-3.pb.gz")
    local target = keep(serve_profile(profile))
    local busy = keep(api_server({ 503, 503, 503, 503, 503, 503, 503, 503 }))
    local refusing = keep(api_server({ 400 }))
    local coming_back = keep(api_server({ 502, 503, 504 }))
    run(function()
      local result = scrape_once(busy.url, target, nil, { upload_retry = { base = 0.01, cap = 0.02, attempts = 4 } })
      assert.equals("upload_error", result[1])
      assert.equals("status 503 (503) (gave up after 4 attempts)", result[2])
      assert.equals(4, #busy.srv.requests)
      result = scrape_once(refusing.url, target)
      assert.equals("upload_error", result[1])
      assert.equals("status 400 (400)", result[2])
      assert.equals(1, #refusing.srv.requests)
      result = scrape_once(coming_back.url, target)
      assert.equals("success", result[1])
      assert.equals(4, #coming_back.srv.requests)
      assert.is_true(coming_back.uploads[1].body == profile)
    end)
  end)

  it("retries a streamed upload the server could not take at all, and sends it whole", function()
    local body = payload(3 * 1024 * 1024) -- past hold_limit: streamed
    local target = keep(serve_profile(body))
    local port = support.free_port()
    run(function()
      local api
      local result = scrape_once("http://127.0.0.1:" .. port, target, {
        on_retry = function(_, attempt)
          if attempt == 1 then api = keep(api_server(nil, port)) end
        end,
      })
      assert.equals("success", result[1], result[2])
      assert.equals(#body, result[3])
      assert.equals(1, #api.uploads)
      assert.is_true(api.uploads[1].body == body)
    end, 60000)
  end)

  it("never overlaps rounds, and stop() aborts the scrapes in flight", function()
    local active, max_active, served = 0, 0, 0
    local target = keep(fixture.start(function(_, conn)
      active = active + 1
      max_active = math.max(max_active, active)
      async.sleep(150) -- longer than the period
      active = active - 1
      served = served + 1
      conn:respond(200, nil, "profile")
    end))
    local api = keep(api_server())
    run(function()
      local s = scraper.new({ app = "svc", api_url = api.url, sample_size = 1, frequency = 0.02, duration = 1 },
        source_for(target))
      local finished = async.event()
      async.spawn(function()
        s:run()
        finished.set()
      end)
      while served < 3 do async.sleep(10) end
      assert.equals(1, max_active)
      while active == 0 do async.sleep(1) end
      s:stop("test over")
      assert.is_true(finished.wait(5000))
      assert.equals(0, http.active())
      assert.is_true(s.stats.canceled >= 1)
      assert.is_true(s.stats.success >= 3)
    end)
  end)
end)
