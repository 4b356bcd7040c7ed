-- Spec helpers: drive a coroutine to completion on the loop, temporary directories, and child
-- processes (the real binary) with captured output, always stopped by PID.
local uv = require "luv"
local async = require "autopgo.async"

local M = {}

M.root = uv.cwd()
M.bin = os.getenv("AUTOPGO_BIN") or (M.root .. "/build/autopgo")
M.testdata = os.getenv("AUTOPGO_TESTDATA") or (M.root .. "/tests/testdata/pprof")

--- Runs fn in a coroutine, turning the loop until it finishes; returns its results or raises its
-- error (with the coroutine's traceback). Fails after timeout_ms (default 30 s).
function M.run(fn, timeout_ms)
  local done, ok, res = false, nil, nil
  async.spawn_with(function(o, ...)
    done, ok, res = true, o, table.pack(...)
  end, fn)
  local timed_out = false
  local timer = uv.new_timer()
  timer:start(timeout_ms or 30000, 0, function() timed_out = true end)
  while not done and not timed_out do uv.run("once") end
  timer:close()
  uv.run("nowait")
  if not done then error("support.run: timed out after " .. (timeout_ms or 30000) .. " ms", 2) end
  if not ok then error(tostring(res[2] or res[1]), 0) end
  return table.unpack(res, 1, res.n)
end

--- A fresh directory under /tmp; removed by M.rm_rf.
--- True when this process runs under AddressSanitizer (the C and Lua suites' build), whose
-- allocator keeps freed memory in quarantine: resident-memory bounds mean nothing there.
function M.sanitized()
  local maps = M.read_file("/proc/self/maps") or ""
  return maps:find("libasan", 1, true) ~= nil
end

function M.tmpdir()
  return assert(uv.fs_mkdtemp("/tmp/autopgo-test-XXXXXX"))
end

function M.rm_rf(path)
  if path and path:match("^/tmp/autopgo%-") then os.execute("rm -rf '" .. path .. "'") end
end

function M.write_file(path, data)
  local f = assert(io.open(path, "wb"))
  f:write(data)
  f:close()
  return path
end

function M.read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local data = f:read("a")
  f:close()
  return data
end

--- Starts `cmd` with `args`; opts.env (list of "K=V", added to the current environment),
-- opts.cwd, opts.stdin (string). Returns a process object: proc.pid, proc:wait(timeout_ms) ->
-- code, signal, stdout, stderr (inside a coroutine), proc:kill(sig).
function M.spawn(cmd, args, opts)
  opts = opts or {}
  local env = {}
  for k, v in pairs(M.environ()) do env[#env + 1] = k .. "=" .. v end
  for _, kv in ipairs(opts.env or {}) do env[#env + 1] = kv end
  local stdin, stdout, stderr = uv.new_pipe(), uv.new_pipe(), uv.new_pipe()
  local proc = { out = {}, err = {}, exited = async.event() }
  local handle, pid = uv.spawn(cmd, {
    args = args, env = env, cwd = opts.cwd, stdio = { stdin, stdout, stderr },
  }, function(code, signal)
    proc.code, proc.signal = code, signal
    proc.exited.set()
  end)
  if not handle then error("spawn " .. cmd .. ": " .. tostring(pid)) end
  proc.handle, proc.pid = handle, pid
  local closed = 0
  local streams_done = async.event()
  local function reader(buf)
    return function(err, data)
      assert(not err, err)
      if data then
        buf[#buf + 1] = data
        if proc.on_output then proc.on_output(data) end
      else
        closed = closed + 1
        if closed == 2 then streams_done.set() end
      end
    end
  end
  stdout:read_start(reader(proc.out))
  stderr:read_start(reader(proc.err))
  if opts.stdin then stdin:write(opts.stdin) end
  stdin:shutdown(function() stdin:close() end)

  function proc.wait(_, timeout_ms)
    local ok = proc.exited.wait(timeout_ms or 30000)
    if not ok then
      proc:kill("sigkill")
      proc.exited.wait(5000)
      error(("process %s did not exit in time; stderr: %s"):format(cmd, table.concat(proc.err)))
    end
    streams_done.wait(5000)
    for _, s in ipairs { stdout, stderr } do
      if not s:is_closing() then s:close() end
    end
    if not handle:is_closing() then handle:close() end
    return proc.code, proc.signal, table.concat(proc.out), table.concat(proc.err)
  end
  function proc.kill(_, sig)
    if proc.code == nil then uv.kill(pid, sig or "sigterm") end
  end
  function proc.output()
    return table.concat(proc.out), table.concat(proc.err)
  end
  return proc
end

--- Runs the autopgo binary to completion: returns code, stdout, stderr.
function M.autopgo(args, opts)
  local proc = M.spawn(M.bin, args, opts)
  local code, _, out, err = proc:wait(opts and opts.timeout)
  return code, out, err
end

--- The current environment as a table (uv.os_environ), minus AUTOPGO_* so tests start clean.
function M.environ()
  local env = {}
  for k, v in pairs(uv.os_environ()) do
    if not k:match("^AUTOPGO_") then env[k] = v end
  end
  return env
end

--- A TCP port that was free a moment ago on 127.0.0.1.
function M.free_port()
  local tcp = uv.new_tcp()
  assert(tcp:bind("127.0.0.1", 0))
  local port = tcp:getsockname().port
  tcp:close()
  return port
end

-- A CPU profile Go 1.23 wrote, padded with an unknown field (which the validator skips, as Go's
-- parser does) to n bytes in all: a valid upload whose validation holds nothing of its size.
function M.padded_profile(n)
  local crypto = require("autopgo.core").crypto
  local raw = assert(io.popen("gzip -dc " .. M.testdata .. "/goapp-go123-cpu-1.pb.gz")):read("a")
  local function varint(v)
    local t = {}
    repeat
      local b = v % 128
      v = v // 128
      t[#t + 1] = string.char(v > 0 and b + 128 or b)
    until v == 0
    return table.concat(t)
  end
  local want = n - #raw - 2 - 4
  return raw .. varint(100 * 8 + 2) .. varint(want) .. crypto.random(4096):rep(want // 4096 + 1):sub(1, want)
end

-- A store over a fresh mem:// one (named after prefix) counting each call by method
-- (store.counts.calls), the entries its listings return (store.counts.listed) and the bytes put and
-- got (store.counts.put_bytes, got_bytes); on_put(key, body)
-- sees every put; store.reset() starts the counts again.
function M.counting_store(prefix, on_put)
  local crypto = require("autopgo.core").crypto
  local real = assert(require("autopgo.blob").open("mem://" .. prefix .. "-" .. crypto.hex(crypto.random(5))))
  local c = { calls = {}, listed = 0, put_bytes = 0, got_bytes = 0 }
  local store = setmetatable({ name = real.name, counts = c }, { __index = function(_, method)
    return function(_, ...)
      c.calls[method] = (c.calls[method] or 0) + 1
      return real[method](real, ...)
    end
  end })
  store.list = function(_, prefix_, opts)
    c.calls.list = (c.calls.list or 0) + 1
    local items, err, code = real:list(prefix_, opts)
    if items then c.listed = c.listed + #items end
    return items, err, code
  end
  store.put = function(_, key, body, opts)
    c.calls.put = (c.calls.put or 0) + 1
    c.put_bytes = c.put_bytes + #body
    if on_put then on_put(key, body) end
    return real:put(key, body, opts)
  end
  store.get = function(_, key, opts)
    c.calls.get = (c.calls.get or 0) + 1
    local got, err, code = real:get(key, opts)
    if got and got.body then c.got_bytes = c.got_bytes + #got.body end
    return got, err, code
  end
  function store.reset()
    c.calls, c.listed, c.put_bytes, c.got_bytes = {}, 0, 0, 0
  end
  return store
end

return M
