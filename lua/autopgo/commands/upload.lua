-- `autopgo upload FILE --app NAME`: stages a profile on the server for merging and prints the
-- staged key. FILE "-" streams standard input. Exit 1 with the server's message on failure.
local uv = require "luv"
local cli = require "autopgo.cli"
local client = require "autopgo.client"
local async = require "autopgo.async"
local fail = require "autopgo.fail"

local M = {}

local CHUNK = 64 * 1024

-- A body_producer over standard input: plain reads for a file, stream reads (one at a time,
-- so nothing piles up) for a pipe, socket or terminal.
local function stdin_producer()
  local kind = uv.guess_handle(0)
  if kind == "file" then
    return function()
      local data, err = uv.fs_read(0, CHUNK, -1)
      if not data then return fail.new("IO", "cannot read standard input: %s", tostring(err)) end
      if data == "" then return nil end
      return data
    end
  end
  local stream = kind == "tty" and uv.new_tty(0, true) or uv.new_pipe(false)
  if kind ~= "tty" then assert(stream:open(0)) end
  local finished = false
  return function()
    if finished then return nil end
    local co = coroutine.running()
    local got, failure
    stream:read_start(function(err, data)
      stream:read_stop()
      if err then
        failure = err
      elseif data == nil then
        finished = true
      else
        got = data
      end
      async.resume(co)
    end)
    coroutine.yield()
    if failure or finished then stream:close() end
    if failure then return fail.new("IO", "cannot read standard input: %s", tostring(failure)) end
    return got
  end
end

function M.run(opts, args)
  local path = args[1]
  local body
  if path == "-" then
    body = { body_producer = stdin_producer() }
  else
    local st = uv.fs_stat(path)
    if not st then cli.exit(1, ("autopgo upload: file %s does not exist"):format(path)) end
    if st.type ~= "file" then cli.exit(1, ("autopgo upload: %s is not a regular file"):format(path)) end
    body = { body_path = path }
  end
  local api = client.new(opts.api_url, client.options(opts, { timeout = 300 }))
  local key, err, _, status = api:upload(opts.app, body)
  if not key then cli.exit(1, "autopgo upload: " .. client.message(err, status)) end
  io.stdout:write(key, "\n")
  io.stdout:flush()
  return 0
end

return M
