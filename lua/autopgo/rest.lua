-- One HTTP exchange with a REST service, as the cloud blob stores and event buses make it:
-- retries of transient failures inside a deadline (autopgo.retry), error bodies kept away from a
-- caller's sink, downloads resumed where they broke off; and what they all read the same way
-- (an HTTP status as a house code, Retry-After, gocloud URL booleans and unknown parameters).
--
--   rest.call(ctx, build, on_error) -> res | nil, err, code
--     build(attempt) -> http request table (signed afresh on every attempt) | nil, err, code
--     on_error(res) -> err, code[, retry_after_s[, "retry" | "final"]] for a status >= 300
--     ctx = { deadline = s, name = "s3://bucket" (for messages) }
local fail = require "autopgo.fail"
local log = require "autopgo.log"
local retry = require "autopgo.retry"

local M = {}

M.DEFAULT_DEADLINE = 60
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

-- A failure that retry.run must not retry (its hint is "final").
local function give_up(code, fmt, ...)
  local _, err, c = fail.new(code, fmt, ...)
  return nil, err, c, nil, "final"
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
      return give_up("UNAVAILABLE", "%s: the transfer broke off after data was delivered", ctx.name or "blob")
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
        return fail.new("UNAVAILABLE", "%s%s", fail.message(err), where)
      elseif code == "TLS" then
        return give_up("UNAVAILABLE", "%s%s", fail.message(err), where)
      elseif code == "TOO_LARGE" then
        return give_up("INVALID", "%s%s", fail.message(err), where)
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
        return give_up("UNAVAILABLE", "%s: the object changed while it was being downloaded", ctx.name or "blob")
      end
      if hint == nil and c == "UNAVAILABLE" and delivered > 0 and not version then hint = "final" end
      return nil, e, c, after or M.retry_after(res), hint
    end
    return res
  end, {
    deadline = ctx.deadline or M.DEFAULT_DEADLINE,
    retryable = retryable,
    on_retry = function(attempt, delay, err)
      log.debug("rest: retrying", "service", ctx.name, "attempt", attempt, "delay", delay, "error", err)
    end,
  })
end

--- Parses a URL boolean the way Go's strconv.ParseBool does; nil, err for anything else.
local TRUE = { ["1"] = true, t = true, T = true, TRUE = true, ["true"] = true, True = true }
local FALSE = { ["0"] = true, f = true, F = true, FALSE = true, ["false"] = true, False = true }
function M.parse_bool(name, v)
  if v == nil then return false end
  if TRUE[v] then return true end
  if FALSE[v] then return false end
  return fail.new("INVALID", "invalid value %q for query parameter %s (want true or false)", v, name)
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
  return fail.new("INVALID", "unknown query parameter %q for %s:// (known: %s)", unknown[1], scheme,
    table.concat(names, ", "))
end

return M
