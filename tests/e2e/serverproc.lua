-- Starts the real `autopgo server` for end-to-end specs on a free port in its own directory, waits
-- until it answers, and stops it (SIGTERM, or SIGKILL when a spec wants a crash).
local support = require "tests.lua.support"
local httpc = require "tests.lua.httpc"
local async = require "autopgo.async"

local M = {}

local running = {} -- servers started and not known to have exited

--- Starts a server in dir (its ./autopgo-data is the embedded default's store) with extra args.
-- Returns { proc, port, dir, url = "http://127.0.0.1:port" }.
function M.start(dir, args, env)
  return M.start_role("server", dir, args, env)
end

--- The same for another role that serves /api/ready ("worker").
function M.start_role(role, dir, args, env)
  local port = support.free_port()
  local argv = { role, "--port", tostring(port) }
  for _, a in ipairs(args or {}) do argv[#argv + 1] = a end
  local proc = support.spawn(support.bin, argv, { cwd = dir, env = env })
  local s = { proc = proc, port = port, dir = dir, data = dir .. "/autopgo-data", url = "http://127.0.0.1:" .. port }
  running[s] = true
  for _ = 1, 400 do
    local ok, res = pcall(httpc.request, port, "GET", "/api/ready")
    if ok and res and res.status == 200 then return s end
    if proc.code then break end
    async.sleep(25)
  end
  proc:kill("sigkill")
  local _, _, out, err = proc:wait(5000)
  error("the server did not come up: " .. out .. err)
end

--- Kills (SIGKILL) every server a spec left running, e.g. after a failed assertion. For after_each.
function M.cleanup()
  for s in pairs(running) do
    if s.proc.code == nil then
      s.proc:kill("sigkill")
      pcall(s.proc.wait, s.proc, 10000)
    end
    running[s] = nil
  end
end

--- SIGTERM and wait; returns the exit code and stderr.
function M.stop(s)
  s.proc:kill("sigterm")
  local code, _, _, err = s.proc:wait(30000)
  return code, err
end

--- SIGKILL and wait.
function M.kill(s)
  s.proc:kill("sigkill")
  s.proc:wait(10000)
end

--- Keys (relative to the data directory) of the files under data/prefix.
function M.files(s, prefix)
  local out = {}
  local p = io.popen(("cd '%s' 2>/dev/null && find %s -type f 2>/dev/null | sort"):format(s.data, prefix))
  for line in p:lines() do out[#out + 1] = line end
  p:close()
  return out
end

--- Waits until pred() holds (polling), or raises naming what.
function M.wait_until(what, pred, timeout_ms)
  local uv = require "luv"
  local deadline = uv.now() + (timeout_ms or 30000)
  while not pred() do
    if uv.now() > deadline then error("timed out waiting until " .. what, 2) end
    async.sleep(20)
  end
end

return M
