-- `require "autopgo"`: the library's front door; checks that the C core matches this Lua code.
-- The host binary requires it first thing (autopgo.main), so a mismatch stops every command.
local core = require "autopgo.core"
local version = require "autopgo.version"

if core.abi ~= version.abi then
  error(("autopgo: the C core has ABI %s but this Lua library needs %d; rebuild or reinstall"):format(
    tostring(core.abi), version.abi), 0)
end

local M = { core = core, version = version.version }

-- Submodules load on first use: autopgo.log, autopgo.async, autopgo.units, ...
return setmetatable(M, {
  __index = function(t, k)
    local ok, mod = pcall(require, "autopgo." .. k)
    if not ok then return nil end
    rawset(t, k, mod)
    return mod
  end,
})
