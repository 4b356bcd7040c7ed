-- Outbound HTTP for Lua code: http.request runs one request on the C client (libcurl multi on
-- the process's loop) from a coroutine, with bodies from strings, files or producers and
-- responses buffered or streamed to a sink; http.pipe joins a sink to a producer with bounded
-- memory; cancelers stop groups of requests (shutdown). Only transport failures are errors.
--
--   local res, err, code = http.request {
--     method = "PUT", url = "http://127.0.0.1:7480/bucket/key",
--     headers = { ["content-type"] = "application/octet-stream" },  -- names case-insensitive
--     body = "...",                     -- a string or an autopgo.bytes (not copied); or
--     body_path = "/path/file",         -- streamed from disk (Content-Length = file size); or
--     body_producer = fn, body_length = n,  -- fn() -> chunk | nil (end) | nil, err (abort); may
--                                           -- yield; chunked transfer when body_length is nil
--     sink = function(chunk, res) end,  -- streams the response body (res has status and headers);
--                                       -- may yield (back-pressure); returning false[, why] or
--                                       -- nil, why (a failed file:write, say) aborts
--     timeout = 30, connect_timeout = 10,   -- seconds (whole request / connect)
--     insecure = false, ca_file = path, ca_pem = "PEM", client_cert = path, client_key = path,
--     client_cert_pem = "PEM", client_key_pem = "PEM",
--     tls_server_name = "name",         -- https: TLS (SNI, verification) names this host instead
--                                       -- of the URL's; the connection still goes to the URL's
--     proxy = "http://host:port",       -- or https://, socks5://; default: the *_proxy variables
--     follow_redirects = false, max_body = n,  -- TOO_LARGE when a buffered body exceeds it
--     cancel = canceler,                -- from http.canceler(): cancels this request with others
--   }
--   res = { status = 200, headers = { ["content-type"] = "..." }, body = "..." }
--   (header names lower-case, repeats joined with ", "; no body with a sink)
-- Failures: nil, "UNAVAILABLE: ..." (refused, reset, DNS), "TIMEOUT: ...", "TLS: ...",
-- "INVALID: ..." (bad URL or options), "TOO_LARGE: ...", "CANCELED: ...". A sink or producer
-- that raises cancels the request and the error is raised again from http.request.
local fail = require "autopgo.fail"
local core = require "autopgo.core"
local async = require "autopgo.async"
local version = require "autopgo.version"

local client = core.http_client

local M = {}

M.user_agent = "autopgo/" .. version.version
M.default_connect_timeout = 10

-- Every request in flight, for cancel_all (the C side pins them while they run).
local in_flight = setmetatable({}, { __mode = "k" })

local function error_code(err)
  return async.error_code(err)
end

local function in_coroutine()
  local co, main = coroutine.running()
  if main then error("autopgo.http: must be called from a coroutine (use async.spawn)", 3) end
  return co
end

local function check_type(opts, key, want)
  local v = opts[key]
  if want == "bytes" then -- a string or an autopgo.bytes (sent from where it is held)
    if v == nil or type(v) == "string" or core.bytes.is(v) then return v end
    want = "string or autopgo.bytes"
  end
  if v ~= nil and type(v) ~= want then
    error(("autopgo.http: %s must be a %s, got %s"):format(key, want, type(v)), 4)
  end
  return v
end

local known = {
  method = "string", url = "string", headers = "table", body = "bytes", body_path = "string",
  body_producer = "function", body_length = "number", sink = "function", timeout = "number",
  connect_timeout = "number", insecure = "boolean", ca_file = "string", ca_pem = "string",
  client_cert = "string", client_key = "string", client_cert_pem = "string",
  client_key_pem = "string", follow_redirects = "boolean", max_body = "number", cancel = "table",
  tls_server_name = "string", proxy = "string",
}

-- Turns the caller's options into the binding's spec (raising on wrong types: a programming
-- error, not a runtime failure).
local function build_spec(opts)
  if type(opts) ~= "table" then error("autopgo.http: request takes a table of options", 3) end
  for k, want in pairs(known) do check_type(opts, k, want) end
  for k in pairs(opts) do
    if known[k] == nil then error(("autopgo.http: unknown option %q"):format(tostring(k)), 3) end
  end
  if not opts.url then error("autopgo.http: url is required", 3) end
  local bodies = (opts.body and 1 or 0) + (opts.body_path and 1 or 0) + (opts.body_producer and 1 or 0)
  if bodies > 1 then error("autopgo.http: give at most one of body, body_path and body_producer", 3) end
  local headers, has_ua = {}, false
  for name, value in pairs(opts.headers or {}) do
    if type(name) ~= "string" or (type(value) ~= "string" and type(value) ~= "number" and value ~= false) then
      error(("autopgo.http: header %s must map a name to a string"):format(tostring(name)), 3)
    end
    if name:lower() == "user-agent" then has_ua = true end
    -- false removes a header curl would add by default
    headers[#headers + 1] = value == false and (name .. ":") or (name .. ": " .. tostring(value))
  end
  table.sort(headers) -- a stable order, whatever pairs() does
  local method = (opts.method or "GET"):upper()
  return {
    method = method, url = opts.url, headers = headers,
    body = opts.body, body_path = opts.body_path,
    body_stream = opts.body_producer ~= nil, body_length = opts.body_length,
    stream = opts.sink ~= nil, max_body = opts.max_body,
    timeout = opts.timeout, connect_timeout = opts.connect_timeout or M.default_connect_timeout,
    insecure = opts.insecure, follow_redirects = opts.follow_redirects,
    ca_file = opts.ca_file, ca_pem = opts.ca_pem, client_cert = opts.client_cert,
    client_key = opts.client_key, client_cert_pem = opts.client_cert_pem,
    client_key_pem = opts.client_key_pem, tls_server_name = opts.tls_server_name, proxy = opts.proxy,
    user_agent = not has_ua and M.user_agent or nil,
  }
end

--- Runs one request; see the top of this file. Must be called from a coroutine.
function M.request(opts)
  local spec = build_spec(opts)
  local co = in_coroutine()
  local canceler = opts.cancel
  if canceler and canceler.canceled then
    return fail.new("CANCELED", canceler.reason)
  end

  local events, parked = {}, false
  local req
  -- The producer runs in its own coroutine so a yielding producer never holds up the sink.
  local producer_co, producer_parked, needed, raised = nil, false, false, nil

  local function run_producer()
    while true do
      while not needed do
        producer_parked = true
        coroutine.yield()
        if not req:active() then return end
      end
      needed = false
      if not req:active() then return end
      local ok, chunk, why = pcall(opts.body_producer)
      if not req:active() then return end
      if not ok then
        raised = raised or chunk
        req:cancel("the body producer failed: " .. tostring(chunk))
        return
      elseif chunk == nil then
        if why ~= nil then
          req:cancel("the body producer failed: " .. tostring(why))
        else
          req:feed(nil)
        end
        return
      elseif type(chunk) ~= "string" then
        raised = raised or ("autopgo.http: body_producer returned a %s, not a string"):format(type(chunk))
        req:cancel("the body producer returned a " .. type(chunk))
        return
      elseif chunk == "" then
        req:feed("") -- asked again from the loop: a producer with nothing yet never spins it
      else
        req:feed(chunk)
      end
    end
  end

  local function on_event(ev, ...)
    if ev == "need" then
      needed = true
      if not producer_co then
        producer_co = coroutine.create(run_producer)
        async.resume(producer_co)
      elseif producer_parked then
        producer_parked = false
        async.resume(producer_co)
      end
      return
    end
    events[#events + 1] = table.pack(ev, ...)
    -- Only wake the requester when it waits here: inside a sink it may be parked elsewhere.
    if parked then
      parked = false
      async.resume(co)
    end
  end

  local err, code
  req, err, code = client.request(spec, on_event)
  if not req then return nil, err, code end
  in_flight[req] = true
  if canceler then canceler.requests[req] = true end

  local res = { headers = {} }
  local aborted = false
  local done
  while not done do
    if #events == 0 then
      parked = true
      coroutine.yield()
      parked = false
    end
    local e = table.remove(events, 1)
    if e and e[1] == "data" then
      if not aborted then
        if not res.status then res.status, res.headers = req:response() end
        local ok, keep, why = pcall(opts.sink, e[2], res)
        if not ok then
          raised = raised or keep
          aborted = true
          req:cancel("the response sink failed: " .. tostring(keep))
        elseif keep == false or (keep == nil and why ~= nil) then
          aborted = true
          req:cancel(why ~= nil and tostring(why) or "the response sink stopped the transfer")
        else
          req:ack()
        end
      end
    elseif e then
      done = e
    end
  end
  in_flight[req] = nil
  if canceler then canceler.requests[req] = nil end
  if producer_co and producer_parked then
    producer_parked = false
    async.resume(producer_co) -- lets it see the request is over and return
  end
  if raised ~= nil then error(raised, 0) end
  local _, failure, status, headers, body = table.unpack(done, 1, 5)
  if failure then return nil, failure, error_code(failure) end
  res.status, res.headers, res.body = status, headers, body
  return res
end

--- A group of requests that can be canceled together (a scrape round, a shutdown). Once
-- canceled, requests given this canceler fail at once with CANCELED.
function M.canceler()
  local c = { canceled = false, reason = nil, requests = setmetatable({}, { __mode = "k" }) }
  function c.cancel(_, reason)
    if c.canceled then return end
    c.canceled, c.reason = true, reason or "canceled"
    for req in pairs(c.requests) do req:cancel(c.reason) end
  end
  return c
end

--- Cancels every request in flight in this process.
function M.cancel_all(reason)
  for req in pairs(in_flight) do req:cancel(reason or "canceled") end
end

--- Number of requests in flight (C side), for health checks and tests.
function M.active()
  return client.active()
end

--- A bounded pipe from a response sink to a request's body_producer, holding at most about
-- `capacity` bytes (default 256 KiB): a full pipe makes the writer wait, which pauses the
-- transfer it is fed from. One writer and one reader, each in its own coroutine.
--   pipe:write(chunk) -> true | false, err   (false once the reader has gone away)
--   pipe:close([err])                        (end of data; with err the reader gets nil, err)
--   pipe:read() -> chunk | nil (end) | nil, err
--   pipe:abandon([err])                      (the reader stops: writers get false, err)
--   pipe.sink, pipe.producer: write and read as plain functions for http.request
function M.pipe(capacity)
  local p = { capacity = capacity or 256 * 1024, size = 0, closed = false, gone = false }
  local chunks, first, last = {}, 1, 0
  local writer, reader -- the coroutine parked in write / read, if any

  local function wake(co)
    if co then async.resume(co) end
  end

  function p.write(_, chunk)
    if p.gone then return false, p.gone_err end
    if p.closed then error("autopgo.http: write to a closed pipe", 2) end
    while p.size > 0 and p.size + #chunk > p.capacity and not p.gone do
      writer = coroutine.running()
      coroutine.yield()
    end
    if p.gone then return false, p.gone_err end
    last = last + 1
    chunks[last] = chunk
    p.size = p.size + #chunk
    local r = reader
    reader = nil
    wake(r)
    return true
  end

  function p.close(_, err)
    if p.closed then return end
    p.closed, p.err = true, err
    local r = reader
    reader = nil
    wake(r)
  end

  function p.read()
    while first > last and not p.closed and not p.gone do
      reader = coroutine.running()
      coroutine.yield()
    end
    if p.gone then return nil, p.gone_err end
    if first <= last then
      local chunk = chunks[first]
      chunks[first] = nil
      first = first + 1
      p.size = p.size - #chunk
      local w = writer
      writer = nil
      wake(w)
      return chunk
    end
    if p.err then return nil, p.err end
    return nil
  end

  function p.abandon(_, err)
    if p.gone then return end
    p.gone, p.gone_err = true, err or "the reader went away"
    chunks, first, last, p.size = {}, 1, 0, 0
    local w, r = writer, reader
    writer, reader = nil, nil
    wake(w)
    wake(r)
  end

  p.sink = function(chunk) return p:write(chunk) end
  p.producer = function() return p:read() end
  return p
end

return M
