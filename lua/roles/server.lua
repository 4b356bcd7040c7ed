-- `autopgo server` (same as `autopgo run roles/server.lua`): the HTTP API for uploads, downloads,
-- listing and deletion, plus /api/health, /api/ready and /metrics. Without URLs it is the whole
-- pipeline in one process: profiles on the local disk (--data-dir), the in-process bus and the
-- worker running here too; each default applies on its own. Editable: copy lua/ and run with
-- --lua-path to change it without rebuilding.
local opts = require("autopgo.cli").parse("server", arg)
local cli = require "autopgo.cli"
local daemon = require "autopgo.daemon"
local httpd = require "autopgo.httpd"
local health = require "autopgo.health"
local metrics = require "autopgo.metrics"
local api = require "autopgo.api"
local policy = require "autopgo.policy"
local worker = require "autopgo.worker"
local log = require "autopgo.log"

-- Events that stay in this process need a consumer in this process: the embedded worker.
local writer_url = daemon.writer_url(opts)
local pol
if daemon.is_in_process(writer_url) then
  local err
  pol, err = policy.new(opts)
  if not pol then cli.exit(1, "autopgo server: " .. err) end
end
local store = daemon.open_store(opts)
local writer = daemon.open_writer(writer_url, opts)
local embedded, reader
if pol then
  reader = daemon.open_reader(daemon.reader_url(opts), opts)
  embedded = worker.new { store = store, writer = writer, reader = reader, policy = pol, recover = true }
end
daemon.register_health(store, writer, reader)

local router = httpd.router()
api.new({ store = store, writer = writer, max_upload_size = opts.max_upload_size, policy = opts.policy }):routes(router)
router:add("GET", "/api/health", health.handler())
router:add("GET", "/api/ready", health.handler())
router:add("GET", "/metrics", metrics.handler())

local srv, err = httpd.listen { port = opts.port, max_body = opts.max_upload_size, handler = router, name = "server" }
if not srv then cli.exit(1, "autopgo server: " .. err) end
-- Bodies over --max-upload-size are refused with 413 by the HTTP server before the API sees
-- them; its count joins the uploads the API counted itself.
local uploads, too_large = metrics.counter("autopgo_uploads_total"), 0
metrics.collect(function()
  local n = srv:stats().too_large
  if n > too_large then uploads:inc({ status = "413" }, n - too_large) end
  too_large = n
end)
if embedded then embedded:start() end
log.info("server listening", "port", srv.port, "blob_store", store.name, "event_writer", writer.name,
  "worker", embedded and "in this process" or "separate")

local stop = daemon.stop_signals()
local signal = stop.wait()
log.info("stopping: finishing requests in flight", "signal", signal)
srv:shutdown()
if embedded then
  log.info("stopping: finishing the merge in progress")
  embedded:stop()
end
writer:close()
store:close()
stop.close()
log.info("stopped")
return 0
