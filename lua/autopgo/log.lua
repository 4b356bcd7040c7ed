-- Structured logging for Lua code: log.info("msg", "key", value, ...) writes through the C logger.
-- A table in a key's place adds its fields (log.info("msg", {k = v}), sorted by key), as does a
-- table value (as key.field); a key left without a value is written as Go's slog does, !BADKEY.
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

local function sorted_keys(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys, function(a, b)
    if type(a) == type(b) and (type(a) == "number" or type(a) == "string") then return a < b end
    return type(a) < type(b)
  end)
  return keys
end

-- Appends the fields of table t to out, each key prefixed with prefix (nested tables, one level
-- deep per call, become prefix.key.sub; a table seen before is written as its address).
local function add_table(out, prefix, t, seen)
  seen = seen or {}
  seen[t] = true
  for _, k in ipairs(sorted_keys(t)) do
    local v, key = t[k], prefix .. tostring(k)
    if type(v) == "table" and not seen[v] and getmetatable(v) == nil then
      add_table(out, key .. ".", v, seen)
    else
      out[#out + 1] = key
      out[#out + 1] = v
    end
  end
end

-- The key/value list the C logger takes, with tables expanded; nil when there is nothing to do.
local function flatten(n, ...)
  local plain = n % 2 == 0
  for i = 1, n, 2 do
    local k, v = select(i, ...)
    if type(k) ~= "string" or type(v) == "table" then plain = false end
    if not plain then break end
  end
  if plain then return nil end
  local out, i = {}, 1
  while i <= n do
    local k = select(i, ...)
    if type(k) == "table" then
      add_table(out, "", k)
      i = i + 1
    elseif i == n then
      out[#out + 1] = "!BADKEY"
      out[#out + 1] = k
      i = i + 1
    else
      local v = select(i + 1, ...)
      if type(v) == "table" and getmetatable(v) == nil then
        add_table(out, tostring(k) .. ".", v)
      else
        out[#out + 1] = tostring(k)
        out[#out + 1] = v
      end
      i = i + 2
    end
  end
  return out
end

for _, level in ipairs { "debug", "info", "warn", "error" } do
  M[level] = function(msg, ...)
    if not enabled(level) then return end
    local n = select("#", ...)
    local fields = n > 0 and flatten(n, ...)
    if fields then return write(level, msg, table.unpack(fields)) end
    write(level, msg, ...)
  end
end

return M
