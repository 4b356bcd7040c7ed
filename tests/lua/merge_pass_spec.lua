-- Specs of lua/autopgo/merge_pass.lua: what one pass asks of the store (counted by a wrapping
-- store over a real mem:// one) follows the uploads it merges, not the backlog staged behind them;
-- ledgers stay the size of a batch while a backlog drains; the event of an upload a pass already
-- merged costs no listing.
local support = require "tests.lua.support"
local profiles = require "tests.lua.profiles"
local bus = require "autopgo.bus"
local history = require "autopgo.history"
local json = require "autopgo.json"
local keys = require "autopgo.keys"
local merge_pass = require "autopgo.merge_pass"
local merging = require "autopgo.merging"
local policy = require "autopgo.policy"
local worker = require "autopgo.worker"
local crypto = require("autopgo.core").crypto

local run = support.run
local NS = 1000000000
local T0 = 1700002800 -- staging keys in 2023: the corpus's time_nanos lie after them, so keys give capture times

-- The counting store (support.counting_store), also noting the staged keys of each ledger it writes.
local function counting()
  local ledgers = {}
  local store = support.counting_store("pass", function(key, body)
    if keys.kind_of(key) == "ledger" then ledgers[#ledgers + 1] = #json.decode(body).merged end
  end)
  store.counts.ledgers = ledgers
  local reset = store.reset
  function store.reset()
    reset()
    store.counts.ledgers = {}
    ledgers = store.counts.ledgers
  end
  return store
end

local function setup(o)
  local store = counting()
  local hist = o.history and history.new { store = store, segment = 3600,
    now = function() return (T0 + 10 * 3600) * NS end } or nil
  local writer = assert(bus.writer("mem://pass-" .. crypto.hex(crypto.random(5))))
  local pass = merge_pass.new { store = store, writer = writer, policy = assert(policy.new {}),
    batch_limit = o.batch, history = hist }
  return { store = store, pass = pass, writer = writer, history = hist }
end

-- Stages n uploads of app after the i-th second of T0's hour, every one the same profile.
local function stage(e, n, from)
  local body = profiles.variant(1)
  local out = {}
  for i = from, from + n - 1 do
    local key = keys.staging("app", (T0 + 10) * NS + i)
    assert(e.store:put(key, body, { if_none_match = "*" }))
    out[#out + 1] = key
  end
  return out
end

-- The store calls of one pass over a base of 4 merged uploads with `backlog` more staged behind a
-- batch of 4: { calls by method, entries listed }.
local function one_pass(backlog, with_history)
  local e = setup { batch = 4, history = with_history }
  stage(e, 4, 0)
  assert(e.pass:run("app"))
  e.pass:flush()
  stage(e, 4 + backlog, 100)
  e.store.reset()
  local ok, n = e.pass:run("app")
  assert(ok, n)
  assert.equals(4, n)
  e.pass:flush()
  return { calls = e.store.counts.calls, listed = e.store.counts.listed }
end

-- Drains 200 staged uploads in passes of e's batch (8, listing pages of 16): every ledger holds
-- at most this batch and the previous one (whose deletes may still be in flight), staging ends
-- empty, the base holds each upload once.
local function drain(e)
  stage(e, 200, 0)
  local passes, total = 0, 0
  while true do
    local ok, n, more = e.pass:run("app")
    assert(ok, n)
    total, passes = total + n, passes + 1
    if not more then break end
  end
  e.pass:flush()
  assert.equals(200, total)
  assert.equals(25, passes)
  assert.equals(25, #e.store.counts.ledgers)
  for _, size in ipairs(e.store.counts.ledgers) do assert.is_true(size <= 16, size) end
  assert.same({}, assert(e.store:list(keys.staging_prefix("app"))))
  -- no pass listed more than a few pages
  assert.is_true(e.store.counts.listed <= 25 * 3 * merge_pass.PAGE, e.store.counts.listed)
  assert.same({ 200 }, profiles.counts(assert(e.store:get(keys.base("app"))).body))
end

describe("merge_pass", function()
  local page
  before_each(function() page = merge_pass.PAGE end)
  after_each(function() merge_pass.PAGE = page end)

  for _, with_history in ipairs { false, true } do
    it(("asks the store the same of a pass whatever the backlog staged behind its batch (history %s)")
      :format(with_history and "on" or "off"), function()
      run(function()
        merge_pass.PAGE = 8
        local small = one_pass(1, with_history)
        local large = one_pass(300, with_history)
        local huge = one_pass(1500, with_history)
        assert.same(large, huge)
        assert.same(small.calls, large.calls)
        -- a listing reads at most a page past what the batch needs
        assert.is_true(large.listed <= merge_pass.PAGE, large.listed)
        -- the batch (4) and the base (its ledger is remembered), and with history the batch's
        -- provenance records, the segment's manifest and profile
        assert.equals(with_history and 4 + 1 + 4 + 2 or 4 + 1, large.calls.get)
        -- the batch's staged uploads and the old ledger (and the segment's old profile)
        assert.equals(with_history and 4 + 1 + 1 or 4 + 1, large.calls.delete)
      end, 120000)
    end)
  end

  it("drains a backlog with ledgers the size of a batch, deleting what it merged", function()
    run(function()
      merge_pass.PAGE = 16
      drain(setup { batch = 8 })
    end, 120000)
  end)

  it("drains a backlog on the file store, its listings running beside the background deletes", function()
    local dir = support.tmpdir()
    finally(function() support.rm_rf(dir) end)
    run(function()
      merge_pass.PAGE = 16
      drain(setup { batch = 8, url = "file://" .. dir })
    end, 120000)
  end)

  it("with history merges a batch once, the base and its segment folding it alike", function()
    run(function()
      local e = setup { batch = 8, history = true }
      stage(e, 2, 0)
      assert(e.pass:run("app"))
      -- inputs handed to the merge in the next pass: the batch of 5 once, then base + batch and
      -- segment + batch (not the 5 uploads twice)
      stage(e, 5, 10)
      -- (the base is folded: the folder holds the base, the batch is its one input)
      local real, real_fold, inputs = merging.merge, merging.fold, {}
      merging.merge = function(list, ...)
        inputs[#inputs + 1] = #list
        return real(list, ...)
      end
      merging.fold = function(folder, list, ...)
        inputs[#inputs + 1] = 1 + #list
        return real_fold(folder, list, ...)
      end
      local ok, n = pcall(function() return select(2, assert(e.pass:run("app"))) end)
      merging.merge, merging.fold = real, real_fold
      assert(ok, n)
      assert.equals(5, n)
      assert.same({ 5, 2, 2 }, inputs)
      assert.same({ 7 }, profiles.counts(assert(e.store:get(keys.base("app"))).body))
      local segs = assert(e.history:segments("app"))
      assert.equals(1, #segs)
      assert.equals(7, segs[1].doc.count)
      local seg = assert(e.store:get(keys.segment_object("app", 3600, segs[1].start, segs[1].doc.profile)))
      assert.same({ 7 }, profiles.counts(seg.body))
    end)
  end)

  it("with history rejects a batch the base has nothing in common with, one upload at a time", function()
    run(function()
      local e = setup { batch = 8, history = true }
      stage(e, 1, 0)
      assert(e.pass:run("app"))
      local heap = profiles.file("edge/heap-sample-types.pb.gz")
      local bad = { keys.staging("app", (T0 + 10) * NS + 20), keys.staging("app", (T0 + 10) * NS + 21) }
      for _, key in ipairs(bad) do assert(e.store:put(key, heap, { if_none_match = "*" })) end
      local ok, n = e.pass:run("app")
      assert(ok, n)
      e.pass:flush()
      for _, key in ipairs(bad) do
        local reason = assert(e.store:get(keys.reason_of(keys.rejected("app", key:match("[^/]+$"))))).body
        assert.matches("INCOMPATIBLE", reason)
      end
      assert.same({}, assert(e.store:list(keys.staging_prefix("app"))))
      assert.same({ 1 }, profiles.counts(assert(e.store:get(keys.base("app"))).body))
      local segs = assert(e.history:segments("app"))
      assert.equals(1, segs[1].doc.count)
    end)
  end)

  it("handles the event of an upload already merged with a stat, no listing", function()
    run(function()
      local e = setup { batch = 8 }
      local store = e.store
      local w = worker.new { store = store, writer = e.writer, policy = assert(policy.new {}) }
      local staged = stage(e, 3, 0)
      assert.equals(3, assert(w:merge_app("app", staged[1])))
      w.pass:flush()
      store.reset()
      for _, key in ipairs(staged) do assert.equals(0, assert(w:merge_app("app", key))) end
      assert.is_nil(store.counts.calls.list)
      assert.is_nil(store.counts.calls.get)
      assert.is_nil(store.counts.calls.put)
    end)
  end)
end)
