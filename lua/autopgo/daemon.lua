-- What every long-running role needs: the blob store and event buses named by its options (with
-- the embedded defaults: a file:// store under --data-dir and the in-process mem:// bus), health
-- checks for them, a graceful stop on SIGTERM/SIGINT and reloads on SIGHUP.
local uv = require "luv"
local async = require "autopgo.async"
local blob = require "autopgo.blob"
local bus = require "autopgo.bus"
local health = require "autopgo.health"
local fail = require "autopgo.fail"
local log = require "autopgo.log"

local M = {}

-- The in-process topic the embedded server and worker share.
M.embedded_bus = "mem://autopgo"

local function absolute(path)
  if path:sub(1, 1) == "/" then return path end
  return (uv.cwd() .. "/" .. path):gsub("/%./", "/"):gsub("/%.$", "")
end

-- nil, "CODE: cannot open the <what> <url>: <why>", CODE: the role says it and exits.
local function cannot_open(what, raw, err, code)
  code = code or fail.code(err)
  if not fail.codes[code] then code = "UNAVAILABLE" end
  return fail.new(code, "cannot open the %s %s: %s", what, raw, err)
end

--- The blob store of --blob-store-url, or the file store under --data-dir; or a failure saying
-- which store could not be opened and why.
function M.open_store(opts)
  local raw = opts.blob_store_url
  if raw == nil or raw == "" then
    local dir = absolute(opts.data_dir or "./autopgo-data")
    raw = "file://" .. dir
    log.info("storing profiles on the local disk", "dir", dir)
  end
  local store, err, code = blob.open(raw, { insecure = opts.insecure })
  if not store then return cannot_open("blob store", raw, err, code) end
  return store
end

--- The URL of the event writer: --event-writer-url or the in-process bus.
function M.writer_url(opts)
  local raw = opts.event_writer_url
  if raw == nil or raw == "" then return M.embedded_bus end
  return raw
end

--- The URL of the event reader: --event-reader-url, else the writer's when that is in-process.
function M.reader_url(opts)
  local raw = opts.event_reader_url
  if raw ~= nil and raw ~= "" then return raw end
  local w = M.writer_url(opts)
  if w:match("^mem:") then return w end
  return nil
end

function M.is_in_process(raw)
  return raw ~= nil and raw:match("^mem:") ~= nil
end

--- The event writer of `raw`, or a failure saying which and why.
function M.open_writer(raw, opts)
  local w, err, code = bus.writer(raw, { insecure = opts and opts.insecure })
  if not w then return cannot_open("event writer", raw, err, code) end
  return w
end

--- The event reader of `raw`, or a failure saying which and why.
function M.open_reader(raw, opts)
  local r, err, code = bus.reader(raw, { insecure = opts and opts.insecure })
  if not r then return cannot_open("event reader", raw, err, code) end
  return r
end

--- Registers the health checks under the original's dependency names: blob, event-writer, event-reader.
function M.register_health(store, writer, reader, registry)
  registry = registry or health.default
  if store then registry:register("blob", function() return store:health() end) end
  if writer then registry:register("event-writer", function() return writer:health() end) end
  if reader then registry:register("event-reader", function() return reader:health() end) end
end

--- Runs fn() in its own coroutine on every SIGHUP, for what a role reloads without a restart (the
-- auth file, certificates); listeners keep serving meanwhile, and each fn logs its own outcome.
-- Returns the watcher; watcher:close() stops it.
function M.on_reload(what, fn)
  local h = uv.new_signal()
  -- never what keeps the loop alive: a role that fails to start must still exit
  h:unref()
  h:start("sighup", function()
    async.spawn_with(function(ok, err, traceback)
      if not ok then log.error("reload failed", "what", what, "error", traceback or tostring(err)) end
    end, fn)
  end)
  return { close = function() if not h:is_closing() then h:close() end end }
end

--- Watches SIGTERM and SIGINT. stop.wait() suspends the calling coroutine until the first one and
-- returns its name; a second signal while the role is still stopping exits at once (status 1),
-- for a stop that hangs. stop.close() releases the signal handlers once the role is done.
function M.stop_signals()
  local first = async.event()
  local handles = {}
  local stop = {}
  for _, name in ipairs { "sigterm", "sigint" } do
    local h = uv.new_signal()
    h:start(name, function()
      if first.is_set then
        log.warn("second stop signal: exiting without finishing", "signal", name)
        os.exit(1)
      end
      first.set(name)
    end)
    handles[#handles + 1] = h
  end
  function stop.wait() return first.wait() end
  function stop.close()
    for _, h in ipairs(handles) do
      if not h:is_closing() then h:close() end
    end
  end
  return stop
end

return M
