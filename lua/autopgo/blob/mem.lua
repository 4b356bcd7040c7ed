-- The in-process blob store (mem://name): objects in this process's memory, shared by every open of
-- the same name, gone when the process exits. For tests and experiments; same contract as the
-- other stores (conditional writes included).
local fail = require "autopgo.fail"
local uv = require "luv"
local async = require "autopgo.async"
local blob = require "autopgo.blob"
local bytes = require("autopgo.core").bytes

local M = {}

local buckets = {} -- name -> { objects = { [key] = object }, seq = n }

local Store = {}
Store.__index = Store

local CHUNK = 64 * 1024

local function now()
  local sec, usec = uv.gettimeofday()
  return sec + usec / 1e6
end

local function not_found(key)
  return fail.new("NOT_FOUND", "no object %q", key)
end

-- Reads a body argument (string, autopgo.bytes, { path }, or { producer, size }) into a string.
-- This store keeps objects as Lua strings, so an autopgo.bytes (an upload's body) is copied here:
-- the one store that holds an upload twice.
local function read_body(body)
  if type(body) == "string" then return body end
  if bytes.is(body) then return body:sub() end
  if type(body) ~= "table" then return fail.new("INVALID", "body must be a string or a table") end
  if body.path then
    local fd, err = async.await(uv.fs_open, body.path, "r", 0)
    if not fd then return fail.new("IO", tostring(err)) end
    local parts, offset = {}, 0
    while true do
      local data, rerr = async.await(uv.fs_read, fd, CHUNK, offset)
      if not data then
        uv.fs_close(fd)
        return fail.new("IO", tostring(rerr))
      end
      if data == "" then break end
      parts[#parts + 1] = data
      offset = offset + #data
    end
    uv.fs_close(fd)
    return table.concat(parts)
  end
  if type(body.producer) == "function" then
    local parts = {}
    while true do
      local piece = body.producer()
      if piece == nil then break end
      parts[#parts + 1] = piece
    end
    local data = table.concat(parts)
    if body.size and body.size ~= #data then
      return fail.new("INVALID", "the producer gave %d bytes, %d were announced", #data, body.size)
    end
    return data
  end
  return fail.new("INVALID", "body table needs path or producer")
end

function Store:put(key, body, opts)
  opts = opts or {}
  local data, err, code = read_body(body)
  if not data then return nil, err, code end
  -- Checked after the body is in: nothing else runs between the check and the write.
  local objects = self.bucket.objects
  local cur = objects[key]
  if opts.if_none_match == "*" and cur then
    return fail.new("PRECONDITION_FAILED", "%q already exists", key)
  end
  if opts.if_match and (not cur or cur.etag ~= opts.if_match) then
    return fail.new("PRECONDITION_FAILED", "%q is not at version %s", key, opts.if_match)
  end
  self.bucket.seq = self.bucket.seq + 1
  local obj = { body = data, etag = ('"m%d"'):format(self.bucket.seq), last_modified = now(),
    content_type = opts.content_type }
  objects[key] = obj
  return { etag = obj.etag, size = #data }
end

function Store:get(key, opts)
  local obj = self.bucket.objects[key]
  if not obj then return not_found(key) end
  if opts and opts.if_match and obj.etag ~= opts.if_match then
    return fail.new("PRECONDITION_FAILED", "%q is not at version %s", key, opts.if_match)
  end
  local meta = { etag = obj.etag, size = #obj.body, last_modified = obj.last_modified }
  if opts and opts.sink then
    for i = 1, #obj.body, CHUNK do opts.sink(obj.body:sub(i, i + CHUNK - 1)) end
    return meta
  end
  meta.body = obj.body
  return meta
end

function Store:stat(key)
  local obj = self.bucket.objects[key]
  if not obj then return not_found(key) end
  return { etag = obj.etag, size = #obj.body, last_modified = obj.last_modified }
end

function Store:delete(key)
  if not self.bucket.objects[key] then return not_found(key) end
  self.bucket.objects[key] = nil
  return true
end

function Store:list(prefix, opts)
  prefix = prefix or ""
  local after = opts and opts.after
  local out = {}
  for key, obj in pairs(self.bucket.objects) do
    if key:sub(1, #prefix) == prefix and (after == nil or key > after) then
      out[#out + 1] = { key = key, size = #obj.body, last_modified = obj.last_modified, etag = obj.etag }
    end
  end
  table.sort(out, function(a, b) return a.key < b.key end)
  return blob.window(out, opts and { limit = opts.limit })
end

function Store.health()
  return true
end

function Store.close() end

--- mem://name opens (or creates) the in-process bucket "name".
function M.open(u)
  local name = (u.host or "") .. (u.path or "")
  buckets[name] = buckets[name] or { objects = {}, seq = 0 }
  return setmetatable({ bucket = buckets[name], name = "mem://" .. name }, Store)
end

return M
