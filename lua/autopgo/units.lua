-- Parses and formats Go-style durations ("1m30s") and byte sizes ("64MiB", "10240").
local fail = require "autopgo.fail"
local M = {}

local duration_units = {
  ns = 1e-9, us = 1e-6, ["µs"] = 1e-6, ["μs"] = 1e-6, ms = 1e-3, s = 1, m = 60, h = 3600,
}

-- Go durations stop at hours; people write days and weeks. What to write instead, for the message.
local long_units = { d = 24, day = 24, days = 24, w = 168, wk = 168, week = 168, weeks = 168 }

-- The longest duration Go has: (2^63 - 1) nanoseconds.
local MAX_SECONDS, MAX_TEXT = 9223372036.854775807, "2562047h47m16.854775807s"

local function suggestion(orig, unit)
  local hours = long_units[unit:lower()]
  if not hours then return " (valid units are ns, us, ms, s, m, h)" end
  local n = orig:match("^%+?(%d+%.?%d*)" .. unit .. "$")
  local h = n and tonumber(n) * hours
  if h then
    return (" (durations stop at hours: use %q)"):format((math.tointeger(h) or h) .. "h")
  end
  return (" (durations stop at hours: a %s is %dh)"):format(hours == 24 and "day" or "week", hours)
end

--- Parses a Go duration string (time.ParseDuration syntax) into seconds.
-- @return seconds | fail.new("INVALID", "message")
function M.parse_duration(s)
  if type(s) ~= "string" then return fail.new("INVALID", "duration must be a string") end
  local orig = s
  local sign = 1
  local first = s:sub(1, 1)
  if first == "-" or first == "+" then
    if first == "-" then sign = -1 end
    s = s:sub(2)
  end
  if s == "0" then return 0 end
  if s == "" then return fail.new("INVALID", "invalid duration %q", orig) end
  local total, pos = 0, 1
  while pos <= #s do
    local num, frac, unit, nextpos = s:match("^(%d*)%.?(%d*)([^%d%.]+)()", pos)
    if not num or (num == "" and frac == "") then
      return fail.new("INVALID", "invalid duration %q", orig)
    end
    local scale = duration_units[unit]
    if not scale then
      return fail.new("INVALID", "unknown unit %q in duration %q%s", unit, orig, suggestion(orig, unit))
    end
    -- a '.' with no digits on either side ("." or "1.") is still a number in Go only with digits
    local dot = s:sub(pos + #num, pos + #num) == "."
    if dot and num == "" and frac == "" then
      return fail.new("INVALID", "invalid duration %q", orig)
    end
    local value = tonumber((num ~= "" and num or "0") .. "." .. (frac ~= "" and frac or "0"))
    total = total + value * scale
    pos = nextpos
  end
  -- Go's Duration is int64 nanoseconds: past about 2562047h it is an error there, not "forever"
  if total > MAX_SECONDS then return fail.new("INVALID", "invalid duration %q (longer than %s)", orig, MAX_TEXT) end
  return sign * total
end

--- Formats seconds as a Go duration string ("1m30s", "500ms", "0s").
function M.format_duration(seconds)
  if seconds == 0 then return "0s" end
  local out, sign = {}, ""
  if seconds < 0 then sign, seconds = "-", -seconds end
  if seconds < 1 then
    local ms = seconds * 1e3
    if ms >= 1 then return sign .. (("%g"):format(ms)) .. "ms" end
    return sign .. ("%g"):format(seconds * 1e6) .. "µs"
  end
  local h = math.floor(seconds / 3600)
  local m = math.floor((seconds - h * 3600) / 60)
  local s = seconds - h * 3600 - m * 60
  if h > 0 then out[#out + 1] = h .. "h" end
  if h > 0 or m > 0 then out[#out + 1] = m .. "m" end
  out[#out + 1] = ("%g"):format(s) .. "s"
  return sign .. table.concat(out)
end

local size_units = {
  [""] = 1, b = 1,
  k = 1000, kb = 1000, m = 1000 ^ 2, mb = 1000 ^ 2, g = 1000 ^ 3, gb = 1000 ^ 3, t = 1000 ^ 4, tb = 1000 ^ 4,
  ki = 1024, kib = 1024, mi = 1024 ^ 2, mib = 1024 ^ 2, gi = 1024 ^ 3, gib = 1024 ^ 3,
  ti = 1024 ^ 4, tib = 1024 ^ 4,
}

--- Parses a byte size: a plain integer ("10240") or a number with a unit ("64MiB", "1.5GB").
-- @return bytes (integer) | fail.new("INVALID", "message")
function M.parse_size(s)
  if math.type(s) == "integer" then
    if s < 0 then return fail.new("INVALID", "size must not be negative") end
    return s
  end
  if type(s) ~= "string" then return fail.new("INVALID", "size must be a string or integer") end
  local num, unit = s:match("^%s*(%d+%.?%d*)%s*(%a*)%s*$")
  local scale = num and size_units[unit:lower()]
  if not scale then
    return fail.new("INVALID", "invalid size %q (want bytes, or a number with KB, MB, GB, KiB, MiB or GiB)", s)
  end
  local bytes = math.floor(tonumber(num) * scale)
  return math.tointeger(bytes) or bytes
end

--- Formats bytes for people: "512 B", "1.5 KiB", "64.0 MiB".
function M.format_size(n)
  if n < 1024 then return ("%d B"):format(n) end
  local units = { "KiB", "MiB", "GiB", "TiB" }
  local v, i = n / 1024, 1
  while v >= 1024 and i < #units do v, i = v / 1024, i + 1 end
  return ("%.1f %s"):format(v, units[i])
end

return M
