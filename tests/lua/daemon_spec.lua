-- Specs of lua/autopgo/daemon.lua: opening what a role needs returns failures (the role decides
-- to exit), the health checks carry the original's dependency names, and SIGHUP runs the reloads.
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

  it("runs every reload function on SIGHUP, each in its own coroutine, until closed", function()
    support.run(function()
      local uv = require "luv"
      local async = require "autopgo.async"
      local got = {}
      local a = daemon.on_reload("a", function()
        async.sleep(1) -- may wait: it runs in a coroutine
        got[#got + 1] = "a"
      end)
      local b = daemon.on_reload("b", function() error("broken reload") end)
      local c = daemon.on_reload("c", function() got[#got + 1] = "c" end)
      uv.kill(uv.os_getpid(), "sighup")
      for _ = 1, 200 do
        if #got == 2 then break end
        async.sleep(5)
      end
      table.sort(got)
      assert.same({ "a", "c" }, got)
      c.close()
      b.close()
      uv.kill(uv.os_getpid(), "sighup")
      for _ = 1, 200 do
        if #got == 3 then break end
        async.sleep(5)
      end
      assert.same({ "a", "c", "a" }, got)
      a.close()
    end)
  end)
end)
