-- Specs for lua/autopgo/retry.lua: which failures are retried, the jittered backoff, the deadline
-- and a server's Retry-After; one spec sleeps for real on the loop.
local retry = require "autopgo.retry"
local support = require "tests.lua.support"

-- A clock that only moves when the code under test sleeps, so deadlines are exact.
local function fake_time()
  local t = { now = 0, slept = {} }
  t.clock = function() return t.now end
  t.sleep = function(s)
    t.slept[#t.slept + 1] = s
    t.now = t.now + s
  end
  return t
end

describe("retry", function()
  it("returns the first success and retries transient failures until then", function()
    local t = fake_time()
    local calls = 0
    local v, extra = retry.run(function(attempt)
      calls = calls + 1
      assert.equals(calls, attempt)
      if attempt < 3 then return nil, "UNAVAILABLE: HTTP 503 SlowDown", "UNAVAILABLE" end
      return "ok", 42
    end, { now = t.clock, sleep = t.sleep, random = function() return 1 end, base = 0.1, cap = 10 })
    assert.equals("ok", v)
    assert.equals(42, extra)
    assert.equals(3, calls)
    assert.same({ 0.1, 0.2 }, t.slept)
  end)

  it("does not retry failures that are not transient", function()
    local t = fake_time()
    local calls = 0
    local v, err, code = retry.run(function()
      calls = calls + 1
      return nil, "PRECONDITION_FAILED: stale etag", "PRECONDITION_FAILED"
    end, { now = t.clock, sleep = t.sleep })
    assert.is_nil(v)
    assert.equals("PRECONDITION_FAILED: stale etag", err)
    assert.equals("PRECONDITION_FAILED", code)
    assert.equals(1, calls)
    assert.same({}, t.slept)
  end)

  it("stops when the next wait would pass the deadline and says how often it tried", function()
    local t = fake_time()
    local calls = 0
    local v, err, code = retry.run(function()
      calls = calls + 1
      return nil, "TIMEOUT: no answer", "TIMEOUT"
    end, { now = t.clock, sleep = t.sleep, random = function() return 1 end, base = 1, cap = 4,
      deadline = 10 })
    assert.is_nil(v)
    assert.equals("TIMEOUT", code)
    -- waits 1, 2, 4 (t = 7), then 4 more would end at 11 > 10
    assert.same({ 1, 2, 4 }, t.slept)
    assert.equals(4, calls)
    assert.equals("TIMEOUT: no answer (gave up after 4 attempts)", err)
  end)

  it("jitters each wait within [0, min(cap, base * 2^n)]", function()
    for attempt = 1, 12 do
      for _ = 1, 50 do
        local d = retry.backoff(attempt, 0.05, 2)
        assert.is_true(d >= 0 and d <= math.min(2, 0.05 * 2 ^ (attempt - 1)))
      end
    end
    local seen = {}
    for _ = 1, 50 do seen[retry.backoff(6, 0.05, 2)] = true end
    local distinct = 0
    for _ in pairs(seen) do distinct = distinct + 1 end
    assert.is_true(distinct > 10, "backoff is not jittered")
  end)

  it("waits at least as long as the server asked", function()
    local t = fake_time()
    retry.run(function(attempt)
      if attempt == 1 then return nil, "THROTTLED: 429", "THROTTLED", 3 end
      return true
    end, { now = t.clock, sleep = t.sleep, random = function() return 0.5 end })
    assert.same({ 3 }, t.slept)
  end)

  it("honours a cap on attempts and a custom retryable predicate", function()
    local t = fake_time()
    local calls = 0
    local v, _, code = retry.run(function()
      calls = calls + 1
      return nil, "IO: disk hiccup", "IO"
    end, { now = t.clock, sleep = t.sleep, attempts = 2, retryable = function(c) return c == "IO" end })
    assert.is_nil(v)
    assert.equals("IO", code)
    assert.equals(2, calls)
  end)

  it("sleeps on the event loop between attempts", function()
    local attempts = 0
    local v = support.run(function()
      return retry.run(function(attempt)
        attempts = attempt
        if attempt == 1 then return nil, "UNAVAILABLE: reset", "UNAVAILABLE" end
        return "done"
      end, { base = 0.01, cap = 0.02 })
    end)
    assert.equals("done", v)
    assert.equals(2, attempts)
  end)
end)
