-- The scraper role (`autopgo scrape`, same as `autopgo run roles/scraper.lua`): finds targets
-- with a discovery mode, profiles up to --sample-size of them every --frequency for --duration,
-- streams each profile to the server as it arrives, and serves /api/health, /api/ready and
-- /metrics on --port. SIGHUP reloads the discovery mode; SIGTERM or SIGINT aborts the scrapes
-- in flight (nothing half-sent is ever staged) and exits 0.
local opts, args = require("autopgo.cli").parse("scrape", arg)

local uv = require "luv"
local async = require "autopgo.async"
local auth = require "autopgo.auth"
local cli = require "autopgo.cli"
local log = require "autopgo.log"
local http = require "autopgo.http"
local httpd = require "autopgo.httpd"
local health = require "autopgo.health"
local metrics = require "autopgo.metrics"
local discovery = require "autopgo.discovery"
local scraper = require "autopgo.scraper"
local units = require "autopgo.units"
local fail = require "autopgo.fail"

-- A bad --mode or a missing argument is a usage error (2); a mode that fails to start is not (1).
local function give_up(err, code)
  cli.exit(code == "USAGE" and 2 or 1, "autopgo scrape: " .. fail.message(err))
end
local ctx = { app = opts.app, opts = opts, log = log, http = http, state = {} }
local source, err, code = discovery.open(opts.mode, args[1], ctx)
if not source then give_up(err, code) end
local ok, serr, scode = source:start()
if not ok then give_up(serr, scode) end
if serr then log.warn("target discovery failed; starting with no targets", "mode", source.name, "error", serr) end

local scrapes = metrics.counter("autopgo_scrapes_total",
  "Targets profiled, by result (success, empty, target_error, upload_error, canceled)", { "result" })
local bytes = metrics.counter("autopgo_scrape_bytes_total", "Profile bytes forwarded from targets to the server")
local rounds = metrics.counter("autopgo_scrape_rounds_total", "Scrape rounds started")
local known = metrics.gauge("autopgo_scrape_targets", "Targets known to the discovery mode at the last round")
local reloads = metrics.counter("autopgo_discovery_reloads_total", "Discovery reloads (SIGHUP), by result",
  { "result" })

local s = scraper.new(opts, source, {
  on_round = function(n)
    rounds:inc()
    known:set(nil, n)
  end,
  on_result = function(kind, _, n)
    scrapes:inc({ result = kind })
    bytes:inc(nil, n)
  end,
})

local stopping = false
if source.mode.health then
  health.register("discovery (" .. source.name .. ")", function() return source:health() end)
end

local ready = health.handler()
-- no tokens on this port (--token is what the scraper sends); the Host rule when bound to loopback
local router = httpd.router { guard = assert(auth.guard { host = opts.host, name = "scraper" }) }
router:add("GET", "/api/health", health.handler(), auth.OPEN)
router:add("GET", "/api/ready", function(req, res)
  if stopping then return res:error(503, "shutting down") end
  return ready(req, res)
end, auth.OPEN)
router:add("GET", "/metrics", metrics.handler(), auth.OPEN)
local server, lerr = httpd.listen { name = "scraper", host = opts.host, port = opts.port, handler = router }
if not server then cli.listen_failed("scrape", opts.host, opts.port, lerr) end

local signals = {}
local function on_signal(name, fn)
  local h = uv.new_signal()
  h:start(name, fn)
  signals[#signals + 1] = h
end
local function shutdown(name)
  if stopping then return end
  stopping = true
  log.info("shutting down", "signal", name)
  s:stop("the scraper is shutting down (" .. name .. ")")
end
on_signal("sigterm", function() shutdown("SIGTERM") end)
on_signal("sigint", function() shutdown("SIGINT") end)
on_signal("sighup", function()
  async.spawn(function()
    local rok, rerr = source:reload()
    if rok then
      reloads:inc({ result = "success" })
      log.info("discovery reloaded", "mode", source.name, "targets", #(source:list()))
    else
      reloads:inc({ result = "error" })
      log.error("discovery reload failed; keeping the previous targets", "mode", source.name, "error", rerr)
    end
  end)
end)

log.info("scraper started", "app", opts.app, "mode", source.name, "targets", #source.targets,
  "api_url", opts.api_url, "host", opts.host, "port", server.port, "sample_size", opts.sample_size,
  "frequency", units.format_duration(opts.frequency), "duration", units.format_duration(opts.duration))

s:run()

source:stop()
for _, h in ipairs(signals) do h:close() end
server:shutdown()
log.info("scraper stopped", "rounds", s.stats.rounds, "forwarded", s.stats.success)
return 0
