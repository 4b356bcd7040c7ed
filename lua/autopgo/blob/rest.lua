-- What the REST blob stores (S3, GCS, Azure Blob) share on top of autopgo.rest: request bodies
-- (strings, files or producers, whole or in parts, read in bounded pieces), the URL's bucket and
-- `prefix` option, keys, one exchange of a store method and result shaping.
local fail = require "autopgo.fail"
local uv = require "luv"
local async = require "autopgo.async"
local utc = require "autopgo.utc"
local rest = require "autopgo.rest"
local keys = require "autopgo.blob.keys"
local core_bytes = require("autopgo.core").bytes

local M = {}

M.HEALTH_DEADLINE = 5 -- health checks answer quickly, retries included

--- A request timeout for moving `bytes`: a minute plus 256 KiB/s.
function M.transfer_timeout(bytes)
  return 60 + (bytes or 0) / (256 * 1024)
end

-- Bodies --------------------------------------------------------------------------------------

-- The failure of a retry that would need a streamed body again (it was consumed).
local function not_replayable(last_err)
  return fail.new("UNAVAILABLE", "a streamed body cannot be sent again after a failure: " .. tostring(last_err))
end

-- A sequential reader over a source: reader:read(n) returns the next n bytes (fewer only at
-- the end; "" at the end), or nil, err, code. reader:close() releases a file.
local function source_reader(src)
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
        if not f then return fail.new("IO", "cannot open %s: %s", src.path, tostring(err)) end
        fd = f
      end
      local parts, got = {}, 0
      while got < n do
        local data, err = async.await(uv.fs_read, fd, math.min(n - got, 1024 * 1024), r.offset + got)
        if not data then return fail.new("IO", "cannot read %s: %s", src.path, tostring(err)) end
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
          if err ~= nil then return fail.new("IO", "the body producer failed: " .. tostring(err)) end
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

--- Normalises a put body (string | autopgo.bytes | { path } | { producer, size }) into a source
-- { kind, size, data | path | producer + shared }, or nil, err, code. `shared` is the one reader
-- of a producer, which all the pieces of its source read in turn. An autopgo.bytes is a "string"
-- source whose pieces are views of it (no copy): data:sub(i, j) reads both alike.
function M.source(body)
  if type(body) == "string" or core_bytes.is(body) then return { kind = "string", size = #body, data = body } end
  if type(body) ~= "table" then return fail.new("INVALID", "put body must be a string or a table") end
  if body.path then
    local st, err = async.await(uv.fs_stat, body.path)
    if not st then
      local code = fail.code(err) == "ENOENT" and "NOT_FOUND" or "IO"
      return fail.new(code, "cannot read %s: %s", body.path, tostring(err))
    end
    return { kind = "path", path = body.path, size = st.size }
  end
  if body.producer then
    if type(body.size) ~= "number" then return fail.new("INVALID", "a producer body needs its size") end
    local src = { kind = "producer", producer = body.producer, size = body.size }
    src.shared = source_reader(src)
    return src
  end
  return fail.new("INVALID", "put body table needs path or producer")
end

--- Pieces of a source as requests send them: the whole source, or `length` bytes from `offset`
-- (a part or a block). piece.size; piece.data (a string's bytes, or a view of an autopgo.bytes,
-- sent as they are on every attempt);
-- piece.path (a whole file, which the HTTP client streams itself); piece:open(last_err) -> a
-- reader at the piece's start for one attempt (a file is reopened every time; a producer's bytes
-- go only once: a second attempt fails with not_replayable); piece:close() closes the files
-- opened.
function M.piece(src, offset, length)
  local whole = offset == 0 and length == src.size
  local piece, opened, used = { size = length }, {}, false
  if src.kind == "string" then
    piece.data = whole and src.data or type(src.data) == "string" and src.data:sub(offset + 1, offset + length)
      or src.data:view(offset + 1, offset + length)
  elseif src.kind == "path" and whole then
    piece.path = src.path
  end
  function piece.open(_, last_err)
    if src.kind == "producer" then
      if used then return not_replayable(last_err) end
      used = true
      return src.shared
    end
    local r = source_reader(src)
    r.offset = offset
    opened[#opened + 1] = r
    return r
  end
  function piece.close()
    for _, r in ipairs(opened) do r:close() end
    opened = {}
    -- a view made for this piece holds the whole body until released
    if not whole and core_bytes.is(piece.data) then piece.data:release() end
  end
  return piece
end

--- A body_producer that reads `length` bytes from `reader`, `chunk_size` at a time.
function M.chunks(reader, length, chunk_size)
  local left = length
  return function()
    if left == 0 then return nil end
    local data, err = reader:read(math.min(chunk_size, left))
    if not data then return nil, err end
    if #data == 0 then return fail.new("UNAVAILABLE", "the body ended %d bytes early", left) end
    left = left - #data
    return data
  end
end

--- Sets the body of request table `r` to `piece` for one attempt: r.body, r.body_path or a
-- r.body_producer of `chunk_size` chunks, and r.body_length. Returns true or nil, err, code.
function M.body(r, piece, last_err, chunk_size)
  r.body_length = piece.size
  if piece.data then
    r.body = piece.data
  elseif piece.path then
    r.body_path = piece.path
  else
    local reader, err, code = piece:open(last_err)
    if not reader then return nil, err, code end
    r.body_producer = M.chunks(reader, piece.size, chunk_size)
  end
  return true
end

-- Stores --------------------------------------------------------------------------------------
-- A store built on these has name, prefix, key_rule (from autopgo.blob.keys), ctx = { deadline,
-- name } and on_error(res, what) -> err, code[, retry_after[, hint]].

--- What every store URL starts with: a copy of its query without gocloud's `prefix` option,
-- checked against `known`; the bucket (or container: `noun`) that is its host; the store's name.
-- Returns { query, prefix, bucket, name } or nil, err, code.
function M.parse_url(u, scheme, known, noun)
  local q = {}
  for k, v in pairs(u.query) do q[k] = v end
  local prefix = q.prefix or ""
  q.prefix = nil
  local ok, err, code = rest.check_params(scheme, q, known)
  if not ok then return nil, err, code end
  local bucket = u.host
  if not bucket or bucket == "" then
    return fail.new("INVALID", "%s:// URL needs a %s (%s://%s)", scheme, noun, scheme, noun)
  end
  return { query = q, prefix = prefix, bucket = bucket,
    name = scheme .. "://" .. bucket .. (prefix ~= "" and ("?prefix=" .. prefix) or "") }
end

--- The service's name for a key the caller gave (under the store's prefix, escaped by its
-- rule), or fail.new("INVALID", "...") for an unusable key.
function M.object_key(store, key)
  if type(key) ~= "string" or key == "" then return fail.new("INVALID", "blob key must be a non-empty string") end
  return keys.escape(store.prefix .. key, store.key_rule)
end

--- The service's list prefix for a prefix the caller gave.
function M.list_prefix(store, prefix)
  return keys.escape(store.prefix .. (prefix or ""), store.key_rule, true)
end

--- The caller's key of a key the service listed, or nil when it is outside the store's prefix.
function M.listed_key(store, raw)
  local k = keys.unescape(raw or "")
  if k:sub(1, #store.prefix) == store.prefix then return k:sub(#store.prefix + 1) end
  return nil
end

--- One exchange of a store method (rest.call): the store's deadline unless `deadline` is given,
-- failures through store:on_error(res, what), `version_of` for downloads that resume. Clears
-- store.retried_auth, which on_error sets when it asks for one more attempt with fresh credentials.
function M.call(store, what, build, deadline, version_of)
  store.retried_auth = false
  local ctx = deadline and { deadline = deadline, name = store.name } or store.ctx
  return rest.call(ctx, build, function(res) return store:on_error(res, what) end, version_of)
end

--- The attributes of an object that its HTTP headers give: { etag, size, last_modified }.
function M.header_attrs(res)
  local h = res.headers
  return { etag = h.etag, size = tonumber(h["content-length"]) or 0,
    last_modified = utc.parse_http_date(h["last-modified"]) }
end

--- Completes a get's result `out` from its response: the body, or with opts.sink the number of
-- bytes the sink received.
function M.downloaded(out, res, opts)
  if opts.sink then
    out.size = res.delivered
  else
    out.body = res.body or ""
    out.size = #out.body
  end
  return out
end

--- store:get for a store whose objects are plain HTTP resources (S3, Azure Blob): { body | nil
-- with opts.sink, etag, size, last_modified }. A streamed download that breaks off resumes where
-- it stopped (Range, If-Match the same ETag, as `if_match(etag)` spells it for the service).
-- opts.if_match: only that version (PRECONDITION_FAILED otherwise), checked by the service.
function M.get(store, key, opts, if_match)
  opts = opts or {}
  local okey, err, code = store:object_key(key)
  if not okey then return nil, err, code end
  local res
  res, err, code = store:call("get " .. key, function(_, resume)
    local headers
    if resume then
      headers = { range = ("bytes=%d-"):format(resume.offset), ["if-match"] = if_match(resume.version) }
    elseif opts.if_match then
      headers = { ["if-match"] = if_match(opts.if_match) }
    end
    return store:request({ method = "GET", key = okey, headers = headers, sink = opts.sink,
      timeout = opts.timeout or 3600 })
  end, nil, opts.sink and function(r) return r.headers.etag end)
  if not res then return nil, err, code end
  return M.downloaded(M.header_attrs(res), res, opts)
end

--- store:stat for the same stores: { etag, size, last_modified } from a HEAD.
function M.stat(store, key)
  local okey, err, code = store:object_key(key)
  if not okey then return nil, err, code end
  local res
  res, err, code = store:call("stat " .. key, function()
    return store:request({ method = "HEAD", key = okey })
  end)
  if not res then return nil, err, code end
  return M.header_attrs(res)
end

--- store:health(): true when `req`, a request the service answers cheaply, succeeds within
-- HEALTH_DEADLINE (retries included), else nil, err, code.
function M.health(store, req)
  req.timeout = M.HEALTH_DEADLINE
  local res, err, code = store:call("health check", function() return store:request(req) end, M.HEALTH_DEADLINE)
  if not res then return nil, err, code end
  return true
end

--- Sorts list entries by key (services list by UTF-8 byte order already; this makes it certain).
function M.sort_entries(entries)
  table.sort(entries, function(a, b) return a.key < b.key end)
  return entries
end

return M
