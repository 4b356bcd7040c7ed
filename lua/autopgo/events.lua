-- Event envelopes exactly as the seed describes them: {"id": UUID v4, "timestamp": RFC 3339 UTC
-- in Go's time.Time JSON form, "type", "payload"}, with the profile.uploaded / merged / deleted payloads
-- written in the original's field order. Parsing checks every field and says what is wrong.
local uv = require "luv"
local json = require "autopgo.json"
local fail = require "autopgo.fail"
local keys = require "autopgo.keys"
local utc = require "autopgo.utc"
local metrics = require "autopgo.metrics"
local crypto = require("autopgo.core").crypto

local M = {}

local published = metrics.counter("autopgo_events_published_total", "Events published, by type.", { "type" })
local failed = metrics.counter("autopgo_events_failed_total",
  "Events that could not be published (stage=publish) or handled (stage=handle), by type.", { "type", "stage" })
local consumed = metrics.counter("autopgo_events_consumed_total", "Events received and handled, by type.", { "type" })

M.UPLOADED = "profile.uploaded"
M.MERGED = "profile.merged"
M.DELETED = "profile.deleted"
-- An addition to the original's three: DELETE /api/profile/{app}?from=&to= (RFC 3339 strings).
M.RANGE_DELETED = "profile.range_deleted"

-- Payload fields per type, in the order the original writes them.
M.fields = {
  [M.UPLOADED] = { "app", "profileKey" },
  [M.MERGED] = { "app", "profileKey", "mergedKey" },
  [M.DELETED] = { "app" },
  [M.RANGE_DELETED] = { "app", "from", "to" },
}

--- Formats Unix seconds (default: now) as Go's time.Time JSON form, RFC 3339 UTC with up to nine
-- fraction digits, trailing zeros dropped, none when zero: 2024-10-28T12:16:34.964Z
function M.format_time(t)
  if t then return utc.rfc3339(t) end
  local sec, usec = uv.gettimeofday()
  return utc.rfc3339(sec, usec * 1000)
end

--- Parses an envelope's RFC 3339 timestamp into Unix seconds, or fail.new("INVALID", "...").
M.parse_time = utc.parse_rfc3339

--- The id of an envelope's JSON text without decoding it (buses use it to deduplicate), or nil.
function M.id_of(text)
  return text:match('"id"%s*:%s*"([^"]+)"')
end

local function encode_payload(kind, payload)
  local fields = M.fields[kind]
  if not fields then return payload end
  local list = {}
  for _, f in ipairs(fields) do
    list[#list + 1] = f
    list[#list + 1] = payload[f] == nil and "" or payload[f]
  end
  return json.object(table.unpack(list))
end

--- Wraps a payload: returns the envelope's JSON text and the envelope table.
function M.envelope(kind, payload)
  assert(type(kind) == "string" and kind ~= "", "events.envelope: type must be a non-empty string")
  assert(type(payload) == "table", "events.envelope: payload must be a table")
  local env = { id = crypto.uuid4(), timestamp = M.format_time(), type = kind, payload = payload }
  local text = json.encode(json.object("id", env.id, "timestamp", env.timestamp, "type", kind,
    "payload", encode_payload(kind, payload)))
  return text, env
end

local function check_payload(kind, p)
  local fields = M.fields[kind]
  if not fields then return true end
  for _, f in ipairs(fields) do
    if type(p[f]) ~= "string" or p[f] == "" then
      return fail.new("INVALID", "%s payload needs a non-empty string %q", kind, f)
    end
  end
  if not keys.is_app_name(p.app) then
    return fail.new("INVALID", "%s payload has an invalid app name %q (a-z, 0-9 and '-')", kind, p.app)
  end
  local prefix = p.app .. "/"
  for _, f in ipairs { "profileKey", "mergedKey" } do
    if p[f] and p[f]:sub(1, #prefix) ~= prefix then
      return fail.new("INVALID", "%s payload %s %q is not under %s", kind, f, p[f], prefix)
    end
  end
  return true
end

--- Wraps and publishes a payload with the app as ordering key; counts it. Returns the envelope,
-- or nil, err, code.
function M.publish(writer, kind, payload)
  local text, env = M.envelope(kind, payload)
  local ok, err, code = writer:publish(text, { key = payload.app })
  if not ok then
    failed:inc({ type = kind, stage = "publish" })
    if not err then return fail.new("UNAVAILABLE", "publish failed") end
    return nil, err, code or fail.code(err)
  end
  published:inc({ type = kind })
  return env
end

--- Counts an event handled (ok) or not.
function M.count_handled(kind, ok)
  if ok then consumed:inc({ type = kind }) else failed:inc({ type = kind, stage = "handle" }) end
end

--- Parses an envelope. Returns { id, timestamp, time (Unix seconds), type, payload } or
-- fail.new("INVALID", "what is wrong"). Types other than the three profile events are
-- returned as they are (their payload unchecked) for the caller to reject.
function M.parse(text)
  if type(text) ~= "string" then return fail.new("INVALID", "event body must be a string, got %s", type(text)) end
  local env, err = json.decode(text)
  if env == nil then return fail.new("INVALID", "event is not JSON: %s", fail.message(err)) end
  if type(env) ~= "table" or env[1] ~= nil then return fail.new("INVALID", "event is not a JSON object") end
  if type(env.id) ~= "string" or env.id == "" then return fail.new("INVALID", "event has no id") end
  if type(env.type) ~= "string" or env.type == "" then return fail.new("INVALID", "event %s has no type", env.id) end
  local t, terr = M.parse_time(env.timestamp)
  if not t then return fail.new("INVALID", "event %s: %s", env.id, fail.message(terr)) end
  if type(env.payload) ~= "table" then return fail.new("INVALID", "event %s has no payload object", env.id) end
  local ok, perr = check_payload(env.type, env.payload)
  if not ok then return fail.new("INVALID", "event %s: %s", env.id, fail.message(perr)) end
  return { id = env.id, timestamp = env.timestamp, time = t, type = env.type, payload = env.payload }
end

return M
