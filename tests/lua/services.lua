-- Spec helper: the real servers and emulators the specs run against (tests/services/<name>.sh),
-- each started on first use and then shared by every spec of the test run.
--
-- Under scripts/test.sh, AUTOPGO_SERVICES_DIR names the run's directory: a service starts once
-- for the whole run (lua and e2e suites alike) and scripts/test.sh stops everything in it at the
-- end. Busted run on its own makes a directory for itself and stops what it started when the
-- run ends (or, should the process die first, a watcher does). Specs that need a fresh state
-- take names of their own (M.unique) for buckets, topics, queues and subjects.
-- A service that cannot start fails the spec that asked for it: never a skip.
local uv = require "luv"
local support = require "tests.lua.support"

local M = {}

local dir_of_scripts = support.root .. "/tests/services/"

local function script(name)
  assert(name:match("^[%w_-]+$"), "bad service name")
  return dir_of_scripts .. name .. ".sh"
end

-- Runs a shell command; returns its exit code, stdout and stderr.
local function sh(cmd)
  local err_file = os.tmpname()
  local p = assert(io.popen(("%s 2>%q"):format(cmd, err_file)))
  local out = p:read("a")
  local _, _, code = p:close()
  local err = support.read_file(err_file) or ""
  os.remove(err_file)
  return code, out, err
end

-- This busted run's own directory: made on first use, kept in the environment (so spec files
-- loaded later, each insulated, find it) and cleaned up when busted ends.
local function own_dir()
  local dir = support.tmpdir()
  uv.os_setenv("AUTOPGO_SERVICES_DIR", dir)
  local stop_all = dir_of_scripts .. "stop-all.sh"
  -- the watcher leads its own process group, so one kill ends it and its sleep
  local _, out = sh(("setsid %q --after %d %q </dev/null >/dev/null 2>&1 & echo $!"):format(stop_all,
    uv.os_getpid(), dir))
  local watcher = tonumber(out:match("%d+"))
  local ok, busted = pcall(require, "busted")
  if ok and type(busted) == "table" and busted.subscribe then
    busted.subscribe({ "suite", "end" }, function()
      sh(("%q %q"):format(stop_all, dir))
      if watcher then uv.kill(-watcher, "sigterm") end
      support.rm_rf(dir)
      uv.os_unsetenv("AUTOPGO_SERVICES_DIR")
      return nil, true
    end)
  end
  return dir
end

local function run_dir()
  local dir = os.getenv("AUTOPGO_SERVICES_DIR")
  if dir and dir ~= "" then return dir end
  return own_dir()
end

local started = {} -- name -> env, for this spec file

--- The running service `name` (started now if it is not running yet): a table of what its script
-- prints, e.g. services.get("rgw").AUTOPGO_TEST_S3_ENDPOINT or services.get("kafka").KAFKA_BROKERS.
-- Raises with the script's output when it cannot start.
function M.get(name)
  if not started[name] then
    run_dir()
    local code, out, err = sh(("%q start"):format(script(name)))
    if code ~= 0 then error(("the %s service did not start (exit %s):\n%s%s"):format(name, code, out, err), 2) end
    local env = {}
    for line in out:gmatch("[^\n]+") do
      local k, v = line:match("^([%u_][%u%d_]*)=(.*)$")
      if k then env[k] = v end
    end
    started[name] = env
  end
  local copy = {}
  for k, v in pairs(started[name]) do copy[k] = v end
  return copy
end

--- Why service `name` cannot run on this machine, for the one service the suite may skip (Google's
-- Pub/Sub emulator, which apt and npm cannot install), or nil when it can run. Any other missing
-- prerequisite raises: a missing service is a failure.
function M.unavailable(name)
  local code, out, err = sh(("%q check"):format(script(name)))
  if code == 0 then return nil end
  if code == 3 then return (err:gsub("^[%w_-]+: ", ""):gsub("%s+$", "")) end
  error(("the %s service cannot run here (exit %s):\n%s%s"):format(name, code, out, err), 2)
end

--- Exports env (e.g. from M.get) into this process's environment, for modules that read
-- KAFKA_BROKERS and the like the way operators configure them. Returns a function that puts the
-- previous values back.
function M.setenv(env)
  local saved = {}
  for k, v in pairs(env) do
    saved[k] = os.getenv(k) or false
    uv.os_setenv(k, v)
  end
  return function()
    for k, v in pairs(saved) do
      if v then uv.os_setenv(k, v) else uv.os_unsetenv(k) end
    end
  end
end

local salt = ("%x%06x"):format(uv.os_getpid(), uv.hrtime() % 0x1000000)
local counter = 0

--- A name no other spec uses, in this run or another one sharing the service: "prefix-<salt>-<n>"
-- (letters, digits and "-": valid as a bucket, topic, queue, group or subject token).
function M.unique(prefix)
  counter = counter + 1
  return ("%s-%s-%d"):format(prefix, salt, counter)
end

return M
