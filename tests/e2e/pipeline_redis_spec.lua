-- End-to-end: the whole pipeline with `--blob-store-url redis://…`, `rediss://…` (TLS + AUTH) and
-- a Redis Cluster against real redis-server processes: uploads merged into Redis equal the Go reference's merge;
-- a wrong password or a TLS mismatch shows in /api/health and no upload is acknowledged; and
-- Redis killed with -9 while uploads and merges run (then started again on its append-only file)
-- loses no acknowledged upload and counts each exactly once.
local cjson = require "cjson"
local url = require "autopgo.url"
local http = require "autopgo.http"
local async = require "autopgo.async"
local crypto = require("autopgo.core").crypto
local redis = require "autopgo.blob.redis"
local support = require "tests.lua.support"
local services = require "tests.lua.services"
local httpc = require "tests.lua.httpc"
local profiles = require "tests.lua.profiles"
local serverproc = require "tests.e2e.serverproc"
local goref = require "tests.e2e.goref"

local run = support.run
local corpus = support.root .. "/tests/testdata/pprof"
local files = {
  corpus .. "/goapp-go123-cpu-1.pb.gz", corpus .. "/goapp-go123-cpu-2.pb.gz",
  corpus .. "/goapp-go123-cpu-1.pb.gz", corpus .. "/goapp-go123-cpu-2.pb.gz",
}

local env = services.get("redis")

local function prefix() return "e2e" .. crypto.hex(crypto.random(4)) .. "/" end

local function open(raw, password)
  return assert(redis.open(assert(url.parse(raw)), { getenv = function(k)
    return k == "AUTOPGO_REDIS_PASSWORD" and password or nil
  end }))
end

local function keys(store, p)
  local out = {}
  for _, item in ipairs(assert(store:list(p))) do out[#out + 1] = item.key end
  return out
end

local function cli(s, args)
  local all = {}
  for _, a in ipairs(args) do all[#all + 1] = a end
  all[#all + 1] = "--api-url"
  all[#all + 1] = s.url
  return support.autopgo(all, { timeout = 60000 })
end

describe("the pipeline on Redis", function()
  local dir
  setup(function() run(goref.ensure, 600000) end)
  before_each(function() dir = support.tmpdir() end)
  after_each(function()
    run(serverproc.cleanup)
    support.rm_rf(dir)
  end)

  -- Uploads the corpus files, waits for the merge, and checks the download against Go's merge.
  local function pipeline(store_url, server_env, store)
    local s = serverproc.start(dir, { "--blob-store-url", store_url }, server_env)
    local health = assert(http.request { url = s.url .. "/api/health" })
    assert.equals(200, health.status, health.body)
    for _, f in ipairs(files) do
      local code, out, err = cli(s, { "upload", "--app", "demo", f })
      assert.equals(0, code, err)
      assert.matches("^demo/staging/%d+\n$", out)
    end
    serverproc.wait_until("every staged upload is merged", function()
      return #keys(store, "demo/staging/") == 0 and #keys(store, "demo/default.pgo") == 1
    end, 60000)
    local want = goref.canon(goref.merge(dir .. "/want.pgo", files))
    local code, _, err = cli(s, { "download", "demo", "-o", dir .. "/got.pgo" })
    assert.equals(0, code, err)
    assert.equals(want, goref.canon(dir .. "/got.pgo"))
    assert.equals(support.read_file(dir .. "/got.pgo"), assert(store:get("demo/default.pgo")).body)
    code, _, err = cli(s, { "delete", "demo" })
    assert.equals(0, code, err)
    serverproc.wait_until("every object of the deleted app is gone", function()
      return #keys(store, "demo/") == 0
    end, 60000)
    assert.equals(0, (serverproc.stop(s)))
  end

  it("uploads, merges and downloads on redis://", function()
    run(function()
      local raw = env.REDIS_URL .. "?prefix=" .. prefix() .. "&ttl=1h"
      local store = open(raw)
      pipeline(raw, {}, store)
      store:close()
    end, 300000)
  end)

  it("uploads, merges and downloads on rediss:// with AUTH from AUTOPGO_REDIS_PASSWORD", function()
    run(function()
      local raw = env.REDIS_TLS_URL .. "?prefix=" .. prefix() .. "&ca_file=" .. url.escape(env.REDIS_CA_FILE)
      local store = open(raw, env.REDIS_PASSWORD)
      pipeline(raw, { "AUTOPGO_REDIS_PASSWORD=" .. env.REDIS_PASSWORD }, store)
      store:close()
    end, 300000)
  end)

  it("uploads, merges and downloads on a Redis Cluster", function()
    run(function()
      local raw = env.REDIS_CLUSTER_URL .. "?prefix=" .. prefix()
      local store = open(raw)
      pipeline(raw, {}, store)
      store:close()
    end, 300000)
  end)

  -- A server on a store it cannot use: /api/health names the cause and no upload gets a 201.
  local function refused(store_url, server_env, want)
    local port = support.free_port()
    local proc = support.spawn(support.bin, { "server", "--port", tostring(port), "--blob-store-url", store_url },
      { cwd = dir, env = server_env })
    local s = { url = "http://127.0.0.1:" .. port }
    local health
    serverproc.wait_until("the server answers", function()
      health = http.request { url = s.url .. "/api/health", timeout = 10 }
      return health ~= nil or proc.code ~= nil
    end, 30000)
    assert.is_table(health, "the server exited: " .. table.concat(proc.err))
    assert.are_not.equal(200, health.status)
    assert.matches(want, health.body, 1, true)
    assert.is_table(cjson.decode(health.body))
    local res = httpc.request(port, "POST", "/api/profile/denied", { body = profiles.variant(1), timeout = 30000 })
    assert.is_true(res.status >= 500, ("an upload the store cannot take got %d"):format(res.status))
    proc:kill("sigterm")
    proc:wait(30000)
  end

  it("reports a wrong password or a TLS mismatch in /api/health and acknowledges no upload", function()
    run(function()
      local p = prefix()
      local tls = env.REDIS_TLS_URL .. "?prefix=" .. p .. "&retry_for=2s&ca_file=" .. url.escape(env.REDIS_CA_FILE)
      refused(tls, { "AUTOPGO_REDIS_PASSWORD=wrong" }, "WRONGPASS")
      refused(env.REDIS_TLS_URL .. "?prefix=" .. p .. "&retry_for=2s&ca_file=" .. url.escape(env.REDIS_OTHER_CA_FILE),
        { "AUTOPGO_REDIS_PASSWORD=" .. env.REDIS_PASSWORD }, "certificate verification failed")
      refused(env.REDIS_TLS_URL:gsub("^rediss:", "redis:") .. "?prefix=" .. p .. "&retry_for=2s",
        { "AUTOPGO_REDIS_PASSWORD=" .. env.REDIS_PASSWORD }, "use rediss://")
      refused(env.REDIS_URL:gsub("^redis:", "rediss:") .. "?prefix=" .. p .. "&retry_for=2s&timeout=2s", {},
        "TLS handshake")
      local store = open(tls, env.REDIS_PASSWORD)
      assert.same({}, keys(store, "denied/"))
      store:close()
    end, 300000)
  end)

  describe("with Redis killed by -9 and restarted on its append-only file", function()
    local rdir, rport, rproc

    local function start_redis()
      rproc = support.spawn(env.REDIS_SERVER_BIN, { "--bind", "127.0.0.1", "--port", tostring(rport),
        "--dir", rdir, "--appendonly", "yes", "--appendfsync", "always", "--save", "" }, { cwd = rdir })
      local probe = open(("redis://127.0.0.1:%d/0?retry_for=30s"):format(rport))
      assert(probe:health(), "redis-server did not come up: " .. table.concat(rproc.err))
      probe:close()
    end

    local function kill_redis()
      rproc:kill("sigkill")
      rproc:wait(10000)
    end

    before_each(function()
      rdir = support.tmpdir()
      rport = support.free_port()
      run(start_redis, 60000)
    end)
    after_each(function()
      if rproc and rproc.code == nil then run(kill_redis, 20000) end
      support.rm_rf(rdir)
    end)

    it("answers 5xx to uploads it could not store, loses no acknowledged one and merges each exactly once", function()
      run(function()
        local raw = ("redis://127.0.0.1:%d/0?prefix=faults/&retry_for=3s"):format(rport)
        local s = serverproc.start(dir, { "--blob-store-url", raw })
        local created, statuses = {}, {}
        local next_n = 0

        -- Uploads n variants at once; kills Redis once `kill_after` of them got a 201.
        local function round(n, kill_after)
          local acked, killed, in_flight, flying_at_kill = 0, false, 0, 0
          local clients = {}
          for _ = 1, n do
            next_n = next_n + 1
            local i = next_n
            clients[#clients + 1] = function()
              in_flight = in_flight + 1
              local ok, res = pcall(httpc.request, s.port, "POST", "/api/profile/app",
                { body = profiles.variant(i), timeout = 30000 })
              in_flight = in_flight - 1
              statuses[i] = ok and res and res.status or 0
              if statuses[i] == 201 then
                created[i] = true
                acked = acked + 1
                if acked == kill_after and not killed then
                  killed, flying_at_kill = true, in_flight
                  kill_redis()
                end
              end
            end
          end
          async.all(clients)
          return killed, flying_at_kill
        end

        -- 1: killed while uploads are in flight (and merges of the first ones run)
        local killed, flying = round(40, 8)
        assert.is_true(killed)
        assert.is_true(flying >= 1, "every upload was answered before the kill")
        local failed = 0
        for i = 1, next_n do
          if not created[i] then
            failed = failed + 1
            assert.is_true(statuses[i] >= 500, ("upload %d got %s, not a 5xx"):format(i, statuses[i]))
          end
        end
        assert.is_true(failed >= 1, "no upload was refused while Redis was down")
        async.sleep(1000)
        start_redis()
        -- 2: killed right after the last of a burst was acknowledged, while its merges run
        killed = round(10, 10)
        assert.is_true(killed)
        async.sleep(500)
        start_redis()

        local store = open(raw)
        serverproc.wait_until("the worker retried and merged every staged upload", function()
          return #keys(store, "app/staging/") == 0 and #keys(store, "app/default.pgo") == 1
        end, 180000)
        local base = httpc.request(s.port, "GET", "/api/profile/app")
        assert.equals(200, base.status)
        local counts = profiles.counts(base.body)
        local acknowledged = 0
        for i = 1, next_n do
          if created[i] then
            acknowledged = acknowledged + 1
            assert.equals(1, counts[i], ("upload %d got a 201 and is counted %s times"):format(i, tostring(counts[i])))
          else
            assert.is_true(counts[i] == nil or counts[i] == 1, ("upload %d counted %s times"):format(i,
              tostring(counts[i])))
          end
        end
        assert.is_true(acknowledged >= 18)
        assert.same({}, keys(store, "app/rejected/"))
        store:close()
        assert.equals(0, (serverproc.stop(s)))
        -- the merges Redis broke off were handed back and done again
        assert.matches("it will be retried", table.concat(s.proc.err), 1, true)
      end, 600000)
    end)
  end)
end)
