-- Specs of lua/autopgo/daemon.lua: opening what a role needs returns failures (the role decides
-- to exit), and the health checks carry the original's dependency names.
local support = require "tests.lua.support"
local daemon = require "autopgo.daemon"
local health = require "autopgo.health"
local json = require "autopgo.json"

describe("daemon", function()
  it("returns a failure naming what could not be opened instead of exiting", function()
    support.run(function()
      local store, err, code = daemon.open_store { blob_store_url = "nosuch://bucket" }
      assert.is_nil(store)
      assert.is_string(code)
      assert.matches("^" .. code .. ": cannot open the blob store nosuch://bucket: ", err)
      local w, werr = daemon.open_writer("nosuch://topic")
      assert.is_nil(w)
      assert.matches("cannot open the event writer nosuch://topic: ", werr, 1, true)
      local r, rerr = daemon.open_reader("nosuch://topic")
      assert.is_nil(r)
      assert.matches("cannot open the event reader nosuch://topic: ", rerr, 1, true)
    end)
  end)

  it("registers the store and the buses under the original's names: blob, event-writer, event-reader", function()
    support.run(function()
      local dir = support.tmpdir()
      local store = assert(daemon.open_store { data_dir = dir })
      local writer = assert(daemon.open_writer("mem://daemon-spec"))
      local reader = assert(daemon.open_reader("mem://daemon-spec"))
      local registry = health.registry()
      daemon.register_health(store, writer, reader, registry)
      local status, body = registry:report()
      assert.equals(200, status)
      local names = {}
      for _, d in ipairs(json.decode(body).dependencies) do names[#names + 1] = d.name end
      table.sort(names)
      assert.same({ "blob", "event-reader", "event-writer" }, names)
      reader:close()
      writer:close()
      store:close()
      support.rm_rf(dir)
    end)
  end)
end)
