-- Spec helper: a loopback HTTP server that serves one object body to every GET and breaks the
-- first response off after `cut` bytes (a connection reset mid-download, which a real server
-- cannot be told to do), then honours Range on the next request, or answers 412 when the
-- object is to have changed meanwhile. Used to check that stores resume broken downloads.
local fixture = require "tests.lua.http_fixture"

local M = {}

--- opts: body, cut, version_header ("ETag" or "x-goog-generation"), version, changed.
-- Returns the fixture server (srv.requests lists what arrived).
function M.start(opts)
  local served = 0
  return fixture.start(function(req, conn)
    served = served + 1
    local headers = { { opts.version_header, opts.version }, { "Last-Modified", "Sun, 30 Aug 2015 12:36:00 GMT" } }
    if served == 1 then
      local head = { "HTTP/1.1 200 OK", "Content-Length: " .. #opts.body }
      for _, h in ipairs(headers) do head[#head + 1] = h[1] .. ": " .. h[2] end
      conn:write(table.concat(head, "\r\n") .. "\r\n\r\n" .. opts.body:sub(1, opts.cut))
      return conn:reset()
    end
    if opts.changed then return conn:respond(412, {}, "") end
    local from = tonumber((req.headers.range or ""):match("^bytes=(%d+)%-$"))
    if not from then return conn:respond(200, headers, opts.body) end
    headers[#headers + 1] = { "Content-Range", ("bytes %d-%d/%d"):format(from, #opts.body - 1, #opts.body) }
    conn:respond(206, headers, opts.body:sub(from + 1))
  end)
end

return M
