-- DNS discovery (`--mode dns`), the documented example of a custom mode: the argument is a URL
-- such as http://my-service.internal:6060 (a path is optional), and before every round its host
-- is resolved to all of its addresses, each becoming a target with the URL's scheme, port and
-- path. This fits a Kubernetes headless service, a Docker Compose service with replicas, or any
-- name with one A/AAAA record per instance. Copy it to write your own: a mode is a table with
-- list(ctx, arg) and optional start, reload, health and stop (see lua/autopgo/discovery.lua),
-- loaded with --mode NAME from lua/discovery/ or --mode ./path/to/mode.lua.
local fail = require "autopgo.fail"
local uv = require "luv"
local async = require "autopgo.async"

local M = {}

local function parse(arg)
  if type(arg) ~= "string" then
    return fail.new("INVALID", "dns mode needs a URL argument such as http://my-service:6060")
  end
  local scheme, host, port, path = arg:match("^(https?)://%[?([^%]/:]+)%]?:(%d+)(.*)$")
  if not scheme then
    return fail.new("INVALID", "dns mode needs scheme://host:port[/path], got %q", arg)
  end
  return { scheme = scheme, host = host, port = tonumber(port), path = path ~= "" and path or nil }
end

-- All distinct addresses of host, resolved on libuv's thread pool (the loop never blocks).
local function resolve(host, port)
  local infos, err = async.await(uv.getaddrinfo, host, tostring(port), { socktype = "stream" })
  if not infos then return fail.new("UNAVAILABLE", "cannot resolve %s: %s", host, tostring(err)) end
  local seen, out = {}, {}
  for _, info in ipairs(infos) do
    if not seen[info.addr] then
      seen[info.addr] = true
      out[#out + 1] = info
    end
  end
  table.sort(out, function(a, b) return a.addr < b.addr end)
  return out
end

function M.start(ctx, arg)
  local target, err = parse(arg)
  if not target then return nil, err end
  ctx.state.target = target
  return true
end

function M.list(ctx)
  local t = ctx.state.target
  local infos, err = resolve(t.host, t.port)
  if not infos then return nil, err end
  local targets = {}
  for _, info in ipairs(infos) do
    local host = info.family == "inet6" and ("[" .. info.addr .. "]") or info.addr
    targets[#targets + 1] = { address = ("%s://%s:%d"):format(t.scheme, host, t.port), path = t.path }
  end
  return targets
end

function M.health(ctx)
  local t = ctx.state.target
  local infos, err = resolve(t.host, t.port)
  if not infos then return nil, err end
  return true
end

return M
