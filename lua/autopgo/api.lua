-- The server's HTTP API, as the original serves it (status codes and JSON bodies byte for byte):
-- POST /api/profile/{app} validates (in C, on the thread pool), stages and announces an upload;
-- GET /api/profile/{app} streams the merged profile with ETag "sha256:<hex of the content>" (so a
-- client can tell whether a file it has is current without ever having downloaded it); GET
-- /api/profile lists merged profiles; DELETE /api/profile/{app} announces the deletion.
local async = require "autopgo.async"
local events = require "autopgo.events"
local json = require "autopgo.json"
local log = require "autopgo.log"
local metrics = require "autopgo.metrics"
local options = require "autopgo.options"
local uv = require "luv"
local core = require "autopgo.core"
local pprof = core.pprof

local M = {}

local m = {
  uploads = metrics.counter("autopgo_uploads_total", "Profile uploads by response status.", { "status" }),
  bytes = metrics.counter("autopgo_upload_bytes_total", "Bytes of profile uploads received."),
  downloads = metrics.counter("autopgo_downloads_total", "Profile downloads by response status.", { "status" }),
}

local Api = {}
Api.__index = Api

--- An API over a store and an event writer. o.max_upload_size bounds uploads (the HTTP server
-- refuses larger bodies with 413 before reading them) and, times 16, what they may decompress to.
function M.new(o)
  local self = setmetatable({ store = assert(o.store), writer = assert(o.writer),
    max_upload_size = o.max_upload_size or 64 * 1024 * 1024, last_nanos = 0,
    digests = {}, hashing = {} }, Api)
  self.limits = { max_decompressed = math.max(256 * 1024 * 1024, 16 * self.max_upload_size) }
  -- pgo hook (issue 14): ?format=pgo|preprofile, policy serve/stable/no_inline, /decisions
  self.pgo = require("autopgo.pgo_api").new(self.store, o.policy)
  return self
end

local function fail(res, status, message)
  return res:error(status, message)
end

-- Unix nanoseconds, strictly increasing within this process so two uploads never share a key.
function Api:nanos()
  local sec, usec = uv.gettimeofday()
  local n = sec * 1000000000 + usec * 1000
  if n <= self.last_nanos then n = self.last_nanos + 1 end
  self.last_nanos = n
  return n
end

--- Go's RFC 3339 with nanoseconds, trailing zeros dropped (time.Time in JSON), in UTC.
function M.format_time(t)
  local secs = math.floor(t)
  local micros = math.floor((t - secs) * 1e6 + 0.5)
  if micros >= 1000000 then
    secs, micros = secs + 1, micros - 1000000
  end
  local frac = micros == 0 and "" or ("." .. ("%06d"):format(micros):gsub("0+$", ""))
  return os.date("!%Y-%m-%dT%H:%M:%S", secs) .. frac .. "Z"
end

function Api:upload(req, res)
  local app = req.params.app
  local function done(status, message)
    m.uploads:inc({ status = tostring(status) })
    return fail(res, status, message)
  end
  if not options.is_app_name(app) then return done(400, "invalid app name") end
  local body = req:body()
  m.bytes:inc(nil, #body)
  local info, err, code = async.await(pprof.validate_async, body, self.limits)
  if not info then
    local status = code == "TOO_LARGE" and 413 or 400
    return done(status, (tostring(err):gsub("^[%u_]+: ", "")))
  end
  if not info.pgo.usable then
    return done(400, "profile cannot be used by go build -pgo: " .. info.pgo.reason)
  end
  local key, put, perr
  for _ = 1, 5 do
    key = ("%s/staging/%d"):format(app, self:nanos())
    local pcode
    put, perr, pcode = self.store:put(key, body, { if_none_match = "*" })
    if put or pcode ~= "PRECONDITION_FAILED" then break end
  end
  if not put then
    log.error("cannot store an upload", "app", app, "error", perr)
    return done(500, tostring(perr))
  end
  local ok, eerr = events.publish(self.writer, events.UPLOADED, { app = app, profileKey = key })
  if not ok then
    log.error("cannot publish profile.uploaded; removing the staged upload", "app", app, "key", key, "error", eerr)
    local dok, derr, dcode = self.store:delete(key)
    if not dok and dcode ~= "NOT_FOUND" then
      log.error("cannot remove the staged upload after a failed publish", "key", key, "error", derr)
    end
    return done(500, tostring(eerr))
  end
  m.uploads:inc({ status = "201" })
  return res:json(201, json.object("key", key))
end

-- If-None-Match: "*" or a list of (possibly weak) etags; the comparison is weak, as RFC 9110 says.
local function none_match(header, etag)
  if not header then return false end
  local function strip(e) return (e:gsub("^W/", "")) end
  for candidate in header:gmatch("[^,]+") do
    candidate = candidate:match("^%s*(.-)%s*$")
    if candidate == "*" or strip(candidate) == strip(etag) then return true end
  end
  return false
end

-- The content ETag of `key`, whose store version was `version` a moment ago: from the cache
-- when it holds that version, else by streaming the object through sha256 (one hash per key at a
-- time; concurrent misses wait for it and take its result when it is of their version). Returns
-- the ETag and the store version actually hashed, which is newer than `version` if a merge
-- landed in between: still content of this moment.
function Api:content_etag(key, version)
  local c = self.digests[key]
  while not (c and c.version == version) and self.hashing[key] do
    self.hashing[key].wait()
    c = self.digests[key]
  end
  if c and c.version == version then return c.etag, c.version end
  local ev = async.event()
  self.hashing[key] = ev
  local hasher = core.crypto.hasher("sha256")
  local got, err, code = self.store:get(key, { sink = function(chunk) hasher:update(chunk) end })
  if self.hashing[key] == ev then self.hashing[key] = nil end
  if not got then
    if code == "NOT_FOUND" then self.digests[key] = nil end
    ev.set()
    return nil, err, code
  end
  local etag = '"sha256:' .. core.crypto.hex(hasher:digest()) .. '"'
  self.digests[key] = { version = got.etag, etag = etag }
  ev.set()
  return etag, got.etag
end

-- Two reads, the hash and the body sent, may see different versions when a merge lands between
-- them. A 304 is answered only when If-None-Match is the digest of content read during this
-- request, so it never stands for anything but what the client holds. A 200 sends the body of
-- its own read, held back by one chunk: if that read turns out to be another version than the
-- one hashed, the response is broken off (the client sees a failed transfer and retries) rather
-- than completed under an ETag that is not its digest.
function Api:download(req, res)
  local app = req.params.app
  local function done(status, message)
    m.downloads:inc({ status = tostring(status) })
    return fail(res, status, message)
  end
  if not options.is_app_name(app) then return done(400, "invalid app name") end
  if self.pgo:maybe_download(req, res) then return end -- pgo hook (issue 14)
  local key = app .. "/default.pgo"
  local st, err, code = self.store:stat(key)
  local etag, version
  if st then etag, version, code = self:content_etag(key, st.etag) end
  if not etag then
    err = st and version or err
    if code == "NOT_FOUND" then
      self.digests[key] = nil
      return done(404, "Not Found")
    end
    return done(500, tostring(err))
  end
  if none_match(req:header("if-none-match"), etag) then
    m.downloads:inc({ status = "304" })
    res:status(304):header("etag", etag)
    return res:send("")
  end
  res:header("etag", etag)
  local held
  local got
  got, err, code = self.store:get(key, {
    sink = function(chunk)
      if not held and res:state() == "open" then
        -- What Go's http.DetectContentType says for the bytes the original copied out.
        res:header("content-type", chunk:sub(1, 2) == "\31\139" and "application/x-gzip" or "application/octet-stream")
      end
      if held then
        local ok, werr = res:write(held)
        if not ok then error(werr, 0) end
      end
      held = chunk
    end,
  })
  if got and got.etag ~= version then
    log.warn("profile changed while being sent; breaking the response off", "app", app)
    self.digests[key] = nil
    if res:state() == "open" then return done(500, "the profile changed while being read; try again") end
    m.downloads:inc({ status = "500" })
    return res:abort()
  end
  if not got then
    if res:state() ~= "open" then
      log.warn("download cut short", "app", app, "error", err)
      return res:abort()
    end
    res:header("etag", nil)
    if code == "NOT_FOUND" then return done(404, "Not Found") end
    return done(500, tostring(err))
  end
  m.downloads:inc({ status = "200" })
  if held then return res:finish(held) end
  -- an empty object: no chunk came through the sink
  res:header("content-type", "text/plain; charset=utf-8")
  return res:send("")
end

function Api:list(_, res)
  local items, err = self.store:list("")
  if not items then return fail(res, 500, tostring(err)) end
  local profiles = json.array()
  for _, item in ipairs(items) do
    local app = item.key:match("^(.*)/default%.pgo$")
    if app and options.is_app_name(app) then
      profiles[#profiles + 1] = json.object("key", app, "size", item.size,
        "lastModified", M.format_time(item.last_modified))
    end
  end
  return res:json(200, json.object("profiles", profiles))
end

function Api:delete(req, res)
  local app = req.params.app
  if not options.is_app_name(app) then return fail(res, 400, "invalid app name") end
  local st, err, code = self.store:stat(app .. "/default.pgo")
  if not st then
    if code ~= "NOT_FOUND" then return fail(res, 500, tostring(err)) end
    -- Only staged uploads (nothing merged yet) still count as something to delete.
    local items, lerr = self.store:list(app .. "/")
    if not items then return fail(res, 500, tostring(lerr)) end
    if #items == 0 then return fail(res, 404, "Not Found") end
  end
  local ok, eerr = events.publish(self.writer, events.DELETED, { app = app })
  if not ok then return fail(res, 500, tostring(eerr)) end
  self.digests[app .. "/default.pgo"] = nil
  return res:json(200, json.object())
end

--- Adds the API's routes to an httpd router.
function Api:routes(router)
  router:add("POST", "/api/profile/{app}", function(req, res) return self:upload(req, res) end)
  router:add("GET", "/api/profile/{app}", function(req, res) return self:download(req, res) end)
  router:add("GET", "/api/profile", function(req, res) return self:list(req, res) end)
  router:add("DELETE", "/api/profile/{app}", function(req, res) return self:delete(req, res) end)
  self.pgo:routes(router) -- pgo hook (issue 14)
  return router
end

return M
