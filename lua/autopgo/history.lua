-- Profile history (README "Time model"): every merged upload also goes into the time segment of
-- its capture time, kept as a manifest (the commit point) naming immutable parts (lists of its
-- uploads) and an immutable profile object named by its sha256, which a pass folds its batch into;
-- windows merge the segments they overlap; retention and range deletes drop segments.
local async = require "autopgo.async"
local fail = require "autopgo.fail"
local httpd = require "autopgo.httpd"
local json = require "autopgo.json"
local keys = require "autopgo.keys"
local limits = require "autopgo.limits"
local log = require "autopgo.log"
local merging = require "autopgo.merging"
local segparts = require "autopgo.segment_parts"
local utc = require "autopgo.utc"
local uv = require "luv"
local core = require "autopgo.core"

local pprof, crypto = core.pprof, core.crypto

local M = {}

M.SKEW = 300 -- seconds a profile's time_nanos may lie ahead of its arrival and still count
M.GROUP = 16 -- segment profiles per merge call when merging a window (bounds its memory)
M.CACHE_KEEP = 8 -- merged windows kept per app
M.MAX_ATTEMPTS = 20
M.DEFAULT_SEGMENT = 3600
M.NORMAL_SECONDS = 30 -- what normalize = "duration" scales every upload's duration to

local NS = 1000000000

--- Unix nanoseconds now.
function M.now_nanos()
  local sec, usec = uv.gettimeofday()
  return sec * NS + usec * 1000
end

--- The capture time (Unix nanos) of an upload: the profile's time_nanos when set and not more than
-- M.SKEW ahead of its arrival (arrival_nanos), else the arrival.
function M.capture(time_nanos, arrival_nanos)
  if math.type(time_nanos) == "integer" and time_nanos > 0 and time_nanos <= arrival_nanos + M.SKEW * NS then
    return time_nanos
  end
  return arrival_nanos
end

--- The weight (Go's Profile.Scale ratio) of an upload under normalize mode, from its info
-- (pprof validate): "duration" scales its duration_nanos to M.NORMAL_SECONDS; "equal" scales the
-- total of its CPU value (the first sample type in nanoseconds, else the default one) to
-- M.NORMAL_SECONDS of it; "none" (or no duration/total to scale) is 1.
function M.weight(info, mode)
  if mode == "duration" then
    local d = info.duration_nanos or 0
    if d > 0 then return M.NORMAL_SECONDS * NS / d end
  elseif mode == "equal" then
    local types = info.sample_types or {}
    local pick
    for _, st in ipairs(types) do
      if st.unit == "nanoseconds" then
        pick = st
        break
      end
    end
    pick = pick or types[info.default_index or #types]
    if pick and (pick.total or 0) > 0 then return M.NORMAL_SECONDS * NS / pick.total end
  end
  return 1
end

--- RFC 3339 of Unix nanoseconds.
function M.rfc3339_nanos(n)
  return utc.rfc3339(n // NS, n % NS)
end

local History = {}
History.__index = History

--- History over a store. o: store, segment (seconds, M.DEFAULT_SEGMENT), retention (seconds or nil:
-- keep everything), now (a function giving Unix nanos, M.now_nanos).
function M.new(o)
  local seglen = math.tointeger(o.segment or M.DEFAULT_SEGMENT)
  assert(seglen and seglen >= 1, "history: the segment length is a whole number of seconds")
  return setmetatable({ store = assert(o.store, "history: store"), seglen = seglen,
    retention = o.retention, now = o.now or M.now_nanos, folders = {} }, History)
end

--- The history a role keeps under opts.segment / opts.retention (seconds), or nil when
-- opts.segment is 0 (no history). A segment that is not a whole number of seconds is an error.
function M.from_options(store, opts)
  local seg = opts.segment
  if seg == nil then seg = M.DEFAULT_SEGMENT end
  if seg == 0 then return nil end
  if not math.tointeger(seg) and seg ~= math.floor(seg) then
    return fail.new("INVALID", "--segment must be a whole number of seconds")
  end
  return M.new { store = store, segment = math.floor(seg), retention = opts.retention }
end

--- The start (Unix seconds) of the segment holding capture time nanos.
function History:start_of(nanos)
  return (nanos // NS) // self.seglen * self.seglen
end

--- Unix nanos before which segments are dropped by retention, or nil.
function History:cutoff()
  if not self.retention then return nil end
  return self.now() - math.floor(self.retention * NS)
end

-- Whether the segment starting at start is entirely older than the retention cutoff.
function History:expired(start)
  local cutoff = self:cutoff()
  return cutoff ~= nil and (start + self.seglen) * NS <= cutoff
end

--- The manifest of a segment and its etag, false when there is none, or nil, err, code. Either
-- layout (autopgo.segment_parts): doc.count is the number of uploads it holds.
function History:read_manifest(app, start, seglen)
  local key = keys.segment_manifest(app, seglen or self.seglen, start)
  local got, err, code = self.store:get(key)
  if not got then
    if code == "NOT_FOUND" then return false end
    return nil, err, code
  end
  local doc = json.decode(got.body)
  if type(doc) ~= "table" or (doc.uploads ~= nil and type(doc.uploads) ~= "table")
      or (doc.uploads == nil and type(doc.upload_parts) ~= "table") or not segparts.valid(doc.upload_parts)
      or (doc.profile ~= nil and type(doc.profile) ~= "string") then
    return fail.new("INVALID", "the segment manifest %s is unreadable", key)
  end
  doc.count = segparts.count(doc)
  return doc, got.etag
end

--- Which of keyset (a set of staged keys) segment start (manifest doc, or false) holds: a set,
-- reading only the parts that may hold them, or nil, err, code.
function History:holds(app, start, doc, keyset)
  return segparts.holds(self.store, app, self.seglen, start, doc, keyset)
end

--- Every upload segment seg ({ start, doc, seglen }) holds, by capture time then key. Returns the
-- list or nil, err, code (PRECONDITION_FAILED: a part is gone, read the manifest again).
function History:uploads(app, seg)
  return segparts.uploads(self.store, app, seg.seglen or self.seglen, seg.start, seg.doc)
end

--- History:segments with each segment's uploads (seg.uploads, from History:uploads), read again
-- when a segment changed meanwhile. Returns the list or nil, err, code.
function History:segments_uploads(app, from, to)
  local err, code
  for _ = 1, M.MAX_ATTEMPTS do
    local segs
    segs, err, code = self:segments(app, from, to)
    if not segs then return nil, err, code end
    local whole = true
    for _, s in ipairs(segs) do
      s.uploads, err, code = self:uploads(app, s)
      if not s.uploads then
        if code ~= "PRECONDITION_FAILED" then return nil, err, code end
        whole = false
        break
      end
    end
    if whole then return segs end
  end
  return fail.new("UNAVAILABLE", "the history of %s kept changing while being read", app)
end

-- The source the API recorded for a staged key ("" when there is no record).
function History:source_of(key)
  local rkey = keys.record_of(key)
  if not rkey then return "" end
  local got = self.store:get(rkey)
  if not got then return "" end
  local doc = json.decode(got.body)
  return type(doc) == "table" and type(doc.source) == "string" and doc.source or ""
end

M.READERS = 8 -- provenance records read at once

-- The sources of items' keys (source_of each), M.READERS store reads at a time: one pass files
-- hundreds of uploads, and one read after another would cost a round trip each.
function History:sources_of(items)
  local out = {}
  async.each(M.READERS, #items, function(i) out[i] = self:source_of(items[i].key) end)
  return out
end

--- The info (pprof validate) of a staged body.
function M.info(body)
  return async.await(pprof.validate_async, body, limits.profile)
end

--- Adds staged items ({ key, body, input, info, scale }: input is what the base merge took, the
-- hook's output when there is one; info its pprof info when known; scale its normalization weight)
-- to the segments of their capture times; each segment commits on its own, and an upload its
-- segment's manifest already lists is never added again. Uploads captured before the retention
-- cutoff are left out. whole (optional) is the merge of every item's input under its scale (the
-- pass merges its batch once): when all items go into one segment that holds none of them yet, the
-- segment folds whole instead of merging the items again. Returns true or nil, err, code.
function History:add(app, items, whole)
  local groups, order = {}, {}
  local sources = self:sources_of(items)
  for i, item in ipairs(items) do
    local info, err, code = item.info, nil, nil
    if not info then info, err, code = M.info(item.body) end
    if not info then return nil, err, code end
    local arrival = keys.staging_nanos(item.key) or self.now()
    local captured = M.capture(info.time_nanos, arrival)
    local start = self:start_of(captured)
    if self:expired(start) then
      log.debug("an upload captured before the retention cutoff is left out of the history", "key", item.key)
    else
      if not groups[start] then
        groups[start] = {}
        order[#order + 1] = start
      end
      local st = info.sample_types and info.sample_types[1]
      table.insert(groups[start], { key = item.key, input = item.input, scale = item.scale or 1,
        captured = M.rfc3339_nanos(captured),
        duration = (info.duration_nanos or 0) / NS, size = #item.body, samples = st and st.total or 0,
        source = sources[i] })
    end
  end
  table.sort(order)
  if not (#order == 1 and #groups[order[1]] == #items) then whole = nil end
  for _, start in ipairs(order) do
    local ok, err, code = self:commit_segment(app, start, groups[start], whole)
    if not ok then return nil, err, code end
  end
  return true
end

-- Folders over segment profiles (merging.folder), kept per (app, segment): past this many, another
-- is dropped, to be made again from its object (a full merge's cost) when that segment grows next.
M.MAX_FOLDERS = 8

-- The folder held for segment id over the profile of that digest, taken (given back by keep_folder
-- once its result is committed), or nil.
function History:take_folder(id, digest)
  local held = self.folders[id]
  self.folders[id] = nil
  if held and held.digest ~= digest then
    held.folder:close()
    held = nil
  end
  return held and held.folder
end

function History:keep_folder(id, folder, digest)
  local old = self.folders[id]
  if old then old.folder:close() end
  self.folders[id] = nil
  local n = 0
  for _ in pairs(self.folders) do n = n + 1 end
  if n >= M.MAX_FOLDERS then
    local victim = next(self.folders)
    self.folders[victim].folder:close()
    self.folders[victim] = nil
  end
  self.folders[id] = { folder = folder, digest = digest }
end

--- Drops the folders held over app's segments (the app was deleted).
function History:drop_folders(app)
  local prefix = app .. "/"
  for id, held in pairs(self.folders) do
    if id:sub(1, #prefix) == prefix then
      held.folder:close()
      self.folders[id] = nil
    end
  end
end

-- The profile of segment start (manifest doc, or false) with inputs (under scales) merged in: the
-- merging result, with .folder when it was folded (a folder over the object it read, or the one
-- kept at this segment's last commit when it is still over the profile the manifest names), so a
-- pass over a large segment costs its batch. Returns the result or nil, err, code.
function History:merge_segment(app, start, doc, inputs, scales)
  if not (doc and doc.profile) then return merging.merge(inputs, nil, scales) end
  local id = ("%s/%d/%d"):format(app, self.seglen, start)
  local okey = keys.segment_object(app, self.seglen, start, doc.profile)
  local folder, body = self:take_folder(id, doc.profile), nil
  local function read()
    local obj, err, code = self.store:get(okey)
    if not obj then
      if code == "NOT_FOUND" then
        return fail.new("UNAVAILABLE", "the profile of segment %d of %s is missing", start, app)
      end
      return nil, err, code
    end
    body = obj.body
    return true
  end
  if not folder then
    local ok, err, code = read()
    if not ok then return nil, err, code end
    folder = merging.folder(body, nil)
  end
  if folder then
    local res, err = merging.fold(folder, inputs, nil, scales)
    if res then
      res.folder = folder
      return res
    end
    folder:close() -- spent
    log.debug("the batch does not fold into its segment; merging in full", "app", app, "segment", start,
      "error", err)
  end
  if not body then
    local ok, err, code = read()
    if not ok then return nil, err, code end
  end
  local all, ss = { body }, { 1 }
  for i, input in ipairs(inputs) do
    all[i + 1], ss[i + 1] = input, scales[i]
  end
  return merging.merge(all, nil, ss)
end

-- Adds entries not yet in segment start to it: the new profile object and the part of the new
-- uploads (autopgo.segment_parts) first, then the manifest with a conditional
-- write (the commit point), then the objects it no longer names are deleted. whole (optional) is
-- the merge of every entry's input: used when the segment holds none of them yet.
function History:commit_segment(app, start, entries, whole)
  local store, seglen = self.store, self.seglen
  local keyset = {}
  for _, e in ipairs(entries) do keyset[e.key] = true end
  local gone_under
  for _ = 1, M.MAX_ATTEMPTS do
    local doc, etag, code = self:read_manifest(app, start)
    if doc == nil then return nil, etag, code end
    local held, herr, hcode = self:holds(app, start, doc, keyset)
    if not held and hcode ~= "PRECONDITION_FAILED" then return nil, herr, hcode end
    if not held then
      -- a part is gone: the manifest changed since (read it again), or it names a missing part
      if gone_under == etag then
        return fail.new("UNAVAILABLE", "segment %d of %s names a part that is missing (%s)", start, app,
          fail.message(herr))
      end
      gone_under = etag
    end
    if held then
      local new = {}
      for _, e in ipairs(entries) do
        if not held[e.key] then new[#new + 1] = e end
      end
      if #new == 0 then return true end
      local inputs, scales = {}, {}
      if whole and #new == #entries then
        inputs[1], scales[1] = whole, 1
      else
        for i, e in ipairs(new) do inputs[i], scales[i] = e.input, e.scale end
      end
      local res, merr, mcode = self:merge_segment(app, start, doc, inputs, scales)
      if not res then return nil, merr, mcode end
      local function spent()
        if res.folder then res.folder:close() end
      end
      local ok, perr, pcode = store:put(keys.segment_object(app, seglen, start, res.sha256), res.bytes)
      local list, gone
      if ok then
        list, gone, pcode = segparts.next(store, app, seglen, start, doc, new)
        ok, perr = list, gone
      end
      if not ok then
        spent()
        if pcode ~= "PRECONDITION_FAILED" then return nil, perr, pcode end
      else
        local body = segparts.encode_manifest(app, seglen, start, res.sha256, #res.bytes, list)
        local opts = doc and { if_match = etag } or { if_none_match = "*" }
        opts.content_type = "application/json"
        local put, merr2, mcode2 = store:put(keys.segment_manifest(app, seglen, start), body, opts)
        if put then
          if res.folder then self:keep_folder(("%s/%d/%d"):format(app, seglen, start), res.folder, res.sha256) end
          if doc and doc.profile and doc.profile ~= res.sha256 then
            store:delete(keys.segment_object(app, seglen, start, doc.profile))
          end
          for _, digest in ipairs(gone) do store:delete(keys.segment_part(app, seglen, start, digest)) end
          return true
        end
        spent()
        if mcode2 ~= "PRECONDITION_FAILED" and mcode2 ~= "NOT_FOUND" then return nil, merr2, mcode2 end
      end
    end
    log.debug("another merge wrote the segment first; merging again from it", "app", app, "segment", start)
  end
  return fail.new("CONFLICT", "gave up adding to segment %d of %s after %d attempts", start, app, M.MAX_ATTEMPTS)
end

--- The segments of app overlapping [from, to) (Unix seconds; nil: open-ended), oldest first:
-- { start, doc, etag } (seglen: the history's, or M.ROLLUP for day roll-ups). Returns the list or
-- nil, err, code.
function History:segments(app, from, to, seglen_of)
  local want = seglen_of or self.seglen
  local items, err, code = self.store:list(keys.history_prefix(app, want))
  if not items then return nil, err, code end
  local starts = {}
  for _, item in ipairs(items) do
    local seglen, start, digest = keys.parse_history(item.key)
    if seglen == want and not digest and (not to or start < to) and (not from or start + seglen > from) then
      starts[#starts + 1] = start
    end
  end
  table.sort(starts)
  local out = {}
  for _, start in ipairs(starts) do
    local doc, etag, rcode = self:read_manifest(app, start, want)
    if doc == nil then return nil, etag, rcode end
    if doc then out[#out + 1] = { start = start, doc = doc, etag = etag, seglen = seglen_of } end
  end
  return out
end

-- Day roll-ups ---------------------------------------------------------------------------------------
-- {app}/history/86400/{day}.json lists the segment versions ({start, profile}) its profile
-- {app}/history/86400/{day}.{sha256}.pgo merges: a window whose segments of that day are exactly
-- those versions merges the roll-up instead of them (same result, fewer inputs). Built by the
-- sweep for complete past days; one whose segments changed since (a late upload) is simply not
-- used until the sweep builds it again.
M.ROLLUP = 86400

--- Whether this history keeps day roll-ups (segments shorter than a day that divide it).
function History:rollups()
  return self.seglen < M.ROLLUP and M.ROLLUP % self.seglen == 0
end

local function same_parts(parts, group)
  if type(parts) ~= "table" or #parts ~= #group then return false end
  for i, s in ipairs(group) do
    local p = parts[i]
    if type(p) ~= "table" or p.start ~= s.start or p.profile ~= s.doc.profile then return false end
  end
  return true
end

--- segs (a window's segments with a profile, oldest first) with each day whose segments are
-- exactly what that day's roll-up holds replaced by the roll-up.
function History:use_rollups(app, segs)
  if not self:rollups() then return segs end
  local days, order = {}, {}
  for _, s in ipairs(segs) do
    if s.doc.profile then
      local day = s.start // M.ROLLUP * M.ROLLUP
      if not days[day] then
        days[day] = {}
        order[#order + 1] = day
      end
      table.insert(days[day], s)
    end
  end
  local out = {}
  for _, day in ipairs(order) do
    local group, used = days[day], false
    if #group > 1 then
      local doc = self:read_manifest(app, day, M.ROLLUP)
      if doc and doc.profile and same_parts(doc.parts, group) then
        out[#out + 1] = { start = day, seglen = M.ROLLUP, doc = doc }
        used = true
      end
    end
    if not used then
      for _, s in ipairs(group) do out[#out + 1] = s end
    end
  end
  return out
end

--- Builds the roll-up of app's day (Unix seconds) from its segments. Returns true or nil, err, code.
function History:build_rollup(app, day)
  local segs, err, code = self:segments(app, day, day + M.ROLLUP)
  if not segs then return nil, err, code end
  local parts = json.array()
  local with = {}
  for _, s in ipairs(segs) do
    if s.doc.profile then
      with[#with + 1] = s
      parts[#parts + 1] = json.object("start", s.start, "profile", s.doc.profile)
    end
  end
  if #with < 2 then return true end
  local res, merr, mcode = self:merge_segments(app, with, nil)
  if not res then return nil, merr, mcode end
  local ok, perr, pcode = self.store:put(keys.segment_object(app, M.ROLLUP, day, res.sha256), res.bytes)
  if not ok then return nil, perr, pcode end
  -- Old versions are left to the sweep of unnamed objects: another worker's build may name them.
  return self.store:put(keys.segment_manifest(app, M.ROLLUP, day), json.encode(json.object("app", app,
    "segment", M.ROLLUP, "start", day, "profile", res.sha256, "bytes", #res.bytes, "parts", parts,
    "uploads", json.array())), { content_type = "application/json" })
end

--- Merges the profiles of segments (from History:segments) in groups of M.GROUP, pruning with
-- rules at the last step; weights (optional, per segment) scale each segment's profile first
-- (Go's Profile.Scale). Returns the merging result or nil, err, code ("NOT_FOUND": nothing).
function History:merge_segments(app, segs, rules, weights)
  local objects, ws = {}, {}
  for i, s in ipairs(segs) do
    if s.doc.profile then
      objects[#objects + 1] = keys.segment_object(app, s.seglen or self.seglen, s.start, s.doc.profile)
      ws[#objects] = weights and weights[i] or 1
    end
  end
  if #objects == 0 then return fail.new("NOT_FOUND", "no segment holds a profile") end
  local acc, i = nil, 1
  while true do
    local inputs, scales = {}, {}
    if acc then
      inputs[1] = acc
      scales[1] = 1
    end
    while #inputs < M.GROUP and i <= #objects do
      local got, err, code = self.store:get(objects[i])
      if not got then
        if code == "NOT_FOUND" then code = "PRECONDITION_FAILED" end -- replaced meanwhile: read again
        return nil, err, code
      end
      inputs[#inputs + 1] = got.body
      scales[#scales + 1] = ws[i]
      i = i + 1
    end
    local last = i > #objects
    local res, err, code = merging.merge(inputs, last and rules or nil, weights and scales or nil)
    if not res then return nil, err, code end
    if last then return res end
    acc = res.bytes
  end
end

--- The default profile of app under view (autopgo.policy's view_for) at now (Unix seconds): all
-- segments; those overlapping [now - seconds, ...) for a window; or every segment weighted by
-- 0.5 ^ (age / half_life), age = now - the segment's midpoint, for decay. Returns the merging
-- result with res.view (a json.object { kind, now, segments = { { start, weight } } }, written in
-- the base's ledger) and res.view_segments (how many), or nil, err, code
-- ("NOT_FOUND": no segment).
function History:merge_view(app, view, rules, now)
  now = now or self.now() / NS
  for _ = 1, M.MAX_ATTEMPTS do
    local from = view.kind == "window" and now - view.seconds or nil
    local segs, err, code = self:segments(app, from, nil)
    if not segs then return nil, err, code end
    local weights
    if view.kind == "decay" then
      weights = {}
      for i, s in ipairs(segs) do
        weights[i] = 0.5 ^ ((now - (s.start + self.seglen / 2)) / view.half_life)
      end
    end
    local res, merr, mcode = self:merge_segments(app, segs, rules, weights)
    if res then
      local list = json.array()
      for i, s in ipairs(segs) do
        if s.doc.profile then list[#list + 1] = json.object("start", s.start, "weight", weights and weights[i] or 1) end
      end
      res.view = json.object("kind", view.kind, "now", now, "segments", list)
      res.view_segments = #list
      return res
    end
    if mcode ~= "PRECONDITION_FAILED" then return nil, merr, mcode end
  end
  return fail.new("UNAVAILABLE", "the history of %s kept changing while being merged", app)
end

--- The merged window [from, to) of app under rules: { key (of the cached object), version, etag }
-- to stream from the store, or { bytes, etag } when just merged. A window whose segments are
-- unchanged is served from {app}/cache/ without merging. nil, err, "NOT_FOUND" when no segment
-- overlaps it.
function History:window(app, from, to, rules)
  for _ = 1, M.MAX_ATTEMPTS do
    local segs, err, code = self:segments(app, from, to)
    if not segs then return nil, err, code end
    local parts = { json.encode(rules or json.array()), tostring(self.seglen) }
    for _, s in ipairs(segs) do
      if s.doc.profile then parts[#parts + 1] = ("%d:%s"):format(s.start, s.doc.profile) end
    end
    if #parts == 2 then return fail.new("NOT_FOUND", "no profile for app %s in that window", app) end
    local digest = crypto.hex(crypto.digest("sha256", table.concat(parts, "\n")))
    local ckey, ikey = keys.cache(app, digest), keys.cache_info(app, digest)
    local info = self.store:get(ikey)
    local doc = info and json.decode(info.body)
    if type(doc) == "table" and type(doc.sha256) == "string" then
      local st = self.store:stat(ckey)
      if st then return { key = ckey, version = st.etag, etag = httpd.digest_etag(doc.sha256) } end
    end
    local res, merr, mcode = self:merge_segments(app, self:use_rollups(app, segs), rules)
    if res then
      local ok = self.store:put(ckey, res.bytes)
      if ok then
        self.store:put(ikey, json.encode(json.object("sha256", res.sha256, "segments", #segs)),
          { content_type = "application/json" })
        self:trim_cache(app)
      end
      return { bytes = res.bytes, etag = httpd.digest_etag(res.sha256) }
    end
    if mcode ~= "PRECONDITION_FAILED" then return nil, merr, mcode end
  end
  return fail.new("UNAVAILABLE", "the history of %s kept changing while being merged", app)
end

-- Keeps the M.CACHE_KEEP newest merged windows of app.
function History:trim_cache(app)
  local items = self.store:list(keys.cache_prefix(app))
  if not items then return end
  local pgo = {}
  for _, item in ipairs(items) do
    if item.key:sub(-4) == ".pgo" then pgo[#pgo + 1] = item end
  end
  if #pgo <= M.CACHE_KEEP then return end
  table.sort(pgo, function(a, b) return (a.last_modified or 0) > (b.last_modified or 0) end)
  for i = M.CACHE_KEEP + 1, #pgo do
    local digest = pgo[i].key:match("([^/]+)%.pgo$")
    self.store:delete(keys.cache_info(app, digest))
    self.store:delete(pgo[i].key)
  end
end

--- Deletes every merged window of app.
function History:drop_cache(app)
  local items, err, code = self.store:list(keys.cache_prefix(app))
  if not items then return nil, err, code end
  for _, item in ipairs(items) do
    local ok, derr, dcode = self.store:delete(item.key)
    if not ok and dcode ~= "NOT_FOUND" then return nil, derr, dcode end
  end
  return true
end

--- Removes one segment: its manifest first (the segment is gone from then on), then its profile
-- object, the provenance records of its uploads and its parts (a part that cannot be read is left
-- to the sweep of unnamed objects, and so are the records it lists, with retention).
function History:remove_segment(app, seg)
  local store = self.store
  local seglen = seg.seglen or self.seglen
  local uploads = {}
  for _, u in ipairs(seg.doc.uploads or {}) do uploads[#uploads + 1] = u end
  for _, p in ipairs(seg.doc.upload_parts or {}) do
    local list = segparts.read(store, app, seglen, seg.start, p)
    for _, u in ipairs(list or {}) do uploads[#uploads + 1] = u end
  end
  local ok, err, code = store:delete(keys.segment_manifest(app, seglen, seg.start))
  if not ok and code ~= "NOT_FOUND" then return nil, err, code end
  if seg.doc.profile then store:delete(keys.segment_object(app, seglen, seg.start, seg.doc.profile)) end
  for _, u in ipairs(uploads) do
    local rkey = type(u.key) == "string" and keys.record_of(u.key)
    if rkey then store:delete(rkey) end
  end
  for _, p in ipairs(seg.doc.upload_parts or {}) do
    store:delete(keys.segment_part(app, seglen, seg.start, p.part))
  end
  return true
end

--- Removes the segments of app overlapping [from, to) and every merged window. Returns the
-- number of segments removed, or nil, err, code.
function History:delete_range(app, from, to)
  local segs, err, code = self:segments(app, from, to)
  if not segs then return nil, err, code end
  for _, s in ipairs(segs) do
    local ok, rerr, rcode = self:remove_segment(app, s)
    if not ok then return nil, rerr, rcode end
  end
  if self:rollups() then
    local days, rerr, rcode = self:segments(app, from, to, M.ROLLUP)
    if not days then return nil, rerr, rcode end
    for _, d in ipairs(days) do
      local ok, derr, dcode = self:remove_segment(app, d)
      if not ok then return nil, derr, dcode end
    end
  end
  local ok, derr, dcode = self:drop_cache(app)
  if not ok then return nil, derr, dcode end
  return #segs
end

-- Leftovers older than this (seconds) are swept: profile objects and parts no manifest names (a
-- lost race or a crash between writes) and, with retention, provenance records of no retained segment.
M.ORPHAN_AGE = 600

-- Builds the roll-ups of complete past days (two segments or more) that have none or whose
-- segments changed since it was written (live: the sweep's manifests). Returns how many.
function History:sweep_rollups(live)
  if not self:rollups() then return 0 end
  local today = (self.now() // NS) // M.ROLLUP * M.ROLLUP
  local days = {}
  for _, m in pairs(live) do
    if m.seglen == self.seglen then
      local day = m.start // M.ROLLUP * M.ROLLUP
      if day < today then
        local id = ("%s/%d"):format(m.app, day)
        local d = days[id] or { app = m.app, day = day, n = 0, lm = 0 }
        d.n, d.lm = d.n + 1, math.max(d.lm, m.lm)
        days[id] = d
      end
    end
  end
  local built = 0
  for _, d in pairs(days) do
    local r = live[("%s/%d/%d"):format(d.app, M.ROLLUP, d.day)]
    if d.n >= 2 and (not r or d.lm >= r.lm) then
      local ok, err = self:build_rollup(d.app, d.day)
      if ok then
        built = built + 1
      else
        log.warn("cannot build a day roll-up", "app", d.app, "day", utc.rfc3339(d.day), "error", err)
      end
    end
  end
  return built
end

--- One maintenance sweep over the whole store: with retention, segments entirely before the
-- cutoff go (their records with them), and provenance records older than it; always, profile
-- objects and parts that no manifest names and that are older than M.ORPHAN_AGE (a manifest that
-- cannot be read keeps everything of its segment). Staged uploads are never
-- touched. Returns the number of objects removed, or nil, err, code.
function History:sweep()
  local store = self.store
  local items, err, code = store:list("")
  if not items then return nil, err, code end
  local cutoff = self:cutoff()
  local now_s = M.now_nanos() / NS -- the store's clock, not the history's (which tests may move)
  local manifests, objects, removed = {}, {}, 0
  for _, item in ipairs(items) do
    local kind, app = keys.kind_of(item.key)
    if kind == "history" then
      local seglen, start, digest, what = keys.parse_history(item.key)
      if digest then
        objects[#objects + 1] = { item = item, app = app, seglen = seglen, start = start, digest = digest,
          what = what }
      else
        manifests[("%s/%d/%d"):format(app, seglen, start)] = { app = app, seglen = seglen, start = start,
          lm = item.last_modified or 0 }
      end
    elseif kind == "uploads" and cutoff then
      local nanos = tonumber(item.key:match("/uploads/(%d+)%.json$"))
      if nanos and nanos < cutoff - M.SKEW * NS then
        if store:delete(item.key) then removed = removed + 1 end
      end
    end
  end
  local live, dropped = {}, {}
  for id, m in pairs(manifests) do
    if m.seglen == M.ROLLUP and self:rollups() and cutoff and (m.start + M.ROLLUP) * NS <= cutoff then
      local doc = self:read_manifest(m.app, m.start, M.ROLLUP)
      if doc and self:remove_segment(m.app, { start = m.start, seglen = M.ROLLUP, doc = doc }) then
        removed = removed + 1
      end
    elseif m.seglen == self.seglen and self:expired(m.start) then
      local doc = self:read_manifest(m.app, m.start)
      if doc then
        if self:remove_segment(m.app, { start = m.start, doc = doc }) then
          removed = removed + 1
          dropped[m.app] = true
          log.info("retention: removed a segment", "app", m.app, "start", utc.rfc3339(m.start))
        end
      end
    else
      live[id] = m
    end
  end
  -- merged windows of an app that lost segments held what is gone: never served again (their
  -- digests name the old segments), they are dropped rather than left to age out
  for app in pairs(dropped) do self:drop_cache(app) end
  removed = removed + self:sweep_rollups(live)
  for _, o in ipairs(objects) do
    local old = o.item.last_modified and now_s - o.item.last_modified > M.ORPHAN_AGE
    if old then
      local id = ("%s/%d/%d"):format(o.app, o.seglen, o.start)
      local m = live[id]
      local named = false
      if m then
        if m.doc == nil and not m.err then
          m.doc = self:read_manifest(m.app, m.start, m.seglen)
          m.err = m.doc == nil -- unreadable: keep what it may name
        end
        if m.doc and not m.parts then
          m.parts = {}
          for _, p in ipairs(m.doc.upload_parts or {}) do m.parts[p.part] = true end
        end
        if o.what == "part" then
          named = m.err or (m.doc and m.parts[o.digest]) or false
        else
          named = m.err or (m.doc and m.doc.profile == o.digest) or false
        end
      end
      if not named and store:delete(o.item.key) then removed = removed + 1 end
    end
  end
  return removed
end

return M
