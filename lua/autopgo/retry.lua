-- Retries of transient failures with jittered exponential backoff inside a deadline, for any
-- call that follows the house convention (result... | fail.new("CODE", "message")).
--
--   local res, err, code = retry.run(function(attempt) return store_call() end, {
--     deadline = 30,            -- seconds for all attempts together (default 30)
--     base = 0.1, cap = 5,      -- first backoff and largest backoff, seconds
--     attempts = nil,           -- optional cap on the number of attempts
--     retryable = function(code, err, ...) end,  -- default: codes in retry.TRANSIENT
--     on_retry = function(attempt, delay, err) end,
--   })
--
-- A failure may carry a fourth value, the server's wish for a minimum wait in seconds (an HTTP
-- Retry-After): the backoff is then at least that long. The last failure is returned unchanged
-- except that its message says how many attempts were made.
local uv = require "luv"
local async = require "autopgo.async"

local M = {}

--- Codes retried by default: the service or the network is briefly unable to answer.
M.TRANSIENT = { UNAVAILABLE = true, TIMEOUT = true, THROTTLED = true }

--- The "full jitter" backoff before retry number `attempt` (1-based): uniform in
-- [0, min(cap, base * 2^(attempt-1))]. `random` defaults to math.random.
function M.backoff(attempt, base, cap, random)
  local ceiling = math.min(cap or 5, (base or 0.1) * 2 ^ (attempt - 1))
  return ceiling * (random or math.random)()
end

local function now() return uv.hrtime() / 1e9 end

local function default_retryable(code) return M.TRANSIENT[code] == true end

--- Calls fn(attempt) until it succeeds, fails with a code that is not retryable, or the next
-- backoff would end past the deadline. Must run in a coroutine (it sleeps on the loop).
function M.run(fn, opts)
  opts = opts or {}
  local clock = opts.now or now
  local sleep = opts.sleep or function(s) async.sleep(math.floor(s * 1000 + 0.5)) end
  local retryable = opts.retryable or default_retryable
  local deadline = clock() + (opts.deadline or 30)
  local attempt = 0
  while true do
    attempt = attempt + 1
    local res = table.pack(fn(attempt))
    if res[1] ~= nil or res.n == 0 then return table.unpack(res, 1, res.n) end
    local err, code, wait = res[2], res[3], res[4]
    code = code or async.error_code(err)
    local give_up = not retryable(code, err, table.unpack(res, 4, res.n))
      or (opts.attempts and attempt >= opts.attempts)
    local delay = 0
    if not give_up then
      delay = M.backoff(attempt, opts.base, opts.cap, opts.random)
      if type(wait) == "number" and wait > delay then delay = wait end
      give_up = clock() + delay > deadline
    end
    if give_up then
      if attempt > 1 and type(err) == "string" then
        err = ("%s (gave up after %d attempts)"):format(err, attempt)
      end
      return nil, err, code
    end
    if opts.on_retry then opts.on_retry(attempt, delay, err) end
    sleep(delay)
  end
end

return M
