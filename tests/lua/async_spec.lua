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
end)
