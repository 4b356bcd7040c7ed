-- End-to-end spec of rocks/autopgo-scm-1.rockspec: `luarocks make` into a private tree, then
-- plain lua5.4 requires autopgo and autopgo.core and runs a coroutine on luv's loop.
local support = require "tests.lua.support"

describe("the rockspec", function()
  it("installs a library that plain lua5.4 can require", function()
    local tree = support.tmpdir()
    local work = support.tmpdir()
    support.run(function()
      -- build from a copy of the sources so the checkout's build directories stay untouched
      local copy = ("cd %q && git ls-files -z | xargs -0 cp --parents -t %q"):format(support.root, work)
      assert.is_true(os.execute(copy))
      local proc = support.spawn("luarocks", { "--lua-version", "5.4", "--tree", tree, "make",
        "rocks/autopgo-scm-1.rockspec" }, { cwd = work })
      local code, _, out, err = proc:wait(600000)
      assert.equals(0, code, out .. err)
      local probe = [[
        local ap = require "autopgo"
        local uv = require "luv"
        assert(ap.core.abi == require("autopgo.version").abi)
        assert(ap.core.pprof and ap.core.crypto and ap.core.http_client)
        local done
        ap.async.spawn(function()
          ap.async.sleep(5)
          done = ap.units.parse_duration("1m30s")
        end)
        uv.run()
        print("ok", done, ap.core.crypto.hex(ap.core.crypto.digest("md5", "")))
      ]]
      local lua = support.spawn("lua5.4", { "-e", probe }, { env = {
        ("LUA_PATH=%s/share/lua/5.4/?.lua;%s/share/lua/5.4/?/init.lua;;"):format(tree, tree),
        ("LUA_CPATH=%s/lib/lua/5.4/?.so;;"):format(tree),
      } })
      local lcode, _, lout, lerr = lua:wait(60000)
      assert.equals(0, lcode, lerr)
      assert.equals("ok\t90.0\td41d8cd98f00b204e9800998ecf8427e\n", lout)
    end, 660000)
    support.rm_rf(tree)
    support.rm_rf(work)
  end)
end)
