-- Specs of lua/autopgo/worker.lua over real stores and the in-process bus: merging, coalescing,
-- exactly-once under redelivery and crashes, no lost updates between workers, poison, deletes.
local support = require "tests.lua.support"
local profiles = require "tests.lua.profiles"
local async = require "autopgo.async"
local blob = require "autopgo.blob"
local bus = require "autopgo.bus"
local events = require "autopgo.events"
local json = require "autopgo.json"
local metrics = require "autopgo.metrics"
local policy = require "autopgo.policy"
local worker = require "autopgo.worker"
local crypto = require("autopgo.core").crypto

local run = support.run

local seq = 0
local function next_key(app)
  seq = seq + 1
  return ("%s/staging/%d"):format(app, 1700000000000000000 + seq)
end

-- A fresh store, bus and worker. o.store: a store to use instead of a new mem:// one (a second
-- setup over the same store is a fresh worker: nothing of the first one's memory).
local function setup(o)
  o = o or {}
  local id = crypto.hex(crypto.random(5))
  local e = { url = "mem://worker-" .. id }
  e.store = o.store or assert(blob.open("mem://worker-" .. id))
  e.writer = assert(bus.writer(e.url))
  e.reader = assert(bus.reader(e.url))
  e.policy = assert(policy.new(o.policy_opts or {}))
  e.worker = worker.new { store = e.store, writer = e.writer, reader = e.reader, policy = e.policy,
    recover = o.recover, batch_limit = o.batch_limit, concurrency = o.concurrency }
  return e
end

-- A view of real that refuses to delete staged uploads, as a worker killed right after its commit
-- leaves them (the pass deletes what it merged once the base is written).
local function keeps_staged(real)
  local view = setmetatable({ name = real.name }, { __index = function(_, k)
    return function(_, ...) return real[k](real, ...) end
  end })
  view.delete = function(_, key)
    if key:find("/staging/", 1, true) then return nil, "UNAVAILABLE: killed before deleting", "UNAVAILABLE" end
    return real:delete(key)
  end
  return view
end

local function stage(e, app, body, announce)
  local key = next_key(app)
  assert(e.store:put(key, body, { if_none_match = "*" }))
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

local function keys(store, prefix)
  local out = {}
  for _, item in ipairs(assert(store:list(prefix))) do out[#out + 1] = item.key end
  return out
end

local function base_of(e, app)
  local got = e.store:get(app .. "/default.pgo")
  return got and got.body
end

local function merges()
  return metrics.default.by_name.autopgo_merges_total:get({ result = "merged" })
end

describe("worker", function()
  it("merges an upload into a new base, announces it and deletes the staged object", function()
    run(function()
      local e = setup()
      e.worker:start()
      local key = stage(e, "app", profiles.variant(1))
      wait_until("the staged upload is gone", function() return #keys(e.store, "app/staging/") == 0 end)
      assert.same({ [1] = 1 }, profiles.counts(base_of(e, "app")))
      local ledgers = keys(e.store, "app/ledger/")
      assert.equals(1, #ledgers)
      local doc = json.decode(assert(e.store:get(ledgers[1])).body)
      assert.same({ key }, doc.merged)
      e.worker:stop()
    end)
  end)

  it("merges the uploads waiting for one app in a single pass", function()
    run(function()
      local e = setup()
      for i = 1, 5 do stage(e, "app", profiles.variant(i)) end
      local before = merges()
      e.worker:start()
      wait_until("everything is merged and cleaned up", function()
        return #keys(e.store, "app/staging/") == 0
      end)
      e.worker:stop()
      assert.same({ 1, 1, 1, 1, 1 }, profiles.counts(base_of(e, "app")))
      assert.equals(1, merges() - before, "the five uploads should have been merged in one pass")
    end)
  end)

  it("handles the events of uploads already merged along the way without reading the base", function()
    run(function()
      local real = assert(blob.open("mem://reads-" .. crypto.hex(crypto.random(4))))
      local base_reads = 0
      local counting = setmetatable({ name = real.name }, { __index = function(_, k)
        return function(_, ...) return real[k](real, ...) end
      end })
      counting.get = function(_, key, opts)
        if key == "app/default.pgo" then base_reads = base_reads + 1 end
        return real:get(key, opts)
      end
      local e = setup { store = counting }
      local before = merges()
      stage(e, "app", profiles.variant(1))
      e.worker:start()
      wait_until("the first upload is merged", function() return #keys(real, "app/staging/") == 0 end)
      for i = 2, 9 do stage(e, "app", profiles.variant(i)) end
      wait_until("everything is merged", function() return #keys(real, "app/staging/") == 0 end)
      e.worker:stop()
      assert.same({ 1, 1, 1, 1, 1, 1, 1, 1, 1 }, profiles.counts(assert(real:get("app/default.pgo")).body))
      -- one read to find no base, then one per merge pass that had something to merge: not per event
      local passes = merges() - before
      assert.is_true(passes < 9, "the uploads were not coalesced")
      assert.is_true(base_reads <= passes, ("the base was read %d times for %d merges"):format(base_reads, passes))
    end)
  end)

  it("does not count a redelivered upload twice (crash between writing the base and acknowledging)", function()
    run(function()
      local first = setup()
      local key = stage(first, "app", profiles.variant(1), false)
      -- A first delivery merged it, then the process died before acknowledging: the event is
      -- delivered again, to a new process (nothing in memory: only the ledger can tell).
      assert(first.worker:merge_app("app"))
      local e = setup { store = first.store }
      local etag = assert(e.store:stat("app/default.pgo")).etag
      local before = merges()
      assert(events.publish(e.writer, events.UPLOADED, { app = "app", profileKey = key }))
      e.worker:start()
      wait_until("the staged upload is deleted", function() return #keys(e.store, "app/staging/") == 0 end)
      e.worker:stop()
      assert.equals(etag, assert(e.store:stat("app/default.pgo")).etag)
      assert.equals(before, merges())
      assert.same({ [1] = 1 }, profiles.counts(base_of(e, "app")))
    end)
  end)

  -- A store that "crashes" (fails) the first write of a key matching pattern, then works.
  local function crashing(real, pattern)
    local crashed = false
    local store = setmetatable({ name = real.name }, { __index = function(_, k)
      return function(_, ...) return real[k](real, ...) end
    end })
    store.put = function(_, key, body, opts)
      if not crashed and key:match(pattern) then
        crashed = true
        return nil, "UNAVAILABLE: the process died here", "UNAVAILABLE"
      end
      return real:put(key, body, opts)
    end
    return store, function() return crashed end
  end

  it("is unaffected by a crash between writing the new ledger and the base", function()
    run(function()
      local real = assert(blob.open("mem://ghost-" .. crypto.hex(crypto.random(4))))
      local e = setup { store = real }
      stage(e, "app", profiles.variant(1), false)
      assert(e.worker:merge_app("app"))
      local key2 = stage(e, "app", profiles.variant(2), false)
      stage(e, "app", profiles.variant(3), false)
      -- a dead worker's ledger for a base it never wrote, claiming upload 2
      local ghost = json.encode(json.object("base", ("f"):rep(64), "merged", json.array { key2 }))
      assert(real:put("app/ledger/" .. ("f"):rep(64) .. ".json", ghost))
      -- and a real crash after the ledger of the next base (claiming 2 and 3) was written
      local store, crashed = crashing(real, "^app/default%.pgo$")
      assert.is_nil(setup({ store = store }).worker:merge_app("app"))
      assert.is_true(crashed())
      assert.equals(3, #keys(real, "app/ledger/"))
      local ok, err = setup({ store = real }).worker:merge_app("app")
      assert.equals(2, ok, err)
      assert.same({ 1, 1, 1 }, profiles.counts(base_of(e, "app")))
    end)
  end)

  it("commits nothing when it crashes while writing the ledger (the ledger comes before the base)", function()
    run(function()
      local real = assert(blob.open("mem://order-" .. crypto.hex(crypto.random(4))))
      local e = setup { store = real }
      stage(e, "app", profiles.variant(1), false)
      assert(e.worker:merge_app("app"))
      local etag = assert(real:stat("app/default.pgo")).etag
      stage(e, "app", profiles.variant(2), false)
      local store, crashed = crashing(real, "^app/ledger/")
      assert.is_nil(setup({ store = store }).worker:merge_app("app"))
      assert.is_true(crashed())
      assert.equals(etag, assert(real:stat("app/default.pgo")).etag)
      -- the next process merges upload 2 once, and upload 1 stays counted once
      assert(setup({ store = real }).worker:merge_app("app"))
      assert.same({ 1, 1 }, profiles.counts(base_of(e, "app")))
    end)
  end)

  it("loses no update when two workers merge the same app at once", function()
    run(function()
      local dir = support.tmpdir()
      local store = assert(blob.open("file://" .. dir))
      -- worker A reads the base, then waits to write until B has written: A's write must fail and
      -- A must merge again from B's base.
      local b_done = async.event()
      local gated = setmetatable({ name = store.name }, { __index = function(_, k)
        return function(_, ...) return store[k](store, ...) end
      end })
      local a_paused = async.event()
      gated.put = function(_, key, body, opts)
        if key == "app/default.pgo" and not b_done.is_set then
          a_paused.set()
          b_done.wait()
        end
        return store:put(key, body, opts)
      end
      local a = setup { store = gated }
      local b = setup { store = store }
      for i = 1, 3 do stage(a, "app", profiles.variant(i), false) end
      local conflicts = metrics.default.by_name.autopgo_merge_conflicts_total:get()
      local results = async.all {
        function() return a.worker:merge_app("app") end,
        function()
          a_paused.wait()
          for i = 4, 5 do stage(b, "app", profiles.variant(i), false) end
          local ok, err = b.worker:merge_app("app")
          b_done.set()
          return ok, err
        end,
      }
      assert.is_truthy(results[1][2], tostring(results[1][3]))
      assert.is_truthy(results[2][2], tostring(results[2][3]))
      assert.is_true(metrics.default.by_name.autopgo_merge_conflicts_total:get() > conflicts)
      assert.same({ 1, 1, 1, 1, 1 }, profiles.counts(assert(store:get("app/default.pgo")).body))
      support.rm_rf(dir)
    end)
  end)

  it("moves poison aside to {app}/rejected/ and keeps going", function()
    run(function()
      local e = setup()
      e.worker:start()
      stage(e, "app", profiles.variant(1))
      wait_until("the first merge", function() return base_of(e, "app") ~= nil end)
      local bad = stage(e, "app", "this is not a profile")
      local other = stage(e, "app", profiles.file("edge/heap-sample-types.pb.gz"))
      stage(e, "app", profiles.variant(2))
      wait_until("the good upload is merged", function()
        return (profiles.counts(base_of(e, "app"))[2] or 0) == 1
      end)
      wait_until("staging is empty", function() return #keys(e.store, "app/staging/") == 0 end)
      local name, other_name = bad:match("[^/]+$"), other:match("[^/]+$")
      assert.same({ "app/rejected/" .. name, "app/rejected/" .. name .. ".reason",
        "app/rejected/" .. other_name, "app/rejected/" .. other_name .. ".reason" }, keys(e.store, "app/rejected/"))
      assert.equals("this is not a profile", assert(e.store:get("app/rejected/" .. name)).body)
      assert.matches("MALFORMED", assert(e.store:get("app/rejected/" .. name .. ".reason")).body)
      assert.matches("INCOMPATIBLE: .*no sample type is common",
        assert(e.store:get("app/rejected/" .. other_name .. ".reason")).body)
      assert.same({ 1, 1 }, profiles.counts(base_of(e, "app")))
      e.worker:stop()
    end)
  end)

  it("rejects malformed events and events of unknown types, and handles the next one", function()
    run(function()
      local e = setup()
      -- record how each message was settled
      local settled = {}
      local real = e.reader
      e.worker.reader = setmetatable({ receive = function()
        local msg, err, code = real:receive()
        if not msg then return nil, err, code end
        return setmetatable({
          ack = function() settled[#settled + 1] = { msg.body, "ack" } return msg:ack() end,
          reject = function(_, why) settled[#settled + 1] = { msg.body, "reject", why } return msg:reject(why) end,
        }, { __index = function(_, k)
          local v = msg[k]
          if type(v) == "function" then return function(_, ...) return v(msg, ...) end end
          return v
        end })
      end, close = function() return real:close() end }, { __index = real })
      local failed = metrics.default.by_name.autopgo_events_failed_total
      local malformed = failed:get({ type = "malformed", stage = "handle" })
      local unknown = failed:get({ type = "unknown", stage = "handle" })
      e.worker:start()
      local bad_app = '{"id":"x","timestamp":"2024-10-28T12:16:34Z","type":"profile.uploaded",'
        .. '"payload":{"app":"../etc","profileKey":"x"}}'
      local other = '{"id":"y","timestamp":"2024-10-28T12:16:34Z","type":"profile.renamed","payload":{}}'
      assert(e.writer:publish("{not json", { key = "app" }))
      assert(e.writer:publish(bad_app, { key = "app" }))
      assert(e.writer:publish(other, { key = "app" }))
      stage(e, "app", profiles.variant(1))
      wait_until("the upload is merged", function() return #keys(e.store, "app/staging/") == 0 end)
      e.worker:stop()
      assert.same({ [1] = 1 }, profiles.counts(base_of(e, "app")))
      assert.is_true(#settled >= 4) -- the upload, then the worker's own profile.merged
      assert.same({ "{not json", "reject" }, { settled[1][1], settled[1][2] })
      assert.matches("^INVALID: event is not JSON", settled[1][3])
      assert.same({ bad_app, "reject" }, { settled[2][1], settled[2][2] })
      assert.matches("^INVALID: ", settled[2][3])
      assert.same({ other, "reject", 'UNSUPPORTED: unknown event type "profile.renamed"' }, settled[3])
      for i = 4, #settled do assert.equals("ack", settled[i][2]) end
      assert.equals(malformed + 2, failed:get({ type = "malformed", stage = "handle" }))
      assert.equals(unknown + 1, failed:get({ type = "unknown", stage = "handle" }))
    end)
  end)

  it("retries an event whose handling failed", function()
    run(function()
      local real = assert(blob.open("mem://retry-" .. crypto.hex(crypto.random(4))))
      local failures = 0
      local flaky = setmetatable({ name = real.name }, { __index = function(_, k)
        return function(_, ...) return real[k](real, ...) end
      end })
      flaky.list = function(_, prefix)
        if failures < 2 then
          failures = failures + 1
          return nil, "UNAVAILABLE: the store is down", "UNAVAILABLE"
        end
        return real:list(prefix)
      end
      local e = setup { store = flaky }
      e.worker:start()
      stage(e, "app", profiles.variant(1))
      wait_until("the upload is merged", function() return #keys(real, "app/staging/") == 0 end, 20000)
      e.worker:stop()
      assert.equals(2, failures)
      assert.same({ [1] = 1 }, profiles.counts(assert(real:get("app/default.pgo")).body))
    end, 40000)
  end)

  it("deletes every object of an app on profile.deleted and nothing of other apps", function()
    run(function()
      local e = setup()
      e.worker:start()
      stage(e, "app", profiles.variant(1))
      stage(e, "other", profiles.variant(2))
      wait_until("both merged", function() return base_of(e, "app") and base_of(e, "other") end)
      stage(e, "app", profiles.variant(3), false) -- pending, never announced
      assert(events.publish(e.writer, events.DELETED, { app = "app" }))
      wait_until("the app is gone", function() return #keys(e.store, "app/") == 0 end)
      e.worker:stop()
      assert.is_not_nil(base_of(e, "other"))
    end)
  end)

  it("deletes the base last and its ledger just before it", function()
    run(function()
      local e = setup()
      local order = {}
      local delete = e.store.delete
      e.store.delete = function(store, key)
        order[#order + 1] = key
        return delete(store, key)
      end
      e.worker:start()
      stage(e, "app", profiles.variant(1))
      wait_until("merged", function() return base_of(e, "app") and #keys(e.store, "app/staging/") == 0 end)
      stage(e, "app", profiles.variant(2), false) -- pending, never announced
      order = {}
      assert(events.publish(e.writer, events.DELETED, { app = "app" }))
      wait_until("the app is gone", function() return #keys(e.store, "app/") == 0 end)
      e.worker:stop()
      assert.equals("app/default.pgo", order[#order])
      assert.matches("^app/ledger/", order[#order - 1])
      assert.matches("^app/staging/", order[1])
    end)
  end)

  it("only ever deletes staged objects on profile.merged", function()
    run(function()
      local e = setup()
      e.worker:start()
      stage(e, "app", profiles.variant(1))
      wait_until("merged", function() return #keys(e.store, "app/staging/") == 0 end)
      assert(events.publish(e.writer, events.MERGED,
        { app = "app", profileKey = "app/default.pgo", mergedKey = "app/default.pgo" }))
      stage(e, "app", profiles.variant(2))
      wait_until("merged again", function() return #keys(e.store, "app/staging/") == 0 end)
      e.worker:stop()
      assert.same({ 1, 1 }, profiles.counts(base_of(e, "app")))
    end)
  end)

  it("applies the app's prune rules and hook", function()
    run(function()
      local pprof = require("autopgo.core").pprof
      local rules = { { drop = "^regexp\\.", keep = "^regexp\\.\\(\\*machine\\)\\.add$" } }
      local function rename(profile)
        profile:rename_functions(function(name)
          if name == "main.sortWork" then return "main.renamed" end
        end)
      end
      local hooked = {}
      local e = setup { policy_opts = { policy = {
        app = { prune = rules, hook = function(profile, app)
          hooked[#hooked + 1] = app
          rename(profile)
        end },
      } } }
      local inputs = {}
      for i = 1, 2 do
        local body = profiles.file(profiles.usable[i])
        stage(e, "app", body, false)
        inputs[i] = assert(pprof.decode(body))
        rename(inputs[i])
      end
      assert(e.worker:merge_app("app"))
      assert.same({ "app", "app" }, hooked)
      -- what the policy says, done by hand: hook, merge, prune, then add up equal stacks
      local pruned = assert(pprof.merge(inputs, { prune = rules, output = "profile" }))
      local want = assert(pprof.decode(assert(pprof.merge({ pruned }))))
      local got = assert(pprof.decode(base_of(e, "app")))
      assert.same(want:top(100000, { by = "cum" }), got:top(100000, { by = "cum" }))
      assert.same(want:info().sample_types, got:info().sample_types)
      assert.equals(want:info().samples, got:info().samples) -- compacted after the prune
      local names = {}
      for _, t in ipairs(got:top(100000, { by = "cum" })) do names[t.name] = true end
      assert.is_nil(names["main.sortWork"])
      assert.is_true(names["main.renamed"])
      -- the regexp frames are cut off: their time is their callers'
      assert.is_true(names["main.regexpWork"])
      assert.is_nil(names["regexp.(*Regexp).FindAllString"])
    end)
  end)

  it("rejects an upload its hook fails on, and merges the rest", function()
    run(function()
      local e = setup { policy_opts = { policy = { ["*"] = { hook = function(profile)
        if profile:top(1)[1].name == "upload_2" then error("no thanks") end
      end } } } }
      stage(e, "app", profiles.variant(1), false)
      local bad = stage(e, "app", profiles.variant(2), false)
      stage(e, "app", profiles.variant(3), false)
      assert(e.worker:merge_app("app"))
      assert.same({ [1] = 1, [3] = 1 }, profiles.counts(base_of(e, "app")))
      local reason = assert(e.store:get("app/rejected/" .. bad:match("[^/]+$") .. ".reason")).body
      assert.matches("POLICY: the policy hook of app failed: .*no thanks", reason)
    end)
  end)

  it("lets the merge in progress finish when stopped", function()
    run(function()
      local real = assert(blob.open("mem://stop-" .. crypto.hex(crypto.random(4))))
      local in_merge, release = async.event(), async.event()
      local gated = setmetatable({ name = real.name }, { __index = function(_, k)
        return function(_, ...) return real[k](real, ...) end
      end })
      gated.put = function(_, key, body, opts)
        if key == "app/default.pgo" then
          in_merge.set()
          release.wait()
        end
        return real:put(key, body, opts)
      end
      local e = setup { store = gated }
      for i = 1, 3 do stage(e, "app", profiles.variant(i)) end
      e.worker:start()
      in_merge.wait()
      local stopped = async.event()
      async.spawn(function()
        e.worker:stop()
        stopped.set()
      end)
      async.sleep(20)
      assert.is_false(stopped.is_set, "stop returned while a merge was still writing")
      release.set()
      assert.is_true(stopped.wait(10000))
      assert.same({ 1, 1, 1 }, profiles.counts(assert(real:get("app/default.pgo")).body))
    end)
  end)

  it("does not merge again an upload already in the ledger, in a fresh worker over the same store", function()
    run(function()
      local store = assert(blob.open("mem://fresh-" .. crypto.hex(crypto.random(4))))
      local first = setup { store = keeps_staged(store) }
      local key = stage(first, "app", profiles.variant(1), false)
      assert(first.worker:merge_app("app"))
      local etag = assert(store:stat("app/default.pgo")).etag
      -- The staged object is still there (the first worker died before deleting it): a new
      -- process, with no memory of the first, sees it staged and must find it in the base's ledger.
      assert.same({ key }, keys(store, "app/staging/"))
      local before = merges()
      local fresh = setup { store = store }
      assert.equals(0, assert(fresh.worker:merge_app("app")))
      assert.equals(etag, assert(store:stat("app/default.pgo")).etag)
      assert.equals(before, merges())
      -- and through its event too, then with a new upload beside it
      assert(events.publish(fresh.writer, events.UPLOADED, { app = "app", profileKey = key }))
      stage(fresh, "app", profiles.variant(2))
      fresh.worker:start()
      wait_until("staging is empty", function() return #keys(store, "app/staging/") == 0 end)
      fresh.worker:stop()
      assert.same({ 1, 1 }, profiles.counts(base_of(fresh, "app")))
    end)
  end)

  it("fails the pass, merging nothing, when the base's ledger cannot be read", function()
    run(function()
      local real = assert(blob.open("mem://ledger-" .. crypto.hex(crypto.random(4))))
      local first = setup { store = keeps_staged(real) }
      stage(first, "app", profiles.variant(1), false)
      assert(first.worker:merge_app("app"))
      local ledger = keys(real, "app/ledger/")[1]
      local good = assert(real:get(ledger)).body
      stage(first, "app", profiles.variant(2), false)
      local errors = metrics.default.by_name.autopgo_ledger_errors_total
      -- A read error, then bad JSON, then a document that is not a ledger: each fails the pass
      -- in a fresh worker (no memory to answer from), and leaves the base and staging alone.
      local failing = true
      local flaky = setmetatable({ name = real.name }, { __index = function(_, k)
        return function(_, ...) return real[k](real, ...) end
      end })
      flaky.get = function(_, key, opts)
        if key == ledger and failing then return nil, "UNAVAILABLE: the store is down", "UNAVAILABLE" end
        return real:get(key, opts)
      end
      local etag = assert(real:stat("app/default.pgo")).etag
      local count = errors:get()
      local ok, err, code = setup({ store = flaky }).worker:merge_app("app")
      assert.is_nil(ok)
      assert.equals("UNAVAILABLE", code, err)
      failing = false
      for _, body in ipairs { "{not json", '{"merged": "app/staging/1"}', '{"base": "0000", "merged": []}' } do
        assert(real:put(ledger, body))
        ok, err, code = setup({ store = real }).worker:merge_app("app")
        assert.is_nil(ok)
        assert.equals("INVALID", code, err)
        assert.matches("ledger", err)
      end
      assert.equals(count + 4, errors:get())
      assert.equals(etag, assert(real:stat("app/default.pgo")).etag)
      assert.equals(2, #keys(real, "app/staging/"))
      -- repaired, the next pass merges the new upload only
      assert(real:put(ledger, good))
      assert(setup({ store = real }).worker:merge_app("app"))
      assert.same({ 1, 1 }, profiles.counts(base_of(first, "app")))
    end)
  end)

  it("keeps a base that does not parse aside, says so, and starts again from what is staged", function()
    run(function()
      local real = assert(blob.open("mem://corrupt-" .. crypto.hex(crypto.random(4))))
      local e = setup { store = keeps_staged(real) }
      local k1 = stage(e, "app", profiles.variant(1), false)
      assert(e.worker:merge_app("app"))
      local good = base_of(e, "app")
      -- The store hands back something else than was written (truncated): no ledger names it.
      local truncated = good:sub(1, #good // 2)
      assert(e.store:put("app/default.pgo", truncated))
      local k2 = stage(e, "app", profiles.variant(2), false)
      local corrupt = metrics.default.by_name.autopgo_corrupt_bases_total:get()
      local fresh = setup { store = real }
      assert(fresh.worker:merge_app("app"))
      -- upload 1 was still staged (its worker died before deleting it): it is merged again, not lost
      assert.same({ 1, 1 }, profiles.counts(base_of(e, "app")))
      assert.equals(corrupt + 1, metrics.default.by_name.autopgo_corrupt_bases_total:get())
      local digest = crypto.hex(crypto.digest("sha256", truncated))
      local aside = "app/rejected/default.pgo." .. digest
      assert.same({ aside, aside .. ".reason" }, keys(e.store, "app/rejected/"))
      assert.equals(truncated, assert(e.store:get(aside)).body)
      local reason = assert(e.store:get(aside .. ".reason")).body
      assert.matches("MALFORMED", reason)
      assert.matches("no ledger names it", reason)
      local doc = json.decode(assert(e.store:get("app/ledger/" ..
        crypto.hex(crypto.digest("sha256", base_of(e, "app"))) .. ".json")).body)
      table.sort(doc.merged)
      assert.same({ k1, k2 }, doc.merged)
    end)
  end)

  it("merges uploads whose sample types differ from the base's on the types they share", function()
    run(function()
      local pprof = require("autopgo.core").pprof
      -- the first upload has cpu/nanoseconds only, later ones (normal Go profiles) two types
      local cpu_only = assert(pprof.merge { profiles.file("edge/cpu-only-nanoseconds.pb.gz"), profiles.variant(1) })
      local e = setup()
      stage(e, "app", cpu_only, false)
      assert(e.worker:merge_app("app"))
      stage(e, "app", profiles.variant(2), false)
      stage(e, "app", profiles.variant(3), false)
      assert(e.worker:merge_app("app"))
      assert.same({}, keys(e.store, "app/rejected/"))
      assert.same({ 1, 1, 1 }, profiles.counts(base_of(e, "app")))
      local types = assert(pprof.validate(base_of(e, "app"))).sample_types
      assert.equals(1, #types)
      assert.equals("cpu", types[1].type)
      -- and the other way round: a base with two types meets a cpu-only upload
      local f = setup()
      stage(f, "app", profiles.variant(2), false)
      assert(f.worker:merge_app("app"))
      stage(f, "app", cpu_only, false)
      assert(f.worker:merge_app("app"))
      assert.same({ 1, 1 }, profiles.counts(base_of(f, "app")))
      assert.equals(1, #assert(pprof.validate(base_of(f, "app"))).sample_types)
    end)
  end)

  it("finishes the pass in progress when stopped and leaves the rest staged for the next start", function()
    run(function()
      local real = assert(blob.open("mem://drain-" .. crypto.hex(crypto.random(4))))
      local in_merge, release = async.event(), async.event()
      local gated = setmetatable({ name = real.name }, { __index = function(_, k)
        return function(_, ...) return real[k](real, ...) end
      end })
      gated.put = function(_, key, body, opts)
        if key == "app/default.pgo" then
          in_merge.set()
          release.wait()
        end
        return real:put(key, body, opts)
      end
      local e = setup { store = gated, batch_limit = 2 }
      local staged = {}
      for i = 1, 7 do staged[#staged + 1] = stage(e, "app", profiles.variant(i)) end
      e.worker:start()
      in_merge.wait()
      local stopped = async.event()
      async.spawn(function()
        e.worker:stop()
        stopped.set()
      end)
      release.set()
      assert.is_true(stopped.wait(10000))
      -- one pass of two went in (and out of staging: the pass deletes what it merged); the rest
      -- stays staged
      assert.same({ 1, 1 }, profiles.counts(assert(real:get("app/default.pgo")).body))
      assert.same({ table.unpack(staged, 3) }, keys(real, "app/staging/"))
      assert.equals(2, #json.decode(assert(real:get(keys(real, "app/ledger/")[1])).body).merged)
      local again = setup { store = real, recover = true, batch_limit = 2 }
      again.worker:start()
      wait_until("the rest is merged", function() return #keys(real, "app/staging/") == 0 end)
      again.worker:stop()
      assert.same({ 1, 1, 1, 1, 1, 1, 1 }, profiles.counts(assert(real:get("app/default.pgo")).body))
    end)
  end)

  it("holds uploads to the shared limits (autopgo.limits, which the API checks uploads against)", function()
    run(function()
      local pprof = require("autopgo.core").pprof
      local limits = require "autopgo.limits"
      local saved = limits.profile.max_decompressed
      local e = setup()
      stage(e, "app", profiles.variant(1), false)
      assert(e.worker:merge_app("app"))
      -- an upload larger than the base, with the limit in between
      local upload = assert(pprof.merge { profiles.variant(2), profiles.variant(3), profiles.variant(4) })
      local base_size = assert(pprof.validate(base_of(e, "app"))).decompressed_size
      assert.is_true(assert(pprof.validate(upload)).decompressed_size > base_size)
      limits.profile.max_decompressed = base_size
      local ok, err = pcall(function()
        stage(e, "app", upload, false)
        assert(e.worker:merge_app("app"))
      end)
      limits.profile.max_decompressed = saved
      assert(ok, err)
      assert.same({ 1 }, profiles.counts(base_of(e, "app")))
      local rejected = keys(e.store, "app/rejected/")
      assert.equals(2, #rejected)
      assert.matches("TOO_LARGE", assert(e.store:get(rejected[2])).body)
    end)
  end)

  it("merges what is staged when it starts, for buses that lose events", function()
    run(function()
      local e = setup { recover = true }
      stage(e, "app", profiles.variant(1), false)
      stage(e, "other-app", profiles.variant(2), false)
      e.worker:start()
      wait_until("both are merged", function()
        return #keys(e.store, "app/staging/") == 0 and #keys(e.store, "other-app/staging/") == 0
      end)
      e.worker:stop()
      assert.same({ [1] = 1 }, profiles.counts(base_of(e, "app")))
      assert.same({ [2] = 1 }, profiles.counts(base_of(e, "other-app")))
    end)
  end)
end)
