-- Specs of lua/autopgo/events.lua: envelopes as the seed specifies and parsing with clear errors.
local events = require "autopgo.events"
local json = require "autopgo.json"

describe("events", function()
  it("wraps payloads in the seed's envelope with the original's field order", function()
    local text, env = events.envelope(events.MERGED,
      { mergedKey = "app/default.pgo", app = "app", profileKey = "app/staging/1" })
    assert.matches("^%x%x%x%x%x%x%x%x%-%x%x%x%x%-4%x%x%x%-[89ab]%x%x%x%-%x%x%x%x%x%x%x%x%x%x%x%x$", env.id)
    -- Go's time.Time JSON form: up to nine fraction digits, no trailing zero, no "." when zero
    local frac = env.timestamp:match("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d(%.?%d*)Z$")
    assert.is_string(frac, env.timestamp)
    assert.is_true(frac == "" or (#frac <= 10 and frac:match("^%.%d*[1-9]$") ~= nil), env.timestamp)
    assert.equals(('{"id":"%s","timestamp":"%s","type":"profile.merged","payload":'
      .. '{"app":"app","profileKey":"app/staging/1","mergedKey":"app/default.pgo"}}'):format(env.id,
      env.timestamp), text)
    local again = assert(events.parse(text))
    assert.equals(env.id, again.id)
    assert.equals("app/staging/1", again.payload.profileKey)
    assert.is_true(math.abs(again.time - os.time()) < 300)
  end)

  it("formats times as Go's time.Time JSON does and parses RFC 3339 times", function()
    assert.equals("2024-10-28T12:16:34.964Z", events.format_time(1730117794.964))
    assert.equals("2024-10-28T12:16:34.5Z", events.format_time(1730117794.5))
    assert.equals("2024-10-28T12:16:34.000001Z", events.format_time(1730117794.000001))
    assert.equals("2024-10-28T12:16:34Z", events.format_time(1730117794))
    assert.equals("1970-01-01T00:00:00Z", events.format_time(0))
    assert.equals(1730117794.964, events.parse_time("2024-10-28T12:16:34.964Z"))
    assert.equals(1730117794, events.parse_time("2024-10-28T12:16:34Z"))
    -- Go writes nanoseconds and may use offsets
    assert.is_true(math.abs(events.parse_time("2024-10-28T13:16:34.964123456+01:00") - 1730117794.964123456) < 1e-6)
    assert.equals(951782400, events.parse_time("2000-02-29T00:00:00Z"))
  end)

  it("accepts envelopes written by the original (nanosecond timestamps)", function()
    local env = assert(events.parse('{"id":"e9e23fa8-9d46-4c66-9190-2f64eacd73a2",'
      .. '"timestamp":"2024-10-28T12:16:34.964531234Z","type":"profile.uploaded",'
      .. '"payload":{"app":"example-app","profileKey":"example-app/staging/1730075435311"}}'))
    assert.equals("profile.uploaded", env.type)
    assert.equals("example-app", env.payload.app)
  end)

  it("returns other event types unchecked, for the caller to reject", function()
    local env = assert(events.parse('{"id":"x","timestamp":"2024-10-28T12:16:34Z","type":"other","payload":{}}'))
    assert.equals("other", env.type)
  end)

  it("says what is wrong with a malformed event", function()
    local good = { id = "x", timestamp = "2024-10-28T12:16:34.964Z", type = "profile.uploaded",
      payload = { app = "a", profileKey = "a/staging/1" } }
    local function with(field, value)
      local t = {}
      for k, v in pairs(good) do t[k] = v end
      t[field] = value
      return json.encode(t)
    end
    local cases = {
      { "not json", "not JSON" },
      { "[1,2]", "not a JSON object" },
      { with("id", ""), "no id" },
      { with("type", 5), "no type" },
      { with("timestamp", "yesterday"), "not RFC 3339" },
      { with("timestamp", "2024-10-28T12:16:34"), "no time zone" },
      { with("payload", "x"), "no payload object" },
      { with("payload", { app = "a" }), 'needs a non%-empty string "profileKey"' },
      { with("payload", { app = "Bad App", profileKey = "Bad App/staging/1" }), "invalid app name" },
      { with("payload", { app = "a", profileKey = "b/staging/1" }), "is not under a/" },
    }
    for _, c in ipairs(cases) do
      local env, err, code = events.parse(c[1])
      assert.is_nil(env, c[1])
      assert.equals("INVALID", code)
      assert.matches(c[2], err)
    end
    assert.equals("INVALID", select(3, events.parse(nil)))
  end)
end)
