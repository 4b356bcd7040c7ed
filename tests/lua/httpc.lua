-- A raw HTTP/1.1 client for specs, over luv TCP: full control of what goes on the wire (partial
-- bodies, keep-alive, pipelining, Expect) and a parsed response (status, headers, body).
local uv = require "luv"
local async = require "autopgo.async"

local M = {}

local Conn = {}
Conn.__index = Conn

--- Connects to 127.0.0.1:port (inside a coroutine). Returns a connection or raises.
function M.connect(port, host)
  local tcp = uv.new_tcp()
  local _, err = async.await(function(cb) tcp:connect(host or "127.0.0.1", port, cb) end)
  if err then
    tcp:close()
    error("connect: " .. tostring(err))
  end
  local c = setmetatable({ tcp = tcp, buf = "", eof = false, waiter = nil }, Conn)
  tcp:read_start(function(rerr, data)
    if rerr or not data then
      c.eof = true
    else
      c.buf = c.buf .. data
    end
    local w = c.waiter
    c.waiter = nil
    if w then async.resume(w) end
  end)
  return c
end

function Conn:send(data)
  local _, err = async.await(function(cb) self.tcp:write(data, cb) end)
  if err then error("write: " .. tostring(err)) end
end

-- Waits until pred(buf) is true or the connection ends; returns whether pred held.
function Conn:wait_for(pred, timeout_ms)
  local deadline = uv.now() + (timeout_ms or 10000)
  while not pred(self.buf) do
    if self.eof then return false end
    local co = coroutine.running()
    self.waiter = co
    local timer = uv.new_timer()
    timer:start(math.max(1, deadline - uv.now()), 0, function()
      if self.waiter == co then
        self.waiter = nil
        async.resume(co)
      end
    end)
    coroutine.yield()
    timer:close()
    if uv.now() >= deadline and not pred(self.buf) then error("httpc: timed out waiting for the response") end
  end
  return true
end

--- Reads one response. Returns { status, reason, headers (lower-case names), body, raw } or nil
-- when the connection closed before a response started.
function Conn:read_response(timeout_ms)
  local ok = self:wait_for(function(b) return b:find("\r\n\r\n", 1, true) ~= nil end, timeout_ms)
  if not ok then return nil, "closed" end
  local head_end = self.buf:find("\r\n\r\n", 1, true)
  local head = self.buf:sub(1, head_end - 1)
  self.buf = self.buf:sub(head_end + 4)
  local status, reason = head:match("^HTTP/1%.%d (%d%d%d) ?([^\r]*)")
  local res = { status = tonumber(status), reason = reason, headers = {}, head = head }
  for line in head:gmatch("\r\n([^\r]+)") do
    local k, v = line:match("^([^:]+):%s*(.*)$")
    if k then
      k = k:lower()
      res.headers[k] = res.headers[k] and (res.headers[k] .. ", " .. v) or v
    end
  end
  if res.status == 100 then return self:read_response(timeout_ms) end
  if res.status == 304 or res.status == 204 or self.head_only then
    res.body = ""
  elseif res.headers["content-length"] then
    local n = tonumber(res.headers["content-length"])
    self:wait_for(function(b) return #b >= n end, timeout_ms)
    res.body = self.buf:sub(1, n)
    self.buf = self.buf:sub(n + 1)
  elseif (res.headers["transfer-encoding"] or ""):lower():find("chunked") then
    local parts = {}
    while true do
      self:wait_for(function(b) return b:find("\r\n", 1, true) ~= nil end, timeout_ms)
      local line_end = self.buf:find("\r\n", 1, true)
      local size = tonumber(self.buf:sub(1, line_end - 1):match("^%x+"), 16)
      self:wait_for(function(b) return #b >= line_end + 1 + size + 2 end, timeout_ms)
      parts[#parts + 1] = self.buf:sub(line_end + 2, line_end + 1 + size)
      self.buf = self.buf:sub(line_end + 2 + size + 2)
      if size == 0 then break end
    end
    res.body = table.concat(parts)
  else
    self:wait_for(function() return false end, timeout_ms)
    res.body = self.buf
    self.buf = ""
  end
  return res
end

--- Waits until the server closes the connection; returns true, or false on timeout.
function Conn:wait_closed(timeout_ms)
  local ok = pcall(self.wait_for, self, function() return false end, timeout_ms)
  return ok and self.eof
end

function Conn:close()
  if not self.tcp:is_closing() then self.tcp:close() end
end

--- Formats a request. headers: map or list of { name, value }.
function M.format(method, path, headers, body)
  local lines = { ("%s %s HTTP/1.1"):format(method, path) }
  local has_length, has_host = false, false
  local function add(k, v)
    if k:lower() == "content-length" or k:lower() == "transfer-encoding" then has_length = true end
    if k:lower() == "host" then has_host = true end
    lines[#lines + 1] = k .. ": " .. v
  end
  if headers then
    if headers[1] then
      for _, h in ipairs(headers) do add(h[1], h[2]) end
    else
      for k, v in pairs(headers) do add(k, v) end
    end
  end
  -- Host: 127.0.0.1 unless the headers name one
  if not has_host then table.insert(lines, 2, "Host: 127.0.0.1") end
  if body and not has_length then lines[#lines + 1] = "Content-Length: " .. #body end
  return table.concat(lines, "\r\n") .. "\r\n\r\n" .. (body or "")
end

--- One request on a fresh connection (closed afterwards). Returns the parsed response.
function M.request(port, method, path, opts)
  opts = opts or {}
  local c = M.connect(port)
  c.head_only = method == "HEAD"
  c:send(M.format(method, path, opts.headers, opts.body))
  local res = c:read_response(opts.timeout)
  c:close()
  return res
end

return M
