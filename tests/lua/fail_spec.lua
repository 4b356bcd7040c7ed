-- Specs of lua/autopgo/fail.lua: making and reading failures, and that every code the C core
-- returns is in the documented list.
local fail = require "autopgo.fail"
local support = require "tests.lua.support"

describe("fail", function()
  it("makes the house tuple, formatting only when given arguments", function()
    assert.same({ nil, "INVALID: bad 3", "INVALID" }, { fail.new("INVALID", "bad %d", 3) })
    assert.same({ nil, "IO: 100% full", "IO" }, { fail.new("IO", "100% full") })
    assert.has_error(function() fail.new("NOPE", "x") end)
  end)

  it("reads the code and the message", function()
    assert.equals("NOT_FOUND", fail.code("NOT_FOUND: no object"))
    assert.equals("no object", fail.message("NOT_FOUND: no object"))
    assert.equals("plain text", fail.message("plain text"))
    assert.is_nil(fail.code("plain text"))
  end)

  it("wraps a message in a code unless it has a listed one", function()
    assert.same({ nil, "TIMEOUT: slow", "TIMEOUT" }, { fail.wrap("UNAVAILABLE", "TIMEOUT: slow") })
    assert.same({ nil, "UNAVAILABLE: down", "UNAVAILABLE" }, { fail.wrap("UNAVAILABLE", "down") })
  end)

  it("lists every code the C core returns", function()
    local missing = {}
    local p = assert(io.popen(("cd %q && git ls-files 'core/*.c' 'core/*.h'"):format(support.root)))
    for f in p:lines() do
      local src = support.read_file(support.root .. "/" .. f)
      for code in src:gmatch('ap_fail%(L, "([A-Z_]+)"') do
        if not fail.codes[code] then missing[#missing + 1] = f .. ": " .. code end
      end
      for code in src:gmatch('ap_push_error%(L, "([A-Z_]+)"') do
        if not fail.codes[code] then missing[#missing + 1] = f .. ": " .. code end
      end
      for code in src:gmatch('return "([A-Z_]+)";') do
        if code ~= "OK" and not fail.codes[code] then missing[#missing + 1] = f .. ": " .. code end
      end
    end
    p:close()
    assert.same({}, missing)
  end)
end)
