-- Spec helper: the real servers behind the blob store specs (Ceph RGW, Azurite, the GCS
-- emulator), started once per busted run through tests/services/<name>.sh and shared by every
-- spec that needs them (the scripts are idempotent and keep their state on disk, so specs in
-- separate insulated files find the running instance). Each is stopped, by PID, when the busted
-- run ends. A service that cannot start fails the spec that asked for it: never a skip.
local support = require "tests.lua.support"

local M = {}

local function script(name) return support.root .. "/tests/services/" .. name .. ".sh" end

local function run(cmd)
  local p = assert(io.popen(cmd .. " 2>&1"))
  local out = p:read("a")
  local ok, _, status = p:close()
  return ok and status == 0, out
end

local registered = {}

local function stop_at_end(name)
  if registered[name] then return end
  registered[name] = true
  local ok, busted = pcall(require, "busted")
  if ok and type(busted) == "table" and busted.subscribe then
    busted.subscribe({ "suite", "end" }, function()
      run(("%q stop"):format(script(name)))
      return nil, true
    end)
  end
end

--- Starts (or finds) service `name` and returns its environment as a table
-- (e.g. AUTOPGO_TEST_S3_ENDPOINT). Raises with the script's output when it cannot start.
function M.start(name)
  local ok, out = run(("%q start"):format(script(name)))
  if not ok then error(("the %s service did not start:\n%s"):format(name, out), 2) end
  stop_at_end(name)
  local env = {}
  for k, v in out:gmatch("([%u_][%u%d_]*)=([^\n]*)") do env[k] = v end
  return env
end

--- Stops service `name` now.
function M.stop(name)
  run(("%q stop"):format(script(name)))
end

return M
