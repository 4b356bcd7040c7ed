-- A small HTTP/1.1 server on luv for the HTTP client specs. It gives a test full control over
-- pacing, framing and failures (slow readers, resets, silence, chunked bodies), which a real
-- server cannot be told to do. Each connection runs in its own coroutine.
--
--   local srv = fixture.start(function(req, conn) ... end)
--   req = { method, target, path, query, headers (lower-case names), body (nil when
--           opts.stream_body: use conn:read_body_chunk()) }
--   conn:respond(status, headers, body)   conn:write(raw)   conn:close()   conn:reset()
--   srv.port, srv.url, srv.requests (every req seen), srv:close()
--   opts: stream_body, port (default: any free one)
local uv = require "luv"
local async = require "autopgo.async"

local M = {}

local Conn = {}
Conn.__index = Conn

-- Next piece of input: leftover bytes first, then one read from the socket; nil at EOF.
function Conn:read_some()
  if #self.buf > 0 then
    local b = self.buf
    self.buf = ""
    return b
  end
  if self.eof then return nil end
  local co = coroutine.running()
  local got
  self.tcp:read_start(function(err, data)
    self.tcp:read_stop()
    if err or not data then self.eof = true else got = data end
    async.resume(co)
  end)
  coroutine.yield()
  return got
end

function Conn:unread(data)
  self.buf = data .. self.buf
end

function Conn:read_until(marker)
  local acc = ""
  while true do
    local at = acc:find(marker, 1, true)
    if at then
      self:unread(acc:sub(at + #marker))
      return acc:sub(1, at - 1)
    end
    local more = self:read_some()
    if not more then return nil end
    acc = acc .. more
  end
end

function Conn:read_exact(n)
  local parts, got = {}, 0
  while got < n do
    local more = self:read_some()
    if not more then return nil end
    if got + #more > n then
      self:unread(more:sub(n - got + 1))
      more = more:sub(1, n - got)
    end
    parts[#parts + 1] = more
    got = got + #more
  end
  return table.concat(parts)
end

-- For opts.stream_body: the next piece of the request body, or nil at its end.
function Conn:read_body_chunk()
  local req = self.req
  if req.chunked then
    if req.done then return nil end
    local line = self:read_until("\r\n")
    local size = line and tonumber(line:match("^%x+"), 16)
    if not size then return nil end
    if size == 0 then
      self:read_until("\r\n")
      req.done = true
      return nil
    end
    local data = self:read_exact(size)
    self:read_until("\r\n")
    return data
  end
  if req.left <= 0 then return nil end
  local data = self:read_some()
  if not data then return nil end
  if #data > req.left then
    self:unread(data:sub(req.left + 1))
    data = data:sub(1, req.left)
  end
  req.left = req.left - #data
  return data
end

function Conn:read_body()
  local parts = {}
  for chunk in function() return self:read_body_chunk() end do parts[#parts + 1] = chunk end
  return table.concat(parts)
end

-- Writes and waits until the kernel took it (so a slow client slows the writer down).
function Conn:write(data)
  if self.closed then return false end
  local co = coroutine.running()
  local ok = true
  self.tcp:write(data, function(err)
    if err then ok = false end
    async.resume(co)
  end)
  coroutine.yield()
  return ok
end

local reasons = { [200] = "OK", [201] = "Created", [204] = "No Content", [301] = "Moved Permanently",
  [302] = "Found", [304] = "Not Modified", [400] = "Bad Request", [404] = "Not Found",
  [413] = "Payload Too Large", [500] = "Internal Server Error", [503] = "Service Unavailable" }

function Conn:respond(status, headers, body)
  body = body or ""
  local lines = { ("HTTP/1.1 %d %s"):format(status, reasons[status] or "Status") }
  local has_length = false
  for _, h in ipairs(headers or {}) do
    lines[#lines + 1] = h[1] .. ": " .. h[2]
    if h[1]:lower() == "content-length" then has_length = true end
  end
  if not has_length then lines[#lines + 1] = "Content-Length: " .. #body end
  return self:write(table.concat(lines, "\r\n") .. "\r\n\r\n" .. body)
end

function Conn:close()
  if self.closed then return end
  self.closed = true
  self.tcp:shutdown(function() if not self.tcp:is_closing() then self.tcp:close() end end)
end

-- Closes with a TCP reset (SO_LINGER 0 is not exposed by luv; closing with unread input
-- makes the kernel send RST, which is what a crashed peer looks like).
function Conn:reset()
  if self.closed then return end
  self.closed = true
  self.tcp:close()
end

local function parse_head(head)
  local first, rest = head:match("^([^\r\n]*)\r\n?(.*)$")
  first = first or head
  local method, target = first:match("^(%u+) (%S+) HTTP/1%.[01]$")
  if not method then return nil end
  local headers = {}
  for line in (rest or ""):gmatch("[^\r\n]+") do
    local k, v = line:match("^([^:]+):%s*(.-)%s*$")
    if k then
      k = k:lower()
      headers[k] = headers[k] and (headers[k] .. ", " .. v) or v
    end
  end
  local path, query = target:match("^([^?]*)%??(.*)$")
  return { method = method, target = target, path = path, query = query, headers = headers }
end

local function serve(srv, tcp)
  local conn = setmetatable({ tcp = tcp, buf = "", srv = srv }, Conn)
  srv.conns[conn] = true
  while not conn.closed do
    local head = conn:read_until("\r\n\r\n")
    if not head then break end
    local req = parse_head(head)
    if not req then
      conn:respond(400, nil, "bad request")
      break
    end
    conn.req = req
    req.chunked = (req.headers["transfer-encoding"] or ""):lower():find("chunked", 1, true) ~= nil
    req.left = tonumber(req.headers["content-length"] or "0") or 0
    srv.requests[#srv.requests + 1] = req
    if not srv.opts.stream_body then req.body = conn:read_body() end
    srv.handler(req, conn)
    if srv.opts.stream_body and not conn.closed then conn:read_body() end
  end
  conn:close()
  srv.conns[conn] = nil
end

--- Starts a server on 127.0.0.1 (a free port); handler(req, conn) runs in a coroutine per
-- request. opts.stream_body: do not read request bodies before calling the handler.
function M.start(handler, opts)
  local srv = { handler = handler, opts = opts or {}, requests = {}, conns = {} }
  local tcp = uv.new_tcp()
  assert(tcp:bind("127.0.0.1", srv.opts.port or 0))
  srv.port = tcp:getsockname().port
  srv.url = "http://127.0.0.1:" .. srv.port
  assert(tcp:listen(64, function(err)
    assert(not err, err)
    local client = uv.new_tcp()
    tcp:accept(client)
    async.spawn(serve, srv, client)
  end))
  function srv.close()
    if not tcp:is_closing() then tcp:close() end
    for conn in pairs(srv.conns) do conn:reset() end
  end
  return srv
end

return M
