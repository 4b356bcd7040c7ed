-- Specs for lua/autopgo/units.lua: Go duration syntax and byte sizes.
local units = require "autopgo.units"

describe("units.parse_duration", function()
  local ok_cases = {
    { "0", 0 }, { "30s", 30 }, { "1m30s", 90 }, { "24h", 86400 }, { "300ms", 0.3 },
    { "-1.5h", -5400 }, { "2h45m", 9900 }, { "1.5h", 5400 }, { ".5s", 0.5 }, { "+5s", 5 },
    { "100us", 1e-4 }, { "100µs", 1e-4 }, { "10ns", 1e-8 }, { "1h15m30.5s", 4530.5 }, { "0s", 0 },
  }
  for _, c in ipairs(ok_cases) do
    it("parses " .. c[1], function()
      assert.near(c[2], units.parse_duration(c[1]), 1e-9)
    end)
  end

  local bad_cases = { "", "3", "1x", "s", "1h-2m", "abc", "1..5s", "-", "." , "1 s" }
  for _, s in ipairs(bad_cases) do
    it("rejects " .. ("%q"):format(s), function()
      local v, err, code = units.parse_duration(s)
      assert.is_nil(v)
      assert.equals("INVALID", code)
      assert.matches("^INVALID: ", err)
    end)
  end

  it("rejects what overflows Go's int64 nanoseconds, as time.ParseDuration does", function()
    assert.equals(2562047 * 3600, units.parse_duration("2562047h"))
    for _, s in ipairs({ "99999999999999h", "2562048h", "-2562048h", "9300000000s" }) do
      local v, err, code = units.parse_duration(s)
      assert.is_nil(v, s)
      assert.equals("INVALID", code)
      assert.matches("longer than 2562047h47m16.854775807s", err, 1, true)
    end
  end)

  it("says what to write instead of days and weeks, which Go durations do not have", function()
    local cases = {
      { "1d", 'unknown unit "d" in duration "1d" (durations stop at hours: use "24h")' },
      { "7d", 'unknown unit "d" in duration "7d" (durations stop at hours: use "168h")' },
      { "1.5d", 'unknown unit "d" in duration "1.5d" (durations stop at hours: use "36h")' },
      { "2w", 'unknown unit "w" in duration "2w" (durations stop at hours: use "336h")' },
      { "1d12h", 'unknown unit "d" in duration "1d12h" (durations stop at hours: a day is 24h)' },
      { "3x", 'unknown unit "x" in duration "3x" (valid units are ns, us, ms, s, m, h)' },
    }
    for _, c in ipairs(cases) do
      local v, err, code = units.parse_duration(c[1])
      assert.is_nil(v)
      assert.equals("INVALID", code)
      assert.equals("INVALID: " .. c[2], err)
    end
  end)

  it("round-trips through format_duration", function()
    for _, s in ipairs { "1m30s", "24h0m0s", "500ms", "0s", "2h45m0s" } do
      assert.equals(s, units.format_duration(units.parse_duration(s)))
    end
  end)
end)

describe("units.parse_size", function()
  it("takes plain byte counts as the seed's --larger-than does", function()
    assert.equals(10240, units.parse_size("10240"))
    assert.equals(7, units.parse_size(7))
  end)
  it("takes decimal and binary units", function()
    assert.equals(64 * 1024 * 1024, units.parse_size("64MiB"))
    assert.equals(10000, units.parse_size("10KB"))
    assert.equals(1536, units.parse_size("1.5KiB"))
    assert.equals(2 * 1024 ^ 3, units.parse_size("2gib"))
  end)
  it("rejects nonsense", function()
    for _, s in ipairs { "", "ten", "10XB", "-5", "1.2.3MB" } do
      local v, err = units.parse_size(s)
      assert.is_nil(v, s)
      assert.matches("invalid size", err)
    end
  end)
  it("formats sizes for people", function()
    assert.equals("512 B", units.format_size(512))
    assert.equals("1.5 KiB", units.format_size(1536))
    assert.equals("64.0 MiB", units.format_size(64 * 1024 * 1024))
  end)
end)
