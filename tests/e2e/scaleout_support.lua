-- Scale-out end-to-end helpers: a cluster of real `autopgo server` and `autopgo worker` processes
-- sharing one blob store and one event bus, concurrent uploads across apps, and the check that
-- each app's merged profile equals the Go reference merge of exactly its uploads.
local uv = require "luv"
local support = require "tests.lua.support"
local httpc = require "tests.lua.httpc"
local profiles = require "tests.lua.profiles"
local goref = require "tests.e2e.goref"
local async = require "autopgo.async"

local M = {}

local running = {}

local function wait_ready(p, what)
  for _ = 1, 1200 do
    local ok, res = pcall(httpc.request, p.port, "GET", "/api/ready", { timeout = 5000 })
    if ok and res and res.status == 200 then return p end
    if p.proc.code then break end
    async.sleep(50)
  end
  p.proc:kill("sigkill")
  local _, _, out, err = p.proc:wait(10000)
  running[p] = nil
  error(("the %s did not become ready: %s%s"):format(what, out, err))
end

--- Starts `autopgo <role>` on a free port with extra args (and env, a list of "K=V"); waits until
-- /api/ready says 200.
function M.start(role, args, dir, env)
  local port = support.free_port()
  local argv = { role, "--port", tostring(port) }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  local proc = support.spawn(support.bin, argv, { cwd = dir, env = env })
  local p = { role = role, proc = proc, port = port }
  running[p] = true
  return wait_ready(p, role)
end

--- SIGKILL, and wait for the process to be gone.
function M.kill(p)
  p.proc:kill("sigkill")
  p.proc:wait(10000)
  running[p] = nil
end

--- SIGTERM; returns the exit code and stderr.
function M.stop(p)
  p.proc:kill("sigterm")
  local code, _, _, err = p.proc:wait(60000)
  running[p] = nil
  return code, err
end

--- Kills whatever a failed spec left running.
function M.cleanup()
  for p in pairs(running) do
    if p.proc.code == nil then
      p.proc:kill("sigkill")
      pcall(p.proc.wait, p.proc, 10000)
    end
    running[p] = nil
  end
end

--- Runs the scenario: `servers` and `workers` (lists of started processes), n uploads spread
-- over `apps` apps with `clients` concurrent clients; on_progress(ok_count) after every 201.
-- Returns { [app] = { upload numbers in the order they got their 201 } }.
function M.upload_all(servers, n, apps, clients, on_progress, dir)
  local by_app, next_i, ok_count = {}, 1, 0
  local failures = {}
  local function client()
    while next_i <= n do
      local i = next_i
      next_i = next_i + 1
      local app = "app-" .. (i % apps)
      local body = profiles.variant(i)
      support.write_file(("%s/upload-%d.pb.gz"):format(dir, i), body)
      local s = servers[i % #servers + 1]
      local ok, res = pcall(httpc.request, s.port, "POST", "/api/profile/" .. app, { body = body, timeout = 30000 })
      if ok and res and res.status == 201 then
        by_app[app] = by_app[app] or {}
        table.insert(by_app[app], i)
        ok_count = ok_count + 1
        if on_progress then on_progress(ok_count) end
      else
        failures[#failures + 1] = ("upload %d: %s"):format(i, ok and (res.status .. " " .. res.body) or tostring(res))
      end
    end
  end
  local list = {}
  for c = 1, clients do list[c] = client end
  async.all(list)
  assert(#failures == 0, "uploads failed: " .. table.concat(failures, "; "))
  return by_app
end

--- Waits until no staged upload is left in the blob store (every upload merged and its
-- profile.merged handled), or fails after timeout_ms.
function M.wait_merged(store, timeout_ms)
  local deadline = uv.now() + timeout_ms
  while true do
    local staged = {}
    for _, item in ipairs(assert(store:list(""))) do
      if item.key:find("/staging/", 1, true) then staged[#staged + 1] = item.key end
    end
    if #staged == 0 then return end
    if uv.now() > deadline then
      error(("%d uploads were never merged, e.g. %s"):format(#staged, staged[1]))
    end
    async.sleep(250)
  end
end

--- Downloads each app's merged profile from `server` and compares it with the Go reference merge
-- of exactly its uploads (canonical dumps), and checks each upload is counted exactly once.
function M.check(server, by_app, dir)
  goref.ensure()
  local apps = {}
  for app in pairs(by_app) do apps[#apps + 1] = app end
  table.sort(apps)
  for _, app in ipairs(apps) do
    local res = httpc.request(server.port, "GET", "/api/profile/" .. app, { timeout = 30000 })
    assert(res.status == 200, ("GET /api/profile/%s: %d %s"):format(app, res.status, res.body))
    local counts = profiles.counts(res.body)
    for _, i in ipairs(by_app[app]) do
      assert(counts[i] == 1, ("%s: upload %d is counted %s times"):format(app, i, tostring(counts[i])))
    end
    for i, c in pairs(counts) do
      assert(c == 1, ("%s: upload %d is counted %s times"):format(app, i, tostring(c)))
    end
    local got = support.write_file(("%s/got-%s.pgo"):format(dir, app), res.body)
    local files = {}
    for _, i in ipairs(by_app[app]) do files[#files + 1] = ("%s/upload-%d.pb.gz"):format(dir, i) end
    local want = goref.merge(("%s/want-%s.pgo"):format(dir, app), files)
    local a, b = goref.canon(got), goref.canon(want)
    assert(a == b, ("%s: the merged profile differs from the Go reference merge of its %d uploads"):format(app,
      #files))
  end
  return #apps
end

return M
