-- Specs for the selection of lua/autopgo/commands/clean.lua: either condition, 0 leaves a
-- condition out, strictly larger / strictly older as in the original.
local clean = require "autopgo.commands.clean"

describe("autopgo clean selection", function()
  local now = 1730075435
  local function at(secs_ago) return os.date("!%Y-%m-%dT%H:%M:%SZ", now - secs_ago) end
  local profiles = {
    { key = "big-new", size = 20000, lastModified = at(10) },
    { key = "small-old", size = 100, lastModified = at(48 * 3600) },
    { key = "small-new", size = 100, lastModified = at(10) },
    { key = "edge", size = 10240, lastModified = at(24 * 3600) },
  }

  it("selects profiles matching either condition", function()
    assert.same({ "big-new", "small-old" }, clean.select(profiles, 24 * 3600, 10240, now))
  end)

  it("applies one condition when the other is absent or 0", function()
    assert.same({ "big-new" }, clean.select(profiles, nil, 10240, now))
    assert.same({ "big-new" }, clean.select(profiles, 0, 10240, now))
    assert.same({ "small-old" }, clean.select(profiles, 24 * 3600, nil, now))
    assert.same({ "edge", "small-old" }, clean.select(profiles, 24 * 3600 - 1, 0, now))
    assert.same({}, clean.select(profiles, nil, nil, now))
  end)

  it("describes its selection in words, for the line it prints when nothing matches", function()
    assert.equals("not updated for 24h0m0s or larger than 10240 bytes", clean.describe(24 * 3600, 10240))
    assert.equals("larger than 1 bytes", clean.describe(0, 1))
    assert.equals("not updated for 1h30m0s", clean.describe(5400, nil))
  end)
end)
