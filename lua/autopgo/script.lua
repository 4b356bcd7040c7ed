-- Finds and runs Lua scripts: a file on disk, then the --lua-path copy, then the built-in copy,
-- so `autopgo run roles/server.lua` and `autopgo server` run the same file.
local fail = require "autopgo.fail"
local log = require "autopgo.log"

local M = {}

-- The directory of an editable lua/ copy (--lua-path / AUTOPGO_LUA_PATH), set by autopgo.main.
M.lua_root = nil

local function exists(path)
  local f = io.open(path, "r")
  if f then f:close() end
  return f ~= nil
end

--- Loads a script; returns the chunk and where it came from, or nil, "NOT_FOUND: ...".
function M.find(path)
  if exists(path) then
    local chunk, err = loadfile(path, "t")
    if not chunk then return fail.new("LOAD", err) end
    return chunk, path
  end
  if M.lua_root and path:sub(1, 1) ~= "/" then
    local p = M.lua_root .. "/" .. path
    if exists(p) then
      local chunk, err = loadfile(p, "t")
      if not chunk then return fail.new("LOAD", err) end
      return chunk, p
    end
  end
  local ok, host = pcall(require, "autopgo.host")
  if ok then
    local chunk, err = host.load(path)
    if chunk then return chunk, "embedded:" .. path end
    if not err:find("^NOT_FOUND") then return fail.new("LOAD", err) end
  end
  -- Installed as a rock: roles/ and discovery/ live under autopgo/ on package.path.
  local installed = package.searchpath("autopgo." .. path:gsub("%.lua$", ""):gsub("/", "."), package.path)
  if installed then
    local chunk, err = loadfile(installed, "t")
    if not chunk then return fail.new("LOAD", err) end
    return chunk, installed
  end
  return fail.new("NOT_FOUND", "no script %s (looked in the working directory%s and the built-in scripts)", path,
    M.lua_root and (", " .. M.lua_root) or "")
end

--- Runs a script with `args` as its `...` and global `arg` (arg[0] is the path). `role` names
-- the subcommand when a role script is run for one. Returns the script's results.
function M.run(path, args, _, role)
  local cli = require "autopgo.cli"
  local chunk, err = M.find(path)
  if not chunk then
    if role and err:find("^NOT_FOUND") then cli.exit(1, ("autopgo %s: not built yet"):format(role)) end
    cli.exit(1, ("autopgo %s: %s"):format(role or "run", err))
  end
  local arg = { [0] = path }
  for i, a in ipairs(args) do arg[i] = a end
  rawset(_G, "arg", arg)
  return chunk(table.unpack(args))
end

--- xpcall message handler: keeps Exit values, adds a traceback to anything else.
function M.handler(err)
  local cli = require "autopgo.cli"
  if cli.is_exit(err) then return err end
  return { failure = err, traceback = debug.traceback(tostring(err), 2) }
end

--- Turns the outcome of an xpcall(…, M.handler) into an exit status, printing what needs it.
function M.outcome(ok, result)
  local cli = require "autopgo.cli"
  if ok then
    if result == nil or result == true then return 0 end
    if result == false then return 1 end
    if math.type(result) == "integer" then return result end
    return 0
  end
  if cli.is_exit(result) then
    if result.message then
      local stream = result.status == 0 and io.stdout or io.stderr
      local msg = result.message
      stream:write(msg, msg:sub(-1) == "\n" and "" or "\n")
      stream:flush()
    end
    return result.status
  end
  log.error("script failed", "error", type(result) == "table" and result.traceback or tostring(result))
  return 1
end

return M
