-- The Go reference tools (tests/goref: pprofmerge, pprofcanon, pprofgen, pproftime) for
-- end-to-end specs: built into build/goref with Debian's Go 1.19 and google/pprof (GOPATH mode,
-- offline) when missing or older than their sources, then run.
local uv = require "luv"
local support = require "tests.lua.support"

local M = {}

local function exec(cmd, args, timeout_ms)
  local code, _, stdout, stderr = support.spawn(cmd, args):wait(timeout_ms)
  return code, stdout, stderr
end

local out = support.root .. "/build/goref"

M.tools = { "pprofmerge", "pprofcanon", "pprofgen", "pproftime" }

-- True when every tool exists and is newer than its main.go.
local function fresh()
  for _, t in ipairs(M.tools) do
    local bin = uv.fs_stat(out .. "/bin/" .. t)
    local src = uv.fs_stat(("%s/tests/goref/src/%s/main.go"):format(support.root, t))
    if not bin or (src and src.mtime.sec > bin.mtime.sec) then return false end
  end
  return true
end

--- Builds the tools if needed with tests/goref/build.sh (inside a coroutine). Raises when Go or
-- the sources are missing.
function M.ensure()
  if fresh() then return end
  local code, stdout, stderr = exec(support.root .. "/tests/goref/build.sh", { out }, 600000)
  assert(code == 0, "building the Go reference failed: " .. stdout .. stderr)
end

local function tool(name, args)
  local code, stdout, stderr = exec(out .. "/bin/" .. name, args, 120000)
  assert(code == 0, name .. " failed: " .. stdout .. stderr)
  return stdout
end

--- Merges files in order with the original worker's code; opts.prune/opts.app as pprofmerge's,
-- opts.compatibilize keeps the sample types common to all first (as autopgo's merge does),
-- opts.compact compacts after pruning (as autopgo's merge does too).
-- opts.scale (one number per file) scales each input with Go's Profile.Scale before the merge.
function M.merge(output, files, opts)
  local args = { "-o", output }
  if opts and opts.compatibilize then args[#args + 1] = "-compatibilize" end
  if opts and opts.scale then
    local r = {}
    for i, v in ipairs(opts.scale) do r[i] = ("%.17g"):format(v) end
    args[#args + 1] = "-scale"
    args[#args + 1] = table.concat(r, ",")
  end
  if opts and opts.prune then
    args[#args + 1] = "-prune"
    args[#args + 1] = opts.prune
    args[#args + 1] = "-app"
    args[#args + 1] = opts.app
    if opts.compact then args[#args + 1] = "-compact" end
  end
  for _, f in ipairs(files) do args[#args + 1] = f end
  tool("pprofmerge", args)
  return output
end

--- Writes `input` to `output` with time_nanos set to `time` (Unix nanoseconds, or an RFC 3339
-- string; 0 removes it) and, when given, duration_nanos to `duration` (nanoseconds or "30s").
function M.retime(output, input, time, duration)
  local args = { "-o", output, "-time", tostring(time) }
  if duration then
    args[#args + 1] = "-duration"
    args[#args + 1] = tostring(duration)
  end
  args[#args + 1] = input
  tool("pproftime", args)
  return output
end

--- A synthetic profile from pprofgen (args: its flags, e.g. { "-seed", "3", "-samples", "200" }).
function M.gen(output, args)
  local all = { "-o", output }
  for _, a in ipairs(args or {}) do all[#all + 1] = a end
  tool("pprofgen", all)
  return output
end

--- The canonical dump of a profile file.
function M.canon(path)
  return tool("pprofcanon", { path })
end

return M
