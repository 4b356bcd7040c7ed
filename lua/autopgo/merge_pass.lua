-- The merge pass of the worker: for one app, everything staged and not yet in the base goes in
-- (up to the batch limits) under the app's policy, through the one merge (autopgo.merging).
--
-- Exactly once, with at-least-once delivery and several workers: each base has a ledger,
-- {app}/ledger/<sha256 of the base>.json, listing the staged keys it contains. A pass writes the
-- ledger of the new base first, then the base itself with a conditional write (if_match the etag
-- it read, or create-only), which is the commit point: a crash before it leaves an unused ledger,
-- a crash after it leaves a base whose ledger says what it holds, and a lost race is retried from
-- the new base. Staged keys already in the base's ledger are never merged again, only announced
-- (profile.merged) so they get deleted. A ledger that cannot be read fails the pass (retried): it
-- is never taken for "nothing merged yet". Poison (a staged profile that does not parse or has no
-- sample type in common with the base) is moved to {app}/rejected/ with its reason. A base that
-- does not parse is kept aside there too, counted and logged, and a new base is started from
-- the staged uploads (see "Merging" in README.md).
--
-- A batch is folded into the base (autopgo.merging.fold) when the pass holds a folder over that
-- very base (by its sha256) and rules: one made at the previous commit of this process, or made
-- over the base read from the store (which costs what a full merge costs, once). A folder
-- committed as the version the store still holds (same etag) spares the pass reading the base:
-- its store traffic is the batch (the base is read only when the batch does not fold). The folder
-- lives in this process only and is taken up again only once its result is committed, so what
-- the store holds, the ledger and the commit point are the same whichever way a batch was merged.
--
-- With history (autopgo.history), each batch also goes into the time segments of its uploads
-- before the base is committed, so a staged key the base's ledger holds is in its segment too:
-- profile.merged (which deletes it) is only announced once both hold it.
local async = require "autopgo.async"
local events = require "autopgo.events"
local fail = require "autopgo.fail"
local json = require "autopgo.json"
local keys = require "autopgo.keys"
local limits = require "autopgo.limits"
local log = require "autopgo.log"
local merging = require "autopgo.merging"
local history_mod = require "autopgo.history"
local metrics = require "autopgo.metrics"
local pgo_stable = require "autopgo.pgo_stable"
local uv = require "luv"
local core = require "autopgo.core"

local pprof, crypto = core.pprof, core.crypto

local M = {}

M.MAX_ATTEMPTS = 20
M.BATCH = 256 -- staged uploads per pass at most (fewer when fewer wait: the batch follows the backlog)
M.PAGE = 256 -- staged keys listed per request: a pass lists what it merges, not the whole backlog
M.DECODED = 128 * 1024 * 1024 -- decoded bytes a batch holds at most (pprof info.memory)
M.DECODERS = 8 -- uploads read and decoded at once (thread pool jobs, beside the server's validations)
-- Folders kept (one per app, each holding its merged profile's index: its tables but the samples,
-- some 24 bytes per sample; the segments are in a temp file): past this, another app's is
-- dropped, to be made again (from its base, as a full merge costs) when that app merges.
M.MAX_FOLDERS = 8

local m = {
  merges = metrics.counter("autopgo_merges_total", "Merge passes by result (merged, failed).", { "result" }),
  duration = metrics.histogram("autopgo_merge_duration_seconds", "Time to merge staged profiles into a base.",
    nil, { 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60 }),
  profiles = metrics.counter("autopgo_profiles_merged_total", "Staged profiles merged into a base."),
  per_merge = metrics.histogram("autopgo_merge_profiles", "Staged profiles merged in one pass (coalescing).",
    nil, { 1, 2, 4, 8, 16, 32, 64, 128 }),
  rejected = metrics.counter("autopgo_profiles_rejected_total", "Staged profiles moved to {app}/rejected/."),
  conflicts = metrics.counter("autopgo_merge_conflicts_total", "Merges retried because another wrote the base first."),
  size = metrics.gauge("autopgo_profile_size_bytes", "Size of the merged profile, per app.", { "app" }),
  corrupt = metrics.counter("autopgo_corrupt_bases_total",
    "Merged profiles that no longer parsed, moved to {app}/rejected/ (a new base was started)."),
  folded = metrics.counter("autopgo_merges_folded_total",
    "Merge passes that folded the batch into the base (compressing again only what changed).",
    { "compacted" }),
  ledgers = metrics.counter("autopgo_ledger_errors_total",
    "Merge passes failed because a base's ledger could not be read."),
}
M.metrics = m

-- Failure codes of the merge that blame one input (anything else fails the whole pass).
local INPUT_FAULTS = { MALFORMED = true, INCOMPATIBLE = true, TOO_LARGE = true }

local Pass = {}
Pass.__index = Pass

--- The merge passes of one worker. o: store, writer, policy (autopgo.policy), batch_limit
-- (staged profiles per pass, M.BATCH), batch_bytes (their total size, 256 MiB), stopping (a
-- function telling whether the worker is stopping: a pass then gives up retrying and leaves what
-- is left), history (an autopgo.history, or nil for none).
function M.new(o)
  return setmetatable({
    store = assert(o.store, "merge_pass: store"), writer = assert(o.writer, "merge_pass: writer"),
    policy = assert(o.policy, "merge_pass: policy"), history = o.history,
    batch_limit = o.batch_limit or M.BATCH, batch_bytes = o.batch_bytes or 256 * 1024 * 1024,
    stopping = o.stopping or function() return false end,
    announced = {}, announced_n = 0, bases = {}, deleting = {}, doomed = { first = 1, last = 0 }, folders = {},
  }, Pass)
end

-- SHA-256 of a base read from the store (one this process wrote has its digest from the merge),
-- in pieces, yielding between them so a large base does not hold the loop.
local function hash(data)
  local h = crypto.hasher("sha256")
  local piece = 1024 * 1024
  for i = 1, #data, piece do
    h:update(data:sub(i, i + piece - 1))
    if i + piece <= #data then async.sleep(0) end
  end
  return crypto.hex(h:digest())
end

-- Publishes profile.merged for staged keys now in the base (once per key in this process).
function Pass:announce(app, staged)
  for _, key in ipairs(staged) do
    if not self.announced[key] then
      local ok, err = events.publish(self.writer, events.MERGED,
        { app = app, profileKey = key, mergedKey = keys.base(app) })
      if ok then
        if self.announced_n > 100000 then self.announced, self.announced_n = {}, 0 end
        self.announced[key] = true
        self.announced_n = self.announced_n + 1
      else
        -- The staged object stays; the next merge of the app announces it again.
        log.warn("cannot publish profile.merged", "app", app, "key", key, "error", err)
      end
    end
  end
end

--- Forgets that key was announced (it was deleted).
function Pass:forget(key)
  self.announced[key] = nil
end

--- Forgets what is remembered of app's base (the app was deleted).
function Pass:forget_app(app)
  self.bases[app] = nil
  self:drop_folder(app)
  if self.history then self.history:drop_folders(app) end
  m.size:remove({ app = app })
end

-- Keeps body aside as dest (a keys.rejected key) with its reason beside it.
function Pass:set_aside(dest, body, reason)
  local ok, err, code = self.store:put(dest, body)
  if ok then ok, err, code = self.store:put(keys.reason_of(dest), reason .. "\n") end
  if not ok then return nil, err, code end
  return dest
end

-- Moves a staged profile that cannot be merged to {app}/rejected/, with the reason beside it.
function Pass:reject(app, key, body, reason)
  local dest, err = self:set_aside(keys.rejected(app, key:match("[^/]+$")), body, reason)
  if not dest then
    log.error("cannot move a rejected profile aside; it stays staged", "key", key, "error", err)
    return nil, err
  end
  local dok, derr, dcode = self.store:delete(key)
  if not dok and dcode ~= "NOT_FOUND" then
    log.warn("cannot delete a rejected staged profile", "key", key, "error", derr)
  end
  m.rejected:inc()
  log.warn("rejected a staged profile", "app", app, "key", key, "moved_to", dest, "reason", reason)
  return true
end

-- Reads and decodes the staged items ({ key, size }, oldest first) M.DECODERS at a time, each
-- once (its info, normalization weight and the hook all work on that one decoded profile, which
-- the base and the history merge alike), until M.DECODED bytes of decoded profiles are held.
-- Without normalization or hook the bodies go to the merge as they are (it decodes them; with
-- history merge_once tells each item's info). Items that vanished are skipped; those that do not
-- decode or that the hook refuses are rejected. Returns the list of { key, body, input, info,
-- scale } to merge and whether staged items were left for a later pass, or nil, err, code.
function Pass:apply_policy(app, items)
  local hook = self.policy:hook_for(app)
  local mode = self.policy:normalize_for(app)
  -- The hook and normalization need each upload decoded first. History needs each upload's
  -- capture time, which a batch gets from merge_once's one C merge of the bodies (decoding on the
  -- merge's threads while it merges, never holding more than a few decoded): only a lone upload
  -- is decoded here.
  local decode = hook or mode ~= "none" or (self.history and #items < 2)
  local store = self.store
  local function load(item)
    local got, err, code = store:get(item.key)
    if not got then
      if code == "NOT_FOUND" then return false end
      return nil, err, code
    end
    local s = { key = item.key, body = got.body, input = got.body, scale = 1 }
    if not decode then return s end
    local profile
    profile, err, code = async.await(pprof.decode_async, got.body, limits.profile)
    if profile then
      s.info = profile:info()
      s.scale = history_mod.weight(s.info, mode)
      if hook then profile, err, code = self.policy:apply_hook(app, profile) end
    end
    if not profile then
      if code ~= "POLICY" and not INPUT_FAULTS[code] then return nil, err, code end
      self:reject(app, item.key, got.body, err)
      return false
    end
    s.input = profile
    return s
  end
  -- M.DECODERS loaders take the next item in turn; results keep the items' order
  local results, held, failure = {}, 0, nil
  local next_i = async.each(M.DECODERS, #items, function(i)
    local r = table.pack(load(items[i]))
    if r[1] == nil then
      failure = failure or r
    else
      results[i] = r[1]
      if r[1] then held = held + (r[1].info and r[1].info.memory or 0) end
    end
  end, function() return not failure and held <= M.DECODED end)
  local staged = {}
  for i = 1, next_i - 1 do
    if results[i] then staged[#staged + 1] = results[i] end
  end
  if failure then
    M.close_inputs(staged)
    return nil, failure[2], failure[3]
  end
  return staged, next_i <= #items
end

--- Frees the decoded profiles of staged items now rather than at the next garbage collection.
function M.close_inputs(staged)
  for _, s in ipairs(staged) do
    if type(s.input) == "userdata" then s.input:close() end
  end
end

-- Which rules a folder was made with (a folder folds with the rules it pruned its base with).
local function rules_key(rules)
  local parts = {}
  for i, r in ipairs(rules or {}) do parts[i] = (r.drop or "") .. "\1" .. (r.keep or "") end
  return table.concat(parts, "\2")
end

function Pass:drop_folder(app)
  local held = self.folders[app]
  self.folders[app] = nil
  if held then held.folder:close() end
end

-- Whether the folder held for app was committed as the very version base (state) is: then a
-- batch folds into it without reading the base.
function Pass:holds(app, base)
  local held = self.folders[app]
  return held ~= nil and held.etag ~= nil and held.etag == base.etag
    and held.key:sub(1, #base.hash + 1) == base.hash .. "\0"
end

-- Reads the body of base (a state whose body was not read, see holds) when it is wanted after
-- all: true, or nil, err, code (UNAVAILABLE when the store holds another version by now: the pass
-- is retried from it).
function Pass:base_body(app, base)
  if base.body then return true end
  local got, err, code = self.store:get(keys.base(app))
  if not got then return nil, err, code end
  if got.etag ~= base.etag then
    return fail.new("UNAVAILABLE", "the merged profile of %s changed while merging", app)
  end
  base.body = got.body
  return true
end

-- Folds the staged batch into a folder over base (the app's own when it is over this base and
-- these rules, else a new one): the result of merging.fold with .folder, the folder to keep once
-- the result is committed, or nil when the batch is to be merged in full.
function Pass:fold(app, base, staged, rules, scales)
  local key = base.hash .. "\0" .. rules_key(rules)
  local held = self.folders[app]
  self.folders[app] = nil -- taken: given back by the commit of its result
  if held and held.key ~= key then
    held.folder:close()
    held = nil
  end
  if not held then
    if not self:base_body(app, base) then return nil end
    local folder, err = merging.folder(base.body, rules)
    if not folder then
      log.debug("cannot fold into the merged profile; merging in full", "app", app, "error", err)
      return nil
    end
    held = { folder = folder }
  end
  local inputs = {}
  for i, s in ipairs(staged) do inputs[i] = s.input end
  local res, err = merging.fold(held.folder, inputs, rules, scales)
  if not res then
    held.folder:close()
    log.debug("the batch does not fold; merging in full", "app", app, "error", err)
    return nil
  end
  res.folder, res.rules_key = held.folder, rules_key(rules)
  m.folded:inc({ compacted = tostring(res.summary.fold.compacted) })
  return res
end

-- Merges base (bytes or nil) with the staged batch (apply_policy's items, oldest first) under
-- the app's rules. Poison is rejected and left out. Returns the result (autopgo.merging's, plus keys: the
-- staged keys in it, and corrupt: true when the base did not parse and was set aside), or
-- nil, err, code when the merge cannot go on (nothing is rejected for such failures). An
-- empty batch after rejections gives nil, nil, "EMPTY".
function Pass:merge_batch(app, base, staged)
  local rules = self.policy:rules_for(app)
  local corrupt, foldable = false, true
  while true do
    if #staged == 0 then return nil, nil, "EMPTY" end
    -- Base first, then the uploads oldest first: the order the original's one-by-one merges add up to.
    local inputs, scales, scaled = {}, {}, false
    for _, s in ipairs(staged) do
      inputs[#inputs + 1] = s.input
      scales[#scales + 1] = s.scale
      scaled = scaled or s.scale ~= 1
    end
    local res, err, code, failure
    if base and foldable then
      res = self:fold(app, base, staged, rules, scaled and scales or nil)
      foldable = res ~= nil -- after a batch that did not fold, this pass merges in full
    end
    if not res and base then
      local ok, berr, bcode = self:base_body(app, base)
      if not ok then return nil, berr, bcode end
      table.insert(inputs, 1, base.body)
      table.insert(scales, 1, 1)
    end
    if not res then res, err, code, failure = merging.merge(inputs, rules, scaled and scales or nil) end
    if res then
      res.keys = {}
      for i, s in ipairs(staged) do res.keys[i] = s.key end
      res.items = staged
      res.corrupt = corrupt
      return res
    end
    local index = failure and failure.input
    local offset = base and 1 or 0
    if index and index > offset and INPUT_FAULTS[code] then
      local bad = table.remove(staged, index - offset)
      self:reject(app, bad.key, bad.body, err)
    elseif index == 1 and base and code == "MALFORMED" then
      local ok, aerr, acode = self:base_corrupt(app, base, err)
      if not ok then return nil, aerr, acode end
      corrupt = true
      base = nil -- the commit still replaces the corrupt object by its etag
    else
      return nil, err, code
    end
  end
end

-- The batch staged (apply_policy's items) merged once, each under its scale, as a decoded
-- profile, or nil when there is no point (one upload) or it does not merge: the uploads then go
-- in one by one through merge_batch, which rejects what must be (and history.add decodes what it
-- needs). An item merged from its body gets its info here, from what the merge decoded: the
-- fields of profile:info() that history.add reads (times, and the first sample type's total).
local function merge_once(staged)
  if #staged < 2 then return nil end
  local inputs, scales, facts = {}, {}, false
  for i, s in ipairs(staged) do
    inputs[i], scales[i] = s.input, s.scale
    facts = facts or not s.info
  end
  local res, err = merging.merge(inputs, nil, scales, true, facts)
  if not res then
    log.debug("the batch does not merge on its own; merging its uploads one by one", "error", err)
    return nil
  end
  for i, s in ipairs(staged) do
    local f = facts and res.summary.facts[i]
    if not s.info and f then
      s.info = { time_nanos = f.time_nanos, duration_nanos = f.duration_nanos, samples = f.samples,
        sample_types = { { total = f.first_total } } }
    end
  end
  return res.profile
end

-- merge_batch of base with whole (merge_once's profile of staged) as its one input. Returns its
-- result with the keys and items of staged, or nil when whole is refused (an upload has nothing
-- in common with the base: merge_batch of the uploads themselves finds and rejects it) or the
-- merge fails (merge_batch of the uploads tells why).
function Pass:fold_whole(app, base, staged, whole)
  local refused = false
  -- merge_batch rejects a refused input; the batch is no staged upload, so it is only noted
  local proxy = setmetatable({ reject = function() refused = true return true end }, { __index = self })
  local res = Pass.merge_batch(proxy, app, base, { { input = whole, scale = 1 } })
  if not res or refused then return nil end
  res.keys, res.items = {}, staged
  for i, s in ipairs(staged) do res.keys[i] = s.key end
  return res
end

-- The base does not parse: read it again (a store may have handed back a short read), and when
-- it is still the same bytes keep it aside under rejected/ with the reason, count it and say so.
function Pass:base_corrupt(app, base, err)
  local again, gerr, gcode = self.store:get(keys.base(app))
  if not again then return nil, gerr, gcode end
  if again.etag ~= base.etag or again.body ~= base.body then
    return fail.new("UNAVAILABLE", "the merged profile of %s changed or read differently while merging", app)
  end
  local reason = ("%s\nthe merged profile (sha256 %s, %s) does not parse; it was kept here and a new one was"
    .. " started from the staged uploads"):format(err, base.hash,
    base.ledger and "its ledger exists" or "no ledger names it: it is not what a worker wrote")
  local dest, perr, pcode = self:set_aside(keys.rejected_base(app, base.hash), base.body, reason)
  if not dest then return nil, perr, pcode end
  m.corrupt:inc()
  log.error("the merged profile does not parse; kept it aside and starting a new one from the staged uploads",
    "app", app, "moved_to", dest, "sha256", base.hash, "error", err)
  return true
end

-- The ledger of the base of app whose sha256 is digest: the set of staged keys it holds, false
-- when there is none, or nil, err, code when it cannot be read or makes no sense.
function Pass:read_ledger(app, digest)
  local key = keys.ledger(app, digest)
  local got, err, code = self.store:get(key)
  if not got then
    if code == "NOT_FOUND" then return false end
    m.ledgers:inc()
    return nil, err, code
  end
  local doc = json.decode(got.body)
  if type(doc) ~= "table" or type(doc.merged) ~= "table" or (doc.base ~= nil and doc.base ~= digest) then
    m.ledgers:inc()
    return fail.new("INVALID", "the ledger %s is unreadable (not a ledger of this base); nothing is merged"
      .. " until it is repaired or removed", key)
  end
  local merged = {}
  for _, k in ipairs(doc.merged) do
    if type(k) ~= "string" then
      m.ledgers:inc()
      return fail.new("INVALID", "the ledger %s lists a key that is not a string", key)
    end
    merged[k] = true
  end
  return merged
end

-- The base of app and what its ledger says it holds: { etag, hash, merged = set, ledger, body }
-- (body only when with_body), or false when there is no base. The hash and ledger of the version
-- seen last are remembered, so the events of uploads already coalesced into a base cost a stat,
-- not a read.
function Pass:base_state(app, with_body)
  local store = self.store
  local cached = self.bases[app]
  local base_key = keys.base(app)
  if not with_body and cached ~= nil then
    local st, err, code = store:stat(base_key)
    if not st and code ~= "NOT_FOUND" then return nil, err, code end
    if (not st and cached == false) or (st and cached and cached.etag == st.etag) then return cached end
  end
  local base, err, code = store:get(base_key)
  if not base then
    if code ~= "NOT_FOUND" then return nil, err, code end
    self.bases[app] = false
    return false
  end
  local state = { etag = base.etag, body = base.body }
  if cached and cached.etag == base.etag then
    state.hash, state.merged, state.ledger = cached.hash, cached.merged, cached.ledger
  else
    state.hash = hash(base.body)
    local merged, lerr, lcode = self:read_ledger(app, state.hash)
    if merged == nil then return nil, lerr, lcode end
    if merged == false then
      -- Not a base this worker wrote (an older layout, or bytes changed under it): what it holds
      -- is unknown. Merge on, and let the merge tell whether it still parses.
      log.warn("the merged profile has no ledger; taking it as holding no staged upload", "app", app,
        "sha256", state.hash)
    end
    state.merged, state.ledger = merged or {}, merged ~= false
  end
  self.bases[app] = { etag = state.etag, hash = state.hash, merged = state.merged, ledger = state.ledger }
  return state
end

-- Commits res as the new base of app over base (state or false); contents are the staged keys
-- it holds. Returns the put result, or nil, err, code (PRECONDITION_FAILED/NOT_FOUND: lost race).
function Pass:commit(app, base, res, contents)
  local store = self.store
  local doc = json.encode(json.object("base", res.sha256, "merged", json.array(contents),
    "view", res.view or json.omit))
  local lok, lerr, lcode = store:put(keys.ledger(app, res.sha256), doc, { content_type = "application/json" })
  if not lok then return nil, lerr, lcode end
  local opts = base and { if_match = base.etag } or { if_none_match = "*" }
  local put, perr, pcode = store:put(keys.base(app), res.bytes, opts)
  if put and res.folder then
    -- the folder now holds what the store holds: the next batch of the app folds into it
    self:drop_folder(app)
    local n = 0
    for _ in pairs(self.folders) do n = n + 1 end
    if n >= M.MAX_FOLDERS then self:drop_folder((next(self.folders))) end
    self.folders[app] = { folder = res.folder, key = res.sha256 .. "\0" .. res.rules_key, etag = put.etag }
  elseif res.folder then
    res.folder:close()
  end
  res.folder = nil
  if put and self.committed then self.committed(app) end -- set by the embedded server: warms its views
  return put, perr, pcode
end

-- The oldest staged uploads of app that base (state or false) does not hold: lists the staging
-- area a page at a time from its start, until the batch is full (one more than the batch tells
-- whether more wait) or the listing ends. Returns { pending = items, already = keys the base
-- holds that are still staged, present = set of listed keys, through = the last key listed, or
-- nil when the listing reached the end, more = whether pending uploads were left out }, or nil,
-- err, code. What it reads follows the batch and the merged uploads not yet deleted, never the
-- backlog.
function Pass:scan(app, base)
  local merged = base and base.merged or {}
  local out = { pending = {}, already = {}, present = {}, more = false }
  local want, after = self.batch_limit + 1, nil
  while true do
    local page, err, code = self.store:list(keys.staging_prefix(app), { after = after, limit = M.PAGE })
    if not page then return nil, err, code end
    for _, item in ipairs(page) do
      out.present[item.key] = true
      if merged[item.key] then
        out.already[#out.already + 1] = item.key
      elseif #out.pending < want then
        out.pending[#out.pending + 1] = item
      end
    end
    if #page < M.PAGE then
      out.through = nil
      break
    end
    after = page[#page].key
    out.through = after
    if #out.pending >= want then break end
  end
  if #out.pending > self.batch_limit then
    out.pending[#out.pending] = nil
    out.more = true
  end
  return out
end

-- The staged keys the new base holds besides its batch: those of the old ledger still staged, or
-- beyond what was listed (not known to be gone). A key deleted after its merge drops out here.
local function carried(merged, seen)
  local out = {}
  for key in pairs(merged) do
    if seen.present[key] or (seen.through and key > seen.through) then out[#out + 1] = key end
  end
  return out
end

--- Deletes staged keys now in the committed base (their profile.merged events find them gone,
-- which is fine): the staging area keeps only what waits, so the next pass lists little and the
-- next ledger stays small. In the background, one at a time (deletes serialise on the file
-- store's lock anyway), while the next pass reads and merges: until a key is gone the ledger
-- still names it. A key that cannot be deleted stays there and a later pass or its event deletes
-- it; so does one a stopped worker did not get to.
function Pass:delete_staged(list)
  local q = self.doomed
  for _, key in ipairs(list) do
    if not self.deleting[key] then
      self.deleting[key] = true
      q.last = q.last + 1
      q[q.last] = key
    end
  end
  if self.deleter or q.first > q.last then return end
  self.deleter = async.event()
  async.spawn(function()
    while q.first <= q.last do
      local key = q[q.first]
      q[q.first], q.first = nil, q.first + 1
      -- (still remembered as announced: a pass that listed it before it went announces it once)
      local called, ok, err, code = pcall(self.store.delete, self.store, key)
      if not called then err = ok end
      if not ok and code ~= "NOT_FOUND" then
        log.warn("cannot delete a merged staged upload; a later pass will", "key", key, "error", err)
      end
      self.deleting[key] = nil
    end
    local done = self.deleter
    self.deleter = nil
    done.set()
  end)
end

--- Waits until the staged uploads handed to delete_staged are deleted (or failed to be).
function Pass:flush()
  while self.deleter do self.deleter.wait() end
end

--- Whether the upload key of app needs no pass: its base's ledger holds it (it is announced
-- again) or it is no longer staged (merged and deleted, or rejected). Returns true/false, or
-- nil, err, code.
function Pass:settled(app, key)
  local base, err, code = self:base_state(app, false)
  if base == nil then return nil, err, code end
  if base and base.merged[key] then
    self:announce(app, { key })
    return true
  end
  local st, serr, scode = self.store:stat(key)
  if st then return false end
  if scode == "NOT_FOUND" then return true end
  return nil, serr, scode
end

--- One merge pass for app: the oldest staged uploads not yet in the base go in (up to the batch
-- limits). Returns true, the number of profiles merged and whether more wait, or nil, err, code.
function Pass:run(app)
  local store = self.store
  for _ = 1, M.MAX_ATTEMPTS do
    local base, err, code = self:base_state(app, false)
    if base == nil then
      m.merges:inc({ result = "failed" })
      return nil, err, code
    end
    local seen, serr, scode = self:scan(app, base)
    if not seen then return nil, serr, scode end
    if #seen.pending == 0 then
      self:announce(app, seen.already)
      self:delete_staged(seen.already)
      return true, 0, false
    end
    if base and not base.body and not self:holds(app, base) then
      -- Work to do and only the remembered state at hand: read the base; when it is the version
      -- listed against, the listing stands, else look again. (A folder committed as that very
      -- version needs no read: the conditional put of the result still checks it.)
      local full, ferr, fcode = self:base_state(app, true)
      if full == nil then return nil, ferr, fcode end
      if not full or full.etag ~= base.etag then goto continue end
      base = full
    end
    if base and not base.body then
      -- the remembered state is shared: a body read later (base_body) goes in a copy
      base = { etag = base.etag, hash = base.hash, merged = base.merged, ledger = base.ledger }
    end
    do
      local started = uv.hrtime()
      local batch, bytes = {}, 0
      for _, item in ipairs(seen.pending) do
        if #batch > 0 and bytes + item.size > self.batch_bytes then
          seen.more = true
          break
        end
        batch[#batch + 1] = item
        bytes = bytes + item.size
      end
      local staged, left, acode = self:apply_policy(app, batch)
      if not staged then
        m.merges:inc({ result = "failed" })
        return nil, left, acode
      end
      local more = seen.more or left
      -- The batch is merged once (one C merge decoding its uploads on threads as it goes) and the
      -- base folds that; with history its segment folds the same profile (history.add takes it).
      local whole = merge_once(staged)
      local res, merr, mcode
      if whole then
        res = self:fold_whole(app, base, staged, whole)
        if not res then
          whole:close()
          whole = nil
        end
      end
      local function close_all()
        M.close_inputs(staged)
        if whole then whole:close() end
      end
      if not res then res, merr, mcode = self:merge_batch(app, base, staged) end
      if not res then
        close_all()
        if mcode ~= "EMPTY" then
          m.merges:inc({ result = "failed" })
          return nil, merr, mcode
        end
        -- everything in the batch was rejected or vanished: look again
      else
        -- A corrupt base held nothing that can be counted on: the new one holds only this batch.
        local contents = res.corrupt and {} or carried(base and base.merged or {}, seen)
        for _, k in ipairs(res.keys) do contents[#contents + 1] = k end
        table.sort(contents)
        if self.history then
          local hok, herr, hcode = self.history:add(app, res.items, whole)
          if not hok then
            close_all()
            m.merges:inc({ result = "failed" })
            return nil, herr, hcode
          end
          local view = self.policy:view_for(app)
          if view.kind ~= "all" then
            -- default.pgo is a view of the history: what was just merged only counts through it
            local vres, verr, vcode = self.history:merge_view(app, view, self.policy:rules_for(app))
            if not vres and vcode ~= "NOT_FOUND" then
              close_all()
              m.merges:inc({ result = "failed" })
              return nil, verr, vcode
            end
            if vres then
              vres.keys, vres.items, vres.corrupt = res.keys, res.items, res.corrupt
              res = vres
            else
              close_all()
              local ok, eerr, ecode = self:empty_view(app, base, res.keys)
              if not ok then return nil, eerr, ecode end
              return true, #res.keys, more
            end
          end
        end
        close_all()
        local put, perr, pcode = self:commit(app, base, res, contents)
        if put then
          local secs = (uv.hrtime() - started) / 1e9
          m.merges:inc({ result = "merged" })
          m.duration:observe(nil, secs)
          m.profiles:inc(nil, #res.keys)
          m.per_merge:observe(nil, #res.keys)
          m.size:set({ app = app }, #res.bytes)
          log.info("merged", "app", app, "profiles", #res.keys, "size", #res.bytes, "seconds", ("%.3f"):format(secs))
          local now_merged = {}
          for _, k in ipairs(contents) do now_merged[k] = true end
          self.bases[app] = { etag = put.etag, hash = res.sha256, merged = now_merged, ledger = true }
          pgo_stable.after_merge(store, self.policy.table, app, res.bytes) -- policy stable = true
          self:announce(app, res.keys)
          if not res.corrupt then self:announce(app, seen.already) end
          if base and base.hash ~= res.sha256 then store:delete(keys.ledger(app, base.hash)) end
          if res.corrupt and self.history and self.policy:view_for(app).kind == "all" then
            -- what the lost base held is in the history: the base is rebuilt from it
            local rok, rerr, rcode = self:rebuild(app)
            if not rok then return nil, rerr, rcode end
          end
          local done = {}
          for _, k in ipairs(res.keys) do done[#done + 1] = k end
          if not res.corrupt then
            for _, k in ipairs(seen.already) do done[#done + 1] = k end
          end
          self:delete_staged(done)
          return true, #res.keys, more
        end
        if pcode ~= "PRECONDITION_FAILED" and pcode ~= "NOT_FOUND" then return nil, perr, pcode end
        m.conflicts:inc()
        log.debug("another merge wrote the base first; merging again from it", "app", app)
        if self.stopping() then return fail.new("CANCELED", "stopping: %s is left to merge at the next start", app) end
      end
    end
    ::continue::
  end
  m.merges:inc({ result = "failed" })
  return fail.new("CONFLICT", "gave up merging %s after %d attempts", app, M.MAX_ATTEMPTS)
end

-- A view of the history with nothing in it (every upload merged lies outside the window): there
-- is no default profile; the uploads, in their segments, are announced.
function Pass:empty_view(app, base, merged_keys)
  if base then
    local ok, err, code = self.store:delete(keys.base(app))
    if not ok and code ~= "NOT_FOUND" then return nil, err, code end
    self.store:delete(keys.ledger(app, base.hash))
  end
  self.bases[app] = nil
  log.info("nothing of the app is in its default view; it has no default profile", "app", app)
  self:announce(app, merged_keys)
  return true, #merged_keys
end

--- Rebuilds the base of app from its history (after a range delete, so that it no longer holds
-- what was removed; after a corrupt base; when a rolling or decayed view moves): staged uploads
-- its ledger holds are deleted first (they are in the base and, by the order of the pass, in
-- their segments), then the base becomes the app's view of the remaining segments under its
-- rules, its ledger listing the staged uploads the history holds; no segment left deletes it.
-- What the base held that no segment holds (uploads merged before history existed, or before the
-- retention cutoff) is gone from it afterwards. Returns true or nil, err, code.
function Pass:rebuild(app)
  local store, history = self.store, assert(self.history, "rebuild needs history")
  for _ = 1, M.MAX_ATTEMPTS do
    local base, err, code = self:base_state(app, false)
    if base == nil then return nil, err, code end
    if base then
      local staged, serr, scode = store:list(keys.staging_prefix(app))
      if not staged then return nil, serr, scode end
      for _, item in ipairs(staged) do
        if base.merged[item.key] then
          local ok, derr, dcode = store:delete(item.key)
          if not ok and dcode ~= "NOT_FOUND" then return nil, derr, dcode end
          self:forget(item.key)
        end
      end
    end
    -- what is still staged and in a segment is in the rebuilt base: its ledger says so
    local staged, serr, scode = store:list(keys.staging_prefix(app))
    if not staged then return nil, serr, scode end
    local still = {}
    for _, item in ipairs(staged) do still[item.key] = true end
    local segs, gerr, gcode = history:segments(app)
    if not segs then return nil, gerr, gcode end
    local contents, res, merr, mcode = {}, nil, nil, nil
    for _, sg in ipairs(segs) do
      local held
      held, merr, mcode = history:holds(app, sg.start, sg.doc, still)
      if not held then break end
      for k in pairs(held) do
        still[k] = nil
        contents[#contents + 1] = k
      end
    end
    table.sort(contents)
    if not mcode then
      res, merr, mcode = history:merge_view(app, self.policy:view_for(app), self.policy:rules_for(app))
    end
    if not res and mcode == "NOT_FOUND" then
      if base then
        local ok, derr, dcode = store:delete(keys.base(app))
        if not ok and dcode ~= "NOT_FOUND" then return nil, derr, dcode end
        store:delete(keys.ledger(app, base.hash))
      end
      self:forget_app(app)
      return true
    end
    if not res then
      if mcode ~= "PRECONDITION_FAILED" then return nil, merr, mcode end
    else
      local put, perr, pcode = self:commit(app, base, res, contents)
      if put then
        local merged = {}
        for _, k in ipairs(contents) do merged[k] = true end
        self.bases[app] = { etag = put.etag, hash = res.sha256, merged = merged, ledger = true }
        m.size:set({ app = app }, #res.bytes)
        if base and base.hash ~= res.sha256 then store:delete(keys.ledger(app, base.hash)) end
        log.info("rebuilt the merged profile from the history", "app", app, "segments", res.view_segments)
        return true
      end
      if pcode ~= "PRECONDITION_FAILED" and pcode ~= "NOT_FOUND" then return nil, perr, pcode end
    end
  end
  return fail.new("CONFLICT", "gave up rebuilding %s after %d attempts", app, M.MAX_ATTEMPTS)
end

return M
