-- Specs of lua/autopgo/init.lua (and autopgo.version): the C core / Lua ABI check runs when the
-- binary starts, so a mismatched lua/ stops every command with a clear message.
local uv = require "luv"
local support = require "tests.lua.support"
local core = require "autopgo.core"
local version = require "autopgo.version"

describe("autopgo (front door)", function()
  it("agrees with the C core it was built with", function()
    assert.equals(core.abi, version.abi)
    local autopgo = require "autopgo"
    assert.equals(version.version, autopgo.version)
    assert.equals(require("autopgo.cli").version, version.version)
  end)

  it("refuses to start when lua/ expects another ABI than the C core has", function()
    local dir = support.tmpdir()
    assert(uv.fs_mkdir(dir .. "/autopgo", 448))
    support.write_file(dir .. "/autopgo/version.lua",
      ("return { version = %q, abi = %d }"):format(version.version, core.abi + 1))
    local code, out, err = support.run(function()
      return support.autopgo({ "version" }, { env = { "AUTOPGO_LUA_PATH=" .. dir } })
    end)
    support.rm_rf(dir)
    assert.equals(1, code)
    assert.equals("", out)
    assert.matches(("the C core has ABI %d but this Lua library needs %d"):format(core.abi, core.abi + 1), err,
      1, true)
  end)

  it("starts when they agree", function()
    local dir = support.tmpdir()
    assert(uv.fs_mkdir(dir .. "/autopgo", 448))
    support.write_file(dir .. "/autopgo/version.lua",
      ("return { version = %q, abi = %d }"):format(version.version, core.abi))
    local code, out = support.run(function()
      return support.autopgo({ "version" }, { env = { "AUTOPGO_LUA_PATH=" .. dir } })
    end)
    support.rm_rf(dir)
    assert.equals(0, code)
    assert.equals("autopgo " .. version.version .. "\n", out)
  end)
end)
