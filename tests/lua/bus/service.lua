-- Test helper: starts and stops the bus peers of tests/services/*.sh (each on loopback, by PID)
-- and exports what they print (e.g. KAFKA_BROKERS=...) into this process's environment, so the
-- bus modules and child processes find them the way operators configure them.
local uv = require "luv"
local support = require "tests.lua.support"

local M = {}

--- Starts service `name` with extra script arguments; returns { dir, env = {K = V}, name }
-- or raises with the script's output.
function M.start(name, args)
  local dir = support.tmpdir()
  local cmd = ("%s/tests/services/%s.sh start %q"):format(support.root, name, dir)
  for _, a in ipairs(args or {}) do cmd = cmd .. (" %q"):format(a) end
  local p = assert(io.popen(cmd .. " 2>&1"))
  local out = p:read("a")
  local ok = p:close()
  if not ok then
    M.stop { name = name, dir = dir }
    error(("service %s did not start: %s"):format(name, out), 2)
  end
  local env = {}
  for k, v in out:gmatch("([%u_][%u%d_]*)=([^\n]*)") do
    env[k] = v
    uv.os_setenv(k, v)
  end
  return { name = name, dir = dir, env = env }
end

--- Stops a service started by M.start and removes its directory.
function M.stop(svc)
  if not svc then return end
  os.execute(("%s/tests/services/%s.sh stop %q"):format(support.root, svc.name, svc.dir))
  for k in pairs(svc.env or {}) do uv.os_unsetenv(k) end
  support.rm_rf(svc.dir)
end

local counter = 0
--- A name no other test in this run uses ("prefix-<pid>-<n>").
function M.unique(prefix)
  counter = counter + 1
  return ("%s-%d-%d"):format(prefix, uv.os_getpid(), counter)
end

return M
