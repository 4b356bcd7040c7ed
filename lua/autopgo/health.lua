-- Health of a process's dependencies (blob store, event buses, ...): checks registered by name,
-- run concurrently with a time limit, and served as the original's body
-- {"status": "healthy"|"unhealthy", "dependencies": [{"name", "status", "message"}]} with 200/503.
local async = require "autopgo.async"
local fail = require "autopgo.fail"
local json = require "autopgo.json"
local log = require "autopgo.log"
local units = require "autopgo.units"
local uv = require "luv"

local M = {}

M.timeout_ms = 5000

local Registry = {}
Registry.__index = Registry

--- Adds a check: fn() returns true when healthy, or nil, err (it may yield). A check of the same
-- name replaces the earlier one.
function Registry:register(name, fn)
  assert(type(name) == "string" and type(fn) == "function", "health.register(name, fn)")
  for _, c in ipairs(self.checks) do
    if c.name == name then
      c.fn = fn
      return
    end
  end
  self.checks[#self.checks + 1] = { name = name, fn = fn }
end

function Registry:unregister(name)
  for i, c in ipairs(self.checks) do
    if c.name == name then
      table.remove(self.checks, i)
      return
    end
  end
end

-- Runs one check with the time limit; returns nil when healthy, else the message.
local function run_check(fn, timeout_ms)
  local done = async.event()
  async.spawn_with(function(ok, res, err)
    if not ok then
      done.set(false, "check failed: " .. tostring(res))
    elseif res then
      done.set(true)
    else
      done.set(false, tostring(err or "unhealthy"))
    end
  end, fn)
  local ok, msg = done.wait(timeout_ms)
  if ok == nil then return ("no answer within %d ms"):format(timeout_ms) end
  if ok then return nil end
  return msg
end

--- Runs every check; returns healthy (boolean) and the dependency list.
function Registry:check()
  local fns = {}
  for i, c in ipairs(self.checks) do
    fns[i] = function() return run_check(c.fn, self.timeout_ms or M.timeout_ms) end
  end
  local results = async.all(fns)
  local deps, healthy = {}, true
  for i, c in ipairs(self.checks) do
    local msg = results[i][2]
    if msg then healthy = false end
    deps[i] = { name = c.name, status = msg and "unhealthy" or "healthy", message = msg }
  end
  return healthy, deps
end

--- A check that fails when the file system holding `dir` has less than `min_bytes` free for this
-- process (statfs's f_bavail): a full disk would otherwise show only as failed uploads and merges.
M.default_min_free = 512 * 1024 * 1024
function M.free_space(dir, min_bytes)
  min_bytes = min_bytes or M.default_min_free
  return function()
    local st, err = async.await(uv.fs_statfs, dir)
    if not st then
      log.warn("cannot read the free space of the data directory", "dir", dir, "error", tostring(err))
      return fail.new("UNAVAILABLE", "cannot read the free space of the data directory (details in the server log)")
    end
    local free = st.bavail * st.bsize
    if free < min_bytes then
      return fail.new("UNAVAILABLE", "only %s free on the disk of the data directory, below the minimum of %s "
        .. "(--min-free-space): uploads and merges will fail when it is full", units.format_size(free),
        units.format_size(min_bytes))
    end
    return true
  end
end

--- The JSON body and status code for the current health.
function Registry:report()
  local healthy, deps = self:check()
  local list = nil -- Go writes a nil slice as null when there is nothing to check
  if #deps > 0 then
    list = json.array {}
    for i, d in ipairs(deps) do
      list[i] = json.object("name", d.name, "status", d.status, "message", d.message or json.omit)
    end
  end
  local body = json.encode_line(json.object("status", healthy and "healthy" or "unhealthy",
    "dependencies", list))
  return healthy and 200 or 503, body
end

--- An httpd handler for /api/health and /api/ready.
function Registry:handler()
  return function(_, res)
    local status, body = self:report()
    res:status(status):header("content-type", "application/json")
    return res:send(body)
  end
end

--- A new registry with no checks (the module's functions use the process-wide one).
function M.registry()
  return setmetatable({ checks = {} }, Registry)
end

local default = M.registry()
M.default = default

function M.register(...) return default:register(...) end
function M.unregister(...) return default:unregister(...) end
function M.check() return default:check() end
function M.report() return default:report() end
function M.handler() return default:handler() end

return M
