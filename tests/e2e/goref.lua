-- The Go reference tools (tests/goref: pprofmerge, pprofcanon) for end-to-end specs: built once
-- into build/goref with Debian's Go 1.19 and google/pprof (GOPATH mode, offline), then run.
local support = require "tests.lua.support"

local M = {}

local function exec(cmd, args, timeout_ms)
  local code, _, stdout, stderr = support.spawn(cmd, args):wait(timeout_ms)
  return code, stdout, stderr
end

local out = support.root .. "/build/goref"

--- Builds the tools if needed with tests/goref/build.sh (inside a coroutine). Raises when Go or
-- the sources are missing.
function M.ensure()
  if support.read_file(out .. "/bin/pprofcanon") and support.read_file(out .. "/bin/pprofmerge") then return end
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
function M.merge(output, files, opts)
  local args = { "-o", output }
  if opts and opts.compatibilize then args[#args + 1] = "-compatibilize" end
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

--- The canonical dump of a profile file.
function M.canon(path)
  return tool("pprofcanon", { path })
end

return M
