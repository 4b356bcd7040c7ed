-- `require "autopgo"`: the library's front door; checks that the C core matches this Lua code.
local core = require "autopgo.core"

local ABI = 1
if core.abi ~= ABI then
  error(("autopgo: the C core has ABI %s but this Lua library needs %d; rebuild or reinstall"):format(
    tostring(core.abi), ABI))
end

local M = { core = core, version = require("autopgo.cli").version }

-- Submodules load on first use: autopgo.log, autopgo.async, autopgo.units, ...
return setmetatable(M, {
  __index = function(t, k)
    local ok, mod = pcall(require, "autopgo." .. k)
    if not ok then return nil end
    rawset(t, k, mod)
    return mod
  end,
})
