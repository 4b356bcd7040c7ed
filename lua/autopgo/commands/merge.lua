-- `autopgo merge [-o out] [--prune rules.json --app NAME] PROFILE...`: merges local profiles in
-- the given order (like `go tool pprof -proto`), prunes with the app's rules, writes gzip'd
-- protobuf. The work runs on the thread pool in one job.
local async = require "autopgo.async"
local cli = require "autopgo.cli"
local log = require "autopgo.log"
local pprof = require("autopgo.core").pprof
local prune = require "autopgo.prune"

local M = {}

local function read_input()
  local data = io.stdin:read("a")
  if data == nil then return nil, "read failed" end
  return data
end

-- Writes through a temporary file and a rename, so a failed run never leaves half a profile.
local function write_output(path, data)
  if path == "-" then
    io.stdout:write(data)
    io.stdout:flush()
    return true
  end
  local tmp = ("%s.tmp-%d"):format(path, require("luv").os_getpid())
  local f, err = io.open(tmp, "wb")
  if not f then return nil, err end
  local ok, werr = f:write(data)
  local cok, cerr = f:close()
  if not ok or not cok then
    os.remove(tmp)
    return nil, werr or cerr
  end
  local rok, rerr = os.rename(tmp, path)
  if not rok then
    os.remove(tmp)
    return nil, rerr
  end
  return true
end

-- merge_async with the callback's third value kept (the failing input's index).
local function merge(inputs, opts)
  local co = coroutine.running()
  pprof.merge_async(inputs, opts, function(...) async.resume(co, ...) end)
  return coroutine.yield()
end

function M.run(opts, args)
  local rules
  if opts.prune then
    if not opts.app then
      cli.exit(2, "autopgo merge: --prune needs --app to choose the rules (see autopgo merge --help)")
    end
    local config, err = prune.load(opts.prune)
    if not config then cli.exit(1, "autopgo merge: " .. err) end
    rules = prune.rules_for(config, opts.app)
    if not rules then log.warn("no prune rules for the app", "app", opts.app, "file", opts.prune) end
  end
  -- Files are read on the thread pool, one or two at a time, never all at once in Lua.
  local inputs, stdin_used = {}, false
  for i, path in ipairs(args) do
    if path == "-" then
      if stdin_used then cli.exit(2, "autopgo merge: - (stdin) given twice") end
      stdin_used = true
      local data, err = read_input()
      if not data then cli.exit(1, ("autopgo merge: cannot read stdin: %s"):format(err)) end
      inputs[i] = data
    else
      inputs[i] = { file = path }
    end
  end
  local err, out, extra = merge(inputs, { prune = rules })
  if err then
    -- "input N" in messages is the position on the command line: name the files instead.
    local code, a, b, rest = err:match("^(%u[%u_]*): input (%d+) is incompatible with input (%d+): (.*)$")
    if code then
      cli.exit(1, ("autopgo merge: %s: %s is incompatible with %s: %s"):format(code,
        args[tonumber(a)], args[tonumber(b)], rest))
    end
    local msg = err:gsub("^(%u[%u_]*): input %d+: ", "%1: ")
    local where = extra and args[extra] and not msg:find("^IO: ") and (args[extra] .. ": ") or ""
    cli.exit(1, ("autopgo merge: %s%s"):format(where, msg))
  end
  local ok, werr = write_output(opts.output, out)
  if not ok then cli.exit(1, ("autopgo merge: cannot write %s: %s"):format(opts.output, werr)) end
  local summary = extra
  log.info("merged profiles", "inputs", summary.inputs, "samples_in", summary.samples_in,
    "samples", summary.samples, "locations", summary.locations, "functions", summary.functions,
    "pruned", rules and #rules or 0, "bytes", summary.bytes_out, "output", opts.output)
  return 0
end

return M
