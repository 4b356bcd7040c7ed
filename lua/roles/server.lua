-- `autopgo server`: the HTTP API for uploads, downloads, listing and deletion, with /api/health,
-- /api/ready and /metrics. Without URLs it is the whole pipeline in one process: profiles on the
-- local disk, the in-process bus, and the worker running here too. Editable: copy lua/ and pass
-- --lua-path to change it without rebuilding.
local opts = require("autopgo.cli").parse("server", arg)
local daemon = require "autopgo.daemon"
local httpd = require "autopgo.httpd"
local health = require "autopgo.health"
local metrics = require "autopgo.metrics"
local log = require "autopgo.log"

local store = daemon.open_store(opts)
local writer_url = daemon.writer_url(opts)
local writer = daemon.open_writer(writer_url, opts)
daemon.register_health(store, writer)

local router = httpd.router()
router:add("GET", "/api/health", health.handler())
router:add("GET", "/api/ready", health.handler())
router:add("GET", "/metrics", metrics.handler())

local srv, err = httpd.listen { port = opts.port, max_body = opts.max_upload_size, handler = router, name = "server" }
if not srv then
  log.error("cannot start the server", "error", err)
  return 1
end
log.info("server listening", "port", srv.port, "blob_store", store.name, "event_writer", writer.name)

local signal = daemon.wait_for_stop()
log.info("stopping", "signal", signal)
srv:shutdown()
writer:close()
store:close()
log.info("stopped")
return 0
