-- The history part of a merge pass as its segment fills (issue 19 goal 2), for bench/server: one
-- History over a file:// store adds batches of `batch` uploads (one typical profile, decoded once,
-- merged once per batch as the worker does) to one hour segment until it holds `uploads`, and
-- prints, every `every` uploads, the wall ms, store requests and bytes written and read of one
-- pass's history:add (averaged over the last 10 passes). Run it with the Lua of two builds
-- (AUTOPGO_LUA_PATH) to compare: `autopgo run bench/server/segment_fill.lua [uploads] [batch]
-- [every] [profile]` (profile: a gzipped pprof, default build/bench-server/profile.pb.gz).
local async = require "autopgo.async"
local blob = require "autopgo.blob"
local history = require "autopgo.history"
local keys = require "autopgo.keys"
local merging = require "autopgo.merging"
local pprof = require("autopgo.core").pprof
local uv = require "luv"

local total = tonumber(arg[1]) or 20000
local batch = tonumber(arg[2]) or 64
local every = tonumber(arg[3]) or 2000
local path = arg[4] or "build/bench-server/profile.pb.gz"
local NS = 1000000000
local T0 = 1700002800

local function main()
  local f = assert(io.open(path, "rb"))
  local body = f:read("a")
  f:close()
  local dir = os.tmpname()
  os.remove(dir)
  assert(uv.fs_mkdir(dir, 448))
  local real = assert(blob.open("file://" .. dir))
  local c = { calls = 0, put = 0, got = 0 }
  local store = setmetatable({}, { __index = function(_, m)
    return function(_, ...)
      c.calls = c.calls + 1
      return real[m](real, ...)
    end
  end })
  function store.put(_, key, b, o)
    c.calls, c.put = c.calls + 1, c.put + #b
    return real:put(key, b, o)
  end
  function store.get(_, key, o)
    c.calls = c.calls + 1
    local got, err, code = real:get(key, o)
    if got then c.got = c.got + #got.body end
    return got, err, code
  end
  local h = history.new { store = store, segment = 3600, now = function() return (T0 + 7200) * NS end }
  local p = assert(pprof.decode(body))
  local info = p:info()
  local whole = assert(merging.merge({ p }, nil, { batch }, true)).profile
  print(("uploads in segment | ms per pass | requests | KB written | KB read   (batch %d, %d-byte profile)")
    :format(batch, #body))
  local n, window = 0, {}
  while n < total do
    local items = {}
    for i = 1, batch do
      items[i] = { key = keys.staging("app", (T0 + 10) * NS + n + i), body = body, input = p, info = info, scale = 1 }
    end
    c.calls, c.put, c.got = 0, 0, 0
    local t = uv.hrtime()
    assert(h:add("app", items, whole))
    window[#window + 1] = { ms = (uv.hrtime() - t) / 1e6, calls = c.calls, put = c.put, got = c.got }
    if #window > 10 then table.remove(window, 1) end
    n = n + batch
    if n % every < batch then
      local s = { ms = 0, calls = 0, put = 0, got = 0 }
      for _, w in ipairs(window) do
        for k, v in pairs(w) do s[k] = s[k] + v / #window end
      end
      print(("%d | %.1f | %.1f | %.1f | %.1f"):format(n, s.ms, s.calls, s.put / 1024, s.got / 1024))
    end
  end
  whole:close()
  p:close()
  os.execute("rm -rf '" .. dir .. "'")
end

local done, err
async.spawn_with(function(ok, e) done, err = true, not ok and e or nil end, main)
while not done do uv.run("once") end
if err then error(err, 0) end
return 0
