-- Called by the host binary: applies --lua-path / AUTOPGO_LUA_PATH, runs the CLI in the main
-- coroutine and reports its exit status once the loop has nothing left to do.
local M = {}

local status -- nil until the main coroutine has finished

-- The value of --lua-path among the flags before the command's own arguments, if any. For
-- `run`, everything after the script path belongs to the script.
local function lua_path_flag(args)
  local run = args[1] == "run"
  local i = 2
  while i <= #args do
    local a = args[i]
    if a == "--" then return nil end
    local v = a:match("^%-%-lua%-path=(.*)$")
    if v then return v end
    if a == "--lua-path" then return args[i + 1] end
    if run then
      if a:sub(1, 1) ~= "-" or a == "-" then return nil end
      -- every flag of `run` but --help takes a value: skip it unless attached (--x=v, -lv)
      if not a:find("=", 1, true) and a ~= "-h" and a ~= "--help" and not a:match("^%-%a.") then i = i + 1 end
    end
    i = i + 1
  end
  return nil
end

-- Puts an editable lua/ copy in front of the built-in modules.
local function install_lua_root(root)
  root = root:gsub("/+$", "")
  local searchpath = root .. "/?.lua;" .. root .. "/?/init.lua"
  table.insert(package.searchers, 1, function(name)
    local path, err = package.searchpath(name, searchpath)
    if not path then return err end
    local chunk, lerr = loadfile(path, "t")
    if not chunk then error(("error loading module '%s' from %s:\n\t%s"):format(name, path, lerr)) end
    return chunk, path
  end)
  require("autopgo.script").lua_root = root
end

function M.start(args)
  local root = lua_path_flag(args) or os.getenv("AUTOPGO_LUA_PATH")
  if root and root ~= "" then install_lua_root(root) end
  require "autopgo" -- checks that the C core and this Lua code agree (raises when they do not)
  local async = require "autopgo.async"
  async.spawn_with(function(ok, result, traceback)
    if ok then
      status = result
    else
      io.stderr:write("autopgo: ", traceback or tostring(result), "\n")
      status = 1
    end
  end, function()
    return require("autopgo.cli").main(args)
  end)
end

function M.status()
  if status == nil then
    require("autopgo.log").error("the main script never finished: it waited for something that did not happen")
    return 1
  end
  return status
end

return M
