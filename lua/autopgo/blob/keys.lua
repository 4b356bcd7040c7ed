-- Blob key escaping compatible with gocloud.dev, so objects written by the original Go
-- implementation keep their names: characters a service cannot store are written as
-- "__0x<hex>__" (Go's %#x of the code point), and listed keys are unescaped the same way.
-- Each store passes its own rule (s3blob, gcsblob and azureblob escape different characters).
local M = {}

-- The key as a list of UTF-8 characters (a byte that starts no valid sequence stands alone).
local function chars(s)
  local out, i, n = {}, 1, #s
  while i <= n do
    local b = s:byte(i)
    local len = b < 0x80 and 1 or b >= 0xF0 and 4 or b >= 0xE0 and 3 or b >= 0xC0 and 2 or 1
    local piece = s:sub(i, i + len - 1)
    if len > 1 and not utf8.len(piece) then piece, len = s:sub(i, i), 1 end
    out[#out + 1] = piece
    i = i + len
  end
  return out
end

--- Escapes the characters of `key` for which should_escape(chars, i, is_prefix) is true
-- (is_prefix: the key is a list prefix, not a whole key).
function M.escape(key, should_escape, is_prefix)
  local cs = chars(key)
  local changed = false
  for i = 1, #cs do
    if should_escape(cs, i, is_prefix) then
      local cp = utf8.len(cs[i]) and utf8.codepoint(cs[i]) or cs[i]:byte()
      cs[i] = ("__0x%x__"):format(cp)
      changed = true
    end
  end
  return changed and table.concat(cs) or key
end

--- Reverses escape (for any rule): every "__0x<hex>__" becomes its character.
function M.unescape(key)
  if not key:find("__0x", 1, true) then return key end
  return (key:gsub("__0x(%x+)__", function(h)
    local n = tonumber(h, 16)
    if n and n <= 0x10FFFF then return utf8.char(n) end
  end))
end

local function after_dotdot(cs, i) return cs[i] == "/" and i > 2 and cs[i - 1] == "." and cs[i - 2] == "." end

--- s3blob: ASCII 0-31, and the "/" of "../".
function M.s3(cs, i)
  return cs[i]:byte() < 32 and #cs[i] == 1 or after_dotdot(cs, i)
end

--- gcsblob: "\n", "\r", and the "/" of "../".
function M.gcs(cs, i)
  return cs[i] == "\n" or cs[i] == "\r" or after_dotdot(cs, i)
end

local AZURE = { ['"'] = true, ["#"] = true, ["%"] = true, ["?"] = true, ["\\"] = true, ["\127"] = true }

--- azureblob: ASCII 0-31, '"', '#', '%', '?', '\', DEL, the "/" of "../" and a trailing "/"
-- of a whole key (not of a list prefix).
function M.azure(cs, i, is_prefix)
  local c = cs[i]
  return (#c == 1 and c:byte() < 32) or AZURE[c] or after_dotdot(cs, i) or (c == "/" and i == #cs and not is_prefix)
end

return M
