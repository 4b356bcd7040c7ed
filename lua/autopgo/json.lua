-- JSON written byte for byte the way Go's encoding/json writes it (fields in declaration order,
-- compact, <>& and U+2028/U+2029 escaped), so API bodies and events match the original; decoding
-- goes through cjson with the house failure convention.
local fail = require "autopgo.fail"
local cjson = require("cjson.safe")

local M = {}

local ORDERED = setmetatable({}, { __mode = "k" })
local ARRAYS = setmetatable({}, { __mode = "k" })

--- An object whose keys are written in the given order: json.object("k1", v1, "k2", v2, ...).
-- A nil value writes null (Go's nil pointer/slice); use json.omit to leave a field out.
function M.object(...)
  local t = table.pack(...)
  ORDERED[t] = true
  return t
end

--- A list that is written as an array even when empty ([] rather than {}).
function M.array(list)
  list = list or {}
  ARRAYS[list] = true
  return list
end

M.null = cjson.null
M.omit = setmetatable({}, { __tostring = function() return "json.omit" end })

local escapes = {
  ['"'] = '\\"', ["\\"] = "\\\\", ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t",
  ["<"] = "\\u003c", [">"] = "\\u003e", ["&"] = "\\u0026",
}

local function escape_string(s)
  s = s:gsub('[%z\1-\31"\\<>&]', function(c)
    return escapes[c] or ("\\u%04x"):format(c:byte())
  end)
  -- U+2028 and U+2029 (E2 80 A8/A9) are valid JSON but not valid JavaScript: Go escapes them.
  s = s:gsub("\226\128\168", "\\u2028"):gsub("\226\128\169", "\\u2029")
  if not utf8.len(s) then
    -- Go replaces each invalid byte with U+FFFD.
    local out, i = {}, 1
    while i <= #s do
      local ok, code = pcall(utf8.codepoint, s, i)
      if ok and code then
        local ch = utf8.char(code)
        out[#out + 1] = ch
        i = i + #ch
      else
        out[#out + 1] = "\\ufffd"
        i = i + 1
      end
    end
    s = table.concat(out)
  end
  return '"' .. s .. '"'
end

local function format_number(n)
  if math.type(n) == "integer" then return tostring(n) end
  if n ~= n or n == math.huge or n == -math.huge then error("json: cannot encode " .. tostring(n)) end
  if n == math.floor(n) and math.abs(n) < 1e21 then return ("%d"):format(n) end
  for digits = 1, 17 do
    local s = ("%." .. digits .. "g"):format(n)
    if tonumber(s) == n then
      -- Go writes 1e-07 as 1e-7 and 1e+21 as 1e+21.
      return (s:gsub("e([+-])0*(%d)", "e%1%2"))
    end
  end
  return ("%.17g"):format(n)
end

local encode

local function encode_table(t, out)
  if ORDERED[t] then
    out[#out + 1] = "{"
    local first = true
    for i = 1, t.n, 2 do
      local v = t[i + 1]
      if v ~= M.omit then
        if not first then out[#out + 1] = "," end
        first = false
        out[#out + 1] = escape_string(tostring(t[i]))
        out[#out + 1] = ":"
        encode(v, out)
      end
    end
    out[#out + 1] = "}"
    return
  end
  local n = #t
  if ARRAYS[t] or n > 0 then
    out[#out + 1] = "["
    for i = 1, n do
      if i > 1 then out[#out + 1] = "," end
      encode(t[i], out)
    end
    out[#out + 1] = "]"
    return
  end
  -- A plain map: keys sorted, as Go writes map[string]T.
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = tostring(k) end
  table.sort(keys)
  out[#out + 1] = "{"
  for i, k in ipairs(keys) do
    if i > 1 then out[#out + 1] = "," end
    out[#out + 1] = escape_string(k)
    out[#out + 1] = ":"
    local v = t[k]
    if v == nil then v = t[tonumber(k)] end
    encode(v, out)
  end
  out[#out + 1] = "}"
end

encode = function(v, out)
  local tv = type(v)
  if v == nil or v == M.null then
    out[#out + 1] = "null"
  elseif tv == "boolean" then
    out[#out + 1] = v and "true" or "false"
  elseif tv == "number" then
    out[#out + 1] = format_number(v)
  elseif tv == "string" then
    out[#out + 1] = escape_string(v)
  elseif tv == "table" then
    encode_table(v, out)
  else
    error("json: cannot encode a " .. tv)
  end
end

--- Encodes a value compactly (no trailing newline).
function M.encode(v)
  local out = {}
  encode(v, out)
  return table.concat(out)
end

--- Encodes like Go's json.Encoder.Encode: compact, with a trailing newline (HTTP bodies).
function M.encode_line(v)
  return M.encode(v) .. "\n"
end

--- Decodes text; returns the value or fail.new("INVALID", "..."). JSON null becomes json.null.
function M.decode(text)
  if type(text) ~= "string" then return fail.new("INVALID", "JSON text must be a string") end
  local v, err = cjson.decode(text)
  if v == nil and err then return fail.new("INVALID", tostring(err)) end
  return v
end

return M
