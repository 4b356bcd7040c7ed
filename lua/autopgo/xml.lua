-- A small non-validating XML reader and writer for the REST APIs that answer in XML (S3, STS,
-- SQS/SNS, Azure Blob/Queue): elements, attributes, text, CDATA, entities and character
-- references; comments, processing instructions and DOCTYPE are skipped. No DTDs or external
-- entities are ever resolved.
--
-- An element is { tag = "Name", attrs = { k = v }, [1..n] = child elements or text strings }.
-- Namespace prefixes stay in `tag`; the lookup helpers match on the local name.
local fail = require "autopgo.fail"
local M = {}

local ENTITIES = { lt = "<", gt = ">", amp = "&", quot = '"', apos = "'" }

local function utf8_char(n)
  if n < 0 or n > 0x10FFFF or (n >= 0xD800 and n <= 0xDFFF) then return nil end
  return utf8.char(n)
end

--- Replaces entity and character references; nil, err on an unknown one.
function M.unescape(s)
  if not s:find("&", 1, true) then return s end
  local bad
  local out = s:gsub("&(#?[xX]?%w+);", function(ref)
    local c
    if ref:sub(1, 2) == "#x" or ref:sub(1, 2) == "#X" then
      c = tonumber(ref:sub(3), 16) and utf8_char(tonumber(ref:sub(3), 16))
    elseif ref:sub(1, 1) == "#" then
      c = tonumber(ref:sub(2)) and utf8_char(tonumber(ref:sub(2)))
    else
      c = ENTITIES[ref]
    end
    if not c then bad = bad or ref end
    return c
  end)
  if bad then return nil, ("unknown entity &%s;"):format(bad) end
  return out
end

--- Escapes text for element content and attribute values.
function M.escape(s)
  return (tostring(s):gsub("[<>&\"']", { ["<"] = "&lt;", [">"] = "&gt;", ["&"] = "&amp;",
    ['"'] = "&quot;", ["'"] = "&apos;" }))
end

local function bad(msg, pos)
  return fail.new("INVALID", "XML %s at byte %d", msg, pos)
end

local function parse_attrs(s, pos, attrs)
  -- s:sub(pos) is the part of a start tag after its name, up to (not including) ">" or "/>"
  while true do
    local ws, name, e = s:match("^(%s*)([%w_:%.%-]+)%s*=%s*()", pos)
    if not name then return pos end
    if ws == "" then return nil end
    local q = s:sub(e, e)
    if q ~= '"' and q ~= "'" then return nil end
    local close = s:find(q, e + 1, true)
    if not close then return nil end
    local v = M.unescape(s:sub(e + 1, close - 1))
    if not v then return nil end
    attrs[name] = v
    pos = close + 1
  end
end

--- Parses a document; returns its root element or fail.new("INVALID", "...").
function M.parse(s)
  if type(s) ~= "string" then return bad("input is not a string", 0) end
  local root
  local stack = {}
  local pos = 1
  local len = #s
  if s:sub(1, 3) == "\239\187\191" then pos = 4 end -- UTF-8 BOM
  while pos <= len do
    local lt = s:find("<", pos, true)
    local text = s:sub(pos, (lt or len + 1) - 1)
    if #stack > 0 then
      if text ~= "" then
        local t, err = M.unescape(text)
        if not t then return bad(err, pos) end
        local top = stack[#stack]
        top[#top + 1] = t
      end
    elseif text:find("%S") then
      return bad("has text outside the root element", pos)
    end
    if not lt then break end
    if s:sub(lt, lt + 3) == "<!--" then
      local e = s:find("-->", lt + 4, true)
      if not e then return bad("has an unterminated comment", lt) end
      pos = e + 3
    elseif s:sub(lt, lt + 8) == "<![CDATA[" then
      local e = s:find("]]>", lt + 9, true)
      if not e then return bad("has an unterminated CDATA section", lt) end
      if #stack == 0 then return bad("has CDATA outside the root element", lt) end
      local top = stack[#stack]
      top[#top + 1] = s:sub(lt + 9, e - 1)
      pos = e + 3
    elseif s:sub(lt, lt + 1) == "<?" then
      local e = s:find("?>", lt + 2, true)
      if not e then return bad("has an unterminated processing instruction", lt) end
      pos = e + 2
    elseif s:sub(lt, lt + 1) == "<!" then
      -- DOCTYPE (possibly with an internal subset in brackets): skipped, never interpreted
      local depth, i = 0, lt + 2
      while i <= len do
        local c = s:sub(i, i)
        if c == "[" then depth = depth + 1
        elseif c == "]" then depth = depth - 1
        elseif c == ">" and depth <= 0 then break end
        i = i + 1
      end
      if i > len then return bad("has an unterminated declaration", lt) end
      pos = i + 1
    elseif s:sub(lt, lt + 1) == "</" then
      local name, e = s:match("^</([%w_:%.%-]+)%s*>()", lt)
      if not name then return bad("has a malformed end tag", lt) end
      local top = table.remove(stack)
      if not top or top.tag ~= name then
        return bad(("has </%s> that does not close <%s>"):format(name, top and top.tag or ""), lt)
      end
      pos = e
    else
      local name, after = s:match("^<([%w_:%.%-]+)()", lt)
      if not name then return bad("has a malformed start tag", lt) end
      local el = { tag = name, attrs = {} }
      local p = parse_attrs(s, after, el.attrs)
      if not p then return bad("has malformed attributes", lt) end
      local self_close, e = s:match("^%s*(/?)>()", p)
      if not e then return bad("has a malformed start tag", lt) end
      if #stack > 0 then
        local top = stack[#stack]
        top[#top + 1] = el
      elseif root then
        return bad("has more than one root element", lt)
      else
        root = el
      end
      if self_close == "" then stack[#stack + 1] = el end
      pos = e
    end
  end
  if #stack > 0 then return bad(("ends inside <%s>"):format(stack[#stack].tag), len) end
  if not root then return bad("has no root element", 1) end
  return root
end

local function local_name(tag) return tag:match("([^:]+)$") end

--- The first child element of `el` whose local name is `name`.
function M.child(el, name)
  if not el then return nil end
  for _, c in ipairs(el) do
    if type(c) == "table" and local_name(c.tag) == name then return c end
  end
end

--- Every child element of `el` named `name` (every child element when name is nil), as a list.
function M.children(el, name)
  local out = {}
  for _, c in ipairs(el or {}) do
    if type(c) == "table" and (name == nil or local_name(c.tag) == name) then out[#out + 1] = c end
  end
  return out
end

--- The text content of `el` (all descendant text, concatenated); nil when el is nil.
function M.text(el)
  if not el then return nil end
  local parts = {}
  local function walk(e)
    for _, c in ipairs(e) do
      if type(c) == "string" then parts[#parts + 1] = c else walk(c) end
    end
  end
  walk(el)
  return table.concat(parts)
end

--- Follows a "A/B/C" path of local names from `el` (excluding el itself); the element or nil.
function M.find(el, path)
  for name in path:gmatch("[^/]+") do
    el = M.child(el, name)
    if not el then return nil end
  end
  return el
end

--- Text at a path, or nil.
function M.find_text(el, path) return M.text(M.find(el, path)) end

return M
