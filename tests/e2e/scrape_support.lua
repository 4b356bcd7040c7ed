-- Helpers for the scraper and CLI end-to-end specs: builds the Go test service (tests/goservice)
-- with Go 1.23 into the build tree, starts instances of it, the real `autopgo server` on the
-- embedded default and `autopgo scrape`, and waits for things without asserting timings.
local uv = require "luv"
local async = require "autopgo.async"
local http = require "autopgo.http"
local support = require "tests.lua.support"

local M = {}

M.go = os.getenv("AUTOPGO_GO") or "/usr/lib/go-1.23/bin/go"
M.gobuild = support.root .. "/build/go"

-- Runs a program to completion: code, stdout, stderr.
local function run_cmd(cmd, args, opts)
  local proc = support.spawn(cmd, args, opts)
  local code, _, out, err = proc:wait(opts and opts.timeout)
  return code, out, err
end
M.run_cmd = run_cmd

local function go_env()
  return { "GOTOOLCHAIN=local", "GOPROXY=off", "GOFLAGS=", "GO111MODULE=on", "GOCACHE=" .. M.gobuild .. "/cache",
    "GOPATH=" .. M.gobuild .. "/path" }
end

--- Waits until fn() returns a truthy value (returned), polling; fails after timeout_ms.
function M.wait_for(fn, timeout_ms, what)
  local deadline = uv.hrtime() + (timeout_ms or 30000) * 1e6
  while true do
    local v = fn()
    if v then return v end
    if uv.hrtime() > deadline then error("timed out waiting for " .. (what or "a condition"), 2) end
    async.sleep(50)
  end
end

--- Builds tests/goservice once (again only when main.go is newer); returns the binary's path.
function M.goservice()
  local bin = M.gobuild .. "/goservice"
  local src = support.root .. "/tests/goservice/main.go"
  local bst, sst = uv.fs_stat(bin), uv.fs_stat(src)
  if bst and sst and bst.mtime.sec >= sst.mtime.sec then return bin end
  uv.fs_mkdir(M.gobuild, 493)
  local code, out, err = run_cmd(M.go, { "build", "-o", bin, "." },
    { cwd = support.root .. "/tests/goservice", env = go_env(), timeout = 300000 })
  assert(code == 0, "go build of tests/goservice failed: " .. out .. err)
  return bin
end

--- The `go` tool with the test environment: code, stdout, stderr.
function M.go_tool(args, opts)
  opts = opts or {}
  opts.env = go_env()
  opts.timeout = opts.timeout or 120000
  return run_cmd(M.go, args, opts)
end

--- Starts n instances of the Go service on 127.0.0.1; returns { { proc, port, url }, ... }.
function M.start_goservices(n, dir)
  local bin = M.goservice()
  local list = {}
  for i = 1, n do
    local port_file = ("%s/goservice-%d.port"):format(dir, i)
    local proc = support.spawn(bin, { "-addr", "127.0.0.1:0", "-port-file", port_file })
    local ok, port = pcall(M.wait_for, function() return tonumber(support.read_file(port_file) or "") end,
      15000, "the Go service to listen")
    if not ok then
      M.stop(proc)
      for _, s in ipairs(list) do M.stop(s.proc) end
      error(port, 0)
    end
    list[i] = { proc = proc, port = port, url = "http://127.0.0.1:" .. port }
  end
  return list
end

--- Starts `autopgo server` on the embedded default in `dir`; waits until /api/ready answers 200.
function M.start_server(dir, extra)
  local port = support.free_port()
  local args = { "server", "--port", tostring(port), "--data-dir", dir .. "/data" }
  for _, a in ipairs(extra or {}) do args[#args + 1] = a end
  local proc = support.spawn(support.bin, args)
  local url = "http://127.0.0.1:" .. port
  local ok, err = pcall(M.wait_for, function()
    if proc.code then error("autopgo server exited: " .. select(2, proc.output())) end
    local res = http.request { url = url .. "/api/ready", timeout = 2 }
    return res and res.status == 200
  end, 30000, "the server to be ready")
  if not ok then
    M.stop(proc) -- never leave a server behind
    error(err, 0)
  end
  return { proc = proc, port = port, url = url }
end

--- Starts `autopgo scrape` with `args`; returns { proc, port (health port), url }.
function M.start_scraper(args, env)
  local port = support.free_port()
  local all = { "scrape", "--host", "127.0.0.1", "--port", tostring(port) }
  for _, a in ipairs(args) do all[#all + 1] = a end
  local proc = support.spawn(support.bin, all, { env = env })
  return { proc = proc, port = port, url = "http://127.0.0.1:" .. port }
end

--- Stops a process (SIGTERM, then SIGKILL if it will not go) and returns its exit code.
function M.stop(proc)
  if not proc or proc.code then return proc and proc.code end
  proc:kill("sigterm")
  local ok, code = pcall(proc.wait, proc, 15000)
  if not ok then return nil end
  return code
end

--- Lines of a process's stderr so far that contain `text`.
function M.log_lines(proc, text)
  local _, err = proc.output()
  local out = {}
  for line in err:gmatch("[^\n]+") do
    if line:find(text, 1, true) then out[#out + 1] = line end
  end
  return out
end

--- Peak resident memory (VmHWM) of a live process, in KiB.
function M.peak_rss_kib(pid)
  local status = support.read_file("/proc/" .. pid .. "/status") or ""
  return tonumber(status:match("VmHWM:%s*(%d+)"))
end

return M
