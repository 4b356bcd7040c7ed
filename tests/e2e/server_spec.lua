-- End-to-end specs of `autopgo server` on the embedded default (file store, in-process bus, worker
-- in the same process): uploads with curl of every PGO-usable corpus profile, the merge compared
-- with the Go reference (plain and pruned), delete, restart, and a graceful stop.
local support = require "tests.lua.support"
local httpc = require "tests.lua.httpc"
local serverproc = require "tests.e2e.serverproc"
local goref = require "tests.e2e.goref"
local async = require "autopgo.async"
local http = require "autopgo.http"

local run = support.run
local corpus = support.root .. "/tests/testdata/pprof"

-- The corpus README's table: files both profile.Parse and Go's PGO loader accept, in table
-- order; and those only the PGO loader accepts (the original server refuses them with 400).
local function corpus_lists()
  local usable, parse_fails = {}, {}
  for line in io.lines(corpus .. "/README.md") do
    local file, parse, pgo = line:match("^| `([^`]+)` | %d+ | ([^|]-) | ([^|]-) |$")
    if file and pgo:match("^ok") then
      if parse == "ok" then usable[#usable + 1] = file else parse_fails[#parse_fails + 1] = file end
    end
  end
  return usable, parse_fails
end

local function curl_upload(s, app, file)
  local code, _, out = support.spawn("curl", { "-s", "-w", "\n%{http_code}", "--data-binary", "@" .. file,
    s.url .. "/api/profile/" .. app }):wait(30000)
  assert.equals(0, code)
  local body, status = out:match("^(.*)\n(%d+)$")
  return tonumber(status), body
end

local function curl_download(s, app, path)
  local code, _, out = support.spawn("curl", { "-s", "-o", path, "-w", "%{http_code}",
    s.url .. "/api/profile/" .. app }):wait(30000)
  assert.equals(0, code)
  return tonumber(out)
end

describe("autopgo server (embedded default)", function()
  local dir
  before_each(function()
    dir = support.tmpdir()
  end)
  after_each(function()
    support.run(serverproc.cleanup)
    support.rm_rf(dir)
  end)

  it("merges every PGO-usable corpus profile exactly as the Go reference, pruned too, and keeps it", function()
    run(function()
      goref.ensure()
      local usable, parse_fails = corpus_lists()
      assert.is_true(#usable >= 10, "the corpus README lists " .. #usable .. " usable profiles")
      -- One profile of the corpus is a CPU profile of another shape (cpu/nanoseconds only): it
      -- goes last, and the base keeps only the sample type it shares with the others (as Go's
      -- CompatibilizeSampleTypes + Merge of them all).
      local compatible, odd = {}, nil
      for _, f in ipairs(usable) do
        if f == "edge/cpu-only-nanoseconds.pb.gz" then odd = f else compatible[#compatible + 1] = corpus .. "/" .. f end
      end
      assert.is_not_nil(odd)
      local rules = support.write_file(dir .. "/prune.json",
        '[{"app":"pruned","rules":[{"drop":"^regexp\\\\.","keep":null},'
        .. '{"drop":"^encoding/json\\\\.\\\\(\\\\*decodeState\\\\)"}]}]')
      local s = serverproc.start(dir, { "--prune", rules })

      for _, app in ipairs { "plain", "pruned" } do
        for _, f in ipairs(compatible) do
          local status, body = curl_upload(s, app, f)
          assert.equals(201, status, f .. ": " .. tostring(body))
          assert.matches('^{"key":"' .. app .. '/staging/%d+"}\n$', body)
        end
      end
      assert.equals(201, (curl_upload(s, "plain", corpus .. "/" .. odd)))
      for _, f in ipairs(parse_fails) do
        local status, body = curl_upload(s, "plain", corpus .. "/" .. f)
        assert.equals(400, status, f)
        assert.matches('^{"message":".+","code":400}\n$', body)
      end

      serverproc.wait_until("every upload is merged", function()
        return #serverproc.files(s, "plain/staging pruned/staging") == 0
      end)
      assert.same({}, serverproc.files(s, "plain/rejected"))

      local all = { table.unpack(compatible) }
      all[#all + 1] = corpus .. "/" .. odd
      local want_plain = goref.canon(goref.merge(dir .. "/ref-plain.pgo", all, { compatibilize = true }))
      local pruned = goref.merge(dir .. "/ref-pruned.pgo", compatible, { prune = rules, app = "pruned" })
      -- the worker adds up stacks that pruning made equal (a single-input merge does the same)
      local want_pruned = goref.canon(goref.merge(dir .. "/ref-pruned-norm.pgo", { pruned }))
      assert.equals(200, curl_download(s, "plain", dir .. "/plain.pgo"))
      assert.equals(200, curl_download(s, "pruned", dir .. "/pruned.pgo"))
      assert.equals(want_plain, goref.canon(dir .. "/plain.pgo"))
      assert.equals(want_pruned, goref.canon(dir .. "/pruned.pgo"))
      assert.are_not.equal(want_plain, want_pruned)

      -- a restart keeps the merged profiles
      local code, err = serverproc.stop(s)
      assert.equals(0, code, err)
      s = serverproc.start(dir, { "--prune", rules })
      assert.equals(200, curl_download(s, "pruned", dir .. "/pruned-again.pgo"))
      assert.equals(support.read_file(dir .. "/pruned.pgo"), support.read_file(dir .. "/pruned-again.pgo"))
      local list = httpc.request(s.port, "GET", "/api/profile")
      assert.matches('"key":"plain"', list.body)
      assert.matches('"key":"pruned"', list.body)

      -- delete removes every object of the app, and only of that app
      local r = httpc.request(s.port, "DELETE", "/api/profile/plain")
      assert.equals(200, r.status)
      assert.equals("{}\n", r.body)
      serverproc.wait_until("the app's objects are gone", function()
        return #serverproc.files(s, "plain") == 0
      end)
      assert.equals(404, httpc.request(s.port, "GET", "/api/profile/plain").status)
      assert.equals(200, httpc.request(s.port, "GET", "/api/profile/pruned").status)
      code, err = serverproc.stop(s)
      assert.equals(0, code, err)
    end, 600000)
  end)

  it("prints where it stores profiles and serves health, readiness and metrics", function()
    run(function()
      local s = serverproc.start(dir, { "--data-dir", "store", "--max-upload-size", "50000" })
      local h = httpc.request(s.port, "GET", "/api/health")
      assert.equals(200, h.status)
      assert.equals('{"status":"healthy","dependencies":[{"name":"blob","status":"healthy"},'
        .. '{"name":"event-writer","status":"healthy"},{"name":"event-reader","status":"healthy"},'
        .. '{"name":"disk","status":"healthy"}]}\n', h.body)
      assert.equals(200, httpc.request(s.port, "GET", "/api/ready").status)
      local up = httpc.request(s.port, "POST", "/api/profile/app",
        { body = support.read_file(corpus .. "/goapp-go123-cpu-1.pb.gz") })
      assert.equals(201, up.status)
      serverproc.wait_until("merged", function()
        return #serverproc.files({ data = dir .. "/store" }, "app/default.pgo") == 1
      end)
      -- bodies over the limit, refused by the HTTP server itself, count as uploads answered 413
      local big = ("x"):rep(60000)
      assert.equals(413, httpc.request(s.port, "POST", "/api/profile/app", { body = big }).status)
      local c = httpc.connect(s.port)
      c:send(httpc.format("POST", "/api/profile/app", { ["Transfer-Encoding"] = "chunked" })
        .. ("%x\r\n%s\r\n0\r\n\r\n"):format(#big, big))
      assert.equals(413, c:read_response().status)
      c:close()
      local m = httpc.request(s.port, "GET", "/metrics")
      assert.equals("text/plain; version=0.0.4; charset=utf-8", m.headers["content-type"])
      for _, want in ipairs {
        'autopgo_uploads_total{status="201"} 1', 'autopgo_uploads_total{status="413"} 2',
        "autopgo_upload_bytes_total %d+",
        'autopgo_events_published_total{type="profile.uploaded"} 1',
        'autopgo_merges_total{result="merged"} 1', "autopgo_merge_duration_seconds_count 1",
        'autopgo_profile_size_bytes{app="app"} %d+', 'autopgo_events_consumed_total{type="profile.uploaded"} 1',
      } do
        assert.matches("\n" .. want .. "\n", m.body)
      end
      -- the store directory is broken: health says so with 503
      support.rm_rf(dir .. "/store")
      h = httpc.request(s.port, "GET", "/api/health")
      assert.equals(503, h.status)
      assert.matches('"status":"unhealthy"', h.body)
      local code, err = serverproc.stop(s)
      assert.equals(0, code)
      assert.matches('msg="storing profiles on the local disk" dir=' .. dir:gsub("%p", "%%%0") .. "/store", err)
    end, 120000)
  end)

  it("finishes a request in flight when told to stop, then exits 0", function()
    run(function()
      local s = serverproc.start(dir)
      local body = support.read_file(corpus .. "/goapp-go123-cpu-2.pb.gz")
      local c = httpc.connect(s.port)
      local req = httpc.format("POST", "/api/profile/app", nil, body)
      c:send(req:sub(1, #req - 1000))
      async.sleep(100)
      s.proc:kill("sigterm")
      async.sleep(100)
      assert.is_nil(s.proc.code, "the server exited with a request in flight")
      c:send(req:sub(#req - 999))
      local r = c:read_response()
      assert.equals(201, r.status)
      c:close()
      local code = s.proc:wait(30000)
      assert.equals(0, code)
      -- the upload survives: merged now or at the next start
      s = serverproc.start(dir)
      serverproc.wait_until("the upload is merged", function()
        return #serverproc.files(s, "app/staging") == 0 and #serverproc.files(s, "app/default.pgo") == 1
      end)
      assert.equals(0, (serverproc.stop(s)))
    end, 120000)
  end)

  it("exits at once on a second stop signal when the first one is still waiting", function()
    run(function()
      local s = serverproc.start(dir)
      local c = httpc.connect(s.port)
      c:send(httpc.format("POST", "/api/profile/app", { { "Content-Length", "100000" } }) .. "partial")
      async.sleep(100)
      s.proc:kill("sigterm")
      async.sleep(100)
      assert.is_nil(s.proc.code, "the first signal should wait for the upload in flight")
      s.proc:kill("sigint")
      local code, _, _, err = s.proc:wait(10000)
      assert.equals(1, code)
      assert.matches("second stop signal", err)
      c:close()
    end, 60000)
  end)

  it("exits with one line saying which flag picks another port when its port is taken", function()
    run(function()
      local s = serverproc.start(dir)
      local function want(cmd)
        local text = ("autopgo %s: cannot listen on 0.0.0.0:%d: address already in use: another process has "
          .. "port %d; pass another with -p/--port or AUTOPGO_PORT (e.g. -p %d)\n")
          :format(cmd, s.port, s.port, s.port + 1)
        return text:gsub("%p", "%%%0") .. "$"
      end
      local code, _, err = support.autopgo({ "server", "--port", tostring(s.port) }, { cwd = dir })
      assert.equals(1, code)
      assert.matches(want("server"), err)
      code, _, err = support.autopgo({ "worker", "--port", tostring(s.port) }, { cwd = dir })
      assert.equals(1, code)
      assert.matches(want("worker"), err)
      local targets = support.write_file(dir .. "/targets.json", "[]")
      code, _, err = support.autopgo({ "scrape", "-a", "x", "-s", "1", "--port", tostring(s.port), targets },
        { cwd = dir })
      assert.equals(1, code)
      assert.matches(want("scrape"), err)
      serverproc.stop(s)
    end)
  end)

  -- Whether something accepts TCP connections on host:port.
  local function accepts(host, port)
    local ok = pcall(function() httpc.connect(port, host):close() end)
    return ok
  end

  -- Starts a daemon with args (and env), waits until it is ready on host:port; returns the process.
  local function start_on(host, port, args, env)
    local proc = support.spawn(support.bin, args, { cwd = dir, env = env })
    for _ = 1, 400 do
      local res = http.request { url = ("http://%s:%d/api/ready"):format(host, port), timeout = 5 }
      if res and res.status == 200 then return proc end
      if proc.code then break end
      async.sleep(25)
    end
    proc:kill("sigkill")
    local _, _, out, err = proc:wait(5000)
    error("the daemon did not come up on " .. host .. ": " .. out .. err)
  end

  it("listens only on --host, AUTOPGO_HOST or the config file's host, server and worker alike", function()
    run(function()
      local cfg = support.write_file(dir .. "/host.lua", [[ return { host = "127.0.0.2" } ]])
      local cases = {
        { "server", {}, { "--host", "127.0.0.2" } },
        { "server", { "AUTOPGO_HOST=127.0.0.2" }, {} },
        { "server", {}, { "--config", cfg } },
        { "server", { "AUTOPGO_HOST=127.0.0.3" }, { "--config", cfg, "--host", "127.0.0.2" } },
        { "worker", {}, { "--host", "127.0.0.2" } },
        { "worker", { "AUTOPGO_HOST=127.0.0.2" }, { "--config", cfg } },
      }
      for i, c in ipairs(cases) do
        local port = support.free_port()
        local args = { c[1], "--port", tostring(port) }
        for _, a in ipairs(c[3]) do args[#args + 1] = a end
        local proc = start_on("127.0.0.2", port, args, c[2])
        assert.is_false(accepts("127.0.0.1", port), "case " .. i .. ": reachable on 127.0.0.1")
        assert.is_false(accepts("127.0.0.3", port), "case " .. i .. ": reachable on 127.0.0.3")
        proc:kill("sigterm")
        local code, signal, out, err = proc:wait(30000)
        assert.equals(0, code, err)
        assert.equals(0, signal)
        assert.matches("host=127%.0%.0%.2", out .. err)
      end
    end, 120000)
  end)
end)
