-- Specs of lua/autopgo/blob/file.lua: the shared blob store contract, plus what only a local
-- directory has: keys confined to the root, atomic replacement, locks shared across processes.
local support = require "tests.lua.support"
local blob = require "autopgo.blob"
local uv = require "luv"
local async = require "autopgo.async"
local fs = require("autopgo.core").fs

local root = support.tmpdir()

require("tests.lua.blob.contract")("file://", {
  open = function() return blob.open("file://" .. root) end,
})

describe("file:// blob store", function()
  local dir, store
  before_each(function()
    dir = support.tmpdir()
    store = assert(blob.open("file://" .. dir .. "/data"))
  end)
  after_each(function() support.rm_rf(dir) end)

  it("creates its directory and stores keys as files under it", function()
    support.run(function()
      assert.equals("file://" .. dir .. "/data", store.name)
      assert(store:put("app/staging/1", "profile"))
      assert.equals("profile", support.read_file(dir .. "/data/app/staging/1"))
    end)
  end)

  it("refuses keys that would leave its root or touch its own files", function()
    support.run(function()
      for _, key in ipairs { "../escape", "a/../../b", "/etc/passwd", "a//b", "./a", "a/.", "", "a\0b",
        ".autopgo/lock", ".autopgo" } do
        for _, op in ipairs { "put", "get", "stat", "delete" } do
          local res, err, code = store[op](store, key, "x")
          assert.is_nil(res, op .. " " .. key)
          assert.equals("INVALID", code, op .. " " .. key .. ": " .. tostring(err))
        end
      end
      assert.is_nil(support.read_file(dir .. "/escape"))
      assert.same({}, assert(store:list("")))
    end)
  end)

  it("leaves no temporary files behind and never lists its own", function()
    support.run(function()
      assert(store:put("a/b", "1"))
      assert(store:put("a/b", "2", { if_match = assert(store:stat("a/b")).etag }))
      assert.is_nil(store:put("a/b", "3", { if_none_match = "*" }))
      local keys = {}
      for _, item in ipairs(assert(store:list(""))) do keys[#keys + 1] = item.key end
      assert.same({ "a/b" }, keys)
      local tmp = io.popen("find '" .. dir .. "/data/.autopgo/tmp' -type f ! -name '*.lock'"):read("a")
      assert.equals("", tmp)
    end)
  end)

  it("removes directories a delete leaves empty", function()
    support.run(function()
      assert(store:put("app/staging/1", "x"))
      assert(store:put("app/default.pgo", "y"))
      assert(store:delete("app/staging/1"))
      assert.is_nil(uv.fs_stat(dir .. "/data/app/staging"))
      assert.is_truthy(uv.fs_stat(dir .. "/data/app"))
    end)
  end)

  it("reports a key that names a directory of other keys as missing", function()
    support.run(function()
      assert(store:put("app/staging/1", "x"))
      assert.equals("NOT_FOUND", select(3, store:get("app/staging")))
      assert.equals("NOT_FOUND", select(3, store:stat("app")))
      assert.equals("NOT_FOUND", select(3, store:delete("app/staging")))
    end)
  end)

  it("serialises conditional writes with another process holding the lock", function()
    support.run(function()
      local v1 = assert(store:put("base", "v1"))
      -- another process takes the store's lock and holds it a while
      local marker = dir .. "/released"
      local holder = support.spawn("flock", { dir .. "/data/.autopgo/lock", "sh", "-c",
        "sleep 0.3; echo yes > '" .. marker .. "'" })
      local waited = false
      for _ = 1, 500 do
        local fd = uv.fs_open(dir .. "/data/.autopgo/lock", "a", 420)
        local busy = not fs.flock(fd, "exclusive")
        if not busy then fs.flock(fd, "unlock") end
        uv.fs_close(fd)
        if busy then
          waited = true
          break
        end
        async.sleep(10)
      end
      assert.is_true(waited, "the other process never held the lock")
      local v2 = assert(store:put("base", "v2", { if_match = v1.etag }))
      assert.equals("yes\n", support.read_file(marker), "the write went ahead while another process held the lock")
      assert.equals(0, (holder:wait()))
      assert.equals("v2", assert(store:get("base")).body)
      assert.equals(v2.etag, assert(store:stat("base")).etag)
    end)
  end)

  it("removes at open the temporary files of a process killed with -9, never a live one's", function()
    support.run(function()
      local data = dir .. "/shared"
      -- a process that starts writing an object and never finishes
      local script = support.write_file(dir .. "/writer.lua", [[
        local blob = require "autopgo.blob"
        local async = require "autopgo.async"
        local store = assert(blob.open("file://" .. arg[1]))
        async.spawn(function()
          local sent = false
          store:put("app/staging/1", { producer = function()
            if not sent then
              sent = true
              return ("x"):rep(4096)
            end
            async.sleep(600000)
          end })
        end)
      ]])
      local function temps()
        local out = {}
        local p = io.popen("find '" .. data .. "/.autopgo/tmp' -type f ! -name '*.lock' 2>/dev/null | sort")
        for line in p:lines() do out[#out + 1] = line end
        p:close()
        return out
      end
      local function writer()
        local before = #temps()
        local proc = support.spawn(support.bin, { "run", script, data })
        for _ = 1, 400 do
          if #temps() > before then return proc end
          async.sleep(10)
        end
        proc:kill("sigkill")
        error("the writer never started writing: " .. select(4, proc:wait(5000)))
      end
      local dead, live = writer(), writer()
      local live_temp
      dead:kill("sigkill")
      dead:wait(10000)
      -- an older layout's loose temporary files: an old one goes, a fresh one stays
      local old, fresh = data .. "/.autopgo/tmp/old", data .. "/.autopgo/tmp/fresh"
      support.write_file(old, "x")
      support.write_file(fresh, "x")
      uv.fs_utime(old, os.time() - 7200, os.time() - 7200)
      local all = temps()
      assert.equals(4, #all)
      -- the live writer's temporary file: the one whose directory's lock is held
      for _, path in ipairs(all) do
        local id = path:match("/tmp/([^/]+)/[^/]+$")
        if id then
          local fd = uv.fs_open(data .. "/.autopgo/tmp/" .. id .. ".lock", "r", 0)
          if not fs.flock(fd, "exclusive") then live_temp = path else fs.flock(fd, "unlock") end
          uv.fs_close(fd)
        end
      end
      assert.is_not_nil(live_temp)
      local function sorted(t)
        table.sort(t)
        return t
      end
      local other = assert(blob.open("file://" .. data))
      assert.same(sorted { fresh, live_temp }, temps())
      -- a store object of this process keeps its own temporary files from other opens too
      assert(other:put("k", "v"))
      assert(blob.open("file://" .. data))
      assert.same(sorted { fresh, live_temp }, temps())
      assert.equals("v", assert(other:get("k")).body)
      live:kill("sigkill")
      live:wait(10000)
      other:close()
      assert(blob.open("file://" .. data))
      assert.same({ fresh }, temps())
      assert.same({ "k" }, (function()
        local keys = {}
        for _, item in ipairs(assert(other:list(""))) do keys[#keys + 1] = item.key end
        return keys
      end)())
    end)
  end)

  it("lists a page of a flat directory as the whole walk would, whatever the after, limit and prefix", function()
    support.run(function()
      local names = { "a", "a.5", "a0", "b-1", "b-2", "b10", "b2", "c", "zz" }
      for _, n in ipairs(names) do assert(store:put("app/staging/" .. n, n)) end
      -- the whole walk (no limit) is the reference: the page path only answers with a limit
      local function walk(prefix, after)
        local out = {}
        for _, it in ipairs(assert(store:list(prefix))) do
          if not after or it.key > after then out[#out + 1] = it end
        end
        return out
      end
      local afters = { false, "app/staging/", "app/staging/a", "app/staging/a.", "app/staging/b-1", "app/staging/b3",
        "app/staging/zz", "app/stag", "app/staginh", "app/staging/a/x", "a" }
      for _, prefix in ipairs({ "app/staging/", "app/staging/b", "app/staging/a", "app/sta", "app/staging/q" }) do
        for _, after in ipairs(afters) do
          for _, limit in ipairs({ 0, 1, 2, 3, 100 }) do
            local want = walk(prefix, after or nil)
            while #want > limit do want[#want] = nil end
            local got = assert(store:list(prefix, { after = after or nil, limit = limit }))
            assert.same(want, got, ("prefix %s after %s limit %d"):format(prefix, tostring(after), limit))
          end
        end
      end
      -- a directory beside the files: its keys interleave ("b/x" sorts between "b-2" and "b10")
      assert(store:put("app/staging/b/x", "x"))
      assert.same({ "app/staging/b-2", "app/staging/b/x", "app/staging/b10" }, (function()
        local out = {}
        for _, it in ipairs(assert(store:list("app/staging/", { after = "app/staging/b-1", limit = 3 }))) do
          out[#out + 1] = it.key
        end
        return out
      end)())
    end)
  end)

  it("pages a large staging area: the page after a key, each with the etag a stat gives", function()
    support.run(function()
      local d = dir .. "/data/big/staging"
      assert(os.execute(("mkdir -p %s && cd %s && seq -f '%%08g' 1 5000 | xargs touch"):format(d, d)))
      local page = assert(store:list("big/staging/", { after = "big/staging/00002500", limit = 3 }))
      assert.same({ "big/staging/00002501", "big/staging/00002502", "big/staging/00002503" },
        { page[1].key, page[2].key, page[3].key })
      assert.equals(0, page[1].size)
      assert.matches('^"%x+%-%x+%-0"$', page[1].etag)
      local st = assert(store:stat("big/staging/00002501"))
      assert.equals(st.etag, page[1].etag) -- the same etag a stat gives
    end)
  end)

  it("is unhealthy when its directory is gone", function()
    support.run(function()
      assert.is_true(store:health())
      os.remove(dir .. "/data/.autopgo/lock")
      support.rm_rf(dir)
      local ok, err, code = store:health()
      assert.is_nil(ok)
      assert.equals("NOT_FOUND", code, err)
    end)
  end)
end)

describe("file:// blob store root", function()
  it("cleans up its contract directory", function()
    support.rm_rf(root)
  end)
end)
