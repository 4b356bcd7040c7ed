-- Specs for lua/autopgo/commands/list.lua: RFC 3339 times as Go writes them, human sizes, local
-- time, and the APP  SIZE  LAST MODIFIED table layout.
local list = require "autopgo.commands.list"

describe("autopgo list", function()
  it("parses the times Go's encoding/json writes", function()
    assert.equals(0, list.parse_time("1970-01-01T00:00:00Z"))
    assert.equals(1730075435, list.parse_time("2024-10-28T00:30:35Z"))
    assert.equals(1730075435, list.parse_time("2024-10-28T00:30:35.311123456Z"))
    assert.equals(1730075435, list.parse_time("2024-10-28T01:30:35+01:00"))
    assert.equals(1730075435, list.parse_time("2024-10-27T19:00:35.5-05:30"))
    assert.equals(951782400, list.parse_time("2000-02-29T00:00:00Z"))
    assert.is_nil(list.parse_time("yesterday"))
    assert.is_nil(list.parse_time("2024-10-28T00:30:35"))
    assert.is_nil(list.parse_time(nil))
  end)

  it("prints APP  SIZE  LAST MODIFIED sorted by app, sizes for people, times in local time", function()
    local rows = list.rows {
      { key = "zeta", size = 10240, lastModified = "2024-10-28T00:30:35Z" },
      { key = "alpha-service", size = 512, lastModified = "2024-10-28T00:30:35.1Z" },
      { key = "mid", size = 3 * 1024 * 1024, lastModified = "not a time" },
    }
    local local_time = os.date("%Y-%m-%d %H:%M:%S %Z", 1730075435)
    assert.same({ "APP", "SIZE", "LAST MODIFIED" }, rows[1])
    assert.same({ "alpha-service", "512 B", local_time }, rows[2])
    assert.same({ "mid", "3.0 MiB", "not a time" }, rows[3])
    assert.same({ "zeta", "10.0 KiB", local_time }, rows[4])
    local text = list.format(rows)
    local lines = {}
    for l in text:gmatch("[^\n]+") do lines[#lines + 1] = l end
    assert.equals("APP            SIZE      LAST MODIFIED", lines[1])
    assert.equals("alpha-service  512 B     " .. local_time, lines[2])
    assert.equals("mid            3.0 MiB   not a time", lines[3])
    assert.equals("\n", text:sub(-1))
  end)

  it("prints just the header when there are no profiles", function()
    assert.equals("APP  SIZE  LAST MODIFIED\n", list.format(list.rows {}))
  end)
end)
