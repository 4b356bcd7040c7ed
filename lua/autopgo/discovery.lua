-- Where the scraper's targets come from: loads a discovery mode by name (a module in
-- lua/discovery/: file, dns, kube, nomad, consul, ...) or by path (--mode ./my_discovery.lua)
-- and wraps it in a source that checks what the mode returns, keeps the last good targets
-- when the mode fails, and reloads it on demand (SIGHUP).
--
-- A discovery mode is a Lua file returning a table; only `list` is required:
--   list(ctx, arg)   -> { { address = "http://host:port", path = "/debug/pprof/profile" }, ... }
--                       | nil, "CODE: message"           before every round; path is optional
--   start(ctx, arg)  -> true | nil, err   once before the first round; a failure stops the
--                                          scraper (a missing targets file, say)
--   reload(ctx, arg) -> true | nil, err   on SIGHUP; a failure is logged and list should go on
--                                          answering with what it had
--   health(ctx)      -> true | nil, err   the mode's dependency in the scraper's /api/health
--   stop(ctx)                             at shutdown
-- `arg` is the scraper's positional argument (a file, a kubeconfig, ... or nil). `ctx` is one
-- table per scraper: { app, opts (every option), log, http, state = {} (the mode's own) }.
-- Every function runs in a coroutine and may yield (HTTP requests, timers, DNS).
local fail = require "autopgo.fail"
local script = require "autopgo.script"
local log = require "autopgo.log"

local M = {}

M.default_path = "/debug/pprof/profile"

--- Loads a mode: a path when `mode` contains "/" or ends in ".lua", else a module name.
-- Returns the mode table and where it came from, or nil, "CODE: ...", CODE: USAGE when `mode`
-- names no mode at all (a bad --mode value), INVALID when a module is there but will not load.
function M.load(mode)
  if type(mode) ~= "string" or mode == "" then return fail.new("USAGE", "no discovery mode given") end
  local chunk, where
  if mode:find("/", 1, true) or mode:match("%.lua$") then
    local err
    chunk, err = loadfile(mode, "t")
    if not chunk then
      return fail.new("INVALID", "cannot load discovery module %s: %s", mode, err)
    end
    where = mode
  else
    if not mode:match("^[%w_%-]+$") then
      return fail.new("USAGE", "%q is not a discovery mode name or a path to a .lua file", mode)
    end
    local found, info = script.find("discovery/" .. mode .. ".lua")
    if not found then
      if fail.code(info) == "NOT_FOUND" then
        return fail.new("USAGE", "unknown discovery mode %q (a module in lua/discovery/ or a path to a .lua file)",
          mode)
      end
      return fail.new("INVALID", "cannot load discovery mode %s: %s", mode, info)
    end
    chunk, where = found, info
  end
  local ok, mod = pcall(chunk, mode)
  if not ok then
    return fail.new("INVALID", "discovery module %s failed to load: %s", where, tostring(mod))
  end
  if type(mod) ~= "table" or type(mod.list) ~= "function" then
    return fail.new("INVALID", "discovery module %s must return a table with a list(ctx, arg) function", where)
  end
  for _, k in ipairs { "start", "reload", "health", "stop" } do
    if mod[k] ~= nil and type(mod[k]) ~= "function" then
      return fail.new("INVALID", "discovery module %s: %s must be a function", where, k)
    end
  end
  return mod, where
end

--- Checks and normalises a list of targets; returns the list or nil, "INVALID: ...".
function M.check_targets(list)
  if type(list) ~= "table" then
    return fail.new("INVALID", "targets must be a list, got %s", type(list))
  end
  local out = {}
  for i, t in ipairs(list) do
    if type(t) ~= "table" then
      return fail.new("INVALID", "target %d must be a table with an address, got %s", i, type(t))
    end
    local address, path = t.address, t.path
    if type(address) ~= "string" or not address:match("^https?://[^/%s]+") then
      return fail.new("INVALID", "target %d: address must be an http:// or https:// URL, got %q", i, tostring(address))
    end
    if path == nil or path == "" then path = M.default_path end
    if type(path) ~= "string" or path:sub(1, 1) ~= "/" then
      return fail.new("INVALID", "target %d: path must start with /, got %q", i, tostring(path))
    end
    out[#out + 1] = { address = (address:gsub("/+$", "")), path = path }
  end
  return out
end

local Source = {}
Source.__index = Source

local function call(self, name, ...)
  local fn = self.mode[name]
  if not fn then return true end
  local ok, a, b, c = pcall(fn, self.ctx, ...)
  if not ok then return fail.new("INTERNAL", "%s.%s raised: %s", self.name, name, tostring(a)) end
  if a == nil and b ~= nil then
    if c then return nil, tostring(b), c end
    return fail.wrap("INVALID", tostring(b))
  end
  return a == nil and true or a, b, c
end

--- Loads `mode` and returns a source for it (not started), or nil, err, code.
function M.open(mode, arg, ctx)
  local mod, where, code = M.load(mode)
  if not mod then return nil, where, code end
  ctx = ctx or {}
  ctx.state = ctx.state or {}
  ctx.log = ctx.log or log
  return setmetatable({ mode = mod, name = mode, where = where, arg = arg, ctx = ctx, targets = {} }, Source)
end

--- Starts the mode (a failing start hook is fatal for the scraper: bad configuration) and
-- takes a first list. A failing first list is not fatal: it is returned as a second value
-- and the scraper starts with no targets until the mode answers.
function Source:start()
  local ok, err, code = call(self, "start", self.arg)
  if not ok then return nil, err, code end
  local targets, lerr = self:refresh()
  if not targets then return true, lerr end
  return true
end

-- Asks the mode for its list and keeps it when it is valid.
function Source:refresh()
  local ok, list, err = pcall(self.mode.list, self.ctx, self.arg)
  if not ok then
    return fail.new("INTERNAL", "%s.list raised: %s", self.name, tostring(list))
  end
  if list == nil then
    if err == nil then return fail.new("INTERNAL", "%s.list returned nothing", self.name) end
    return fail.wrap("UNAVAILABLE", tostring(err))
  end
  local targets, cerr, code = M.check_targets(list)
  if not targets then return nil, cerr, code end
  self.targets = targets
  return targets
end

--- The targets for a round: the mode's current list, or the last good one (and the error)
-- when the mode fails this time.
function Source:list()
  local targets, err = self:refresh()
  if not targets then return self.targets, err end
  return targets
end

--- SIGHUP: the mode re-reads its configuration; a failure keeps what it had.
function Source:reload()
  return call(self, "reload", self.arg)
end

function Source:health()
  return call(self, "health")
end

function Source:stop()
  return call(self, "stop")
end

return M
