-- Specs for lua/autopgo/utc.lua: the timestamp forms cloud APIs use, checked against known dates
-- and against os.time/os.date in UTC over a range of days.
local utc = require "autopgo.utc"

describe("utc", function()
  it("converts known dates", function()
    assert.equals(0, utc.timegm(1970, 1, 1, 0, 0, 0))
    assert.equals(1440938160, utc.parse_iso8601("2015-08-30T12:36:00Z"))
    assert.equals(1440938160, utc.parse_amz_date("20150830T123600Z"))
    assert.equals(1440938160, utc.parse_http_date("Sun, 30 Aug 2015 12:36:00 GMT"))
    assert.equals(1440938160, utc.parse_http_date("Sunday, 30-Aug-15 12:36:00 GMT"))
    assert.equals(1440938160, utc.parse_http_date("Sun Aug 30 12:36:00 2015"))
    assert.equals("2015-08-30T12:36:00Z", utc.iso8601(1440938160))
    assert.equals("Sun, 30 Aug 2015 12:36:00 GMT", utc.http_date(1440938160))
    assert.equals("20150830T123600Z", utc.amz_date(1440938160))
    assert.equals("Thu, 29 Feb 2024 23:59:59 GMT", utc.http_date(utc.timegm(2024, 2, 29, 23, 59, 59)))
  end)

  it("writes Go's time.Time JSON form", function()
    assert.equals("2024-10-28T12:16:34.964Z", utc.rfc3339(1730117794.964))
    assert.equals("2024-10-28T12:16:34Z", utc.rfc3339(1730117794))
    assert.equals("2024-10-28T12:16:34.000001Z", utc.rfc3339(1730117794.000001))
    assert.equals("2024-10-28T12:16:34.123456789Z", utc.rfc3339(1730117794, 123456789))
    assert.equals("2024-10-28T12:16:34.1Z", utc.rfc3339(1730117794, 100000000))
    assert.equals("1970-01-01T00:00:00Z", utc.rfc3339(0, 0))
  end)

  it("handles fractions and offsets", function()
    assert.equals(1440938160.25, utc.parse_iso8601("2015-08-30T12:36:00.25Z"))
    assert.equals(1440938160, utc.parse_iso8601("2015-08-30T14:36:00+02:00"))
    assert.equals(1440938160, utc.parse_iso8601("2015-08-30T07:36:00-0500"))
    assert.equals(1440938160, utc.parse_iso8601("2015-08-30 12:36:00 UTC"))
    assert.is_nil(utc.parse_iso8601("yesterday"))
    assert.is_nil(utc.parse_iso8601("2015-08-30T12:36:00 nonsense"))
    assert.is_nil(utc.parse_http_date("Sun, 30 Foo 2015 12:36:00 GMT"))
    assert.is_nil(utc.parse_amz_date("2015-08-30"))
  end)

  it("reads RFC 3339 times to the nanosecond", function()
    assert.equals(1730075435123456789, utc.parse_rfc3339_nanos("2024-10-28T00:30:35.123456789Z"))
    assert.equals(1730075435123456789, utc.parse_rfc3339_nanos("2024-10-28T02:30:35.123456789+02:00"))
    assert.equals(1730075435999999999, utc.parse_rfc3339_nanos("2024-10-28T00:30:35.9999999999Z"))
    assert.equals(1730075435500000000, utc.parse_rfc3339_nanos("2024-10-28T00:30:35.5Z"))
    assert.equals(1730075435000000000, utc.parse_rfc3339_nanos("2024-10-28T00:30:35Z"))
    assert.equals(-500000000, utc.parse_rfc3339_nanos("1969-12-31T23:59:59.5Z"))
    assert.equals("integer", math.type(utc.parse_rfc3339_nanos("2024-10-28T00:30:35Z")))
    local v, err, code = utc.parse_rfc3339_nanos("2024-10-28T00:30:35")
    assert.is_nil(v)
    assert.equals("INVALID", code)
    assert.matches("no time zone", err)
  end)

  it("refuses days a month does not have, as Go's time.Parse does", function()
    assert.equals(1709164800, utc.parse_rfc3339("2024-02-29T00:00:00Z"))
    assert.equals(951782400, utc.parse_rfc3339("2000-02-29T00:00:00Z"))
    assert.equals(1732924800, utc.parse_rfc3339("2024-11-30T00:00:00Z"))
    for _, s in ipairs { "2026-02-30T10:00:00Z", "2023-02-29T00:00:00Z", "2100-02-29T00:00:00Z",
      "2026-04-31T00:00:00Z", "2026-11-31T00:00:00+01:00" } do
      local v, err, code = utc.parse_rfc3339(s)
      assert.is_nil(v, s)
      assert.equals("INVALID", code)
      assert.matches("out of range", err)
    end
  end)

  it("agrees with the C library over many days", function()
    for t = -86400 * 800, 86400 * 40000, 86400 * 37 + 3661 do
      assert.equals(os.date("!%Y-%m-%dT%H:%M:%SZ", t), utc.iso8601(t))
      assert.equals(t, utc.parse_iso8601(utc.iso8601(t)))
      assert.equals(t, utc.parse_http_date(utc.http_date(t)))
    end
  end)
end)
