-- `autopgo server` (same as `autopgo run roles/server.lua`): the HTTP API for uploads, downloads,
-- listing and deletion, plus /api/health, /api/ready, /metrics and the web view under /ui/
-- (--ui=false leaves it out); with --auth-file only for bearer tokens whose grants allow it
-- (SIGHUP reloads the file). Without URLs it is the whole pipeline in one process: profiles on
-- the local disk (--data-dir), the in-process bus and the worker running here too; each default
-- applies on its own. Editable: copy lua/ and run with
-- --lua-path to change it without rebuilding.
local opts = require("autopgo.cli").parse("server", arg)
local cli = require "autopgo.cli"
local daemon = require "autopgo.daemon"
local fail = require "autopgo.fail"
local httpd = require "autopgo.httpd"
local health = require "autopgo.health"
local metrics = require "autopgo.metrics"
local api = require "autopgo.api"
local auth = require "autopgo.auth"
local policy = require "autopgo.policy"
local history = require "autopgo.history"
local worker = require "autopgo.worker"
local log = require "autopgo.log"

local must = cli.must

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

-- Who may use the API: tokens from --auth-file (reloaded on SIGHUP), the Origin and Host rules.
local guard = must(auth.guard { auth_file = opts.auth_file, host = opts.host, allowed_origins = opts.allowed_origins,
  name = "server" })
local router = httpd.router { guard = guard }
local the_api = api.new({ store = store, writer = writer, max_upload_size = opts.max_upload_size,
  max_decompressed = opts.max_decompressed, max_decompressing = opts.max_decompressing,
  max_validations = opts.max_validations, history = hist, policy = pol })
the_api:routes(router)
-- The web view's JSON; with the page on, a new version's views are computed before its first
-- visitor (after each merge of the embedded worker, or when a download meets a new version).
local views = require("autopgo.view_api").new(the_api, { warm = opts.ui ~= false })
views:routes(router)
if embedded and opts.ui ~= false then embedded.pass.committed = function(app) views:warm(app) end end
if opts.ui ~= false then require("autopgo.ui").routes(router) end
router:add("GET", "/api/health", health.handler(), auth.OPEN)
router:add("GET", "/api/ready", health.handler(), auth.OPEN)
router:add("GET", "/metrics", metrics.handler(), opts.metrics_scope)

-- Bodies over 32 MiB wait in a temporary file under the data directory (the file store's own
-- .autopgo/tmp), never in /tmp: bounded by --max-upload-size like any upload.
local spool_dir = (store.root or opts.data_dir or "./autopgo-data") .. "/.autopgo/tmp"
local srv, err = httpd.listen(daemon.listen_options(opts, { max_body = opts.max_upload_size,
  max_buffered = opts.max_buffered_uploads, handler = router, name = "server", spool_dir = spool_dir }))
if not srv then cli.listen_failed("server", opts.host, opts.port, err) end
-- Bodies over --max-upload-size are refused with 413 by the HTTP server before the API sees
-- them; its count joins the uploads the API counted itself.
-- So are those it refused with 503 past --max-buffered-uploads.
local uploads, too_large, over_budget = metrics.counter("autopgo_uploads_total"), 0, 0
local buffered = metrics.gauge("autopgo_http_buffered_bytes",
  "Request bytes the server holds or has admitted now (bounded by --max-buffered-uploads).")
local connections = metrics.gauge("autopgo_http_connections", "Open HTTP connections (bounded by --max-connections).")
metrics.collect(function()
  local st = srv:stats()
  buffered:set(nil, st.buffered)
  connections:set(nil, st.connections)
  if st.too_large > too_large then uploads:inc({ status = "413" }, st.too_large - too_large) end
  if st.over_budget > over_budget then uploads:inc({ status = "503" }, st.over_budget - over_budget) end
  too_large, over_budget = st.too_large, st.over_budget
end)
local tls_reload = daemon.reload_tls_on_sighup(srv)
if embedded then embedded:start() end
guard:announce()
local reload = daemon.on_reload("auth file", function() guard:reload() end)
log.info("server listening", "host", opts.host, "port", srv.port, "tls", srv.tls, "blob_store", store.name,
  "event_writer", writer.name,
  "worker", embedded and "in this process" or "separate")

local stop = daemon.stop_signals()
local signal = stop.wait()
log.info("stopping: finishing requests in flight", "signal", signal)
-- The worker starts no new merge pass from now on: what is staged stays for the next start.
if embedded then embedded:request_stop() end
tls_reload.close()
srv:shutdown()
if embedded then
  log.info("stopping: finishing the merge pass in progress")
  embedded:stop()
end
writer:close()
store:close()
stop.close()
reload.close()
log.info("stopped")
return 0
