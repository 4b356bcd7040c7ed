-- Specs for lua/autopgo/discovery.lua and the modes in lua/discovery/ (file, dns): loading by
-- name and by path, the documented module shape, target checks, and keeping the last good
-- targets when a mode fails or a reload is bad.
local discovery = require "autopgo.discovery"
local support = require "tests.lua.support"

local run = support.run

describe("autopgo.discovery", function()
  local dir
  before_each(function() dir = support.tmpdir() end)
  after_each(function() support.rm_rf(dir) end)

  it("loads the built-in modes by name", function()
    for _, name in ipairs { "file", "dns" } do
      local mode, where = discovery.load(name)
      assert.is_table(mode, tostring(where))
      assert.is_function(mode.list)
    end
  end)

  it("says which names and paths do not load, and why", function()
    local _, err = discovery.load("no-such-mode")
    assert.equals('USAGE: unknown discovery mode "no-such-mode" '
      .. '(a module in lua/discovery/ or a path to a .lua file)', err)
    _, err = discovery.load("../etc")
    assert.matches("cannot load discovery module", err)
    _, err = discovery.load("bad name!")
    assert.matches("is not a discovery mode name", err)
    support.write_file(dir .. "/syntax.lua", "return {")
    _, err = discovery.load(dir .. "/syntax.lua")
    assert.matches("^INVALID: cannot load discovery module .*syntax%.lua", err)
    support.write_file(dir .. "/nolist.lua", "return { start = function() end }")
    _, err = discovery.load(dir .. "/nolist.lua")
    assert.matches("must return a table with a list%(ctx, arg%) function", err)
    support.write_file(dir .. "/raises.lua", "error('boom')")
    _, err = discovery.load(dir .. "/raises.lua")
    assert.matches("failed to load: .*boom", err)
    support.write_file(dir .. "/badhook.lua", "return { list = function() end, reload = 1 }")
    _, err = discovery.load(dir .. "/badhook.lua")
    assert.matches("reload must be a function", err)
  end)

  it("runs a custom module given by path, with ctx and the argument", function()
    support.write_file(dir .. "/mine.lua", [[
      local M = {}
      function M.start(ctx, arg) ctx.state.n = 0; ctx.state.arg = arg; return true end
      function M.list(ctx, arg)
        ctx.state.n = ctx.state.n + 1
        return { { address = "http://10.0.0." .. ctx.state.n .. ":6060/", path = "/x" },
                 { address = "https://" .. arg .. ":443" } }
      end
      return M
    ]])
    run(function()
      local ctx = { app = "svc" }
      local src = assert(discovery.open(dir .. "/mine.lua", "example.org", ctx))
      assert(src:start())
      assert.equals("example.org", ctx.state.arg)
      local targets = src:list()
      assert.same({ { address = "http://10.0.0.2:6060", path = "/x" },
        { address = "https://example.org:443", path = "/debug/pprof/profile" } }, targets)
    end)
  end)

  it("keeps the last good targets when list fails, raises or returns bad targets", function()
    support.write_file(dir .. "/flaky.lua", [[
      local calls = 0
      return { list = function()
        calls = calls + 1
        if calls == 1 then return { { address = "http://127.0.0.1:1" } } end
        if calls == 2 then return nil, "UNAVAILABLE: api down" end
        if calls == 3 then error("bug") end
        if calls == 4 then return { { address = "ftp://nope" } } end
        return { { address = "http://127.0.0.1:2" } }
      end }
    ]])
    run(function()
      local src = assert(discovery.open(dir .. "/flaky.lua", nil, {}))
      assert(src:start())
      local want = { { address = "http://127.0.0.1:1", path = "/debug/pprof/profile" } }
      for _, why in ipairs { "api down", "raised: .*bug", "address must be an http" } do
        local targets, err = src:list()
        assert.same(want, targets)
        assert.matches(why, err)
      end
      assert.same({ { address = "http://127.0.0.1:2", path = "/debug/pprof/profile" } }, (src:list()))
    end)
  end)

  it("checks targets: address URL, path starting with /, default path", function()
    assert.same({ { address = "http://h:1", path = "/debug/pprof/profile" } },
      (discovery.check_targets { { address = "http://h:1/" } }))
    assert.is_nil((discovery.check_targets { { address = "h:1" } }))
    assert.is_nil((discovery.check_targets { { address = "http://h:1", path = "nope" } }))
    assert.is_nil((discovery.check_targets { "http://h:1" }))
    assert.is_nil((discovery.check_targets "x"))
    assert.same({}, (discovery.check_targets {}))
  end)

  describe("file mode", function()
    it("reads a JSON array, defaulting the path, and fails to start on a bad file", function()
      local path = support.write_file(dir .. "/t.json", [[
        [ {"address": "http://127.0.0.1:5000", "path": "/debug/pprof/profile"},
          {"address": "http://127.0.0.1:5001"} ] ]])
      run(function()
        local src = assert(discovery.open("file", path, {}))
        assert(src:start())
        assert.same({ { address = "http://127.0.0.1:5000", path = "/debug/pprof/profile" },
          { address = "http://127.0.0.1:5001", path = "/debug/pprof/profile" } }, (src:list()))
        for content, why in pairs {
          ["not json"] = "is not valid JSON",
          ['{"address": "http://x:1"}'] = "must hold a JSON array",
          ['[{"path": "/x"}]'] = 'entry 1 needs an "address"',
          ['[{"address": "x:1"}]'] = "address must be an http",
        } do
          support.write_file(dir .. "/bad.json", content)
          local bad = assert(discovery.open("file", dir .. "/bad.json", {}))
          local ok, err = bad:start()
          assert.is_nil(ok)
          assert.matches(why, err)
        end
        local nofile = assert(discovery.open("file", dir .. "/missing.json", {}))
        local _, err = nofile:start()
        assert.matches("cannot read the targets file", err)
        local noarg = assert(discovery.open("file", nil, {}))
        local code
        _, err, code = noarg:start()
        assert.matches("needs the path of a JSON targets file", err)
        assert.equals("USAGE", code)
      end)
    end)

    it("reloads a changed file and keeps the old targets when the new one is broken", function()
      local path = support.write_file(dir .. "/t.json", '[{"address": "http://127.0.0.1:5000"}]')
      run(function()
        local src = assert(discovery.open("file", path, {}))
        assert(src:start())
        support.write_file(path, '[{"address": "http://127.0.0.1:5000"}, {"address": "http://127.0.0.1:5001"}]')
        assert.equals(1, #src:list(), "the file is only read again on reload")
        assert(src:reload())
        assert.equals(2, #src:list())
        support.write_file(path, '[{"address": ')
        local ok, err = src:reload()
        assert.is_nil(ok)
        assert.matches("is not valid JSON", err)
        assert.equals(2, #src:list())
        support.write_file(path, '[]')
        assert(src:reload())
        assert.same({}, (src:list()))
      end)
    end)
  end)

  describe("dns mode (the documented example)", function()
    it("resolves the host before every round into one target per address", function()
      run(function()
        local src = assert(discovery.open("dns", "http://127.0.0.1:6060/debug/pprof/profile", {}))
        assert(src:start())
        assert.same({ { address = "http://127.0.0.1:6060", path = "/debug/pprof/profile" } }, (src:list()))
        assert.is_true(src:health())
        local bad = assert(discovery.open("dns", "http://no-such-host.invalid:6060", {}))
        local started, first = bad:start()
        assert.is_true(started)
        assert.matches("cannot resolve", first)
        local targets, err = bad:list()
        assert.same({}, targets)
        assert.matches("^UNAVAILABLE: cannot resolve no%-such%-host%.invalid", err)
        local _, herr = bad:health()
        assert.matches("cannot resolve", herr)
        local noport = assert(discovery.open("dns", "http://somewhere", {}))
        local _, serr = noport:start()
        assert.matches("needs scheme://host:port", serr)
      end)
    end)
  end)
end)
