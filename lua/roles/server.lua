-- `autopgo server` (same as `autopgo run roles/server.lua`): the HTTP API for uploads, downloads,
-- listing and deletion, plus /api/health, /api/ready and /metrics. Without URLs it is the whole
-- pipeline in one process: profiles on the local disk (--data-dir), the in-process bus and the
-- worker running here too; each default applies on its own. Editable: copy lua/ and run with
-- --lua-path to change it without rebuilding.
local opts = require("autopgo.cli").parse("server", arg)
local cli = require "autopgo.cli"
local daemon = require "autopgo.daemon"
local fail = require "autopgo.fail"
local httpd = require "autopgo.httpd"
local health = require "autopgo.health"
local metrics = require "autopgo.metrics"
local api = require "autopgo.api"
local policy = require "autopgo.policy"
local history = require "autopgo.history"
local worker = require "autopgo.worker"
local log = require "autopgo.log"

-- v, or exits with status 1 and the failure's message when a dependency cannot be opened.
local function must(v, err)
  if v == nil then cli.exit(1, "autopgo: " .. fail.message(err)) end
  return v
end

-- Events that stay in this process need a consumer in this process: the embedded worker.
-- The policy also prunes the windows the API merges from the history.
local writer_url = daemon.writer_url(opts)
local pol, perr = policy.new(opts)
if not pol then cli.exit(1, "autopgo server: " .. perr) end
local store = must(daemon.open_store(opts))
local hist, herr = history.from_options(store, opts)
if herr then cli.exit(1, "autopgo server: " .. fail.message(herr)) end
if not hist and pol:needs_history() then
  cli.exit(2, "autopgo server: a policy with window or half_life needs history (--segment is 0)")
end
local writer = must(daemon.open_writer(writer_url, opts))
local embedded, reader
if daemon.is_in_process(writer_url) then
  reader = must(daemon.open_reader(daemon.reader_url(opts), opts))
  embedded = worker.new { store = store, writer = writer, reader = reader, policy = pol, recover = true,
    history = hist }
end
daemon.register_health(store, writer, reader)
if store.root then health.register("disk", health.free_space(store.root, opts.min_free_space)) end

local router = httpd.router()
api.new({ store = store, writer = writer, max_upload_size = opts.max_upload_size, history = hist,
  policy = pol }):routes(router)
router:add("GET", "/api/health", health.handler())
router:add("GET", "/api/ready", health.handler())
router:add("GET", "/metrics", metrics.handler())

-- Bodies over 32 MiB wait in a temporary file under the data directory (the file store's own
-- .autopgo/tmp), never in /tmp: bounded by --max-upload-size like any upload.
local spool_dir = (store.root or opts.data_dir or "./autopgo-data") .. "/.autopgo/tmp"
local srv, err = httpd.listen { host = opts.host, port = opts.port, max_body = opts.max_upload_size,
  handler = router, name = "server", spool_dir = spool_dir }
if not srv then cli.listen_failed("server", opts.host, opts.port, err) end
-- Bodies over --max-upload-size are refused with 413 by the HTTP server before the API sees
-- them; its count joins the uploads the API counted itself.
local uploads, too_large = metrics.counter("autopgo_uploads_total"), 0
metrics.collect(function()
  local n = srv:stats().too_large
  if n > too_large then uploads:inc({ status = "413" }, n - too_large) end
  too_large = n
end)
if embedded then embedded:start() end
log.info("server listening", "host", opts.host, "port", srv.port, "blob_store", store.name, "event_writer", writer.name,
  "worker", embedded and "in this process" or "separate")

local stop = daemon.stop_signals()
local signal = stop.wait()
log.info("stopping: finishing requests in flight", "signal", signal)
-- The worker starts no new merge pass from now on: what is staged stays for the next start.
if embedded then embedded:request_stop() end
srv:shutdown()
if embedded then
  log.info("stopping: finishing the merge pass in progress")
  embedded:stop()
end
writer:close()
store:close()
stop.close()
log.info("stopped")
return 0
