-- What the REST blob stores (S3, GCS, Azure Blob) share on top of autopgo.rest: request bodies
-- as strings, files or producers read in bounded pieces, keys, gocloud's `prefix` URL option and
-- result shaping.
local uv = require "luv"
local async = require "autopgo.async"

local M = {}

M.HEALTH_DEADLINE = 5 -- health checks answer quickly, retries included

--- A request timeout for moving `bytes`: a minute plus 256 KiB/s.
function M.transfer_timeout(bytes)
  return 60 + (bytes or 0) / (256 * 1024)
end

-- Bodies --------------------------------------------------------------------------------------

--- The failure of a retry that would need a streamed body again (it was consumed).
function M.not_replayable(last_err)
  return nil, "UNAVAILABLE: a streamed body cannot be sent again after a failure: " .. tostring(last_err),
    "UNAVAILABLE"
end

--- Normalises a put body (string | { path } | { producer, size }) into a source
-- { kind, size, data | path | producer }, or nil, err, code.
function M.source(body)
  if type(body) == "string" then return { kind = "string", size = #body, data = body } end
  if type(body) ~= "table" then return nil, "INVALID: put body must be a string or a table", "INVALID" end
  if body.path then
    local st, err = async.await(uv.fs_stat, body.path)
    if not st then
      return nil, ("%s: cannot read %s: %s"):format(err and err:match("^ENOENT") and "NOT_FOUND" or "IO",
        body.path, tostring(err)), err and err:match("^ENOENT") and "NOT_FOUND" or "IO"
    end
    return { kind = "path", path = body.path, size = st.size }
  end
  if body.producer then
    if type(body.size) ~= "number" then return nil, "INVALID: a producer body needs its size", "INVALID" end
    return { kind = "producer", producer = body.producer, size = body.size }
  end
  return nil, "INVALID: put body table needs path or producer", "INVALID"
end

--- A sequential reader over a source: reader:read(n) returns the next n bytes (fewer only at
-- the end; "" at the end), or nil, err, code. reader:close() releases a file.
function M.reader(src)
  local r = { offset = 0 }
  if src.kind == "string" then
    function r.read(_, n)
      local s = src.data:sub(r.offset + 1, r.offset + n)
      r.offset = r.offset + #s
      return s
    end
    function r.close() end
  elseif src.kind == "path" then
    local fd
    function r.read(_, n)
      if not fd then
        local f, err = async.await(uv.fs_open, src.path, "r", 0)
        if not f then return nil, ("IO: cannot open %s: %s"):format(src.path, tostring(err)), "IO" end
        fd = f
      end
      local parts, got = {}, 0
      while got < n do
        local data, err = async.await(uv.fs_read, fd, math.min(n - got, 1024 * 1024), r.offset + got)
        if not data then return nil, ("IO: cannot read %s: %s"):format(src.path, tostring(err)), "IO" end
        if data == "" then break end
        parts[#parts + 1] = data
        got = got + #data
      end
      r.offset = r.offset + got
      return table.concat(parts)
    end
    function r.close()
      if fd then
        uv.fs_close(fd)
        fd = nil
      end
    end
  else
    local pending, ended = "", false
    function r.read(_, n)
      local parts, got = {}, 0
      if #pending > 0 then
        local take = pending:sub(1, n)
        pending = pending:sub(#take + 1)
        parts[1], got = take, #take
      end
      while got < n and not ended do
        local chunk, err = src.producer()
        if chunk == nil then
          if err ~= nil then return nil, "IO: the body producer failed: " .. tostring(err), "IO" end
          ended = true
        elseif #chunk > 0 then
          if got + #chunk > n then
            pending = chunk:sub(n - got + 1)
            chunk = chunk:sub(1, n - got)
          end
          parts[#parts + 1] = chunk
          got = got + #chunk
        end
      end
      r.offset = r.offset + got
      return table.concat(parts)
    end
    function r.close() end
  end
  return r
end

--- Reads a whole (small) source into a string.
function M.read_all(src)
  if src.kind == "string" then return src.data end
  local r = M.reader(src)
  local data, err, code = r:read(src.size)
  r:close()
  if not data then return nil, err, code end
  if #data ~= src.size then
    return nil, ("INVALID: the body has %d bytes, not the %d announced"):format(#data, src.size), "INVALID"
  end
  return data
end

-- Keys and prefixes ------------------------------------------------------------------------------

--- Reads gocloud's generic `prefix` option out of a parsed URL's query (removing it).
function M.take_prefix(query)
  local p = query.prefix
  query.prefix = nil
  return p or ""
end

--- Checks a key the caller gave; nil, err when unusable.
function M.check_key(key)
  if type(key) ~= "string" or key == "" then return nil, "INVALID: blob key must be a non-empty string", "INVALID" end
  return key
end

--- Sorts list entries by key (services list by UTF-8 byte order already; this makes it certain).
function M.sort_entries(entries)
  table.sort(entries, function(a, b) return a.key < b.key end)
  return entries
end

return M
