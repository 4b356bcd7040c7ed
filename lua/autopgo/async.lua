-- Coroutines on the libuv loop: spawn tasks, await callback-style calls, sleep, and wait for
-- several tasks. Failures follow the house convention: fail.new("CODE", "message").
local uv = require "luv"
local fail = require "autopgo.fail"
local log = require "autopgo.log"

local M = {}

local error_code = fail.code
M.error_code = error_code

-- Resumes `co`; a failure is logged with the coroutine's traceback and never propagates into
-- whatever callback resumed it. `on_done(ok, ...)`, if set for the coroutine, gets the outcome.
local finishers = setmetatable({}, { __mode = "k" })

function M.resume(co, ...)
  local res = table.pack(coroutine.resume(co, ...))
  if coroutine.status(co) == "dead" then
    local on_done = finishers[co]
    finishers[co] = nil
    if not res[1] then
      local err = res[2]
      if on_done then
        on_done(false, err, debug.traceback(co, tostring(err)))
      else
        log.error("task failed", "error", debug.traceback(co, tostring(err)))
      end
    elseif on_done then
      on_done(true, table.unpack(res, 2, res.n))
    end
  end
  return res[1]
end

--- Runs fn(...) in a new coroutine now; `on_done(ok, ...)` (optional) gets its results or
-- (false, err, traceback). Returns the coroutine.
function M.spawn(fn, ...)
  local co = coroutine.create(fn)
  return co, M.resume(co, ...)
end

function M.spawn_with(on_done, fn, ...)
  local co = coroutine.create(fn)
  finishers[co] = on_done
  M.resume(co, ...)
  return co
end

local function in_coroutine()
  local co, main = coroutine.running()
  if main then error("autopgo.async: must be called from a coroutine (use async.spawn)", 3) end
  return co
end

-- Converts an error-first result list into the house convention.
local function settle(res)
  local err = res[1]
  if err ~= nil then return nil, err, error_code(err) end
  return table.unpack(res, 2, res.n)
end

--- Calls fn(..., callback) and suspends until callback(err, ...) fires; returns the results, or
-- nil, err, code when err is set. Safe when the callback fires before fn returns.
function M.await(fn, ...)
  local co = in_coroutine()
  local args = table.pack(...)
  local state, early = "calling", nil
  args[args.n + 1] = function(...)
    if state == "calling" then
      state, early = "done", table.pack(...)
    elseif state == "waiting" then
      state = "done"
      M.resume(co, ...)
    end
  end
  fn(table.unpack(args, 1, args.n + 1))
  if state == "done" then return settle(early) end
  state = "waiting"
  return settle(table.pack(coroutine.yield()))
end

--- For calls that either fail now or call back later: start(cb) begins the operation and returns
-- true (or nothing) when cb will fire, false or nil, err when it failed at once (cb never fires).
-- Suspends until then; returns cb's results, or nil, err, code (immediate failures included).
function M.await_start(start)
  return M.await(function(cb)
    local ok, err = start(cb)
    if ok == false or (ok == nil and err ~= nil) then
      cb(err or select(2, fail.new("INTERNAL", "the call failed without a reason")))
    end
  end)
end

--- Suspends the calling coroutine for `ms` milliseconds.
function M.sleep(ms)
  local co = in_coroutine()
  local timer = uv.new_timer()
  timer:start(ms, 0, function()
    timer:close()
    M.resume(co)
  end)
  coroutine.yield()
end

--- A one-shot event: any number of coroutines wait() until set(...) is called; later waits
-- return at once with set's values (true when set had none). wait(timeout_ms) returns
-- fail.new("TIMEOUT", "...") when the time runs out.
function M.event()
  local ev = { is_set = false, waiters = {} }
  function ev.set(...)
    if ev.is_set then return end
    ev.is_set, ev.values = true, table.pack(...)
    if ev.values.n == 0 then ev.values = { true, n = 1 } end
    local waiters = ev.waiters
    ev.waiters = {}
    for _, co in ipairs(waiters) do M.resume(co, true) end
  end
  function ev.wait(timeout_ms)
    if ev.is_set then return table.unpack(ev.values, 1, ev.values.n) end
    local co = in_coroutine()
    local timer
    if timeout_ms then
      timer = uv.new_timer()
      timer:start(timeout_ms, 0, function()
        for i, w in ipairs(ev.waiters) do
          if w == co then table.remove(ev.waiters, i) break end
        end
        timer:close()
        M.resume(co, false)
      end)
    end
    ev.waiters[#ev.waiters + 1] = co
    local woke = coroutine.yield()
    if timer and not timer:is_closing() then timer:close() end
    if not woke then return fail.new("TIMEOUT", "timed out waiting") end
    return table.unpack(ev.values, 1, ev.values.n)
  end
  return ev
end

--- Runs every function in `fns` concurrently (each in its own coroutine) and waits for all.
-- Returns a list of packed results { ok, ... } in the same order.
function M.all(fns)
  local n = #fns
  local results = {}
  if n == 0 then return results end
  local done = M.event()
  local left = n
  for i, fn in ipairs(fns) do
    M.spawn_with(function(...)
      results[i] = table.pack(...)
      left = left - 1
      if left == 0 then done.set() end
    end, fn)
  end
  done.wait()
  return results
end

--- Calls fn(i) for i = 1..count, at most n at a time (n tasks each taking the next index in
-- turn), while go_on() (optional, asked before each start) says to. Waits for all; an error in fn
-- is raised here once all stopped. Returns the first index not started (count + 1: all were).
function M.each(n, count, fn, go_on)
  local next_i, fns = 1, {}
  for _ = 1, math.min(n, count) do
    fns[#fns + 1] = function()
      while next_i <= count and (not go_on or go_on()) do
        local i = next_i
        next_i = i + 1
        fn(i)
      end
    end
  end
  for _, r in ipairs(M.all(fns)) do
    if not r[1] then error(r[2], 0) end
  end
  return next_i
end

return M
