-- bench/merge fold, the worker's side: CPU time of whole merge passes (autopgo.merge_pass over a
-- file store: read, fold or merge, sha256, ledger, conditional write) folding one upload each
-- into a base, against the same passes merging in full. Not a test.
-- usage: autopgo run bench/merge/fold_pass.lua DIR BASE UPLOAD...   (DIR: a scratch directory)
local async = require "autopgo.async"
local blob = require "autopgo.blob"
local bus = require "autopgo.bus"
local merge_pass = require "autopgo.merge_pass"
local policy = require "autopgo.policy"
local uv = require "luv"

local dir, base_path = arg[1], arg[2]
local ups = { table.unpack(arg, 3) }
assert(dir and base_path and #ups > 0, "usage: fold_pass.lua DIR BASE UPLOAD...")

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

local function cpu()
  local r = uv.getrusage()
  return r.utime.sec + r.utime.usec / 1e6 + r.stime.sec + r.stime.usec / 1e6
end

-- Passes of one mode over a fresh store holding the base: CPU seconds of each pass.
local function passes(mode)
  local root = ("%s/%s"):format(dir, mode)
  os.execute(("rm -rf '%s' && mkdir -p '%s'"):format(root, root))
  local store = assert(blob.open("file://" .. root))
  local pass = merge_pass.new { store = store, writer = assert(bus.writer("mem://fold-bench-" .. mode)),
    policy = assert(policy.new({})) }
  if mode == "full" then pass.fold = function() return nil end end
  assert(store:put("app/default.pgo", read(base_path)))
  local out = {}
  for i, path in ipairs(ups) do
    assert(store:put(("app/staging/%d"):format(1700000000000000000 + i), read(path)))
    collectgarbage()
    local t = cpu()
    assert(pass:run("app"))
    out[i] = cpu() - t
  end
  return out
end

local function median(t)
  local s = { table.unpack(t) }
  table.sort(s)
  return s[(#s + 1) // 2]
end

async.spawn(function()
  local fold, full = passes("fold"), passes("full")
  -- the first fold pass makes the folder over the stored base (as after a restart)
  local steady = { table.unpack(fold, 2) }
  print(("worker pass CPU: fold first %.3f s (folder made over the stored base), then median %.1f ms over %d;"
    .. " full merge median %.3f s; load %s"):format(fold[1], median(steady) * 1000, #steady, median(full),
    table.concat(uv.loadavg and { uv.loadavg() } or {}, " ")))
  os.exit(0)
end)
uv.run()
