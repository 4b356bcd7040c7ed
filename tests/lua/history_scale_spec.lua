-- Issue 12's "Scale" and "Fast" musts, as specs: a merge pass of one upload asks the same of the
-- store (calls by method, entries listed) whether the app's history holds one segment or days of
-- them, so segment writes never turn a one-upload merge into a rewrite of the whole history
-- (counted by a store wrapping a real mem:// one, through autopgo.merge_pass with
-- autopgo.history); a window over many segments merges at most history.GROUP profiles per merge
-- call (the documented memory bound), with the same result as the base.
local support = require "tests.lua.support"
local profiles = require "tests.lua.profiles"
local bus = require "autopgo.bus"
local history = require "autopgo.history"
local keys = require "autopgo.keys"
local merge_pass = require "autopgo.merge_pass"
local merging = require "autopgo.merging"
local policy = require "autopgo.policy"
local crypto = require("autopgo.core").crypto

local run = support.run
local NS = 1000000000
-- 2023-11-14T23:00:00Z: the corpus profiles' time_nanos lie after it, so staging keys give capture times
local T0 = 1700002800


-- The store calls of one pass merging one upload captured in hour `hour` (after T0), over a
-- history already holding one upload in each of `hours` earlier hours, merged and deleted.
local function one_upload(hours, hour)
  local store = support.counting_store("hscale")
  local hist = history.new { store = store, segment = 3600, now = function() return (T0 + 400 * 3600) * NS end }
  local writer = assert(bus.writer("mem://hscale-" .. crypto.hex(crypto.random(5))))
  local pass = merge_pass.new { store = store, writer = writer, policy = assert(policy.new {}), history = hist }
  local body = profiles.variant(1)
  local function stage(h, i)
    assert(store:put(keys.staging("app", (T0 + h * 3600 + 10) * NS + i), body, { if_none_match = "*" }))
  end
  for h = 0, hours - 1 do stage(h, h) end
  repeat
    local ok, n, more = pass:run("app")
    assert(ok, n)
  until not more
  pass:flush()
  assert.equals(hours, #assert(hist:segments("app")))
  stage(hour, 1000)
  store.reset()
  local ok, n = pass:run("app")
  assert(ok, n)
  assert.equals(1, n)
  pass:flush()
  local cost = { calls = store.counts.calls, listed = store.counts.listed }
  store.reset() -- the check below is not part of the pass
  assert.equals(hour < hours and hours or hours + 1, #assert(hist:segments("app")))
  return cost
end

-- A history of one upload in each of `hours` hours after T0, merged by passes; returns it.
local function filled(hours)
  local store = support.counting_store("hscale")
  local hist = history.new { store = store, segment = 3600, now = function() return (T0 + 400 * 3600) * NS end }
  local writer = assert(bus.writer("mem://hscale-" .. crypto.hex(crypto.random(5))))
  local pass = merge_pass.new { store = store, writer = writer, policy = assert(policy.new {}), history = hist }
  for h = 0, hours - 1 do
    assert(store:put(keys.staging("app", (T0 + h * 3600 + 10) * NS + h), profiles.variant(h % 4 + 1),
      { if_none_match = "*" }))
  end
  repeat
    local ok, n, more = pass:run("app")
    assert(ok, n)
  until not more
  pass:flush()
  return hist, store
end

describe("history at scale", function()
  it("costs a one-upload pass the same with one segment or a week of them (a new segment)", function()
    run(function()
      local small = one_upload(1, 200)
      local week = one_upload(168, 200)
      assert.same(small, week)
      -- the base's ledger and the base, the segment's profile, the part of its one upload, its manifest
      assert.is_true((small.calls.put or 0) <= 5, "puts: " .. tostring(small.calls.put))
    end, 120000)
  end)

  it("costs a one-upload pass the same with one segment or a week of them (a segment it joins)", function()
    run(function()
      assert.same(one_upload(1, 0), one_upload(168, 0))
    end, 120000)
  end)

  it("merges a window of 40 segments at most history.GROUP profiles at a time, as the base holds them", function()
    run(function()
      local hist, store = filled(40)
      local calls, real = {}, merging.merge
      merging.merge = function(inputs, ...)
        calls[#calls + 1] = #inputs
        return real(inputs, ...)
      end
      local ok, w = pcall(hist.window, hist, "app", nil, nil, nil)
      merging.merge = real
      assert(ok, w)
      assert(w, "no window")
      -- 16 segments, then the running result and 15 more each time: 16 + 15 + 9 = 40
      assert.same({ history.GROUP, history.GROUP, 40 - 2 * history.GROUP + 2 }, calls)
      local bytes = w.bytes or assert(store:get(w.key)).body
      assert.same(profiles.counts(assert(store:get(keys.base("app"))).body), profiles.counts(bytes))
    end, 120000)
  end)
end)
