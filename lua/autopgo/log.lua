-- Structured logging for Lua code: log.info("msg", "key", value, ...) writes through the C logger.
local core = require "autopgo.core"

local write = core.log.write
local enabled = core.log.enabled
local M = {
  set_level = core.log.set_level,
  level = core.log.level,
  set_format = core.log.set_format,
  format = core.log.format,
  enabled = enabled,
}

for _, level in ipairs { "debug", "info", "warn", "error" } do
  M[level] = function(msg, ...)
    if enabled(level) then write(level, msg, ...) end
  end
end

return M
