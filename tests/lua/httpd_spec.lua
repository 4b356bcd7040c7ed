-- Specs of lua/autopgo/httpd.lua and the h2o server under it (core/http/server.c): requests,
-- bodies, limits, streaming, errors, routing, keep-alive and graceful close, over real sockets.
local support = require "tests.lua.support"
local httpc = require "tests.lua.httpc"
local httpd = require "autopgo.httpd"
local async = require "autopgo.async"
local json = require "autopgo.json"
local crypto = require("autopgo.core").crypto

local run = support.run

local function listen(handler, opts)
  opts = opts or {}
  opts.host, opts.port, opts.handler = "127.0.0.1", 0, handler
  return assert(httpd.listen(opts))
end

describe("httpd", function()
  it("gives the handler the method, path, query, headers and peer", function()
    run(function()
      local seen
      local srv = listen(function(req, res)
        seen = req
        res:json(200, json.object("ok", true))
      end)
      local r = httpc.request(srv.port, "GET", "/a%20b/c?x=1&y=two+words&x=3", { headers = { ["X-Thing"] = "v" } })
      assert.equals(200, r.status)
      assert.equals('{"ok":true}\n', r.body)
      assert.equals("application/json", r.headers["content-type"])
      assert.equals("12", r.headers["content-length"])
      assert.is_nil(r.headers.server)
      assert.equals("GET", seen.method)
      assert.equals("/a%20b/c", seen.raw_path)
      assert.equals("/a b/c", seen.path)
      assert.equals("3", seen.query.x)
      assert.equals("two words", seen.query.y)
      assert.equals("v", seen.headers["x-thing"])
      assert.equals("v", seen:header("X-Thing"))
      assert.equals("127.0.0.1", seen.headers.host)
      assert.matches("^127%.0%.0%.1:%d+$", seen.peer)
      srv:shutdown()
    end)
  end)

  it("hands over binary bodies whole and piece by piece", function()
    run(function()
      local body = crypto.random(50000) .. "\0\0end"
      local whole, pieces, sizes = nil, {}, {}
      local srv = listen(function(req, res)
        whole = req:body()
        for chunk in function() return req:read(4096) end do
          pieces[#pieces + 1] = chunk
          sizes[#sizes + 1] = #chunk
        end
        res:send("got " .. req.body_size)
      end)
      local r = httpc.request(srv.port, "POST", "/up", { body = body })
      assert.equals(200, r.status)
      assert.equals("got " .. #body, r.body)
      assert.equals(body, whole)
      assert.equals(body, table.concat(pieces))
      assert.equals(4096, sizes[1])
      assert.is_true(#pieces > 10)
      srv:shutdown()
    end)
  end)

  it("refuses bodies over max_body with a JSON 413, whatever the framing, without calling the handler", function()
    run(function()
      local calls = 0
      local srv = listen(function(_, res)
        calls = calls + 1
        res:send("ok")
      end, { max_body = 1000 })
      local big = ("x"):rep(5000)
      local want = '{"message":"request body is larger than the limit of 1000 bytes","code":413}\n'
      for _, headers in ipairs {
        {},
        { { "Expect", "100-continue" }, { "Content-Length", "5000" } },
        { { "Transfer-Encoding", "chunked" } },
      } do
        local body = big
        if headers[1] and headers[1][1] == "Transfer-Encoding" then
          body = ("%x\r\n%s\r\n0\r\n\r\n"):format(#big, big)
        end
        local r = httpc.request(srv.port, "POST", "/up", { headers = headers, body = body })
        assert.equals(413, r.status)
        assert.equals("application/json", r.headers["content-type"])
        assert.equals(want, r.body)
      end
      local r = httpc.request(srv.port, "POST", "/up", { body = ("y"):rep(1000) })
      assert.equals(200, r.status)
      assert.equals(1, calls)
      srv:shutdown()
    end)
  end)

  it("answers 413 from the headers alone: a Content-Length over max_body, no body sent", function()
    run(function()
      local calls = 0
      local srv = listen(function(_, res)
        calls = calls + 1
        res:send("ok")
      end, { max_body = 1000 })
      local c = httpc.connect(srv.port)
      -- announces 100 MB and sends none of it: the answer cannot wait for the body
      c:send("POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n")
      local r = assert(c:read_response(5000))
      assert.equals(413, r.status)
      assert.equals('{"message":"request body is larger than the limit of 1000 bytes","code":413}\n', r.body)
      assert.equals(0, calls)
      c:close()
      srv:shutdown()
    end)
  end)

  it("keeps bodies over 32 MiB in its spool directory, not in /tmp", function()
    run(function()
      local uv = require "luv"
      local dir = support.tmpdir()
      local spool = dir .. "/data/.autopgo/tmp"
      -- the files h2o has open for this request's body (it unlinks them at once)
      local function spooled()
        local out = {}
        local req = assert(uv.fs_scandir("/proc/self/fd"))
        for name in uv.fs_scandir_next, req do
          local target = uv.fs_readlink("/proc/self/fd/" .. name)
          if target and target:find("h2o.b.", 1, true) then out[#out + 1] = target end
        end
        return out
      end
      local seen
      local size = 33 * 1024 * 1024 + 5
      local srv = listen(function(req, res)
        seen = spooled()
        res:send(tostring(req.body_size))
      end, { max_body = 40 * 1024 * 1024, spool_dir = spool })
      local r = httpc.request(srv.port, "POST", "/up", { body = ("z"):rep(size) })
      assert.equals(200, r.status)
      assert.equals(tostring(size), r.body)
      assert.is_true(#seen >= 1, "the body was spooled to a file")
      for _, target in ipairs(seen) do
        assert.equals(spool .. "/h2o.b.", target:sub(1, #spool + 7), target)
      end
      local left = assert(uv.fs_scandir(spool))
      assert.is_nil(uv.fs_scandir_next(left), "nothing is left in the spool directory")
      srv:shutdown()
      support.rm_rf(dir)
    end)
  end)

  it("streams a response in pieces with chunked encoding, or with a Content-Length when set", function()
    run(function()
      local piece = ("0123456789"):rep(1000)
      local srv = listen(function(req, res)
        res:header("content-type", "text/plain")
        if req.query.length then res:header("content-length", #piece * 50) end
        for _ = 1, 50 do assert(res:write(piece)) end
        assert(res:finish())
      end)
      local r = httpc.request(srv.port, "GET", "/stream")
      assert.equals(200, r.status)
      assert.equals("chunked", r.headers["transfer-encoding"])
      assert.equals(piece:rep(50), r.body)
      r = httpc.request(srv.port, "GET", "/stream?length=1")
      assert.equals(tostring(#piece * 50), r.headers["content-length"])
      assert.is_nil(r.headers["transfer-encoding"])
      assert.equals(piece:rep(50), r.body)
      srv:shutdown()
    end)
  end)

  it("tells a writer when the client went away instead of failing the process", function()
    run(function()
      local outcome = async.event()
      local srv = listen(function(_, res)
        local piece = ("z"):rep(256 * 1024)
        for _ = 1, 400 do
          local ok, err, code = res:write(piece)
          if not ok then return outcome.set(err, code) end
        end
        outcome.set("all written")
      end)
      local c = httpc.connect(srv.port)
      c:send(httpc.format("GET", "/big"))
      c:wait_for(function(b) return #b > 1000 end)
      c:close()
      local err, code = outcome.wait(10000)
      assert.equals("CLOSED", code)
      assert.matches("^CLOSED: ", err)
      srv:shutdown()
    end)
  end)

  it("answers HEAD with the headers a GET would get and no body", function()
    run(function()
      local srv = listen(function(req, res)
        res:header("content-type", "text/plain")
        if req.path == "/stream" then
          for _ = 1, 3 do res:write("12345") end
          return res:finish("!")
        end
        res:send("hello body")
      end)
      local c = httpc.connect(srv.port)
      c.head_only = true
      c:send("HEAD /whole HTTP/1.1\r\nHost: x\r\n\r\nHEAD /stream HTTP/1.1\r\nHost: x\r\n\r\n")
      local a = c:read_response()
      local b = c:read_response()
      assert.equals("10", a.headers["content-length"])
      assert.equals("16", b.headers["content-length"])
      c.head_only = false
      c:send("GET /whole HTTP/1.1\r\nHost: x\r\n\r\n")
      local g = c:read_response()
      assert.equals("hello body", g.body)
      c:close()
      srv:shutdown()
    end)
  end)

  it("answers 500 with a JSON body when the handler fails or forgets to answer", function()
    run(function()
      local srv = listen(function(req, res)
        if req.path == "/boom" then error("kaboom") end
        if req.path == "/silent" then return end
        res:send("fine")
      end)
      for _, path in ipairs { "/boom", "/silent" } do
        local r = httpc.request(srv.port, "GET", path)
        assert.equals(500, r.status)
        assert.equals('{"message":"internal server error","code":500}\n', r.body)
      end
      assert.equals("fine", httpc.request(srv.port, "GET", "/ok").body)
      srv:shutdown()
    end)
  end)

  it("serves several requests on one keep-alive connection", function()
    run(function()
      local srv = listen(function(req, res) res:send(req.path) end)
      local c = httpc.connect(srv.port)
      for i = 1, 3 do
        c:send(httpc.format("GET", "/n" .. i))
        local r = c:read_response()
        assert.equals("/n" .. i, r.body)
        assert.equals("keep-alive", r.headers.connection:lower())
      end
      c:close()
      srv:shutdown()
    end)
  end)

  it("sends a file with the headers the handler set", function()
    run(function()
      local dir = support.tmpdir()
      local data = crypto.random(50000):rep(4)
      local path = support.write_file(dir .. "/f.bin", data)
      local srv = listen(function(_, res)
        res:header("etag", '"abc"')
        assert(res:send_file(path, "application/x-gzip"))
      end)
      local r = httpc.request(srv.port, "GET", "/file")
      assert.equals(200, r.status)
      assert.equals(data, r.body)
      assert.equals('"abc"', r.headers.etag)
      assert.equals("application/x-gzip", r.headers["content-type"])
      srv:shutdown()
      support.rm_rf(dir)
    end)
  end)

  it("reports a port in use as a LISTEN failure", function()
    run(function()
      local srv = listen(function(_, res) res:send("") end)
      local other, err, code = httpd.listen { host = "127.0.0.1", port = srv.port, handler = function() end }
      assert.is_nil(other)
      assert.equals("LISTEN", code)
      assert.matches("address already in use", err)
      srv:shutdown()
    end)
  end)

  describe("close", function()
    it("finishes requests in flight, refuses new connections and closes idle ones", function()
      run(function()
        local release = async.event()
        local entered = async.event()
        local srv = listen(function(req, res)
          if req.path == "/slow" then
            entered.set()
            release.wait()
          end
          res:send("done " .. req.path)
        end)
        local idle = httpc.connect(srv.port)
        idle:send(httpc.format("GET", "/first"))
        assert.equals("done /first", idle:read_response().body)

        local slow = httpc.connect(srv.port)
        slow:send(httpc.format("GET", "/slow"))
        entered.wait(5000)
        local closed = async.event()
        srv:close(function() closed.set() end)
        assert.is_true(idle:wait_closed(5000), "the idle keep-alive connection was not closed")
        local refused = pcall(httpc.connect, srv.port)
        assert.is_false(refused)
        assert.is_false(closed.is_set)

        release.set()
        local r = slow:read_response()
        assert.equals(200, r.status)
        assert.equals("done /slow", r.body)
        assert.equals("close", r.headers.connection:lower())
        assert.is_true(closed.wait(5000))
        slow:close()
        idle:close()
      end)
    end)

    it("waits for an upload whose body is still arriving", function()
      run(function()
        local srv = listen(function(req, res) res:send("got " .. #req:body()) end)
        local c = httpc.connect(srv.port)
        local body = ("b"):rep(10000)
        local req = httpc.format("POST", "/up", nil, body)
        c:send(req:sub(1, #req - 5000))
        -- the server has started reading this request before it is asked to stop
        async.sleep(50)
        local closed = async.event()
        srv:close(function() closed.set() end)
        async.sleep(100)
        assert.is_false(closed.is_set)
        c:send(req:sub(#req - 4999))
        local r = c:read_response()
        assert.equals("got 10000", r.body)
        assert.is_true(closed.wait(5000))
        c:close()
      end)
    end)
  end)
end)

describe("httpd.router", function()
  local function serve()
    local router = httpd.router()
    router:add("GET", "/api/profile/{app}", function(req, res) res:send("get " .. req.params.app) end)
    router:add("POST", "/api/profile/{app}", function(req, res) res:send("post " .. req.params.app) end)
    router:add("GET", "/api/profile", function(_, res) res:send("list") end)
    return listen(router)
  end

  it("dispatches by method and pattern with decoded parameters", function()
    run(function()
      local srv = serve()
      assert.equals("get my-app", httpc.request(srv.port, "GET", "/api/profile/my-app").body)
      assert.equals("post a/b", httpc.request(srv.port, "POST", "/api/profile/a%2Fb", { body = "" }).body)
      assert.equals("get ", httpc.request(srv.port, "GET", "/api/profile/").body)
      assert.equals("list", httpc.request(srv.port, "GET", "/api/profile").body)
      srv:shutdown()
    end)
  end)

  it("answers 404 and 405 like Go's ServeMux", function()
    run(function()
      local srv = serve()
      local r = httpc.request(srv.port, "GET", "/nope")
      assert.equals(404, r.status)
      assert.equals("404 page not found\n", r.body)
      assert.equals("text/plain; charset=utf-8", r.headers["content-type"])
      r = httpc.request(srv.port, "PUT", "/api/profile/x", { body = "" })
      assert.equals(405, r.status)
      assert.equals("Method Not Allowed\n", r.body)
      assert.equals("GET, HEAD, POST", r.headers.allow)
      srv:shutdown()
    end)
  end)
end)
