-- Specs of the h2o server's defences (core/http/server.c through lua/autopgo/httpd.lua), over raw
-- sockets: ambiguous framing (two Content-Lengths, Transfer-Encoding with Content-Length) answered
-- 400 with the connection closed, the connection cap, the budget of buffered request bytes (503
-- with Retry-After before more is buffered), slow clients cut off, and bodies handed to C in place.
local support = require "tests.lua.support"
local httpc = require "tests.lua.httpc"
local httpd = require "autopgo.httpd"
local async = require "autopgo.async"
local pprof = require("autopgo.core").pprof

local run = support.run

local function listen(handler, opts)
  opts = opts or {}
  opts.host, opts.port, opts.handler = "127.0.0.1", 0, handler
  return assert(httpd.listen(opts))
end

-- Everything the server sends on one connection until it closes it (fails if it does not).
local function until_closed(c, timeout_ms)
  c:wait_for(function() return false end, timeout_ms or 5000)
  assert.is_true(c.eof, "the server kept the connection open")
  return c.buf
end

local function count(text, pattern)
  local n = 0
  for _ in text:gmatch(pattern) do n = n + 1 end
  return n
end

describe("httpd framing (RFC 9112 section 6.3)", function()
  local srv, seen
  before_each(function()
    seen = {}
    srv = listen(function(req, res)
      seen[#seen + 1] = req.method .. " " .. req.path .. " " .. req.body_size
      res:send("handled\n")
    end)
  end)
  after_each(function() run(function() srv:shutdown() end) end)

  it("answers two different Content-Lengths with 400 and closes: the rest is never a request", function()
    run(function()
      local c = httpc.connect(srv.port)
      -- h2o alone takes the first length and serves "GET /smuggled" as a second request
      c:send("POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 33\r\n\r\n" ..
        "helloGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n")
      local out = until_closed(c)
      assert.matches("^HTTP/1.1 400 ", out)
      assert.matches('"message":"a request with differing Content%-Length values is refused"', out)
      assert.matches("[Cc]onnection: close", out)
      assert.equals(1, count(out, "HTTP/1.1 %d%d%d"))
      assert.same({}, seen)
      assert.equals(1, srv:stats().bad_framing)
    end)
  end)

  it("answers Transfer-Encoding with Content-Length with 400 and closes", function()
    run(function()
      local c = httpc.connect(srv.port)
      c:send("POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n" ..
        "5\r\nhello\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n")
      local out = until_closed(c)
      assert.matches("^HTTP/1.1 400 ", out)
      assert.matches("Transfer%-Encoding and Content%-Length", out)
      assert.equals(1, count(out, "HTTP/1.1 %d%d%d"))
      assert.same({}, seen)
    end)
  end)

  it("also when the lengths differ inside one comma-separated header", function()
    run(function()
      local c = httpc.connect(srv.port)
      c:send("POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 6\r\n\r\nhello!")
      assert.matches("^HTTP/1.1 400 ", until_closed(c))
      assert.same({}, seen)
    end)
  end)

  it("serves repeated identical lengths, and chunked or plain bodies, as before", function()
    run(function()
      local c = httpc.connect(srv.port)
      c:send("POST /same HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello")
      local r = c:read_response()
      assert.equals(200, r.status)
      c:send("POST /chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
      assert.equals(200, c:read_response().status)
      c:send("GET /plain HTTP/1.1\r\nHost: x\r\n\r\n")
      assert.equals(200, c:read_response().status)
      c:close()
      assert.same({ "POST /same 5", "POST /chunked 5", "GET /plain 0" }, seen)
    end)
  end)
end)

describe("httpd limits", function()
  it("closes connections past max_connections at once and serves again below it", function()
    run(function()
      local srv = listen(function(_, res) res:send("ok") end, { max_connections = 3 })
      local held = {}
      for i = 1, 3 do
        held[i] = httpc.connect(srv.port)
        held[i]:send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert.equals(200, held[i]:read_response().status)
      end
      local extra = httpc.connect(srv.port)
      until_closed(extra)
      assert.equals(1, srv:stats().refused_connections)
      held[1]:close()
      local r
      for _ = 1, 100 do -- until the server has seen the close
        local ok, res = pcall(httpc.request, srv.port, "GET", "/")
        if ok and res then r = res break end
        async.sleep(20)
      end
      assert.equals(200, r and r.status)
      for i = 2, 3 do held[i]:close() end
      srv:shutdown()
    end)
  end)

  it("answers a body that would go past max_buffered with 503 and Retry-After before buffering it", function()
    run(function()
      local handled = 0
      local srv = listen(function(_, res)
        handled = handled + 1
        res:send("ok")
      end, { max_buffered = 1024 * 1024, max_body = 64 * 1024 * 1024 })
      local big = httpc.connect(srv.port)
      big:send("POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: 16777216\r\n\r\n")
      local chunk = string.rep("x", 64 * 1024)
      -- 2 MiB of the announced 16 MiB, then a stall: the server must not wait for the rest
      for _ = 1, 32 do
        if big.eof then break end
        pcall(big.send, big, chunk)
      end
      local out = until_closed(big)
      assert.matches("^HTTP/1.1 503 ", out)
      assert.matches("Retry%-After: %d+", out)
      assert.matches('"code":503', out)
      assert.equals(0, handled)
      assert.equals(1, srv:stats().over_budget)
      -- small requests are still served
      local r = httpc.request(srv.port, "POST", "/small", { body = string.rep("y", 1000) })
      assert.equals(200, r.status)
      srv:shutdown()
    end)
  end)

  it("cuts off a client that stops sending its body after request_timeout", function()
    run(function()
      local srv = listen(function(_, res) res:send("ok") end, { request_timeout = 0.3 })
      local c = httpc.connect(srv.port)
      c:send("POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nonly a little")
      until_closed(c, 5000)
      srv:shutdown()
    end)
  end)

  it("hands the body of an HTTP/1.1 request to C as autopgo.bytes (no copy into Lua)", function()
    run(function()
      local profile = support.read_file(support.testdata .. "/goapp-cpu-1.pb.gz")
      local got, in_place
      local srv = listen(function(req, res)
        local bytes = req:body_bytes()
        in_place = require("autopgo.core").bytes.is(bytes)
        got = assert(async.await(pprof.validate_async, bytes, nil))
        res:send("ok")
      end)
      local r = httpc.request(srv.port, "POST", "/p", { body = profile })
      assert.equals(200, r.status)
      assert.is_true(in_place)
      assert.equals(#profile, got.size)
      srv:shutdown()
    end)
  end)
end)
