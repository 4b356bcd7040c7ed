-- Scale-out end to end: 2 servers and 3 workers as separate processes sharing one S3 bucket (a
-- real Ceph RGW) and one bus (the Kafka mock cluster, then NATS JetStream), 200 concurrent uploads
-- across 5 apps; each app's merged profile must equal the Go reference merge of exactly its
-- uploads. Then the same with one worker killed (SIGKILL) half-way: its unacknowledged events go
-- to the others and no upload is lost or counted twice. Each scenario has a bucket, a topic (or
-- subject) and a consumer group of its own on the services the whole test run shares.
local support = require "tests.lua.support"
local httpc = require "tests.lua.httpc"
local url = require "autopgo.url"
local crypto = require("autopgo.core").crypto
local s3 = require "autopgo.blob.s3"
local services = require "tests.lua.services"
local cluster = require "tests.e2e.scaleout_support"

local run = support.run

local UPLOADS, APPS, CLIENTS = 200, 5, 32

-- Each bus: its service, and the writer and reader URLs of a scenario given a name of its own.
local buses = {
  {
    name = "Kafka (mock cluster)",
    service = "kafka", env = "KAFKA_BROKERS", scheme = "kafka",
    writer = function(id) return "kafka://events-" .. id end,
    -- a dead member's partitions move on after 6 s instead of 45
    reader = function(id)
      return ("kafka://workers-%s?topic=events-%s&session.timeout.ms=6000&heartbeat.interval.ms=500"):format(id, id)
    end,
  },
  {
    name = "NATS JetStream",
    service = "nats", env = "NATS_SERVER_URL", scheme = "nats",
    writer = function(id) return ("nats://autopgo.events.%s?jetstream=true"):format(id) end,
    -- what a dead worker held is redelivered after 5 s
    reader = function(id) return ("nats://autopgo.events.%s?jetstream=true&queue=workers&ack_wait=5s"):format(id) end,
  },
}

-- The S3 bucket every process of a scenario shares, on RGW (shared with the other S3 specs), and
-- the environment of those processes (the bus's, e.g. KAFKA_BROKERS, then S3 credentials).
local function bucket(bus_env)
  local rgw = services.get("rgw")
  local env = { bus_env, "AWS_ACCESS_KEY_ID=" .. rgw.AUTOPGO_TEST_S3_ACCESS_KEY,
    "AWS_SECRET_ACCESS_KEY=" .. rgw.AUTOPGO_TEST_S3_SECRET_KEY, "AWS_EC2_METADATA_DISABLED=true",
    "AWS_CONFIG_FILE=/nonexistent", "AWS_SHARED_CREDENTIALS_FILE=/nonexistent" }
  local store_url = ("s3://autopgo-scaleout-%s?endpoint=%s&use_path_style=true&region=us-east-1")
    :format(crypto.hex(crypto.random(4)), url.escape(rgw.AUTOPGO_TEST_S3_ENDPOINT))
  local function getenv(k)
    for _, kv in ipairs(env) do
      local name, v = kv:match("^([^=]+)=(.*)$")
      if name == k then return v end
    end
  end
  local store = assert(s3.open(assert(url.parse(store_url)), { getenv = getenv, home = "/nonexistent" }))
  assert(store:create_bucket())
  return store_url, store, env
end

for _, b in ipairs(buses) do
  describe("scale-out on " .. b.name .. " and S3 (Ceph RGW)", function()
    local dir, bus_env

    before_each(function()
      dir = support.tmpdir()
      bus_env = b.env .. "=" .. services.get(b.service)[b.env]
    end)

    after_each(function()
      run(cluster.cleanup, 30000)
      support.rm_rf(dir)
    end)

    local function scenario(kill_half_way)
      local store_url, store, env = bucket(bus_env)
      local id = services.unique("scaleout")
      local writer, reader = b.writer(id), b.reader(id)
      local workers, servers = {}, {}
      for i = 1, 3 do
        workers[i] = cluster.start("worker", { "--blob-store-url", store_url, "--event-reader-url", reader,
          "--event-writer-url", writer }, dir, env)
      end
      for i = 1, 2 do
        servers[i] = cluster.start("server", { "--blob-store-url", store_url, "--event-writer-url", writer },
          dir, env)
      end
      local killed
      local by_app = cluster.upload_all(servers, UPLOADS, APPS, CLIENTS, function(n)
        if kill_half_way and n == UPLOADS // 2 and not killed then
          killed = workers[1]
          cluster.kill(killed)
        end
      end, dir)
      if kill_half_way then assert(killed, "no worker was killed") end
      cluster.wait_merged(store, 300000)
      assert.equals(APPS, cluster.check(servers[1], by_app, dir))
      -- the survivors report a healthy bus, and count what they did (on Kafka a worker whose
      -- partitions hold none of the 5 apps may have had nothing to do)
      local acked = 0
      for _, w in ipairs(workers) do
        if w ~= killed then
          local h = httpc.request(w.port, "GET", "/api/health")
          assert.equals(200, h.status)
          assert.matches('"name":"event%-reader","status":"healthy"', h.body)
          local m = httpc.request(w.port, "GET", "/metrics")
          local n = m.body:match('autopgo_bus_messages_total{bus="' .. b.scheme .. '",outcome="acked"} (%d+)')
          acked = acked + (tonumber(n) or 0)
        end
      end
      assert.is_true(acked >= UPLOADS, "the workers acknowledged fewer events than were uploaded")
      for _, p in ipairs(servers) do assert.equals(0, (cluster.stop(p))) end
      for _, w in ipairs(workers) do
        if w ~= killed then assert.equals(0, (cluster.stop(w))) end
      end
    end

    it("merges 200 concurrent uploads of 5 apps exactly as the Go reference does", function()
      run(function() scenario(false) end, 900000)
    end)

    it("loses nothing and counts nothing twice when a worker is killed half-way", function()
      run(function() scenario(true) end, 900000)
    end)
  end)
end
