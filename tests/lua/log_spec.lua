-- Specs for lua/autopgo/log.lua and the C logger under it (core/common/log.c): tables given to
-- log.info are written field by field, a key without a value is not lost, and a traceback stays
-- readable: in text mode its lines follow the record, indented; in JSON it is one escaped string.
local support = require "tests.lua.support"
local cjson = require "cjson"

local script = [[
local log = require "autopgo.log"
log.info("with a table", { b = 2, a = "x y", nested = { c = true } })
log.info("table value", "req", { method = "GET" }, "n", 1)
log.info("odd", "key")
log.info("plain", "k", "v")
local _, tb = xpcall(function() error("boom") end, debug.traceback)
log.error("failed", "error", tb, "after", "yes")
error("uncaught")
]]

describe("autopgo.log", function()
  local dir, path
  setup(function()
    dir = support.tmpdir()
    path = support.write_file(dir .. "/log.lua", script)
  end)
  teardown(function() support.rm_rf(dir) end)

  -- Runs the script; returns the exit code and stderr without the time= prefixes.
  local function run_script(env)
    return support.run(function()
      local code, _, err = support.autopgo({ "run", path }, { env = env })
      return code, (err:gsub("time=%S+ ", ""))
    end)
  end

  it("writes a table's fields, a table value's fields and a key without a value", function()
    local code, err = run_script()
    assert.equals(1, code)
    assert.matches('level=info msg="with a table" a="x y" b=2 nested.c=true\n', err, 1, true)
    assert.matches('level=info msg="table value" req.method=GET n=1\n', err, 1, true)
    assert.matches("level=info msg=odd !BADKEY=key\n", err, 1, true)
    assert.matches("level=info msg=plain k=v\n", err, 1, true)
  end)

  it("writes a traceback in text mode as indented lines after its record", function()
    local _, err = run_script()
    local record, tail = err:match('(level=error msg=failed error="[^\n]*: boom" after=yes)\n'
      .. '(\tstack traceback:\n[^\n]*)')
    assert.is_not_nil(record, err)
    assert.matches("^\tstack traceback:\n\t\t%S", tail)
    assert.is_nil(err:find("\\n", 1, true), "no escaped newlines in text mode")
    -- a script that fails: the same for its traceback
    assert.matches('level=error msg="script failed" error="[^\n]*: uncaught"\n\tstack traceback:\n\t\t', err)
  end)

  it("writes one JSON object per record, the traceback as one escaped string", function()
    local code, err = run_script { "AUTOPGO_LOG_FORMAT=json" }
    assert.equals(1, code)
    local records = {}
    for line in err:gmatch("[^\n]+") do records[#records + 1] = cjson.decode(line) end
    assert.equals(6, #records)
    assert.equals("x y", records[1].a)
    assert.equals(2, records[1].b)
    assert.equals(true, records[1]["nested.c"])
    assert.equals("key", records[3]["!BADKEY"])
    assert.matches(": boom\nstack traceback:\n\t", records[5].error)
    assert.equals("yes", records[5].after)
  end)
end)
