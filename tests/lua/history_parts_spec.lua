-- Specs of the parts of history segments (lua/autopgo/segment_parts.lua, through
-- lua/autopgo/history.lua; issue 19 goal 2): a pass's cost for a segment follows its batch, not
-- what the segment already holds (manifests name parts, and the segment profile folds like the
-- base); every crash point loses and double-counts nothing; a manifest of the old layout (uploads
-- inline) is read and extended; readers answer alike on both.
local support = require "tests.lua.support"
local profiles = require "tests.lua.profiles"
local blob = require "autopgo.blob"
local history = require "autopgo.history"
local segparts = require "autopgo.segment_parts"
local json = require "autopgo.json"
local keys = require "autopgo.keys"
local merging = require "autopgo.merging"
local pprof = require("autopgo.core").pprof
local crypto = require("autopgo.core").crypto

local run = support.run
local NS = 1000000000
local T0 = 1700002800 -- an hour's start; the corpus profiles' time_nanos lie after it: keys give capture times

local function key_of(i) return keys.staging("app", (T0 + 10) * NS + i) end

local decoded = {}
local function variant(n)
  if not decoded[n] then
    local p = assert(pprof.decode(profiles.variant(n)))
    decoded[n] = { profile = p, info = p:info(), body = profiles.variant(n) }
  end
  return decoded[n]
end

-- The merge of the uploads i = from .. to (variant 1 + i % 3 each) and of ranges more: the three
-- variants scaled by how often they occur (the same profile as merging them one by one, cheaper).
local function merge_of(ranges, as_profile)
  local n = { 0, 0, 0 }
  for _, r in ipairs(ranges) do
    for i = r[1], r[2] do n[1 + i % 3] = n[1 + i % 3] + 1 end
  end
  local inputs, scales = {}, {}
  for v = 1, 3 do
    if n[v] > 0 then
      inputs[#inputs + 1] = variant(v).profile
      scales[#scales + 1] = n[v]
    end
  end
  local res = assert(merging.merge(inputs, nil, scales, as_profile))
  return as_profile and res.profile or res.bytes
end

-- Items of the staged keys i = from .. to, as a pass hands them to history:add, and the merge of
-- their inputs (what the pass merges once).
local function items(from, to)
  local out = {}
  for i = from, to do
    local v = variant(1 + i % 3)
    out[#out + 1] = { key = key_of(i), body = v.body, input = v.profile, info = v.info, scale = 1 }
  end
  return out, #out > 1 and merge_of({ { from, to } }, true) or nil
end

local function add(h, from, to)
  local list, whole = items(from, to)
  local ok, err, code = h:add("app", list, whole)
  if whole then whole:close() end
  return ok, err, code
end

local function new_history(store)
  return history.new { store = store, segment = 3600, now = function() return (T0 + 10 * 3600) * NS end }
end

-- The only segment of the app: { start, doc, uploads }.
local function segment(h)
  local segs = assert(h:segments_uploads("app"))
  assert.equals(1, #segs)
  return segs[1]
end

local function upload_keys(seg)
  local out = {}
  for _, u in ipairs(seg.uploads) do out[#out + 1] = u.key end
  table.sort(out)
  return out
end

local function keys_from(from, to)
  local out = {}
  for i = from, to do out[#out + 1] = key_of(i) end
  table.sort(out)
  return out
end

local function history_keys(store, what)
  local out = {}
  for _, item in ipairs(assert(store:list(keys.history_prefix("app")))) do
    if select(4, keys.parse_history(item.key)) == what then out[#out + 1] = item.key end
  end
  table.sort(out)
  return out
end

local function segment_profile(h, store)
  local seg = segment(h)
  return assert(store:get(keys.segment_object("app", 3600, seg.start, seg.doc.profile))).body
end

-- What the merge of variants counts says, the profile's info (sample count, totals) and its top
-- rows: equal for profiles equal up to the order of their tables.
local function canonical(bytes)
  local p = assert(pprof.decode(bytes))
  local info = p:info()
  local out = { samples = info.samples, totals = {}, top = p:top(100000) }
  for i, st in ipairs(info.sample_types) do out.totals[i] = st.total end
  table.sort(out.top, function(a, b)
    if a.flat ~= b.flat then return a.flat < b.flat end
    return a.name < b.name
  end)
  p:close()
  return out
end

-- The merge in full of the uploads i = from .. to.
local function full_merge(from, to)
  local inputs = {}
  for i = from, to do inputs[#inputs + 1] = profiles.variant(1 + i % 3) end
  return assert(merging.merge(inputs)).bytes
end

-- The store requests and bytes of adding a batch of 4 to a segment already holding `prior` uploads
-- (added by passes of 256, the folder of the last one held).
local function batch_cost(prior)
  local store = support.counting_store("parts")
  local h = new_history(store)
  assert(add(h, 0, 0)) -- a new segment: merged in full, its folder made at the next pass
  for from = 1, prior - 1, 256 do assert(add(h, from, math.min(from + 255, prior - 1))) end
  store.reset()
  assert(add(h, 20000, 20003))
  local c = store.counts
  local cost = { calls = c.calls, put_bytes = c.put_bytes, got_bytes = c.got_bytes }
  store.reset()
  assert.equals(prior + 4, segment(h).doc.count)
  return cost, h, store
end

describe("history parts", function()
  it("costs a pass over a segment of 10 000 uploads what it costs over one of 10", function()
    run(function()
      local small = batch_cost(10)
      local large, h, store = batch_cost(10000)
      assert.same(small.calls, large.calls)
      -- the manifest, the batch's provenance records (none here); nothing of the segment's uploads
      -- or profile is read: its parts hold older keys, its folder holds its profile
      assert.same({ get = 1 + 4, put = 3, delete = 1 }, large.calls)
      -- bytes: the manifest names up to FANOUT - 1 parts per level (the log of the count) of
      -- ~200 bytes each, a few KB, where the old layout read and wrote every upload again (~200
      -- bytes each: 2 MB a pass here) and read the segment's profile back
      assert.is_true(large.put_bytes < small.put_bytes * 1.05 + 4096, ("%d vs %d"):format(large.put_bytes,
        small.put_bytes))
      assert.is_true(large.got_bytes < small.got_bytes + 4096, ("%d vs %d"):format(large.got_bytes, small.got_bytes))
      -- the parts stay few and the segment's profile is what the merge in full gives
      local seg = segment(h)
      assert.is_true(#seg.doc.upload_parts <= 16, #seg.doc.upload_parts)
      local want = keys_from(0, 9999)
      for _, k in ipairs(keys_from(20000, 20003)) do want[#want + 1] = k end
      assert.same(want, upload_keys(seg))
      local whole = merge_of({ { 0, 9999 }, { 20000, 20003 } })
      assert.same(canonical(whole), canonical(segment_profile(h, store)))
    end, 300000)
  end)

  it("folds a batch into the segment's profile and merges in full only without a folder over it", function()
    run(function()
      local store = support.counting_store("parts")
      local h = new_history(store)
      assert(add(h, 0, 9))
      local real_merge, real_fold, calls = merging.merge, merging.fold, {}
      merging.merge = function(list, ...)
        calls[#calls + 1] = "merge " .. #list
        return real_merge(list, ...)
      end
      merging.fold = function(folder, list, ...)
        calls[#calls + 1] = "fold " .. #list
        return real_fold(folder, list, ...)
      end
      local ok, err = pcall(function()
        assert(add(h, 10, 10)) -- no folder yet (a new segment's first merge): made from the object
        assert(add(h, 11, 11)) -- the one kept at the last commit
        local other = new_history(store) -- another worker wrote it since: this one's folder is over
        assert(add(other, 12, 13))        -- another version, made again
        assert(add(h, 14, 14))
      end)
      merging.merge, merging.fold = real_merge, real_fold
      assert(ok, err)
      -- (a batch of two is merged once by the caller: items() does it with merging.merge)
      assert.same({ "fold 1", "fold 1", "merge 2", "fold 1", "fold 1" }, calls)
      assert.same(canonical(full_merge(0, 14)), canonical(segment_profile(h, store)))
    end)
  end)

  it("combines parts by level: few parts, each upload once, replaced parts deleted", function()
    run(function()
      local fanout = segparts.FANOUT
      segparts.FANOUT = 2
      local store = assert(blob.open("mem://parts-" .. crypto.hex(crypto.random(5))))
      local h = new_history(store)
      local ok, err = pcall(function()
        for i = 0, 99 do assert(add(h, i, i)) end
      end)
      segparts.FANOUT = fanout
      assert(ok, err)
      local seg = segment(h)
      assert.equals(100, seg.doc.count)
      assert.same(keys_from(0, 99), upload_keys(seg))
      -- 100 = 0b1100100: one part per set bit
      assert.equals(3, #seg.doc.upload_parts)
      assert.equals(3, #history_keys(store, "part"))
      assert.equals(1, #history_keys(store, "profile"))
      assert.same(canonical(full_merge(0, 99)), canonical(segment_profile(h, store)))
    end)
  end)

  it("loses and double-counts nothing at each crash point of a segment commit", function()
    run(function()
      local store = assert(blob.open("mem://parts-" .. crypto.hex(crypto.random(5))))
      local h = new_history(store)
      assert(add(h, 0, 3))
      local real_put = store.put
      local mkey = keys.segment_manifest("app", 3600, T0)
      -- 1. the part and profile are written, the manifest is not (a crash before the commit point)
      store.put = function(self, key, body, opts)
        if key == mkey then return nil, "UNAVAILABLE: injected", "UNAVAILABLE" end
        return real_put(self, key, body, opts)
      end
      assert.is_nil((add(h, 4, 5)))
      store.put = real_put
      assert.equals(4, segment(h).doc.count)
      assert.equals(2, #history_keys(store, "part")) -- the orphan beside the named one
      -- the sweep removes the orphans (part and profile) once old enough, never a named part
      history.ORPHAN_AGE = -1
      assert.is_true(assert(h:sweep()) >= 2)
      history.ORPHAN_AGE = 600
      assert.equals(1, #history_keys(store, "part"))
      assert.same(keys_from(0, 3), upload_keys(segment(h)))
      -- 2. the manifest is written but its answer is lost: the retry finds its uploads held
      store.put = function(self, key, body, opts)
        local ok = real_put(self, key, body, opts)
        if key == mkey then return nil, "UNAVAILABLE: the answer was lost", "UNAVAILABLE" end
        return ok
      end
      assert.is_nil((add(h, 4, 5)))
      store.put = real_put
      local before = segment(h)
      assert.equals(6, before.doc.count)
      assert(add(h, 4, 5)) -- the pass again: nothing to add
      assert(add(h, 5, 7)) -- one held, two new
      local seg = segment(h)
      assert.same(keys_from(0, 7), upload_keys(seg))
      assert.same(canonical(full_merge(0, 7)), canonical(segment_profile(h, store)))
      -- 3. a lost race: another writer commits between the read and the conditional write
      local other = new_history(store)
      local raced = false
      store.put = function(self, key, body, opts)
        if key == mkey and not raced then
          raced = true
          assert(add(other, 8, 9))
        end
        return real_put(self, key, body, opts)
      end
      assert(add(h, 9, 11))
      store.put = real_put
      assert.same(keys_from(0, 11), upload_keys(segment(h)))
      assert.same(canonical(full_merge(0, 11)), canonical(segment_profile(h, store)))
      -- nothing unnamed is left but the loser's part and profile, swept in time
      history.ORPHAN_AGE = -1
      h:sweep()
      history.ORPHAN_AGE = 600
      assert.equals(#segment(h).doc.upload_parts, #history_keys(store, "part"))
      assert.equals(1, #history_keys(store, "profile"))
    end)
  end)

  it("reads a manifest of the old layout, answers alike from it, and extends it in place", function()
    run(function()
      local store = assert(blob.open("mem://parts-" .. crypto.hex(crypto.random(5))))
      local h = new_history(store)
      assert(add(h, 0, 5))
      local seg = segment(h)
      -- the same segment as the previous layout wrote it: every upload in the manifest
      local list = json.array()
      for i, u in ipairs(seg.uploads) do
        list[i] = json.object("key", u.key, "captured", u.captured, "duration", u.duration, "size", u.size,
          "samples", u.samples, "source", u.source, "weight", u.weight)
      end
      local old = json.encode(json.object("app", "app", "segment", 3600, "start", seg.start, "profile",
        seg.doc.profile, "bytes", seg.doc.bytes, "samples", seg.doc.samples, "uploads", list))
      local store2 = assert(blob.open("mem://parts-" .. crypto.hex(crypto.random(5))))
      local h2 = new_history(store2)
      assert(store2:put(keys.segment_manifest("app", 3600, seg.start), old))
      local okey = keys.segment_object("app", 3600, seg.start, seg.doc.profile)
      assert(store2:put(okey, assert(store:get(okey)).body))
      local seg2 = segment(h2)
      assert.same(seg.uploads, seg2.uploads)
      assert.equals(seg.doc.count, seg2.doc.count)
      assert.equals(seg.doc.samples, seg2.doc.samples)
      assert.equals(seg.doc.bytes, seg2.doc.bytes)
      -- the readers' answers over HTTP (history, versions) are the same from either layout
      local function answers(st, hist)
        local httpd, httpc = require "autopgo.httpd", require "tests.lua.httpc"
        local router = httpd.router()
        local a = require("autopgo.api").new { store = st, history = hist,
          writer = assert(require("autopgo.bus").writer("mem://parts-" .. crypto.hex(crypto.random(5)))) }
        a:routes(router)
        require("autopgo.view_api").new(a):routes(router)
        local srv = assert(httpd.listen { host = "127.0.0.1", port = 0, handler = router })
        local out = {}
        for _, path in ipairs { "/api/profile/app/history", "/api/profile/app/versions" } do
          local r = httpc.request(srv.port, "GET", path)
          assert.equals(200, r.status, r.body)
          out[#out + 1] = r.body
        end
        srv:close()
        return out
      end
      local new_answers = answers(store, h)
      assert.same(new_answers, answers(store2, h2))
      assert.matches('"uploads":6', new_answers[1], 1, true)
      -- extended: its uploads move into a part, none counted again
      assert(add(h2, 3, 8))
      local up = segment(h2)
      assert.is_nil(up.doc.uploads)
      assert.same(keys_from(0, 8), upload_keys(up))
      assert.equals(9, up.doc.count)
      assert.same(canonical(full_merge(0, 8)), canonical(segment_profile(h2, store2)))
    end)
  end)

  it("rebuilds a corrupt base from segments whose uploads lie in combined parts, counting none twice", function()
    run(function()
      local fanout = segparts.FANOUT
      segparts.FANOUT = 2
      local ok, err = pcall(function()
        local store = assert(blob.open("mem://parts-" .. crypto.hex(crypto.random(5))))
        local h = new_history(store)
        local pass = require("autopgo.merge_pass").new { store = store, history = h, batch_limit = 4,
          writer = assert(require("autopgo.bus").writer("mem://parts-" .. crypto.hex(crypto.random(5)))),
          policy = assert(require("autopgo.policy").new {}) }
        local function stage(from, to)
          for i = from, to do assert(store:put(key_of(i), profiles.variant(1 + i % 3), { if_none_match = "*" })) end
        end
        local function drain()
          repeat
            local done, n, more = pass:run("app")
            assert(done, n)
          until not more
          pass:flush()
        end
        stage(0, 11)
        drain()
        -- the segment takes 4 more, the base does not (a crash between the two)
        stage(12, 15)
        local real_put = store.put
        store.put = function(self, key, body, opts)
          if key == keys.base("app") then return nil, "UNAVAILABLE: injected", "UNAVAILABLE" end
          return real_put(self, key, body, opts)
        end
        assert.is_nil((pass:run("app")))
        store.put = real_put
        assert.equals(16, segment(h).doc.count)
        -- rebuilt (as after a range delete): the staged uploads the segment holds are in its ledger
        assert(pass:rebuild("app"))
        drain()
        assert.same({ 6, 5, 5 }, profiles.counts(assert(store:get(keys.base("app"))).body))
        -- a base that no longer parses: set aside, the base rebuilt from the history
        assert(store:put(keys.base("app"), "garbage, not a profile"))
        stage(16, 17)
        drain()
        drain()
        assert.same({ 6, 6, 6 }, profiles.counts(assert(store:get(keys.base("app"))).body))
        local seg = segment(h)
        assert.same(keys_from(0, 17), upload_keys(seg))
        assert.same(canonical(full_merge(0, 17)), canonical(segment_profile(h, store)))
      end)
      segparts.FANOUT = fanout
      assert(ok, err)
    end)
  end)

  it("removes a segment's parts and the records they list with the segment", function()
    run(function()
      local store = assert(blob.open("mem://parts-" .. crypto.hex(crypto.random(5))))
      local h = new_history(store)
      for i = 0, 5 do
        assert(store:put(keys.record_of(key_of(i)), json.encode({ source = "test" })))
      end
      assert(add(h, 0, 2))
      assert(add(h, 3, 5))
      assert.equals("test", segment(h).uploads[1].source)
      assert.equals(2, #history_keys(store, "part"))
      assert.equals(1, assert(h:delete_range("app", T0, T0 + 3600)))
      assert.same({}, assert(store:list(keys.history_prefix("app"))))
      assert.same({}, assert(store:list(keys.uploads_prefix("app"))))
    end)
  end)

  it("says so when a manifest names a part that is missing, rather than retrying on", function()
    run(function()
      local store = support.counting_store("parts")
      local h = new_history(store)
      assert(add(h, 0, 2))
      assert(store:delete(history_keys(store, "part")[1]))
      store.reset()
      local ok, err, code = add(h, 1, 3) -- key 1 and 2 lie in the missing part's range
      assert.is_nil(ok)
      assert.equals("UNAVAILABLE", code, err)
      assert.matches("names a part that is missing", err, 1, true)
      -- the batch's 3 provenance records, then the manifest and the part twice
      assert.equals(3 + 4, store.counts.calls.get)
    end)
  end)
end)
