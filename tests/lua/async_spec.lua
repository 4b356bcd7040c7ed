-- Specs for lua/autopgo/async.lua: await, sleep, events and all on the libuv loop.
local uv = require "luv"
local async = require "autopgo.async"
local support = require "tests.lua.support"

describe("async", function()
  it("awaits a callback-style call and returns its results", function()
    local a, b = support.run(function()
      return async.await(function(x, cb)
        local t = uv.new_timer()
        t:start(5, 0, function() t:close(); cb(nil, x * 2, "ok") end)
      end, 21)
    end)
    assert.equals(42, a)
    assert.equals("ok", b)
  end)

  it("turns an error-first failure into nil, err, code", function()
    local v, err, code = support.run(function()
      return async.await(function(cb) cb("NOT_FOUND: no such thing") end)
    end)
    assert.is_nil(v)
    assert.equals("NOT_FOUND: no such thing", err)
    assert.equals("NOT_FOUND", code)
  end)

  it("copes with callbacks that fire before await yields", function()
    local v = support.run(function()
      return async.await(function(cb) cb(nil, "now") end)
    end)
    assert.equals("now", v)
  end)

  it("awaits a call that fails now or calls back later (await_start)", function()
    local later, now_err, now_code, false_err, fired = support.run(function()
      local v = async.await_start(function(cb)
        local t = uv.new_timer()
        t:start(5, 0, function() t:close(); cb(nil, "later") end)
        return true
      end)
      local fired_count = 0
      local _, err, code = async.await_start(function(cb)
        local _ = cb
        return nil, "CLOSED: the connection is closed"
      end)
      local _, ferr = async.await_start(function() return false, "UNAVAILABLE: refused" end)
      -- a start that returns nothing counts as "the callback will fire"
      local x = async.await_start(function(cb)
        local t = uv.new_timer()
        t:start(1, 0, function() t:close(); fired_count = fired_count + 1; cb(nil, "fired") end)
      end)
      return v, err, code, ferr, x .. fired_count
    end)
    assert.equals("later", later)
    assert.equals("CLOSED: the connection is closed", now_err)
    assert.equals("CLOSED", now_code)
    assert.equals("UNAVAILABLE: refused", false_err)
    assert.equals("fired1", fired)
  end)

  it("sleeps at least the given time", function()
    local elapsed = support.run(function()
      local t0 = uv.now()
      async.sleep(20)
      return uv.now() - t0
    end)
    assert.is_true(elapsed >= 20)
  end)

  it("wakes every waiter of an event and times out the late ones", function()
    local got = support.run(function()
      local ev = async.event()
      local seen = {}
      local results = {}
      for _ = 1, 2 do
        async.spawn(function()
          local v = ev.wait()
          seen[#seen + 1] = v
        end)
      end
      results.timeout = table.pack(async.event().wait(5))
      ev.set("go")
      results.after = ev.wait()
      results.seen = seen
      return results
    end)
    assert.same({ "go", "go" }, got.seen)
    assert.equals("go", got.after)
    assert.is_nil(got.timeout[1])
    assert.equals("TIMEOUT", got.timeout[3])
  end)

  it("runs tasks concurrently with all", function()
    local res = support.run(function()
      return async.all {
        function() async.sleep(10); return 1 end,
        function() return 2 end,
        function() error("three") end,
      }
    end)
    assert.same({ true, 1, n = 2 }, res[1])
    assert.same({ true, 2, n = 2 }, res[2])
    assert.is_false(res[3][1])
    assert.matches("three", res[3][2])
  end)

  it("calls fn for each index, n at a time, while go_on says to (each)", function()
    support.run(function()
      local running, most, seen = 0, 0, {}
      local next_i = async.each(3, 10, function(i)
        running = running + 1
        most = math.max(most, running)
        async.sleep(2)
        seen[#seen + 1] = i
        running = running - 1
      end)
      assert.equals(11, next_i)
      assert.equals(3, most)
      table.sort(seen)
      assert.same({ 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 }, seen)
      local started = 0
      assert.equals(5, async.each(1, 10, function() started = started + 1 end, function() return started < 4 end))
      assert.equals(1, async.each(4, 0, function() error("never") end))
      local ok, err = pcall(async.each, 2, 5, function(i) if i == 3 then error("item three", 0) end end)
      assert.is_false(ok)
      assert.equals("item three", err)
    end)
  end)
end)
