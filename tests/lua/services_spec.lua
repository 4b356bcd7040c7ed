-- Specs for the test services convention: every tests/services/<name>.sh is built on
-- tests/services/lib.sh (same verbs, same output), and tests/lua/services.lua starts a service
-- once and hands every spec the same running instance.
local uv = require "luv"
local support = require "tests.lua.support"
local services = require "tests.lua.services"

local dir = support.root .. "/tests/services/"

local function sh(cmd)
  local p = assert(io.popen(cmd .. " 2>&1"))
  local out = p:read("a")
  local _, _, code = p:close()
  return code, out
end

describe("test service scripts", function()
  it("all follow the one convention of tests/services/lib.sh", function()
    local _, list = sh(("ls %q"):format(dir))
    local names = {}
    for f in list:gmatch("([%w_-]+)%.sh\n") do
      if f ~= "lib" and f ~= "stop-all" then names[#names + 1] = f end
    end
    table.sort(names)
    assert.same({ "azurite", "gcs", "kafka", "nats", "pubsub", "redis", "rgw", "servicebus", "sns", "sqs" }, names)
    for _, name in ipairs(names) do
      local text = assert(support.read_file(dir .. name .. ".sh"))
      local function has(pattern, what)
        assert(text:find(pattern), ("tests/services/%s.sh: %s"):format(name, what))
      end
      has('\n%. "%$%(dirname "%$0"%)/lib%.sh"\n', "sources lib.sh")
      has('\nservice_main "%$@"\n$', 'ends with service_main "$@"')
      for _, fn in ipairs { "check", "ready", "launch" } do has("\n" .. fn .. "%(%) {", "defines " .. fn) end
      has("usage: tests/services/" .. name .. "%.sh start|stop|status|env|check", "documents the verbs")
    end
  end)

  it("answer an unknown verb with their usage and exit 1", function()
    local code, out = sh(("%q restart"):format(dir .. "nats.sh"))
    assert.equals(1, code)
    assert.matches("usage: .* start|stop|status|env|check", out)
  end)
end)

describe("services.get", function()
  it("starts a service once and hands out the same running instance", function()
    local a = services.get("nats")
    assert.matches("^nats://127%.0%.0%.1:%d+$", a.NATS_SERVER_URL)
    local b = services.get("nats")
    assert.equals(a.NATS_SERVER_URL, b.NATS_SERVER_URL)
    -- the script, asked again, finds the same instance and prints the same lines
    local code, out = sh(("%q status"):format(dir .. "nats.sh"))
    assert.equals(0, code)
    assert.equals("running\n", out)
    code, out = sh(("%q start"):format(dir .. "nats.sh"))
    assert.equals(0, code)
    assert.matches("NATS_SERVER_URL=" .. a.NATS_SERVER_URL:gsub("%p", "%%%0") .. "\n", out)
    code, out = sh(("%q env"):format(dir .. "nats.sh"))
    assert.equals(0, code)
    assert.matches("NATS_MONITOR_URL=" .. a.NATS_MONITOR_URL:gsub("%p", "%%%0") .. "\n", out)
  end)

  it("returns a copy: a spec changing it changes nothing for the others", function()
    local a = services.get("nats")
    a.NATS_SERVER_URL = "changed"
    assert.is_not.equals("changed", services.get("nats").NATS_SERVER_URL)
  end)

  it("exports a service's variables and puts the previous values back", function()
    uv.os_setenv("AUTOPGO_SPEC_KEEP", "before")
    uv.os_unsetenv("AUTOPGO_SPEC_NEW")
    local restore = services.setenv { AUTOPGO_SPEC_KEEP = "during", AUTOPGO_SPEC_NEW = "x" }
    assert.equals("during", os.getenv("AUTOPGO_SPEC_KEEP"))
    assert.equals("x", os.getenv("AUTOPGO_SPEC_NEW"))
    restore()
    assert.equals("before", os.getenv("AUTOPGO_SPEC_KEEP"))
    assert.is_nil(os.getenv("AUTOPGO_SPEC_NEW"))
    uv.os_unsetenv("AUTOPGO_SPEC_KEEP")
  end)

  it("gives names no other spec or run uses", function()
    local seen = {}
    for _ = 1, 50 do
      local n = services.unique("q")
      assert.matches("^q%-[%x]+%-%d+$", n)
      assert.is_nil(seen[n])
      seen[n] = true
    end
  end)

  it("reports the Pub/Sub emulator as skipped only when it is missing, and other gaps as errors", function()
    local saved = os.getenv("PUBSUB_EMULATOR_BIN")
    uv.os_setenv("PUBSUB_EMULATOR_BIN", "/nonexistent/cloud-pubsub-emulator")
    local why = services.unavailable("pubsub")
    if saved then uv.os_setenv("PUBSUB_EMULATOR_BIN", saved) else uv.os_unsetenv("PUBSUB_EMULATOR_BIN") end
    assert.equals("skipped, emulator not installed (/nonexistent/cloud-pubsub-emulator)", why)
    assert.is_nil(services.unavailable("nats"))
    local saved_build = os.getenv("AUTOPGO_BUILD_DIR")
    uv.os_setenv("AUTOPGO_BUILD_DIR", "/nonexistent")
    local ok, err = pcall(services.unavailable, "kafka")
    if saved_build then uv.os_setenv("AUTOPGO_BUILD_DIR", saved_build) else uv.os_unsetenv("AUTOPGO_BUILD_DIR") end
    assert.is_false(ok)
    assert.matches("kafka_mockd is not built", err)
  end)
end)
