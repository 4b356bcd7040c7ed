-- Specs of lua/autopgo/history.lua with the worker over mem:// stores and the in-process bus: capture
-- times, segments holding each upload exactly once (redelivery, a crash between the segment and the
-- base, two writers racing on one segment), windows and their cache, range deletes rebuilding the
-- base, retention and the sweep of leftovers. The corpus profiles' time_nanos (late 2026) lie in the
-- future of the staging keys used here (2023), so their capture time is the key's arrival time.
local support = require "tests.lua.support"
local profiles = require "tests.lua.profiles"
local async = require "autopgo.async"
local blob = require "autopgo.blob"
local bus = require "autopgo.bus"
local events = require "autopgo.events"
local history = require "autopgo.history"
local json = require "autopgo.json"
local keys = require "autopgo.keys"
local merging = require "autopgo.merging"
local policy = require "autopgo.policy"
local worker = require "autopgo.worker"
local crypto = require("autopgo.core").crypto

local run = support.run
local NS = 1000000000
local T0 = 1700002800 -- 2023-11-14T23:00:00Z, the start of an hour

local function setup(o)
  o = o or {}
  local id = crypto.hex(crypto.random(5))
  local e = { url = "mem://history-" .. id }
  e.store = o.store or assert(blob.open("mem://history-" .. id))
  e.writer = assert(bus.writer(e.url))
  e.reader = assert(bus.reader(e.url))
  e.policy = assert(policy.new { policy = o.policy })
  e.now = o.now or (T0 + 10 * 3600) * NS
  e.history = history.new { store = e.store, segment = 3600, retention = o.retention,
    now = function() return e.now end }
  e.worker = worker.new { store = e.store, writer = e.writer, reader = e.reader, policy = e.policy,
    history = e.history }
  return e
end

local seq = 0
-- Stages variant n captured at T0 + offset seconds (plus a unique nanosecond), announced.
local function stage(e, app, n, offset, announce)
  seq = seq + 1
  local key = keys.staging(app, (T0 + offset) * NS + seq)
  assert(e.store:put(key, profiles.variant(n), { if_none_match = "*" }))
  if announce ~= false then assert(events.publish(e.writer, events.UPLOADED, { app = app, profileKey = key })) end
  return key
end

local function wait_until(what, pred, ms)
  local deadline = require("luv").now() + (ms or 10000)
  while not pred() do
    if require("luv").now() > deadline then error("timed out waiting until " .. what, 2) end
    async.sleep(5)
  end
end

local function list(store, prefix)
  local out = {}
  for _, item in ipairs(assert(store:list(prefix))) do out[#out + 1] = item.key end
  table.sort(out)
  return out
end

-- { [start] = { keys } } of the app's manifests.
local function manifests(e, app)
  local out = {}
  for _, s in ipairs(assert(e.history:segments_uploads(app))) do
    local ks = {}
    for _, u in ipairs(s.uploads) do ks[#ks + 1] = u.key end
    assert.equals(#ks, s.doc.count)
    out[s.start] = ks
  end
  return out
end

local function window_counts(e, app, from, to)
  local w = assert(e.history:window(app, from, to, nil))
  local bytes = w.bytes or assert(e.store:get(w.key)).body
  return profiles.counts(bytes), w
end

local function base_counts(e, app)
  return profiles.counts(assert(e.store:get(keys.base(app))).body)
end

describe("history", function()
  it("takes the profile's time_nanos as capture time unless it lies beyond the skew after arrival", function()
    local arrival = 1700000000 * NS
    assert.equals(arrival - 5, history.capture(arrival - 5, arrival))
    assert.equals(arrival + 299 * NS, history.capture(arrival + 299 * NS, arrival))
    assert.equals(arrival, history.capture(arrival + 301 * NS, arrival))
    assert.equals(arrival, history.capture(0, arrival))
    assert.equals(arrival, history.capture(nil, arrival))
    local h = history.new { store = assert(blob.open("mem://h-" .. crypto.hex(crypto.random(4)))), segment = 3600 }
    assert.equals(T0, h:start_of(T0 * NS + 3599 * NS))
    assert.equals(T0 + 3600, h:start_of((T0 + 3600) * NS))
  end)

  it("reads a window or a from/to range from a query, and says what is wrong with a bad one", function()
    local api = require "autopgo.api"
    assert.same({ 1000 - 7200 }, { api.parse_range({ window = "2h" }, 1000) })
    assert.same({ 0, 3600 }, { api.parse_range({ from = "1970-01-01T00:00:00Z", to = "1970-01-01T01:00:00Z" }, 1) })
    assert.same({ nil, 60 }, { api.parse_range({ to = "1970-01-01T00:01:00Z" }, 1) })
    local function bad(q, what)
      local from, msg = api.parse_range(q, 1000)
      assert.is_nil(from)
      assert.matches(what, msg, 1, true)
    end
    bad({ window = "2h", from = "1970-01-01T00:00:00Z" }, "either window or from/to")
    bad({ window = "soon" }, "window: ")
    bad({ window = "0s" }, "longer than zero")
    bad({ from = "yesterday" }, "from: ")
    bad({ from = "1970-01-01T00:00:00Z", to = "noon" }, "to: ")
    bad({ from = "1970-01-01T01:00:00Z", to = "1970-01-01T01:00:00Z" }, "from must be before to")
  end)

  it("puts every merged upload in the segment of its capture time exactly once, redelivered or not", function()
    run(function()
      local e = setup()
      local k1 = stage(e, "app", 1, 10)
      local k2 = stage(e, "app", 2, 20)
      local k3 = stage(e, "app", 3, 3600 + 5)
      local k4 = stage(e, "app", 4, 2 * 3600 + 5)
      e.worker:start()
      wait_until("all merged and deleted", function() return #list(e.store, "app/staging/") == 0 end)
      -- redelivered uploads (the staged objects are gone: nothing to do) and a rerun of a pass
      assert(events.publish(e.writer, events.UPLOADED, { app = "app", profileKey = k1 }))
      assert(e.worker:merge_app("app"))
      e.worker:stop()
      local m = manifests(e, "app")
      assert.same({ k1, k2 }, m[T0])
      assert.same({ k3 }, m[T0 + 3600])
      assert.same({ k4 }, m[T0 + 7200])
      assert.same({ 1, 1, 1, 1 }, base_counts(e, "app"))
      local c = window_counts(e, "app", T0 + 3600, T0 + 7200)
      assert.same({ [3] = 1 }, c)
      c = window_counts(e, "app", T0 + 1800, nil) -- overlaps the first segment: all of it counts
      assert.same({ 1, 1, 1, 1 }, c)
      assert.same({ nil, "NOT_FOUND" }, { select(1, e.history:window("app", T0 - 7200, T0)), select(3,
        e.history:window("app", T0 - 7200, T0)) })
    end)
  end)

  it("serves an unchanged window from its cache and merges again once a segment changed", function()
    run(function()
      local e = setup()
      stage(e, "app", 1, 10, false)
      stage(e, "app", 2, 3700, false)
      assert(e.worker:merge_app("app"))
      local c1, w1 = window_counts(e, "app", T0, T0 + 7200)
      assert.truthy(w1.bytes) -- merged now
      local _, w2 = window_counts(e, "app", T0, T0 + 7200)
      assert.is_nil(w2.bytes) -- from the cache
      assert.equals(w1.etag, w2.etag)
      assert.same({ 1, 1 }, c1)
      stage(e, "app", 3, 20, false)
      assert(e.worker:merge_app("app"))
      local c3, w3 = window_counts(e, "app", T0, T0 + 7200)
      assert.truthy(w3.bytes)
      assert.not_equals(w1.etag, w3.etag)
      assert.same({ 1, 1, 1 }, c3)
      for i = 1, history.CACHE_KEEP + 3 do window_counts(e, "app", T0 - i, T0 + 7200) end
      assert.is_true(#list(e.store, "app/cache/") <= 2 * history.CACHE_KEEP)
    end)
  end)

  it("files a batch merged from its bodies by each upload's own time, and rejects a bad one", function()
    run(function()
      local e = setup()
      local function stage_body(body, offset)
        seq = seq + 1
        local key = keys.staging("app", (T0 + offset) * NS + seq)
        assert(e.store:put(key, body, { if_none_match = "*" }))
        return key
      end
      -- captured an hour before arrival (time_nanos), 20 s long: the body says where it goes
      local early = profiles.with_time(profiles.variant(1), (T0 - 3600 + 7) * NS, 20 * NS)
      local k1 = stage_body(early, 30)
      local k2 = stage_body(profiles.variant(2), 40)
      local bad = stage_body("\31\139 not a profile", 50)
      local k3 = stage_body(profiles.variant(3), 60)
      assert(e.worker:merge_app("app"))
      local m = manifests(e, "app")
      assert.same({ k1 }, m[T0 - 3600])
      assert.same({ k2, k3 }, m[T0])
      assert.equals(2, #list(e.store, "app/rejected/" .. bad:match("[^/]+$"))) -- kept aside, with its reason
      assert.same({ 1, 1, 1 }, base_counts(e, "app"))
      local seg = assert(e.history:segments_uploads("app"))[1]
      local u = seg.uploads[1]
      assert.equals(20, u.duration)
      local info = assert(require("autopgo.core").pprof.validate(early))
      assert.equals(info.sample_types[1].total, u.samples) -- the first sample type's total, as before
      assert.equals(#early, u.size)
    end)
  end)

  it("counts an upload once when the pass died between its segment and the base", function()
    run(function()
      local e = setup()
      local store = e.store
      local real_put = store.put
      local fail_base = true
      -- the base write fails once (as a crash right after the segment's commit would leave it)
      store.put = function(self, key, body, opts)
        if key == keys.base("app") and fail_base then
          fail_base = false
          return nil, "UNAVAILABLE: injected", "UNAVAILABLE"
        end
        return real_put(self, key, body, opts)
      end
      local k1 = stage(e, "app", 1, 10, false)
      assert.is_nil((e.worker:merge_app("app")))
      assert.same({ k1 }, manifests(e, "app")[T0])
      assert.is_nil(store:get(keys.base("app")))
      -- a fresh worker (nothing remembered) redoes the pass
      local e2 = setup { store = store }
      stage(e2, "app", 2, 20, false)
      assert(e2.worker:merge_app("app"))
      assert.same({ 1, 1 }, base_counts(e2, "app"))
      assert.same({ 1, 1 }, (window_counts(e2, "app", T0, T0 + 3600)))
      assert.equals(2, #manifests(e2, "app")[T0])
    end)
  end)

  it("loses no upload when two writers race on one segment (conditional manifest writes)", function()
    run(function()
      local e = setup()
      local h2 = history.new { store = e.store, segment = 3600, now = function() return e.now end }
      local items = {}
      for n = 1, 6 do
        seq = seq + 1
        local key = keys.staging("app", (T0 + n) * NS + seq)
        items[n] = { key = key, body = profiles.variant(n), input = profiles.variant(n) }
      end
      local done = 0
      for n = 1, 6 do
        async.spawn(function()
          assert((n % 2 == 0 and e.history or h2):add("app", { items[n] }))
          done = done + 1
        end)
      end
      wait_until("every add finished", function() return done == 6 end)
      assert.equals(6, #manifests(e, "app")[T0])
      assert.same({ 1, 1, 1, 1, 1, 1 }, (window_counts(e, "app", T0, T0 + 3600)))
    end)
  end)

  it("deletes a range: its segments go and the base is rebuilt from the rest", function()
    run(function()
      local e = setup()
      stage(e, "app", 1, 10)
      stage(e, "app", 2, 3600 + 10)
      stage(e, "app", 3, 7200 + 10)
      e.worker:start()
      wait_until("all merged", function() return #list(e.store, "app/staging/") == 0 end)
      assert(events.publish(e.writer, events.RANGE_DELETED, { app = "app",
        from = require("autopgo.utc").rfc3339(T0 + 3600), to = require("autopgo.utc").rfc3339(T0 + 7200) }))
      wait_until("the segment is gone", function() return manifests(e, "app")[T0 + 3600] == nil end)
      wait_until("the base is rebuilt", function()
        local got = e.store:get(keys.base("app"))
        return got and profiles.counts(got.body)[2] == nil
      end)
      assert.same({ [1] = 1, [3] = 1 }, base_counts(e, "app"))
      -- uploads after the delete add to the rebuilt base
      stage(e, "app", 4, 3600 + 20)
      wait_until("merged", function() return base_counts(e, "app")[4] == 1 end)
      e.worker:stop()
      assert.same({ [1] = 1, [3] = 1, [4] = 1 }, base_counts(e, "app"))
      assert.same({ [4] = 1 }, (window_counts(e, "app", T0 + 3600, T0 + 7200)))
    end)
  end)

  it("rebuilds a base that no longer parses from the history, uploads already deleted included", function()
    run(function()
      local e = setup()
      stage(e, "app", 1, 10, false)
      stage(e, "app", 2, 3600 + 10, false)
      assert(e.worker:merge_app("app"))
      e.worker.pass:flush()
      assert.same({}, list(e.store, "app/staging/")) -- the pass deletes what it merged
      assert(e.store:put(keys.base("app"), "garbage, not a profile"))
      stage(e, "app", 3, 20, false)
      assert(e.worker:merge_app("app"))
      assert.same({ 1, 1, 1 }, base_counts(e, "app"))
      assert.equals(2, #list(e.store, "app/rejected/default.pgo.")) -- kept aside, with its reason
      -- and nothing is counted twice by the passes that follow
      stage(e, "app", 4, 30, false)
      assert(e.worker:merge_app("app"))
      assert(e.worker:merge_app("app"))
      assert.same({ 1, 1, 1, 1 }, base_counts(e, "app"))
      assert.same({ 1, 1, 1, 1 }, (window_counts(e, "app", nil, nil)))
    end)
  end)

  it("deleting every segment deletes the base too", function()
    run(function()
      local e = setup()
      stage(e, "app", 1, 10, false)
      assert(e.worker:merge_app("app"))
      assert(e.history:delete_range("app", T0, T0 + 3600))
      assert(e.worker.pass:rebuild("app"))
      assert.is_nil(e.store:get(keys.base("app")))
      assert.same({}, list(e.store, "app/ledger/"))
    end)
  end)

  it("merges with per-input scales as Go's Profile.Scale: x2 doubles every value, 0 drops every sample", function()
    run(function()
      local one = profiles.variant(1)
      local doubled = assert(merging.merge({ one, profiles.variant(2) }, nil, { 2, 1 }))
      assert.same({ 2, 1 }, profiles.counts(doubled.bytes))
      assert.equals(2 * profiles.total(one) + profiles.total(profiles.variant(2)), profiles.total(doubled.bytes))
      local dropped = assert(merging.merge({ one, profiles.variant(2) }, nil, { 0, 1 }))
      assert.same({ [2] = 1 }, profiles.counts(dropped.bytes))
      local same = assert(merging.merge({ one }, nil, { 1 }))
      assert.equals(assert(merging.merge({ one })).sha256, same.sha256)
    end)
  end)

  it("weights uploads under normalize (duration, equal) and records the weight in the segment", function()
    run(function()
      local info = assert(history.info(profiles.variant(1)))
      assert.equals(30 * NS / info.duration_nanos, history.weight(info, "duration"))
      assert.equals(30 * NS / info.sample_types[2].total, history.weight(info, "equal"))
      assert.equals(1, history.weight(info, "none"))
      assert.equals(1, history.weight({ duration_nanos = 0, sample_types = {} }, "duration"))
      local e = setup { policy = { app = { normalize = "duration" } } }
      local k = stage(e, "app", 1, 10, false)
      assert(e.worker:merge_app("app"))
      local seg = assert(e.history:segments_uploads("app"))[1]
      assert.equals(k, seg.uploads[1].key)
      assert.equals(history.weight(info, "duration"), seg.uploads[1].weight)
      local want = assert(merging.merge({ profiles.variant(1) }, nil, { history.weight(info, "duration") }))
      assert.equals(profiles.total(want.bytes), profiles.total(assert(e.store:get(keys.base("app"))).body))
    end)
  end)

  it("keeps a rolling-window default current as time passes, not only when an upload arrives", function()
    run(function()
      local e = setup { policy = { app = { window = "2h" } } }
      e.now = (T0 + 3 * 3600 + 60) * NS
      stage(e, "app", 1, 10, false) -- segment T0: outside [now - 2h, ...)
      stage(e, "app", 2, 3600 + 10, false) -- segment T0 + 1h: overlaps it
      stage(e, "app", 3, 2 * 3600 + 10, false)
      assert(e.worker:merge_app("app"))
      assert.same({ [2] = 1, [3] = 1 }, base_counts(e, "app"))
      local ledger = list(e.store, "app/ledger/")
      assert.equals(1, #ledger)
      assert.equals("window", json.decode(assert(e.store:get(ledger[1])).body).view.kind)
      e.now = (T0 + 4 * 3600 + 60) * NS -- an hour later, no upload: only segment T0 + 2h is left in it
      assert.equals(1, e.worker:refresh_views())
      assert.same({ [3] = 1 }, base_counts(e, "app"))
      e.now = (T0 + 9 * 3600) * NS -- nothing in the window: no default profile
      assert.equals(1, e.worker:refresh_views())
      assert.is_nil(e.store:get(keys.base("app")))
      assert.is_not_nil(e.history:window("app", T0, nil)) -- the history is all there
    end)
  end)

  it("merges long windows from day roll-ups, and from the hours again once a late upload changed one", function()
    run(function()
      local e = setup()
      e.now = (T0 + 30 * 3600) * NS -- the day of T0 + 1h .. T0 + 24h is complete
      for h = 1, 3 do stage(e, "app", h, h * 3600 + 10, false) end
      assert(e.worker:merge_app("app"))
      assert.is_true(assert(e.history:sweep()) >= 1)
      local day = (T0 + 3600) // 86400 * 86400
      assert.equals(T0 + 3600, day) -- T0 + 1h is a midnight
      assert.truthy(e.store:get(keys.segment_manifest("app", 86400, day)))
      local read = {}
      local real_get = e.store.get
      e.store.get = function(self, key, opts)
        read[#read + 1] = key
        return real_get(self, key, opts)
      end
      local function objects_read()
        local out = {}
        for _, k in ipairs(read) do
          local seglen = keys.parse_history(k)
          if k:sub(-4) == ".pgo" and seglen then out[#out + 1] = seglen end
        end
        read = {}
        return out
      end
      assert.same({ 1, 1, 1 }, (window_counts(e, "app", nil, nil)))
      assert.same({ 86400 }, objects_read())
      -- a late upload into the second hour: the roll-up no longer matches, the hours are merged
      stage(e, "app", 4, 2 * 3600 + 20, false)
      assert(e.worker:merge_app("app"))
      read = {}
      assert.same({ 1, 1, 1, 1 }, (window_counts(e, "app", nil, nil)))
      assert.same({ 3600, 3600, 3600 }, objects_read())
      -- the next sweep builds it again
      e.store.get = real_get
      assert(e.history:sweep())
      e.store.get = function(self, key, opts)
        read[#read + 1] = key
        return real_get(self, key, opts)
      end
      assert(e.history:drop_cache("app")) -- the same segments: else served from the cache, unmerged
      assert.same({ 1, 1, 1, 1 }, (window_counts(e, "app", T0, nil)))
      assert.same({ 86400 }, objects_read())
      -- a range delete takes the roll-ups it overlaps
      assert(e.history:delete_range("app", T0 + 2 * 3600, T0 + 3 * 3600))
      assert.is_nil(e.store:get(keys.segment_manifest("app", 86400, day)))
      assert.same({ [1] = 1, [3] = 1 }, (window_counts(e, "app", nil, nil)))
    end)
  end)

  it("drops segments and records past retention, never staged uploads, and sweeps orphaned objects", function()
    run(function()
      local e = setup { retention = 3 * 3600 }
      e.now = (T0 + 2 * 3600) * NS
      stage(e, "app", 1, 10, false)
      stage(e, "app", 2, 3600 + 10, false)
      assert(e.worker:merge_app("app"))
      -- a provenance record as the API writes it, and an orphaned profile object
      assert(e.store:put(keys.upload_record("app", T0 * NS), json.encode({ key = "x" })))
      local orphan = keys.segment_object("app", 3600, T0, string.rep("ab", 32))
      assert(e.store:put(orphan, "junk"))
      local late = stage(e, "app", 3, 20, false) -- staged, not merged yet
      e.now = (T0 + 4 * 3600 + 60) * NS -- the first segment is past retention, the second is not
      history.ORPHAN_AGE = -1
      local removed = assert(e.history:sweep())
      history.ORPHAN_AGE = 600
      assert.is_true(removed >= 3)
      local m = manifests(e, "app")
      assert.is_nil(m[T0])
      assert.equals(1, #m[T0 + 3600])
      assert.is_nil(e.store:get(orphan))
      assert.is_nil(e.store:get(keys.upload_record("app", T0 * NS)))
      assert.truthy(e.store:get(late))
      -- merged later: in the base, but left out of the history (before the cutoff)
      assert(e.worker:merge_app("app"))
      assert.is_nil(manifests(e, "app")[T0])
      assert.equals(1, base_counts(e, "app")[3])
    end)
  end)
end)
