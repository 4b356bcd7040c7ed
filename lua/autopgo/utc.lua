-- UTC timestamps as cloud APIs write them: ISO 8601 / RFC 3339 ("2015-08-30T12:36:00Z"), the
-- HTTP date of RFC 7231 ("Sun, 30 Aug 2015 12:36:00 GMT") and AWS's compact "20150830T123600Z",
-- converted to and from Unix seconds without depending on the process's time zone or locale.
local fail = require "autopgo.fail"
local M = {}

local DAYS = { "Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat" }
local MONTHS = { "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" }
local MONTH_INDEX = {}
for i, m in ipairs(MONTHS) do MONTH_INDEX[m] = i end

-- Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's days_from_civil).
local function days_from_civil(y, m, d)
  y = m <= 2 and y - 1 or y
  local era = (y >= 0 and y or y - 399) // 400
  local yoe = y - era * 400
  local doy = (153 * (m + (m > 2 and -3 or 9)) + 2) // 5 + d - 1
  local doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
  return era * 146097 + doe - 719468
end

local function civil_from_days(z)
  z = z + 719468
  local era = (z >= 0 and z or z - 146096) // 146097
  local doe = z - era * 146097
  local yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
  local y = yoe + era * 400
  local doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
  local mp = (5 * doy + 2) // 153
  local d = doy - (153 * mp + 2) // 5 + 1
  local m = mp + (mp < 10 and 3 or -9)
  return m <= 2 and y + 1 or y, m, d
end

-- The days of month mo of year y (proleptic Gregorian): 2024-02 has 29, 2100-02 has 28.
local function days_in_month(y, mo)
  if mo == 2 then return (y % 4 == 0 and (y % 100 ~= 0 or y % 400 == 0)) and 29 or 28 end
  return (mo == 4 or mo == 6 or mo == 9 or mo == 11) and 30 or 31
end

--- Unix seconds of a UTC calendar time.
function M.timegm(y, mo, d, h, mi, s)
  return days_from_civil(y, mo, d) * 86400 + (h or 0) * 3600 + (mi or 0) * 60 + (s or 0)
end

--- The UTC calendar fields of Unix seconds t: y, mo, d, h, mi, s, weekday (1 = Sunday).
function M.fields(t)
  t = math.floor(t)
  local days, rem = t // 86400, t % 86400
  local y, mo, d = civil_from_days(days)
  return y, mo, d, rem // 3600, rem % 3600 // 60, rem % 60, (days + 4) % 7 + 1
end

--- Parses RFC 3339 / ISO 8601 ("2015-08-30T12:36:00Z", "...00.123+02:00", "... 12:36:00 UTC");
-- returns Unix seconds (fractions kept) or nil.
function M.parse_iso8601(s)
  if type(s) ~= "string" then return nil end
  local y, mo, d, h, mi, sec, rest = s:match("^(%d%d%d%d)-(%d%d)-(%d%d)[Tt ](%d%d):(%d%d):(%d%d)(.*)$")
  if not y then return nil end
  local t = M.timegm(tonumber(y), tonumber(mo), tonumber(d), tonumber(h), tonumber(mi), tonumber(sec))
  local frac, zone = rest:match("^(%.%d+)(.*)$")
  if frac then t, rest = t + tonumber("0" .. frac), zone end
  rest = rest:gsub("^%s+", "")
  if rest == "Z" or rest == "z" or rest == "" or rest == "UTC" or rest == "GMT" then return t end
  local sign, oh, om = rest:match("^([+-])(%d%d):?(%d%d)$")
  if not sign then return nil end
  local offset = tonumber(oh) * 3600 + tonumber(om) * 60
  return sign == "+" and t - offset or t + offset
end

--- Parses an RFC 3339 time as Go's time.RFC3339 writes it ("2024-10-28T12:16:34.964Z",
-- "...34.964123456+01:00"; a space for the "T", as RFC 3339 allows): Z or a +hh:mm offset is
-- required. Returns Unix seconds (fractions kept), or fail.new("INVALID", "what is wrong").
function M.parse_rfc3339(s)
  if type(s) ~= "string" then return fail.new("INVALID", "timestamp must be a string") end
  local y, mo, d, h, mi, sec, frac, zone =
    s:match("^(%d%d%d%d)%-(%d%d)%-(%d%d)[Tt ](%d%d):(%d%d):(%d%d)(%.?%d*)(.*)$")
  if not y or (frac ~= "" and not frac:match("^%.%d+$")) then
    return fail.new("INVALID", "timestamp %q is not RFC 3339 (like 2024-10-28T12:16:34.964Z)", s)
  end
  local offset = 0
  if zone ~= "Z" and zone ~= "z" then
    local sign, oh, om = zone:match("^([+-])(%d%d):(%d%d)$")
    if not sign then
      return fail.new("INVALID", "timestamp %q has no time zone (Z or +hh:mm)", s)
    end
    offset = (tonumber(oh) * 60 + tonumber(om)) * 60 * (sign == "+" and 1 or -1)
  end
  y, mo, d, h, mi, sec = tonumber(y), tonumber(mo), tonumber(d), tonumber(h), tonumber(mi), tonumber(sec)
  if mo < 1 or mo > 12 or d < 1 or d > days_in_month(y, mo) or h > 23 or mi > 59 or sec > 60 then
    return fail.new("INVALID", "timestamp %q is out of range", s)
  end
  local t = M.timegm(y, mo, d, h, mi, sec) - offset
  if frac ~= "" then t = t + tonumber("0" .. frac) end
  return t
end

--- Parses an RFC 3339 time (as parse_rfc3339) into whole Unix nanoseconds, exactly: a double
-- holds today's times only to the microsecond, so the fraction is read from its digits (beyond
-- nine digits it is cut). Returns an integer or fail.new("INVALID", "what is wrong").
function M.parse_rfc3339_nanos(s)
  local t, err, code = M.parse_rfc3339(s)
  if not t then return t, err, code end
  local frac = s:match("^[^.]*%.(%d+)") or ""
  local whole = math.tointeger(M.parse_rfc3339((s:gsub("%.%d+", "", 1))))
  return whole * 1000000000 + math.tointeger(tonumber(((frac .. "000000000"):sub(1, 9))))
end

--- Parses an HTTP date (RFC 7231 IMF-fixdate, also RFC 850 and asctime forms); Unix seconds or nil.
function M.parse_http_date(s)
  if type(s) ~= "string" then return nil end
  local d, mon, y, h, mi, sec = s:match("^%a+, (%d%d?) (%a%a%a) (%d%d%d%d) (%d%d):(%d%d):(%d%d) GMT$")
  if not d then
    d, mon, y, h, mi, sec = s:match("^%a+, (%d%d)%-(%a%a%a)%-(%d%d) (%d%d):(%d%d):(%d%d) GMT$")
    if y then y = (tonumber(y) < 70 and 2000 or 1900) + tonumber(y) end
  end
  if not d then
    mon, d, h, mi, sec, y = s:match("^%a+ (%a%a%a) +(%d%d?) (%d%d):(%d%d):(%d%d) (%d%d%d%d)$")
  end
  local m = mon and MONTH_INDEX[mon]
  if not m then return nil end
  return M.timegm(tonumber(y), m, tonumber(d), tonumber(h), tonumber(mi), tonumber(sec))
end

--- Go's time.Time JSON form in UTC: RFC 3339 with up to 9 fraction digits, trailing zeros dropped
-- and no fraction when it is zero ("2024-10-28T12:16:34.964Z", "2024-10-28T12:16:34Z").
-- rfc3339(sec, nsec): whole seconds and nanoseconds; rfc3339(t): Unix seconds as a number
-- (fractions kept to the microsecond, all a double holds at today's dates).
function M.rfc3339(sec, nsec)
  if nsec == nil then
    local whole = math.floor(sec)
    local micros = math.floor((sec - whole) * 1e6 + 0.5)
    if micros >= 1000000 then whole, micros = whole + 1, micros - 1000000 end
    sec, nsec = whole, micros * 1000
  end
  sec = math.tointeger(sec) or math.floor(sec)
  local y, mo, d, h, mi, s = M.fields(sec)
  local frac = nsec == 0 and "" or ("." .. ("%09d"):format(nsec):gsub("0+$", ""))
  return ("%04d-%02d-%02dT%02d:%02d:%02d%sZ"):format(y, mo, d, h, mi, s, frac)
end

--- "2015-08-30T12:36:00Z"
function M.iso8601(t)
  local y, mo, d, h, mi, s = M.fields(t)
  return ("%04d-%02d-%02dT%02d:%02d:%02dZ"):format(y, mo, d, h, mi, s)
end

--- "Sun, 30 Aug 2015 12:36:00 GMT"
function M.http_date(t)
  local y, mo, d, h, mi, s, wd = M.fields(t)
  return ("%s, %02d %s %04d %02d:%02d:%02d GMT"):format(DAYS[wd], d, MONTHS[mo], y, h, mi, s)
end

--- "20150830T123600Z", the x-amz-date form.
function M.amz_date(t)
  local y, mo, d, h, mi, s = M.fields(t)
  return ("%04d%02d%02dT%02d%02d%02dZ"):format(y, mo, d, h, mi, s)
end

--- Parses "20150830T123600Z"; Unix seconds or nil.
function M.parse_amz_date(s)
  local y, mo, d, h, mi, sec = (s or ""):match("^(%d%d%d%d)(%d%d)(%d%d)T(%d%d)(%d%d)(%d%d)Z$")
  if not y then return nil end
  return M.timegm(tonumber(y), tonumber(mo), tonumber(d), tonumber(h), tonumber(mi), tonumber(sec))
end

return M
