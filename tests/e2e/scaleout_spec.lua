-- Scale-out end to end: 2 servers and 3 workers as separate processes sharing one store and one
-- bus (the Kafka mock cluster, then NATS JetStream), 200 concurrent uploads across 5 apps; each
-- app's merged profile must equal the Go reference merge of exactly its uploads. Then the same
-- with one worker killed (SIGKILL) half-way: its unacknowledged events go to the others and no
-- upload is lost or counted twice.
local support = require "tests.lua.support"
local httpc = require "tests.lua.httpc"
local service = require "tests.lua.bus.service"
local cluster = require "tests.e2e.scaleout_support"

local run = support.run

local UPLOADS, APPS, CLIENTS = 200, 5, 32

local buses = {
  {
    name = "Kafka (mock cluster)",
    service = "kafka", args = { "autopgo-events:6" }, scheme = "kafka",
    writer = "kafka://autopgo-events",
    -- a dead member's partitions move on after 6 s instead of 45
    reader = "kafka://workers?topic=autopgo-events&session.timeout.ms=6000&heartbeat.interval.ms=500",
  },
  {
    name = "NATS JetStream",
    service = "nats", args = {}, scheme = "nats",
    writer = "nats://autopgo.events?jetstream=true",
    -- what a dead worker held is redelivered after 5 s
    reader = "nats://autopgo.events?jetstream=true&queue=workers&ack_wait=5s",
  },
}

for _, b in ipairs(buses) do
  describe("scale-out on " .. b.name, function()
    local dir, svc

    before_each(function()
      dir = support.tmpdir()
      svc = service.start(b.service, b.args)
    end)

    after_each(function()
      run(cluster.cleanup, 30000)
      service.stop(svc)
      support.rm_rf(dir)
    end)

    local function scenario(kill_half_way)
      local store = "file://" .. dir .. "/store"
      local workers, servers = {}, {}
      for i = 1, 3 do
        workers[i] = cluster.start("worker", { "--blob-store-url", store, "--event-reader-url", b.reader,
          "--event-writer-url", b.writer }, dir)
      end
      for i = 1, 2 do
        servers[i] = cluster.start("server", { "--blob-store-url", store, "--event-writer-url", b.writer }, dir)
      end
      local killed
      local by_app = cluster.upload_all(servers, UPLOADS, APPS, CLIENTS, function(n)
        if kill_half_way and n == UPLOADS // 2 and not killed then
          killed = workers[1]
          cluster.kill(killed)
        end
      end, dir)
      if kill_half_way then assert(killed, "no worker was killed") end
      cluster.wait_merged(dir .. "/store", 300000)
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
