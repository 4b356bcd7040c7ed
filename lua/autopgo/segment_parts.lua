-- The uploads of a history segment (README "Profile history"): its manifest names immutable parts,
-- each a list of uploads with its count, samples and first and last staged key, so what a pass
-- reads and writes of them follows its batch, not what the segment already holds.
--
-- A pass writes one part of its batch and reads only the parts whose key range holds a key of its
-- batch (none when its uploads are newer than every part, as staged keys are). When M.FANOUT parts
-- have the same level (floor(log_FANOUT(count))) they are combined into one, so a manifest names
-- at most FANOUT - 1 parts per level and an upload is rewritten once per level, not once per pass.
-- A manifest of the old layout lists its uploads inline (doc.uploads); the next pass over it moves
-- them into a part (upgrade in place). Parts are named afresh at every write (never by their
-- content alone), so an unnamed part the sweep is about to delete never comes back to life under
-- a manifest that names it.
local fail = require "autopgo.fail"
local json = require "autopgo.json"
local keys = require "autopgo.keys"
local crypto = require("autopgo.core").crypto

local M = {}

M.FANOUT = 8

--- Whether list (a manifest's upload_parts, or nil) is well formed; normalizes its numbers.
function M.valid(list)
  if list == nil then return true end
  if type(list) ~= "table" then return false end
  for _, p in ipairs(list) do
    if type(p) ~= "table" or type(p.part) ~= "string" or not p.part:match("^%x+$") or type(p.first) ~= "string"
        or type(p.last) ~= "string" or not math.tointeger(p.count) or p.count < 0 then
      return false
    end
    p.count = math.tointeger(p.count)
    p.samples = tonumber(p.samples) or 0
  end
  return true
end

--- How many uploads the manifest doc (either layout) holds.
function M.count(doc)
  if not doc.upload_parts then return #doc.uploads end
  local n = 0
  for _, p in ipairs(doc.upload_parts) do n = n + p.count end
  return n
end

--- A manifest of the new layout. Nothing lists uploads inline ("uploads" absent): a reader that
-- only knows the old layout refuses it rather than taking the segment for empty.
function M.encode_manifest(app, seglen, start, profile, bytes, parts)
  local list, samples = json.array(), 0
  for i, p in ipairs(parts) do
    samples = samples + p.samples
    list[i] = json.object("part", p.part, "count", p.count, "samples", p.samples, "first", p.first, "last", p.last)
  end
  return json.encode(json.object("app", app, "segment", seglen, "start", start, "profile", profile,
    "bytes", bytes, "samples", samples, "upload_parts", list))
end

--- Orders uploads by capture time, then key.
function M.by_capture(a, b)
  if a.captured ~= b.captured then return a.captured < b.captured end
  return a.key < b.key
end

--- Writes a part of uploads (entries of a pass, or uploads read back) of a segment, never over
-- another. Returns its manifest entry { part, count, samples, first, last, uploads (the list,
-- kept in memory) } or nil, err, code.
function M.write(store, app, seglen, start, uploads)
  table.sort(uploads, M.by_capture)
  local list, samples, first, last = json.array(), 0, nil, nil
  for i, u in ipairs(uploads) do
    samples = samples + (u.samples or 0)
    if not first or u.key < first then first = u.key end
    if not last or u.key > last then last = u.key end
    list[i] = json.object("key", u.key, "captured", u.captured, "duration", u.duration or 0, "size", u.size or 0,
      "samples", u.samples or 0, "source", u.source or "", "weight", u.scale or u.weight or 1)
  end
  local body = json.encode(json.object("app", app, "segment", seglen, "start", start, "uploads", list))
  local digest = crypto.hex(crypto.digest("sha256", body .. crypto.random(16)))
  local ok, err, code = store:put(keys.segment_part(app, seglen, start, digest), body,
    { content_type = "application/json" })
  if not ok then return nil, err, code end
  return { part = digest, count = #uploads, samples = samples, first = first, last = last, uploads = uploads }
end

--- The uploads of a part a manifest names; nil, err, "PRECONDITION_FAILED" when it is gone (the
-- manifest changed since it was read: read it again).
function M.read(store, app, seglen, start, p)
  if p.uploads then return p.uploads end
  local key = keys.segment_part(app, seglen, start, p.part)
  local got, err, code = store:get(key)
  if not got then
    if code == "NOT_FOUND" then
      return fail.new("PRECONDITION_FAILED", "the part %s is gone: its segment changed meanwhile", key)
    end
    return nil, err, code
  end
  local doc = json.decode(got.body)
  if type(doc) ~= "table" or type(doc.uploads) ~= "table" then
    return fail.new("INVALID", "the segment part %s is unreadable", key)
  end
  for _, u in ipairs(doc.uploads) do
    if type(u) ~= "table" or type(u.key) ~= "string" then
      return fail.new("INVALID", "the segment part %s lists an upload without a key", key)
    end
  end
  return doc.uploads
end

--- Which of keyset (a set of staged keys) the segment of manifest doc (or false) holds: a set.
-- Reads only the parts whose key range holds one of them. Returns the set or nil, err, code.
function M.holds(store, app, seglen, start, doc, keyset)
  local held = {}
  if not doc then return held end
  for _, u in ipairs(doc.uploads or {}) do
    if keyset[u.key] then held[u.key] = true end
  end
  for _, p in ipairs(doc.upload_parts or {}) do
    local need = false
    for k in pairs(keyset) do
      if not held[k] and k >= p.first and k <= p.last then
        need = true
        break
      end
    end
    if need then
      local list, err, code = M.read(store, app, seglen, start, p)
      if not list then return nil, err, code end
      for _, u in ipairs(list) do
        if keyset[u.key] then held[u.key] = true end
      end
    end
  end
  return held
end

--- Every upload the segment of manifest doc holds, by capture time then key, or nil, err, code.
function M.uploads(store, app, seglen, start, doc)
  local out = {}
  for _, u in ipairs(doc.uploads or {}) do out[#out + 1] = u end
  for _, p in ipairs(doc.upload_parts or {}) do
    local list, err, code = M.read(store, app, seglen, start, p)
    if not list then return nil, err, code end
    for _, u in ipairs(list) do out[#out + 1] = u end
  end
  table.sort(out, M.by_capture)
  return out
end

local function level(count)
  local l = 0
  while count >= M.FANOUT do
    count = count // M.FANOUT
    l = l + 1
  end
  return l
end

--- parts with every level holding M.FANOUT parts or more combined into one part (written), as
-- often as it takes. Returns the new list and the digests of the parts no longer in it, or nil,
-- err, code.
function M.combine(store, app, seglen, start, parts)
  local gone = {}
  while true do
    local at, low = {}, nil
    for i, p in ipairs(parts) do
      local l = level(p.count)
      at[l] = at[l] or {}
      table.insert(at[l], i)
      if #at[l] >= M.FANOUT and (not low or l < low) then low = l end
    end
    if not low then break end
    local merged, seen, drop = {}, {}, {}
    for _, i in ipairs(at[low]) do
      local p = parts[i]
      local list, err, code = M.read(store, app, seglen, start, p)
      if not list then return nil, err, code end
      for _, u in ipairs(list) do
        if not seen[u.key] then
          seen[u.key] = true
          merged[#merged + 1] = u
        end
      end
      drop[i] = true
      gone[#gone + 1] = p.part
    end
    local whole, err, code = M.write(store, app, seglen, start, merged)
    if not whole then return nil, err, code end
    local rest = {}
    for i, p in ipairs(parts) do
      if not drop[i] then rest[#rest + 1] = p end
    end
    rest[#rest + 1] = whole
    parts = rest
  end
  table.sort(parts, function(a, b) return a.first < b.first end)
  return parts, gone
end

--- The parts of a segment (manifest doc, or false) once entries (its new uploads) are in it: the
-- part of entries written, the uploads an old-layout manifest lists moved into a part, parts
-- combined (M.combine). Returns the list and the digests of the parts it no longer names, or
-- nil, err, code.
function M.next(store, app, seglen, start, doc, entries)
  local parts = {}
  for i, p in ipairs(doc and doc.upload_parts or {}) do parts[i] = p end
  if doc and doc.uploads and #doc.uploads > 0 then
    local p, err, code = M.write(store, app, seglen, start, doc.uploads)
    if not p then return nil, err, code end
    parts[#parts + 1] = p
  end
  local p, err, code = M.write(store, app, seglen, start, entries)
  if not p then return nil, err, code end
  parts[#parts + 1] = p
  return M.combine(store, app, seglen, start, parts)
end

return M
