-- What the REST blob stores (S3, GCS, Azure Blob) share: one HTTP exchange with retries of
-- transient failures inside a deadline, error bodies kept away from a caller's sink, request
-- bodies as strings, files or producers read in bounded pieces, the `prefix` URL option and
-- result shaping.
--
--   rest.call(ctx, build, on_error) -> res | nil, err, code
--     build(attempt) -> http request table (signed afresh on every attempt) | nil, err, code
--     on_error(res) -> err, code[, retry_after_s[, "retry" | "final"]] for a status >= 300
--     ctx = { deadline = s, name = "s3://bucket" (for messages) }
local uv = require "luv"
local async = require "autopgo.async"
local log = require "autopgo.log"
local retry = require "autopgo.retry"

local M = {}

M.DEFAULT_DEADLINE = 60
M.HEALTH_DEADLINE = 5 -- health checks answer quickly, retries included
M.ERROR_BODY_LIMIT = 64 * 1024

local function http() return require "autopgo.http" end

--- House code for an HTTP status a service answered with.
function M.code_for_status(status)
  if status == 404 then return "NOT_FOUND" end
  if status == 412 then return "PRECONDITION_FAILED" end
  if status == 401 or status == 403 then return "UNAUTHORIZED" end
  if status == 408 or status == 429 or status >= 500 then return "UNAVAILABLE" end
  return "INVALID"
end

--- Seconds from a Retry-After header (delta seconds only), or nil.
function M.retry_after(res)
  local v = res and res.headers and res.headers["retry-after"]
  return v and tonumber(v) or nil
end

--- A request timeout for moving `bytes`: a minute plus 256 KiB/s.
function M.transfer_timeout(bytes)
  return 60 + (bytes or 0) / (256 * 1024)
end

local function retryable(code, _, _, hint)
  if hint == "retry" then return true end
  if hint == "final" then return false end
  return code == "UNAVAILABLE" or code == "TIMEOUT"
end

--- One exchange with retries (see the file comment). A response with a sink streams only
-- successful bodies to it; an error body is collected (up to 64 KiB) into res.body, and
-- res.delivered counts the bytes the sink got. When `version_of(res)` is given (downloads), a
-- body that breaks off is resumed where it stopped: build(attempt, { offset, version }) must ask
-- for the bytes from `offset` on of that same version (Range plus If-Match or a generation);
-- without it, a request whose sink already received data is not retried. build also gets the
-- previous attempt's error (a body that cannot be sent twice reports it).
function M.call(ctx, build, on_error, version_of)
  local delivered, version, last_err = 0, nil, nil
  return retry.run(function(attempt)
    if delivered > 0 and not version then
      return nil, ("UNAVAILABLE: %s: the transfer broke off after data was delivered"):format(ctx.name or "blob"),
        "UNAVAILABLE", nil, "final"
    end
    local resume = delivered > 0 and { offset = delivered, version = version } or nil
    local req, berr, bcode = build(attempt, resume, last_err)
    if not req then return nil, berr, bcode, nil, "final" end
    local user_sink, errbuf, errlen = req.sink, {}, 0
    if user_sink then
      local skip = nil -- bytes to drop when a server ignored the Range of a resumed download
      req.sink = function(chunk, res)
        if res.status >= 300 then
          if errlen < M.ERROR_BODY_LIMIT then
            errbuf[#errbuf + 1] = chunk
            errlen = errlen + #chunk
          end
          return true
        end
        if skip == nil then skip = (resume and res.status == 200) and resume.offset or 0 end
        if skip > 0 then
          if #chunk <= skip then
            skip = skip - #chunk
            return true
          end
          chunk, skip = chunk:sub(skip + 1), 0
        end
        if delivered == 0 and version_of then version = version_of(res) end
        delivered = delivered + #chunk
        return user_sink(chunk, res)
      end
    end
    local res, err, code = http().request(req)
    if not res then
      last_err = err
      local where = ctx.name and (" (" .. ctx.name .. ")") or ""
      if code == "TIMEOUT" or code == "UNAVAILABLE" then
        return nil, ("UNAVAILABLE: %s%s"):format(err, where), "UNAVAILABLE"
      elseif code == "TLS" then
        return nil, ("UNAVAILABLE: %s%s"):format(err, where), "UNAVAILABLE", nil, "final"
      elseif code == "TOO_LARGE" then
        return nil, ("INVALID: %s%s"):format(err, where), "INVALID", nil, "final"
      end
      return nil, err .. where, code, nil, "final"
    end
    if user_sink then
      if res.status >= 300 then res.body = table.concat(errbuf) end
      res.delivered = delivered
    end
    if res.status >= 300 and res.status ~= 304 then
      local e, c, after, hint = on_error(res)
      last_err = e
      if resume and c == "PRECONDITION_FAILED" then
        return nil, ("UNAVAILABLE: %s: the object changed while it was being downloaded"):format(ctx.name or "blob"),
          "UNAVAILABLE", nil, "final"
      end
      if hint == nil and c == "UNAVAILABLE" and delivered > 0 and not version then hint = "final" end
      return nil, e, c, after or M.retry_after(res), hint
    end
    return res
  end, {
    deadline = ctx.deadline or M.DEFAULT_DEADLINE,
    retryable = retryable,
    on_retry = function(attempt, delay, err)
      log.debug("blob: retrying", "store", ctx.name, "attempt", attempt, "delay", delay, "error", err)
    end,
  })
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

--- Parses a URL boolean the way Go's strconv.ParseBool does; nil, err for anything else.
local TRUE = { ["1"] = true, t = true, T = true, TRUE = true, ["true"] = true, True = true }
local FALSE = { ["0"] = true, f = true, F = true, FALSE = true, ["false"] = true, False = true }
function M.parse_bool(name, v)
  if v == nil then return false end
  if TRUE[v] then return true end
  if FALSE[v] then return false end
  return nil, ("INVALID: invalid value %q for query parameter %s (want true or false)"):format(v, name), "INVALID"
end

--- Fails for query parameters not in `known` (gocloud does the same).
function M.check_params(scheme, query, known)
  local unknown = {}
  for k in pairs(query) do
    if not known[k] then unknown[#unknown + 1] = k end
  end
  if #unknown == 0 then return true end
  table.sort(unknown)
  local names = {}
  for k in pairs(known) do names[#names + 1] = k end
  table.sort(names)
  return nil, ("INVALID: unknown query parameter %q for %s:// (known: %s)"):format(unknown[1], scheme,
    table.concat(names, ", ")), "INVALID"
end

return M
