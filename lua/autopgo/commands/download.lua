-- `autopgo download APP [-o default.pgo] [--fail-open]`: fetches an application's merged profile.
-- The body goes to a temporary file next to the output, renamed into place only once complete,
-- so a failed or interrupted download never leaves a truncated profile behind. When the output
-- exists, If-None-Match carries its sha256 (the server's ETag is the content's digest) and a 304
-- leaves the file untouched, however the file got there. --fail-open: an unreachable server or a 5xx answer is a
-- warning and exit 0, keeping any existing file. "-o -" writes to standard output. --format pgo|
-- preprofile|pprof picks the form (lua/autopgo/pgo.lua); the default is the server's policy.
-- --window 72h or --from/--to (RFC 3339) ask for the merge of the uploads captured in that range.
local uv = require "luv"
local async = require "autopgo.async"
local core = require "autopgo.core"
local cli = require "autopgo.cli"
local client = require "autopgo.client"
local http = require "autopgo.http"
local httpd = require "autopgo.httpd"
local log = require "autopgo.log"
local units = require "autopgo.units"
local utc = require "autopgo.utc"

local M = {}

-- The ETag the server gives content identical to the file at `path`, or nil if it is unreadable.
local function file_etag(path)
  local digest = async.await(core.crypto.digest_file, "sha256", path)
  return digest and httpd.digest_etag(core.crypto.hex(digest)) or nil
end

local function write_all(fd, data)
  local off = 0
  while off < #data do
    local n, err = uv.fs_write(fd, off == 0 and data or data:sub(off + 1), -1)
    if not n then return nil, err end
    off = off + n
  end
  return true
end

-- Interrupts cancel the download (which removes the temporary file) instead of killing the
-- process half-way; the exit status is the shell's 128 + signal number.
local function on_interrupt(canceler)
  local handles, which = {}, nil
  for _, name in ipairs { "sigint", "sigterm" } do
    local h = uv.new_signal()
    h:start(name, function()
      which = which or name
      canceler:cancel("interrupted by " .. name:upper())
    end)
    handles[#handles + 1] = h
  end
  return function()
    for _, h in ipairs(handles) do h:close() end
    return which
  end
end

--- The query asking for a time window ({} for the default profile), from opts.window,
-- opts.from, opts.to (already checked to be a duration and RFC 3339 times). Raises a usage error
-- (exit 2) for a window with --from/--to, or a --from that is not before --to.
function M.window_query(opts)
  local usage = "autopgo download: %s (see autopgo download --help)"
  if opts.window and (opts.from or opts.to) then
    cli.exit(2, usage:format("--window cannot be combined with --from or --to"))
  end
  if opts.window then return { window = units.format_duration(opts.window) } end
  if opts.from and opts.to and utc.parse_rfc3339(opts.from) >= utc.parse_rfc3339(opts.to) then
    cli.exit(2, usage:format(("--from %s is not before --to %s"):format(opts.from, opts.to)))
  end
  return { from = opts.from, to = opts.to }
end

function M.run(opts, args)
  local app, out = args[1], opts.output
  local query = M.window_query(opts)
  local window = next(query) ~= nil
  if opts.format then query.format = opts.format end
  local to_stdout = out == "-"
  local st = not to_stdout and uv.fs_stat(out) or nil
  if st and st.type ~= "file" then
    cli.exit(1, ("autopgo download: %s exists and is not a regular file"):format(out))
  end
  local etag = st and file_etag(out) or nil
  local dir, base = out:match("^(.*)/([^/]*)$")
  if not dir then dir, base = ".", out end
  if dir == "" then dir = "/" end

  local tmp, fd, written, write_failure = nil, nil, 0, nil
  local function sink(chunk)
    if to_stdout then
      io.stdout:write(chunk)
      written = written + #chunk
      return
    end
    if not fd then
      tmp = ("%s/.%s.tmp-%s"):format(dir, base, core.crypto.hex(core.crypto.random(6)))
      local f, err = uv.fs_open(tmp, "wx", 420) -- 0644 less the umask, like any new file
      if not f then
        tmp, write_failure = nil, ("cannot create a file in %s: %s"):format(dir, err)
        return false, write_failure
      end
      fd = f
    end
    local ok, err = write_all(fd, chunk)
    if not ok then
      write_failure = ("cannot write %s: %s"):format(tmp, err)
      return false, write_failure
    end
    written = written + #chunk
  end
  local function discard()
    if fd then uv.fs_close(fd) end
    if tmp then os.remove(tmp) end
    fd, tmp = nil, nil
  end

  if opts.format == "preprofile" then
    log.warn("a GO PREPROFILE V1 file is for -gcflags=all=-pgoprofile= (or Bazel), go build -pgo does not read it")
  end
  local canceler = http.canceler()
  local stop_signals = on_interrupt(canceler)
  local api = client.new(opts.api_url, client.options(opts, { timeout = 300, cancel = canceler }))
  local res, err, _, status = api:download(app, { etag = etag, sink = sink, query = query })
  local interrupted = stop_signals()

  if not res then
    discard()
    if interrupted then
      cli.exit(interrupted == "sigint" and 130 or 143, "autopgo download: interrupted, " ..
        (st and (out .. " was left as it was") or "nothing was written"))
    end
    if write_failure then cli.exit(1, "autopgo download: " .. write_failure) end
    if opts.fail_open and (status == nil or status >= 500) then
      log.warn("cannot download the profile; going on without it (--fail-open)", "app", app, "error", err,
        "kept", st and out or "nothing")
      return 0
    end
    if status == 404 and window then
      -- the server's own words say which window had nothing ("no profile for app X in that window")
      cli.exit(1, "autopgo download: " .. client.message(err, status))
    elseif status == 404 then
      -- whatever the server's words (the original's are "Not Found"), this is what a 404 means here
      cli.exit(1, ("autopgo download: no merged profile for app %s yet"):format(app))
    end
    cli.exit(1, "autopgo download: " .. client.message(err, status))
  end
  if res.status == 304 then
    discard()
    log.info("profile unchanged", "app", app, "output", out)
    return 0
  end
  if to_stdout then
    io.stdout:flush()
    return 0
  end
  if not fd then sink("") end -- an empty body still replaces the file
  if not fd then cli.exit(1, "autopgo download: " .. write_failure) end
  local ok, ferr = uv.fs_fsync(fd)
  uv.fs_close(fd)
  fd = nil
  if ok then ok, ferr = uv.fs_rename(tmp, out) end
  if not ok then
    discard()
    cli.exit(1, ("autopgo download: cannot write %s: %s"):format(out, ferr))
  end
  tmp = nil
  local dfd = uv.fs_open(dir, "r", 0)
  if dfd then -- make the rename itself durable
    uv.fs_fsync(dfd)
    uv.fs_close(dfd)
  end
  log.info("profile downloaded", "app", app, "output", out, "bytes", written)
  return 0
end

return M
