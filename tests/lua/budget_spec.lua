-- Specs of lua/autopgo/budget.lua: slots and bytes held at once, first come first served (no
-- overtaking), a bounded queue and a bounded wait, both answered BUSY.
local support = require "tests.lua.support"
local async = require "autopgo.async"
local budget = require "autopgo.budget"

local run = support.run

describe("autopgo.budget", function()
  it("admits up to the slots and the bytes, and the rest in order as room is given back", function()
    run(function()
      local b = budget.new { slots = 2, bytes = 100, max_waiting = 10, wait_timeout = 5 }
      local t1 = assert(b:acquire(60))
      local t2 = assert(b:acquire(30))
      local order = {}
      -- a large one waits for bytes; a small one behind it does not overtake it
      async.spawn(function()
        local t = assert(b:acquire(70))
        order[#order + 1] = "large"
        async.sleep(10)
        b:release(t)
      end)
      async.spawn(function()
        local t = assert(b:acquire(5))
        order[#order + 1] = "small"
        b:release(t)
      end)
      assert.same({ running = 2, reserved = 90, waiting = 2, refused = 0, admitted = 2, peak_reserved = 90 },
        b:stats())
      b:release(t1)
      assert.same({ "large" }, order) -- 30 + 70 fit; the small one needs a slot
      b:release(t2)
      b:release(t2) -- twice: nothing more is given back
      async.sleep(30)
      assert.same({ "large", "small" }, order)
      assert.same({ running = 0, reserved = 0, waiting = 0 },
        { running = b:stats().running, reserved = b:stats().reserved, waiting = b:stats().waiting })
    end)
  end)

  it("clamps a reservation larger than the whole budget instead of waiting forever", function()
    run(function()
      local b = budget.new { slots = 1, bytes = 10 }
      local t = assert(b:acquire(1000))
      assert.equals(10, b:stats().reserved)
      b:release(t)
    end)
  end)

  it("answers BUSY when the queue is full or the wait runs out", function()
    run(function()
      local b = budget.new { slots = 1, bytes = 10, max_waiting = 1, wait_timeout = 0.05 }
      local t = assert(b:acquire(1))
      local waited
      async.spawn(function() waited = { b:acquire(1) } end)
      local ok, err, code = b:acquire(1)
      assert.is_nil(ok)
      assert.equals("BUSY", code)
      assert.matches("already waiting", err)
      async.sleep(150)
      assert.is_nil(waited[1])
      assert.equals("BUSY", waited[3])
      assert.equals(2, b:stats().refused)
      b:release(t)
    end)
  end)
end)
