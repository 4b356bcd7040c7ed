-- Specs for lua/autopgo/config.lua: loading and validating Lua config files.
local config = require "autopgo.config"
local support = require "tests.lua.support"

describe("config", function()
  local dir
  before_each(function() dir = support.tmpdir() end)
  after_each(function() support.rm_rf(dir) end)

  local function load(src)
    return config.load(support.write_file(dir .. "/cfg.lua", src))
  end

  it("loads typed values", function()
    local c = assert(load([[return { port = 9000, frequency = "2m", max_upload_size = "1MiB",
      blob_store_url = "file:///tmp/x", log_level = "warn" }]]))
    assert.equals(9000, c.port)
    assert.equals(120, c.frequency)
    assert.equals(1048576, c.max_upload_size)
    assert.equals("warn", c.log_level)
  end)

  it("names an unknown key and suggests the right spelling", function()
    local c, err, code = load("return { prot = 1 }")
    assert.is_nil(c)
    assert.equals("INVALID", code)
    assert.matches("unknown key \"prot\"", err)
    local _, err2 = load("return { [\"api-url\"] = \"http://x\" }")
    assert.matches("did you mean \"api_url\"", err2)
  end)

  it("names a key with the wrong type", function()
    local _, err = load("return { port = \"eighty\" }")
    assert.matches("key \"port\" must be an integer", err)
    local _, err2 = load("return { frequency = true }")
    assert.matches("key \"frequency\" must be a duration", err2)
    local _, err3 = load("return { dry_run = \"maybe\" }")
    assert.matches("key \"dry_run\" must be true or false", err3)
  end)

  it("rejects flag-only keys such as config itself", function()
    local _, err = load("return { config = \"other.lua\" }")
    assert.matches("unknown key \"config\"", err)
  end)

  it("reports files that do not return a table or do not load", function()
    assert.matches("must return a table", select(2, load("return 5")))
    assert.matches("cannot load config file", select(2, load("return {")))
    assert.matches("failed", select(2, load("error('nope')")))
    assert.matches("cannot load", select(2, config.load(dir .. "/missing.lua")))
  end)

  it("cannot set globals in the process", function()
    assert(load("leaked_global = 1; return {}"))
    assert.is_nil(rawget(_G, "leaked_global"))
  end)

  it("validates the policy table", function()
    assert(load([[return { policy = {
      ["my-app"] = { prune = { { drop = "runtime\\..*", keep = "runtime\\.main" } },
                     hook = function(profile) return profile end },
      ["*"] = { prune = { { drop = "^vendor/" } } } } }]]))
    assert.matches("invalid application name", select(2, load("return { policy = { Bad = {} } }")))
    assert.matches("prune%[1%]", select(2, load("return { policy = { a = { prune = { { keep = 'x' } } } } }")))
    assert.matches("hook must be a function", select(2, load("return { policy = { a = { hook = 1 } } }")))
    assert.matches("unknown key \"rules\"", select(2, load("return { policy = { a = { rules = {} } } }")))
  end)

  it("accepts config.example.lua as shipped, and it documents every key a config file may set", function()
    local c, err = config.load(support.root .. "/config.example.lua")
    assert.is_table(c, err)
    local text = support.read_file(support.root .. "/config.example.lua")
    for _, o in ipairs(require("autopgo.options").list) do
      if o.config then
        assert.is_truthy(text:find("%f[%w_]" .. o.name .. " = "), o.name .. " is not in config.example.lua")
      end
    end
  end)
end)
