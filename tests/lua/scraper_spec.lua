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

-- An API server that stores complete uploads and notes broken ones.
local function api_server(behaviour)
  local api = { uploads = {}, broken = 0 }
  api.srv = fixture.start(function(req, conn)
    if behaviour == "reject" then
      conn:read_body_chunk()
      conn:respond(413, nil, '{"message":"profile too large","code":413}')
      while conn:read_body_chunk() do end -- until the client hangs up
      return
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
    api.uploads[#api.uploads + 1] = { path = req.path, body = table.concat(parts) }
    conn:respond(201, nil, ('{"key":"%s/staging/%d"}'):format(req.path:match("[^/]+$"), #api.uploads))
  end, { stream_body = true })
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
    local target = keep(serve_profile(payload(4 * 1024 * 1024), { reset_after = 1024 * 1024 }))
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
