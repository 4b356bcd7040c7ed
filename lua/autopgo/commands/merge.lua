-- `autopgo merge [-o out] [--force] [--prune rules.json --app NAME] [--from T] [--to T] PROFILE...`: merges local
-- profiles in the given order (like `go tool pprof -proto`), prunes with the app's rules, writes
-- gzip'd protobuf. The merge is the worker's own (autopgo.merging), run on the thread pool.
-- --from/--to (RFC 3339) keep only the profiles captured in [from, to) by their own time_nanos,
-- as the seed's GetProfile(start, end) does; a profile without one is skipped (and counted).
local async = require "autopgo.async"
local cli = require "autopgo.cli"
local limits = require "autopgo.limits"
local log = require "autopgo.log"
local merging = require "autopgo.merging"
local prune = require "autopgo.prune"
local utc = require "autopgo.utc"
local pprof = require("autopgo.core").pprof

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

local function exists(path)
  local f = io.open(path, "rb")
  if f then f:close() end
  return f ~= nil
end

-- The message for a failed merge, naming the files the failure's input indices point at.
local function describe(failure, err, args)
  if not failure then return err end
  local file = failure.input and args[failure.input]
  if failure.code == "INCOMPATIBLE" and file and failure.other and args[failure.other] then
    return ("%s: %s is incompatible with %s: %s"):format(failure.code, file, args[failure.other], failure.message)
  end
  if file and failure.code ~= "IO" then
    return ("%s: %s: %s"):format(file, failure.code, failure.message)
  end
  return ("%s: %s"):format(failure.code, failure.message)
end

-- The capture time (time_nanos, 0 when unset) of an input: read, checked and dropped one file at
-- a time, so only one input is ever held in Lua.
local function capture_time(input)
  local data = input
  if type(input) == "table" then
    local f, err = io.open(input.file, "rb")
    if not f then return nil, err end
    data = f:read("a")
    f:close()
    if not data then return nil, "read failed" end
  end
  local info, err = async.await(pprof.validate_async, data, limits.profile)
  if not info then return nil, err end
  return info.time_nanos or 0
end

--- Keeps the inputs captured in [opts.from, opts.to) (either bound may be absent). Returns the
-- kept inputs, their names (args) and counts { outside, untimed (a list of names) }.
function M.select(opts, inputs, args)
  local from = opts.from and assert(utc.parse_rfc3339_nanos(opts.from))
  local to = opts.to and assert(utc.parse_rfc3339_nanos(opts.to))
  local kept, names, outside, untimed = {}, {}, 0, {}
  for i, input in ipairs(inputs) do
    local t, err = capture_time(input)
    if not t then cli.exit(1, ("autopgo merge: %s: %s"):format(args[i], err)) end
    if t == 0 then
      untimed[#untimed + 1] = args[i]
    elseif (from and t < from) or (to and t >= to) then
      outside = outside + 1
    else
      kept[#kept + 1], names[#names + 1] = input, args[i]
    end
  end
  return kept, names, { outside = outside, untimed = untimed }
end

function M.run(opts, args)
  -- Only an -o that names the file may replace it: the default output is never overwritten
  -- silently (a default.pgo beside main is what go build -pgo=auto picks up).
  local source = opts._source and opts._source.output
  if opts.output ~= "-" and source == "default" and not opts.force and exists(opts.output) then
    cli.exit(1, ("autopgo merge: %s already exists; name it with -o %s to replace it, or pass --force")
      :format(opts.output, opts.output))
  end
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
  if opts.from or opts.to then
    if opts.from and opts.to and utc.parse_rfc3339_nanos(opts.from) >= utc.parse_rfc3339_nanos(opts.to) then
      cli.exit(2, ("autopgo merge: --from %s is not before --to %s (see autopgo merge --help)")
        :format(opts.from, opts.to))
    end
    local range = ("[%s, %s)"):format(opts.from or "-inf", opts.to or "+inf")
    local all = #inputs
    local counts
    inputs, args, counts = M.select(opts, inputs, args)
    if #counts.untimed > 0 then
      log.warn("skipped profiles without a capture time: they have no time_nanos to place them in the range",
        "skipped", #counts.untimed, "files", table.concat(counts.untimed, " "))
    end
    if #inputs == 0 then
      cli.exit(1, ("autopgo merge: none of the %d profiles was captured in %s (%d outside it, %d without "
        .. "time_nanos); nothing written"):format(all, range, counts.outside, #counts.untimed))
    end
    log.info("selected profiles by capture time", "range", range, "selected", #inputs, "outside", counts.outside,
      "without_time", #counts.untimed)
  end
  local res, err, _, failure = merging.merge(inputs, rules)
  if not res then cli.exit(1, "autopgo merge: " .. describe(failure, err, args)) end
  local ok, werr = write_output(opts.output, res.bytes)
  if not ok then cli.exit(1, ("autopgo merge: cannot write %s: %s"):format(opts.output, werr)) end
  local summary = res.summary
  log.info("merged profiles", "inputs", summary.inputs, "samples_in", summary.samples_in,
    "samples", summary.samples, "locations", summary.locations, "functions", summary.functions,
    "pruned", rules and #rules or 0, "bytes", summary.bytes_out, "sha256", res.sha256, "output", opts.output)
  return 0
end

return M
