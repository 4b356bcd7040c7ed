-- The server's HTTP API, as the original serves it (status codes and JSON bodies byte for byte):
-- POST /api/profile/{app} validates (in C, on the thread pool), stages and announces an upload;
-- GET /api/profile/{app} streams the merged profile with ETag "sha256:<hex of the content>" (so a
-- client can tell whether a file it has is current without ever having downloaded it), exactly one
-- version of it even while merges replace it, and never one that does not parse; GET /api/profile
-- lists merged profiles; DELETE /api/profile/{app} announces the deletion. Added to the original's:
-- GET /api/profile/{app}/uploads, what became of an app's uploads (staged, rejected and why);
-- with history (autopgo.history): a provenance record per upload, GET /api/profile/{app}?window=
-- or ?from=&to= (a merged time window), GET /api/profile/{app}/history (segments and uploads) and
-- DELETE /api/profile/{app}?from=&to= (announced as profile.range_deleted). ?format=pgo|preprofile
-- and GET /api/profile/{app}/decisions give the compiler's view (autopgo.pgo_api) of the same
-- version, base or window, with the same checks. Each route declares
-- the token scope it needs (autopgo.auth), and the listing shows only what it allows.
-- Error bodies never carry paths or a store's own words: those go to the log.
local async = require "autopgo.async"
local auth = require "autopgo.auth"
local events = require "autopgo.events"
local fail = require "autopgo.fail"
local httpd = require "autopgo.httpd"
local json = require "autopgo.json"
local log = require "autopgo.log"
local metrics = require "autopgo.metrics"
local keys = require "autopgo.keys"
local limits = require "autopgo.limits"
local history = require "autopgo.history"
local pgo = require "autopgo.pgo"
local pgo_api = require "autopgo.pgo_api"
local units = require "autopgo.units"
local utc = require "autopgo.utc"
local uv = require "luv"
local core = require "autopgo.core"
local budget = require "autopgo.budget"
local pprof = core.pprof

local M = {}

local m = {
  uploads = metrics.counter("autopgo_uploads_total", "Profile uploads by response status.", { "status" }),
  bytes = metrics.counter("autopgo_upload_bytes_total", "Bytes of profile uploads received."),
  downloads = metrics.counter("autopgo_downloads_total", "Profile downloads by response status.", { "status" }),
}

local Api = {}
Api.__index = Api

M.default_max_decompressed = 256 * 1024 * 1024
M.default_max_decompressing = 512 * 1024 * 1024
M.default_max_validations = 2
-- Uploads that may decompress to at most this much are validated in a lane of their own (as many
-- at once as max_validations), so ordinary profiles never wait behind large ones or bombs.
M.small_upload = 4 * 1024 * 1024
-- The decoded profile takes about 3x its decompressed size (measured on Go CPU profiles): each
-- validation may use this many times what it reserved, plus a fixed allowance for small ones.
M.memory_factor = 4
M.memory_allowance = 16 * 1024 * 1024

--- An API over a store and an event writer; o.history (autopgo.history) and o.policy (an
-- autopgo.policy: the prune rules of windows, the compiler's view options) turn on the history
-- endpoints. o.max_upload_size bounds uploads (the HTTP server
-- refuses larger bodies with 413 before reading them); o.max_decompressed what one may decompress
-- to (413 past it; never more than the limit the worker merges under, autopgo.limits, so nothing
-- accepted here is refused later); o.max_decompressing the decompressed bytes all validations in
-- flight may reserve and o.max_validations how many run at once (uploads wait for room, then get 503 with
-- Retry-After); o.budget replaces those two with a shared autopgo.budget.
function M.new(o)
  local self = setmetatable({ store = assert(o.store), writer = assert(o.writer),
    max_upload_size = o.max_upload_size or 64 * 1024 * 1024, last_nanos = 0,
    max_decompressed = o.max_decompressed or M.default_max_decompressed,
    history = o.history,
    digests = {}, hashing = {} }, Api)
  local slots = o.max_validations or M.default_max_validations
  self.budget = o.budget or budget.new { slots = slots,
    bytes = math.max(o.max_decompressing or M.default_max_decompressing, self.max_decompressed) }
  self.small_budget = o.small_budget or budget.new { slots = slots, bytes = slots * M.small_upload }
  -- a base is checked under the limits the worker merges it under
  self.base_limits = limits.profile
  -- o.policy is an autopgo.policy (the roles) or, in specs, the config file's policy table alone
  local pol = o.policy
  local is_policy = pol ~= nil and getmetatable(pol) ~= nil
  self.policy = is_policy and pol or nil
  -- the compiler's view (issue 14): ?format=pgo|preprofile, policy serve/stable/no_inline, /decisions
  self.pgo = pgo_api.new(self.store, is_policy and pol.table or pol)
  return self
end

-- What an upload may decompress to, decided from what it sent before any of it is inflated: a gzip
-- body states its size in its trailer (modulo 2^32), anything else is its own size. The decoder
-- is held to that (and to max_decompressed), so a trailer that lies gets 413 rather than memory.
function Api:expansion(req)
  -- one owner of what a profile may decompress to for the worker too: never accept more
  local most = math.min(self.max_decompressed, limits.profile.max_decompressed)
  local n = req.body_size
  if n >= 18 and req:body_sub(1, 2) == "\31\139" then
    local isize = string.unpack("<I4", req:body_sub(n - 3, n))
    return math.min(most, math.max(isize, 64 * 1024))
  end
  return math.min(most, math.max(n, 1))
end

local function answer(res, status, message)
  return res:error(status, message)
end

-- The 400 for a path segment that is not an app name, saying why.
local function bad_name(app)
  return "invalid app name: " .. keys.app_name_problem(app)
end

-- A store or bus failure: the details (paths, errno names, a service's words) go to the log, the
-- client gets what failed and the failure's code. A full disk is 507 Insufficient Storage.
local function failure(what, err, ...)
  log.error(what, "error", tostring(err), ...)
  local code = fail.code(err) or "INTERNAL"
  if tostring(err):find("ENOSPC", 1, true) then
    return 507, what .. ": the server is out of storage space"
  end
  return 500, ("%s (%s); details are in the server log"):format(what, code)
end

-- Unix nanoseconds, strictly increasing within this process so two uploads never share a key.
function Api:nanos()
  local sec, usec = uv.gettimeofday()
  local n = sec * 1000000000 + usec * 1000
  if n <= self.last_nanos then n = self.last_nanos + 1 end
  self.last_nanos = n
  return n
end

function Api:upload(req, res)
  local app = req.params.app
  local function done(status, message)
    m.uploads:inc({ status = tostring(status) })
    return answer(res, status, message)
  end
  if not keys.is_app_name(app) then return done(400, bad_name(app)) end
  -- the body held once in C: the validator and the store read it where it is
  local body, gone = req:body_bytes()
  if not body then return done(400, fail.message(gone)) end
  m.bytes:inc(nil, req.body_size)
  local expand = self:expansion(req)
  local lane = expand <= M.small_upload and self.small_budget or self.budget
  local ticket, berr = lane:acquire(expand)
  if not ticket then
    res:header("retry-after", "2")
    return done(503, "the server is validating as many uploads as it may; retry later (" .. fail.message(berr) .. ")")
  end
  local info, err, code = async.await(pprof.validate_async, body, { max_decompressed = expand,
    max_memory = M.memory_factor * expand + M.memory_allowance })
  lane:release(ticket)
  if not info then
    local status = code == "TOO_LARGE" and 413 or 400
    return done(status, fail.message(err))
  end
  if not info.pgo.usable then
    return done(400, "profile cannot be used by go build -pgo: " .. info.pgo.reason)
  end
  local key, put, perr
  for _ = 1, 5 do
    key = keys.staging(app, self:nanos())
    local pcode
    -- the provenance record goes first: an upload is only acknowledged with it, and a store that
    -- cannot take it fails the upload at once rather than after the profile was stored
    if self.history then put, perr, pcode = self:record(req, app, key, info, req.body_size) end
    if put or not self.history then
      put, perr, pcode = self.store:put(key, body, { if_none_match = "*" })
      if not put and self.history then self.store:delete(keys.record_of(key)) end
    end
    if put or pcode ~= "PRECONDITION_FAILED" then break end
  end
  if not put then return done(failure("cannot store the profile", perr, "app", app)) end
  local ok, eerr = events.publish(self.writer, events.UPLOADED, { app = app, profileKey = key })
  if not ok then
    local status, message = failure("cannot announce the upload", eerr, "app", app,
      "key", key)
    local dok, derr, dcode = self.store:delete(key)
    if not dok and dcode ~= "NOT_FOUND" then
      log.error("cannot remove the staged upload after a failed publish", "key", key, "error", derr)
    end
    if self.history then self.store:delete(keys.record_of(key)) end
    return done(status, message)
  end
  m.uploads:inc({ status = "201" })
  return res:json(201, json.object("key", key))
end

-- The provenance record of an upload (keys.upload_record): its key, capture time, duration (s),
-- size and source (X-Autopgo-Source, else User-Agent). Returns the store's put result.
function Api:record(req, app, key, info, size)
  local nanos = keys.staging_nanos(key)
  local captured = history.capture(info.time_nanos, nanos)
  local source = req:header("x-autopgo-source") or req:header("user-agent") or ""
  local doc = json.object("key", key, "captured", history.rfc3339_nanos(captured),
    "duration", (info.duration_nanos or 0) / 1e9, "size", size, "source", source:sub(1, 512))
  return self.store:put(keys.upload_record(app, nanos), json.encode(doc), { content_type = "application/json" })
end

-- If-None-Match: "*" or a list of (possibly weak) etags; the comparison is weak, as RFC 9110 says.
-- A merge may replace the base between the reads of one download (its hash, its body). Every read
-- names the version it wants (store:get's if_match), so it is refused before a byte arrives when
-- that version is gone, and the download starts over with the new one. This many times at most.
local MAX_ATTEMPTS = 20

-- What this process knows about version `version` of the base `key` of app: { version, etag,
-- damaged }, from the cache, else by streaming that version through sha256 (one examination per
-- key at a time; concurrent misses wait for it and take its result when it is of their version).
-- Fails with PRECONDITION_FAILED when `version` is no longer the current one.
function Api:version_info(app, key, version)
  local c = self.digests[key]
  while not (c and c.version == version) and self.hashing[key] do
    self.hashing[key].wait()
    c = self.digests[key]
  end
  if c and c.version == version then return c end
  local ev = async.event()
  self.hashing[key] = ev
  local ok, info, err, code = pcall(self.examine, self, app, key, version)
  if self.hashing[key] == ev then self.hashing[key] = nil end
  if ok and info then
    self.digests[key] = info
    if self.on_version and not info.damaged then self.on_version(app) end -- a new version: the web view warms
  elseif ok and code == "NOT_FOUND" then
    self.digests[key] = nil
  end
  ev.set()
  if not ok then error(info, 0) end
  return info, err, code
end

-- Hashes one version of a base and makes sure it parses. The worker writes the ledger of a base
-- (keys.ledger(app, digest)) before the base itself, so a base with a ledger is one the worker
-- wrote whole; one without (written by something else, or not what was written: truncated,
-- garbled) is validated in C before it is ever served.
function Api:examine(app, key, version)
  local hasher = core.crypto.hasher("sha256")
  local got, err, code = self.store:get(key, { if_match = version, sink = function(chunk) hasher:update(chunk) end })
  if not got then return nil, err, code end
  local hex = core.crypto.hex(hasher:digest())
  local info = { version = version, etag = httpd.digest_etag(hex) }
  local ledger, lerr, lcode = self.store:stat(keys.ledger(app, hex))
  if ledger then return info end
  if lcode ~= "NOT_FOUND" then
    log.warn("cannot read the ledger of a merged profile; checking the profile itself", "app", app, "error", lerr)
  end
  got, err, code = self.store:get(key, { if_match = version })
  if not got then return nil, err, code end
  local ok, verr, vcode = async.await(pprof.validate_async, got.body, self.base_limits)
  if not ok and vcode ~= "TOO_LARGE" then
    log.error("the merged profile does not parse; refusing to serve it", "app", app, "key", key,
      "version", version, "sha256", hex, "error", verr)
    info.damaged = true
  elseif not ok then
    log.warn("the merged profile is too large to check; serving it unchecked", "app", app, "error", verr)
  end
  return info
end

-- Streams version info.version of `key` to res. Returns true once the response is finished (or
-- broken off), or nil, err, code with nothing sent when the store could not start the read
-- (PRECONDITION_FAILED: that version was replaced meanwhile).
function Api:send(res, app, key, info)
  res:header("etag", info.etag)
  local held
  local got, err, code = self.store:get(key, {
    if_match = info.version,
    sink = function(chunk)
      if not held and res:state() == "open" then
        -- What Go's http.DetectContentType says for the bytes the original copied out.
        res:header("content-type", chunk:sub(1, 2) == "\31\139" and "application/x-gzip" or "application/octet-stream")
      end
      -- One chunk is held back, so a body of one chunk goes out whole with a Content-Length.
      if held then
        local ok, werr = res:write(held)
        if not ok then error(werr, 0) end
      end
      held = chunk
    end,
  })
  if not got then
    if res:state() ~= "open" then
      log.warn("download cut short", "app", app, "error", err)
      m.downloads:inc({ status = "500" })
      res:abort()
      return true
    end
    res:header("etag", nil)
    return nil, err, code
  end
  m.downloads:inc({ status = "200" })
  if held then
    res:finish(held)
    return true
  end
  -- an empty object: no chunk came through the sink
  res:header("content-type", "text/plain; charset=utf-8")
  res:send("")
  return true
end

-- The range [from, to) (Unix seconds, either may be nil) a query asks for with window= or
-- from=/to=, or nil and what is wrong with it (for a 400).
function M.parse_range(q, now)
  if q.window and (q.from or q.to) then return nil, "give either window or from/to, not both" end
  if q.window then
    local secs, err = units.parse_duration(q.window)
    if not secs then return nil, "window: " .. fail.message(err) end
    if secs <= 0 then return nil, "window must be longer than zero" end
    return now - secs, nil
  end
  local from, to
  if q.from then
    local err
    from, err = utc.parse_rfc3339(q.from)
    if not from then return nil, "from: " .. fail.message(err) end
  end
  if q.to then
    local err
    to, err = utc.parse_rfc3339(q.to)
    if not to then return nil, "to: " .. fail.message(err) end
  end
  if from and to and from >= to then return nil, "from must be before to" end
  return from, to
end

-- Answers a GET for one version of app's profile: the merged base, or with window= or from=/to=
-- the merge of the history segments overlapping that range, pruned by the app's rules (an
-- unchanged window comes from the cache the first request left, without merging again). serve(src)
-- answers with src = { key, version, etag (the digest of the content), bytes (a window just
-- merged), base (true for the base) } and returns true, or nil, err, code when it could not:
-- PRECONDITION_FAILED or NOT_FOUND (that version was replaced meanwhile) start over with what is
-- there now. A base that does not parse is never handed to serve.
function Api:with_version(req, app, done, serve)
  local q = req.query or {}
  local windowed = q.window or q.from or q.to
  local from, to, rules
  if windowed then
    if not self.history then return done(400, "this server keeps no history (--segment 0): no window can be served") end
    from, to = M.parse_range(q, history.now_nanos() / 1e9)
    if from == nil and type(to) == "string" then return done(400, to) end
    rules = self.policy and self.policy:rules_for(app) or nil
  end
  local key = keys.base(app)
  for _ = 1, MAX_ATTEMPTS do
    local src, err, code
    if windowed then
      src, err, code = self.history:window(app, from, to, rules)
      if not src then
        if code == "NOT_FOUND" then return done(404, ("no profile for app %s in that window"):format(app)) end
        return done(failure("cannot merge the window", err, "app", app))
      end
    else
      local st, info
      st, err, code = self.store:stat(key)
      if st then info, err, code = self:version_info(app, key, st.etag) end
      if info and info.damaged then
        return done(500, ("the merged profile of app %s is damaged and is not served (details in the server log)")
          :format(app))
      end
      if code == "NOT_FOUND" and not st then
        self.digests[key] = nil
        return done(404, ("no merged profile for app %s yet"):format(app))
      end
      if info then src = { key = key, version = info.version, etag = info.etag, base = true } end
    end
    if src then
      local sent
      sent, err, code = serve(src)
      if sent then return end
    end
    if code ~= "PRECONDITION_FAILED" and code ~= "NOT_FOUND" then
      return done(failure(windowed and "cannot read the merged window" or "cannot read the merged profile", err,
        "app", app))
    end
    -- replaced (or deleted) between two reads: once more, with what is there now
  end
  log.error("the profile kept changing while being read", "app", app, "attempts", MAX_ATTEMPTS)
  return done(503, windowed and "the history is being replaced too often to be read; try again"
    or "the merged profile is being replaced too often to be read; try again")
end

-- The bytes of exactly version src (as with_version hands it), or nil, err, code.
function Api:read_version(src)
  if src.bytes then return src.bytes end
  local got, err, code = self.store:get(src.key, { if_match = src.version })
  if not got then return nil, err, code end
  return got.body
end

-- GET /api/profile/{app}: one version of the profile (see with_version), whole, under the ETag of
-- that version: a 304 only when If-None-Match is the digest of the version current during this
-- request. ?format=pgo|preprofile (or the policy's serve) gives the compiler's view of it instead.
function Api:download(req, res)
  local app = req.params.app
  local format, why
  local function done(status, message)
    if format and format ~= "pprof" then
      pgo_api.count(format, status)
    else
      m.downloads:inc({ status = tostring(status) })
    end
    return answer(res, status, message)
  end
  if not keys.is_app_name(app) then return done(400, bad_name(app)) end
  format, why = self.pgo:format_for(req, app)
  if not format then return done(400, why) end
  return self:with_version(req, app, done, function(src)
    if format ~= "pprof" then
      return self.pgo:download(req, res, app, format, src, function() return self:read_version(src) end)
    end
    if httpd.none_match(req:header("if-none-match"), src.etag) then
      m.downloads:inc({ status = "304" })
      res:status(304):header("etag", src.etag)
      res:send("")
      return true
    end
    if src.bytes then
      m.downloads:inc({ status = "200" })
      res:header("etag", src.etag)
      res:header("content-type", "application/x-gzip")
      res:send(src.bytes)
      return true
    end
    return self:send(res, app, src.key, src)
  end)
end

-- GET /api/profile/{app}/decisions (also with window= or from=/to=): what the compiler will do
-- with the minimal profile served for that version.
function Api:decisions(req, res)
  local app = req.params.app
  local function done(status, message) return answer(res, status, message) end
  if not keys.is_app_name(app) then return done(400, bad_name(app)) end
  local limit, why = pgo.limit_param(req.query)
  if not limit then return done(400, why) end
  return self:with_version(req, app, done, function(src)
    return self.pgo:decisions(res, app, src, function() return self:read_version(src) end, limit)
  end)
end

-- GET /api/profile/{app}/history: {app, segment, segments: [{start, end, uploads, samples, bytes}],
-- uploads: [{key, captured, duration, size, source, segment}]}, oldest first.
function Api:history_of(req, res)
  local app = req.params.app
  if not keys.is_app_name(app) then return answer(res, 400, bad_name(app)) end
  if not self.history then return answer(res, 400, "this server keeps no history (--segment 0)") end
  local segs, err = self.history:segments_uploads(app)
  if not segs then return answer(res, failure("cannot read the history of the app", err, "app", app)) end
  local seglen = self.history.seglen
  local out_segs, out_uploads = json.array(), json.array()
  for _, s in ipairs(segs) do
    local start = utc.rfc3339(s.start)
    out_segs[#out_segs + 1] = json.object("start", start, "end", utc.rfc3339(s.start + seglen),
      "uploads", s.doc.count, "samples", s.doc.samples or 0, "bytes", s.doc.bytes or 0)
    for _, u in ipairs(s.uploads) do
      out_uploads[#out_uploads + 1] = json.object("key", u.key, "captured", u.captured, "duration", u.duration or 0,
        "size", u.size or 0, "source", u.source or "", "segment", start)
    end
  end
  local seg = seglen % 3600 == 0 and (seglen // 3600) .. "h" or seglen % 60 == 0 and (seglen // 60) .. "m"
    or seglen .. "s"
  return res:json(200, json.object("app", app, "segment", seg, "segments", out_segs,
    "uploads", out_uploads))
end

function Api:list(req, res)
  local items, err = self.store:list("")
  if not items then return answer(res, failure("cannot list the merged profiles", err)) end
  local profiles = json.array()
  for _, item in ipairs(items) do
    local kind, app = keys.kind_of(item.key)
    if kind == "base" and auth.may(req, "download", app) then
      profiles[#profiles + 1] = json.object("key", app, "size", item.size,
        "lastModified", utc.rfc3339(item.last_modified))
    end
  end
  return res:json(200, json.object("profiles", profiles))
end

-- GET /api/profile/{app}/uploads: what became of an app's uploads. {app, merged: {size,
-- lastModified} | null, staged: [{key, size, lastModified}], rejected: [{key, reason,
-- lastModified}]}, oldest first; a rejected upload's reason is the text the worker wrote beside it.
function Api:uploads(req, res)
  local app = req.params.app
  if not keys.is_app_name(app) then return answer(res, 400, bad_name(app)) end
  local items, err = self.store:list(keys.app_prefix(app))
  if not items then return answer(res, failure("cannot list the uploads of the app", err, "app", app)) end
  local staged, under_rejected, merged = {}, {}, json.null
  for _, item in ipairs(items) do
    local kind = keys.kind_of(item.key)
    if kind == "base" then
      merged = json.object("size", item.size, "lastModified", utc.rfc3339(item.last_modified))
    elseif kind == "staging" then
      staged[#staged + 1] = item
    elseif kind == "rejected" then
      under_rejected[item.key] = item
    end
  end
  -- under rejected/: the rejected uploads, and beside some of them the text saying why
  local reasons, rejected = {}, {}
  for key in pairs(under_rejected) do
    if under_rejected[keys.reason_of(key)] then reasons[keys.reason_of(key)] = key end
  end
  for key, item in pairs(under_rejected) do
    if not reasons[key] then rejected[#rejected + 1] = item end
  end
  local function oldest_first(a, b)
    if a.last_modified ~= b.last_modified then return a.last_modified < b.last_modified end
    return a.key < b.key
  end
  table.sort(staged, oldest_first)
  table.sort(rejected, oldest_first)
  local out_staged, out_rejected = json.array(), json.array()
  for i, item in ipairs(staged) do
    out_staged[i] = json.object("key", item.key, "size", item.size, "lastModified", utc.rfc3339(item.last_modified))
  end
  for i, item in ipairs(rejected) do
    local reason = "no reason was recorded"
    if under_rejected[keys.reason_of(item.key)] then
      local got, rerr, rcode = self.store:get(keys.reason_of(item.key))
      if got then
        reason = (got.body:gsub("%s+$", ""))
      elseif rcode ~= "NOT_FOUND" then
        log.warn("cannot read why an upload was rejected", "key", item.key, "error", rerr)
        reason = "the reason could not be read (details in the server log)"
      end
    end
    out_rejected[i] = json.object("key", item.key, "reason", reason, "lastModified",
      utc.rfc3339(item.last_modified))
  end
  return res:json(200, json.object("app", app, "merged", merged, "staged", out_staged, "rejected", out_rejected))
end

-- DELETE /api/profile/{app}?from=&to=: announces profile.range_deleted (both bounds needed).
function Api:delete_range(req, res, app)
  if not self.history then return answer(res, 400, "this server keeps no history (--segment 0): no range to delete") end
  local q = req.query
  if q.window then return answer(res, 400, "a range delete takes from and to, not window") end
  if not (q.from and q.to) then return answer(res, 400, "a range delete needs both from and to (RFC 3339)") end
  local from, to = M.parse_range(q, 0)
  if from == nil then return answer(res, 400, to) end
  local ok, eerr = events.publish(self.writer, events.RANGE_DELETED,
    { app = app, from = utc.rfc3339(from), to = utc.rfc3339(to) })
  if not ok then return answer(res, failure("cannot announce the deletion", eerr, "app", app)) end
  self.digests[keys.base(app)] = nil
  return res:json(200, json.object())
end

function Api:delete(req, res)
  local app = req.params.app
  if not keys.is_app_name(app) then return answer(res, 400, bad_name(app)) end
  local q = req.query or {}
  if q.from or q.to or q.window then return self:delete_range(req, res, app) end
  local st, err, code = self.store:stat(keys.base(app))
  if not st then
    if code ~= "NOT_FOUND" then return answer(res, failure("cannot read the profiles of the app", err, "app", app)) end
    -- Only staged uploads (nothing merged yet) still count as something to delete.
    local items, lerr = self.store:list(keys.app_prefix(app))
    if not items then return answer(res, failure("cannot list the profiles of the app", lerr, "app", app)) end
    if #items == 0 then return answer(res, 404, "Not Found") end
  end
  local ok, eerr = events.publish(self.writer, events.DELETED, { app = app })
  if not ok then return answer(res, failure("cannot announce the deletion", eerr, "app", app)) end
  self.digests[keys.base(app)] = nil
  return res:json(200, json.object())
end

--- Adds the API's routes to an httpd router.
-- Each route names the scope a token needs (autopgo.auth); the listing needs download and shows
-- only the apps the token may download.
function Api:routes(router)
  router:add("POST", "/api/profile/{app}", function(req, res) return self:upload(req, res) end, "upload")
  router:add("GET", "/api/profile/{app}", function(req, res) return self:download(req, res) end, "download")
  router:add("GET", "/api/profile", function(req, res) return self:list(req, res) end, "download")
  router:add("DELETE", "/api/profile/{app}", function(req, res) return self:delete(req, res) end, "delete")
  router:add("GET", "/api/profile/{app}/uploads", function(req, res) return self:uploads(req, res) end, "download")
  router:add("GET", "/api/profile/{app}/decisions", function(req, res) return self:decisions(req, res) end,
    "download")
  router:add("GET", "/api/profile/{app}/history", function(req, res) return self:history_of(req, res) end,
    "download")
  return router
end

return M
