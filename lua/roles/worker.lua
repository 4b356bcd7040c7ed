-- `autopgo worker` (same as `autopgo run roles/worker.lua`): merges uploaded profiles into one base
-- profile per application, reading events from --event-reader-url and publishing profile.merged to
-- --event-writer-url; serves /api/health, /api/ready and /metrics on --port. Editable: copy lua/ and
-- run with --lua-path to change it (or the merge policy) without rebuilding.
local opts = require("autopgo.cli").parse("worker", arg)
local cli = require "autopgo.cli"
local daemon = require "autopgo.daemon"
local fail = require "autopgo.fail"
local auth = require "autopgo.auth"
local httpd = require "autopgo.httpd"
local health = require "autopgo.health"
local metrics = require "autopgo.metrics"
local policy = require "autopgo.policy"
local history = require "autopgo.history"
local worker = require "autopgo.worker"
local log = require "autopgo.log"

local must = cli.must

local reader_url = daemon.reader_url(opts)
if not reader_url then
  cli.exit(2, "autopgo worker: --event-reader-url is required when --event-writer-url is not in-process"
    .. " (see autopgo worker --help)")
end
if daemon.is_in_process(reader_url) then
  log.warn("the worker reads the in-process bus: only uploads staged in its store are merged (at start);"
    .. " give it --event-reader-url to follow a server")
end
local pol, perr = policy.new(opts)
if not pol then cli.exit(1, "autopgo worker: " .. perr) end
local store = must(daemon.open_store(opts))
local writer = must(daemon.open_writer(daemon.writer_url(opts), opts))
local reader = must(daemon.open_reader(reader_url, opts))
daemon.register_health(store, writer, reader)
if store.root then health.register("disk", health.free_space(store.root, opts.min_free_space)) end

local hist, herr = history.from_options(store, opts)
if herr then cli.exit(1, "autopgo worker: " .. fail.message(herr)) end
if not hist and pol:needs_history() then
  cli.exit(2, "autopgo worker: a policy with window or half_life needs history (--segment is 0)")
end
local w = worker.new { store = store, writer = writer, reader = reader, policy = pol,
  recover = daemon.is_in_process(reader_url), history = hist }

-- This port serves no API, only probes and /metrics, which --metrics-scope may put behind a token.
local guard = must(auth.guard { auth_file = opts.auth_file, host = opts.host, allowed_origins = opts.allowed_origins,
  name = "worker" })
local router = httpd.router { guard = guard }
router:add("GET", "/api/health", health.handler(), auth.OPEN)
router:add("GET", "/api/ready", health.handler(), auth.OPEN)
router:add("GET", "/metrics", metrics.handler(), opts.metrics_scope)
local srv, err = httpd.listen(daemon.listen_options(opts, { handler = router, name = "worker" }))
if not srv then cli.listen_failed("worker", opts.host, opts.port, err) end
-- watched only once the port is open: a live signal handle would keep a failed start from exiting
local reload = daemon.on_reload("auth file", function() guard:reload() end)
local tls_reload = daemon.reload_tls_on_sighup(srv)
w:start()
log.info("worker running", "host", opts.host, "port", srv.port, "tls", srv.tls, "blob_store", store.name,
  "event_reader", reader.name, "event_writer", writer.name)

local stop = daemon.stop_signals()
local signal = stop.wait()
log.info("stopping: finishing the merge pass in progress (what is staged stays for the next start)", "signal", signal)
w:stop()
tls_reload.close()
srv:shutdown()
writer:close()
store:close()
stop.close()
reload.close()
log.info("stopped")
return 0
