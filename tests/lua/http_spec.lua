-- Specs for lua/autopgo/http.lua and the C client under it (core/http_client, core/lua/
-- http_client.c): bodies from strings, files and producers, buffered and streamed responses,
-- flow control both ways, every failure code, cancellation and cleanup.
local uv = require "luv"
local async = require "autopgo.async"
local http = require "autopgo.http"
local support = require "tests.lua.support"
local fixture = require "tests.lua.http_fixture"

local run = support.run

-- Waits (yielding to the loop) until fn() is true; fails after `ms`.
local function wait_for(fn, ms, what)
  local deadline = uv.now() + (ms or 10000)
  while not fn() do
    if uv.now() > deadline then error("timed out waiting for " .. (what or "a condition"), 2) end
    async.sleep(10)
  end
end

-- Waits until fn() stops changing for a few polls (the peer has nothing more to do).
local function wait_stable(fn)
  local last, same = fn(), 0
  while same < 5 do
    async.sleep(40)
    local v = fn()
    if v == last then same = same + 1 else last, same = v, 0 end
  end
  return last
end

local function echo(req, conn)
  local hdrs = {}
  for k, v in pairs(req.headers) do hdrs[#hdrs + 1] = k .. "=" .. v end
  table.sort(hdrs)
  conn:respond(200, { { "X-Method", req.method }, { "X-Target", req.target },
    { "X-Headers", table.concat(hdrs, "|") } }, req.body)
end

describe("autopgo.http", function()
  local srv, dir
  before_each(function() dir = support.tmpdir() end)
  after_each(function()
    if srv then srv.close() end
    srv = nil
    support.rm_rf(dir)
  end)

  it("buffers a response: status, lower-case headers with repeats joined, body", function()
    srv = fixture.start(function(_, conn)
      conn:respond(200, { { "Content-Type", "text/plain" }, { "X-Multi", "a" }, { "X-Multi", "b" } }, "hello")
    end)
    run(function()
      local res = assert(http.request { url = srv.url .. "/x?y=1" })
      assert.equals(200, res.status)
      assert.equals("hello", res.body)
      assert.equals("text/plain", res.headers["content-type"])
      assert.equals("a, b", res.headers["x-multi"])
      assert.equals("5", res.headers["content-length"])
      assert.equals("/x?y=1", srv.requests[1].target)
      assert.equals(0, http.active())
    end)
  end)

  it("returns any HTTP status as a response, not an error", function()
    srv = fixture.start(function(_, conn) conn:respond(503, nil, '{"message":"down"}') end)
    run(function()
      local res, err = http.request { url = srv.url .. "/" }
      assert.is_nil(err)
      assert.equals(503, res.status)
      assert.equals('{"message":"down"}', res.body)
    end)
  end)

  it("sends the method, headers (names case-insensitive) and a user agent", function()
    srv = fixture.start(echo)
    run(function()
      local res = assert(http.request { method = "delete", url = srv.url .. "/a/b",
        headers = { ["X-Token"] = "t1", ["content-type"] = "application/json", ["X-Num"] = 7 } })
      assert.equals("DELETE", res.headers["x-method"])
      local seen = srv.requests[1].headers
      assert.equals("t1", seen["x-token"])
      assert.equals("application/json", seen["content-type"])
      assert.equals("7", seen["x-num"])
      assert.matches("^autopgo/", seen["user-agent"])
      assert.is_nil(seen["expect"])
      res = assert(http.request { method = "HEAD", url = srv.url .. "/h", headers = { ["User-Agent"] = "me" } })
      assert.equals(200, res.status)
      assert.equals("me", srv.requests[2].headers["user-agent"])
      assert.equals("HEAD", srv.requests[2].method)
    end)
  end)

  it("goes through a proxy when given one; tls_server_name leaves plain http alone", function()
    srv = fixture.start(echo)
    run(function()
      -- the fixture plays the proxy: it sees the absolute URI a client sends a proxy
      local res = assert(http.request { url = "http://autopgo.invalid:8080/via?x=1", proxy = srv.url })
      assert.equals(200, res.status)
      assert.equals("http://autopgo.invalid:8080/via?x=1", srv.requests[1].target)
      assert.equals("autopgo.invalid:8080", srv.requests[1].headers.host)
      res = assert(http.request { url = srv.url .. "/plain", tls_server_name = "api.cluster.internal" })
      assert.equals(200, res.status)
      assert.equals("/plain", srv.requests[2].target)
      assert.equals(srv.url:gsub("^http://", ""), srv.requests[2].headers.host)
    end)
  end)

  it("sends a string body with its length, for any method", function()
    srv = fixture.start(echo)
    run(function()
      for _, m in ipairs { "POST", "PUT", "PATCH" } do
        local res = assert(http.request { method = m, url = srv.url .. "/p", body = "payload-" .. m })
        assert.equals(m, res.headers["x-method"])
        assert.equals("payload-" .. m, res.body)
      end
      assert.equals(tostring(#"payload-POST"), srv.requests[1].headers["content-length"])
      local res = assert(http.request { method = "POST", url = srv.url .. "/empty", body = "" })
      assert.equals("", res.body)
      assert.equals("0", srv.requests[4].headers["content-length"])
    end)
  end)

  it("streams a file body with Content-Length set to the file size", function()
    srv = fixture.start(echo)
    local data = {}
    for i = 1, 50000 do data[i] = ("%07d\n"):format(i) end
    data = table.concat(data)
    local path = support.write_file(dir .. "/body.bin", data)
    run(function()
      local res = assert(http.request { method = "PUT", url = srv.url .. "/f", body_path = path })
      assert.equals(#data, #res.body)
      assert.is_true(res.body == data)
      assert.equals(tostring(#data), srv.requests[1].headers["content-length"])
      local _, err, code = http.request { method = "PUT", url = srv.url .. "/f", body_path = dir .. "/missing" }
      assert.equals("INVALID", code)
      assert.matches("missing", err)
    end)
  end)

  it("streams a producer's body chunked, or with body_length, letting the producer yield", function()
    srv = fixture.start(echo)
    run(function()
      local parts = { "alpha-", "", "beta-", "gamma" }
      local i = 0
      local function producer()
        async.sleep(5)
        i = i + 1
        return parts[i]
      end
      local res = assert(http.request { method = "POST", url = srv.url .. "/c", body_producer = producer })
      assert.equals("alpha-beta-gamma", res.body)
      assert.equals("chunked", srv.requests[1].headers["transfer-encoding"])
      i = 0
      res = assert(http.request { method = "POST", url = srv.url .. "/l", body_producer = producer,
        body_length = #"alpha-beta-gamma" })
      assert.equals("alpha-beta-gamma", res.body)
      assert.equals("16", srv.requests[2].headers["content-length"])
      assert.is_nil(srv.requests[2].headers["transfer-encoding"])
    end)
  end)

  it("aborts the request when the producer fails, and re-raises a producer error", function()
    srv = fixture.start(echo, { stream_body = true })
    run(function()
      local n = 0
      local _, err, code = http.request { method = "POST", url = srv.url .. "/a", body_producer = function()
        n = n + 1
        if n == 1 then return "first" end
        return nil, "source went away"
      end }
      assert.equals("CANCELED", code)
      assert.matches("source went away", err)
      local ok, raised = pcall(http.request, { method = "POST", url = srv.url .. "/b",
        body_producer = function() error("producer bug") end })
      assert.is_false(ok)
      assert.matches("producer bug", raised)
      assert.equals(0, http.active())
    end)
  end)

  it("streams a response to a sink in order, with status and headers known to the sink", function()
    local body = {}
    for i = 1, 200000 do body[i] = string.char(i % 251) end
    body = table.concat(body):rep(5)
    srv = fixture.start(function(_, conn)
      conn:write(("HTTP/1.1 201 Created\r\nX-A: b\r\nContent-Length: %d\r\n\r\n"):format(#body))
      for i = 1, #body, 7000 do conn:write(body:sub(i, i + 6999)) end
    end)
    run(function()
      local got, statuses = {}, {}
      local res = assert(http.request { url = srv.url .. "/s", sink = function(chunk, r)
        got[#got + 1] = chunk
        statuses[r.status] = r.headers["x-a"]
        if #got % 10 == 0 then async.sleep(1) end
      end })
      assert.equals(201, res.status)
      assert.is_nil(res.body)
      assert.same({ [201] = "b" }, statuses)
      assert.is_true(table.concat(got) == body)
    end)
  end)

  it("stops a transfer when the sink returns false, and re-raises a sink error", function()
    srv = fixture.start(function(_, conn)
      conn:write("HTTP/1.1 200 OK\r\nContent-Length: 10000000\r\n\r\n")
      local chunk = ("x"):rep(65536)
      while conn:write(chunk) do end
    end)
    run(function()
      local _, err, code = http.request { url = srv.url .. "/", sink = function() return false, "enough" end }
      assert.equals("CANCELED", code)
      assert.equals("CANCELED: enough", err)
      _, err = http.request { url = srv.url .. "/", sink = function() return nil, "disk full" end }
      assert.equals("CANCELED: disk full", err)
      local ok, raised = pcall(http.request, { url = srv.url .. "/", sink = function() error("sink bug") end })
      assert.is_false(ok)
      assert.matches("sink bug", raised)
      assert.equals(0, http.active())
    end)
  end)

  it("pauses the download while the sink waits (the sender stalls), then resumes", function()
    local total = 64 * 1024 * 1024
    local sent = 0
    srv = fixture.start(function(_, conn)
      conn:write(("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n"):format(total))
      local chunk = ("z"):rep(256 * 1024)
      while sent < total and conn:write(chunk) do sent = sent + #chunk end
    end)
    run(function()
      local gate = async.event()
      local received = 0
      local task_done = async.event()
      async.spawn(function()
        local res = assert(http.request { url = srv.url .. "/big", sink = function(chunk)
          received = received + #chunk
          gate.wait()
        end })
        task_done.set(res)
      end)
      wait_for(function() return received > 0 end)
      local stalled_at = wait_stable(function() return sent end)
      -- Only the kernel's socket buffers and one small client buffer hold unread data.
      assert.is_true(stalled_at < total / 2, ("the sender got %d of %d bytes out"):format(stalled_at, total))
      gate.set()
      local res = task_done.wait()
      assert.equals(200, res.status)
      assert.equals(total, received)
    end, 120000)
  end)

  it("joins a download to an upload through a bounded pipe (slow receiver)", function()
    local total = 24 * 1024 * 1024
    local source = fixture.start(function(_, conn)
      conn:write(("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n"):format(total))
      local chunk = {}
      for i = 1, 65536 do chunk[i] = string.char((i * 7) % 256) end
      chunk = table.concat(chunk)
      local sent = 0
      while sent < total and conn:write(chunk) do sent = sent + #chunk end
    end)
    local received, digest = 0, nil
    srv = fixture.start(function(_, conn)
      local h = require("autopgo.core").crypto.hasher("sha256")
      for chunk in function() return conn:read_body_chunk() end do
        received = received + #chunk
        h:update(chunk)
        if received % (4 * 1024 * 1024) < #chunk then async.sleep(20) end -- a slow reader
      end
      digest = h:digest()
      conn:respond(201, nil, "stored")
    end, { stream_body = true })
    run(function()
      local pipe = http.pipe(128 * 1024)
      local max_size = 0
      local sink = function(chunk)
        local ok, err = pipe:write(chunk)
        max_size = math.max(max_size, pipe.size)
        return ok, err
      end
      local results = async.all {
        function()
          local res, err = http.request { url = source.url .. "/p", sink = sink }
          pipe:close(err)
          return res, err
        end,
        function()
          local res, err = http.request { method = "POST", url = srv.url .. "/u", body_producer = pipe.producer }
          pipe:abandon(err)
          return res, err
        end,
      }
      assert.equals(200, results[1][2].status)
      assert.equals(201, results[2][2].status)
      assert.equals(total, received)
      local h = require("autopgo.core").crypto.hasher("sha256")
      local chunk = {}
      for i = 1, 65536 do chunk[i] = string.char((i * 7) % 256) end
      chunk = table.concat(chunk)
      for _ = 1, total / #chunk do h:update(chunk) end
      assert.is_true(h:digest() == digest)
      assert.is_true(max_size <= 128 * 1024 + 64 * 1024, "pipe held " .. max_size)
    end, 120000)
    source.close()
  end)

  it("fails with UNAVAILABLE when refused or reset, TIMEOUT when the server is silent", function()
    local port = support.free_port()
    srv = fixture.start(function(req, conn)
      if req.path == "/silent" then
        async.sleep(3000)
      else
        conn:write("HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\npartial")
        async.sleep(20)
        conn:reset()
      end
    end)
    run(function()
      local _, err, code = http.request { url = "http://127.0.0.1:" .. port .. "/" }
      assert.equals("UNAVAILABLE", code)
      assert.matches("^UNAVAILABLE: GET http://127%.0%.0%.1:%d+/", err)
      _, err, code = http.request { url = srv.url .. "/reset" }
      assert.equals("UNAVAILABLE", code, err)
      _, err, code = http.request { url = srv.url .. "/silent", timeout = 0.3 }
      assert.equals("TIMEOUT", code)
      assert.matches("^TIMEOUT: GET", err)
      _, _, code = http.request { url = "http://no-such-host.invalid/" }
      assert.equals("UNAVAILABLE", code)
    end)
  end)

  it("fails with INVALID for bad URLs and methods, and raises on bad option types", function()
    run(function()
      for _, u in ipairs { "ftp://x/", "not a url", "http//x" } do
        local _, err, code = http.request { url = u }
        assert.equals("INVALID", code, u)
        assert.matches("^INVALID: ", err)
      end
      local _, _, code = http.request { method = "GE T", url = "http://127.0.0.1/" }
      assert.equals("INVALID", code)
      _, _, code = http.request { url = "http://127.0.0.1/", headers = { ["X-A"] = "a\r\nX-B: b" } }
      assert.equals("INVALID", code)
      assert.has_error(function() http.request { url = 1 } end)
      assert.has_error(function() http.request { url = "http://x/", timeout = "1" } end)
      assert.has_error(function() http.request { url = "http://x/", bogus = true } end)
      assert.has_error(function() http.request { url = "http://x/", body = "a", body_path = "/b" } end)
    end)
  end)

  it("fails with TOO_LARGE when a buffered response exceeds max_body", function()
    srv = fixture.start(function(req, conn)
      local body = ("b"):rep(5000)
      if req.path == "/chunked" then
        conn:write("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ = 1, 5 do conn:write(("3e8\r\n%s\r\n"):format(("c"):rep(1000))) end
        conn:write("0\r\n\r\n")
      else
        conn:respond(200, nil, body)
      end
    end)
    run(function()
      local _, err, code = http.request { url = srv.url .. "/len", max_body = 4096 }
      assert.equals("TOO_LARGE", code)
      assert.matches("4096", err)
      _, _, code = http.request { url = srv.url .. "/chunked", max_body = 4096 }
      assert.equals("TOO_LARGE", code)
      local res = assert(http.request { url = srv.url .. "/chunked", max_body = 5000 })
      assert.equals(5000, #res.body)
    end)
  end)

  it("does not follow redirects unless asked", function()
    srv = fixture.start(function(req, conn)
      if req.path == "/from" then
        conn:respond(302, { { "Location", "/to" } }, "")
      else
        conn:respond(200, nil, "landed")
      end
    end)
    run(function()
      local res = assert(http.request { url = srv.url .. "/from" })
      assert.equals(302, res.status)
      assert.equals("/to", res.headers.location)
      res = assert(http.request { url = srv.url .. "/from", follow_redirects = true })
      assert.equals(200, res.status)
      assert.equals("landed", res.body)
      assert.is_nil(res.headers.location)
    end)
  end)

  it("cancels requests in flight through a canceler or cancel_all, cleaning up", function()
    srv = fixture.start(function() async.sleep(5000) end)
    run(function()
      local c = http.canceler()
      local results = {}
      local all_done = async.event()
      local left = 3
      for i = 1, 3 do
        async.spawn(function()
          results[i] = table.pack(http.request { url = srv.url .. "/" .. i, cancel = c })
          left = left - 1
          if left == 0 then all_done.set() end
        end)
      end
      wait_for(function() return #srv.requests == 3 end)
      assert.equals(3, http.active())
      c:cancel("shutting down")
      all_done.wait(5000)
      for i = 1, 3 do
        assert.equals("CANCELED: shutting down", results[i][2])
        assert.equals("CANCELED", results[i][3])
      end
      local _, err = http.request { url = srv.url .. "/late", cancel = c }
      assert.equals("CANCELED: shutting down", err)

      local one
      async.spawn(function() one = table.pack(http.request { url = srv.url .. "/x" }) end)
      wait_for(function() return http.active() == 1 end)
      http.cancel_all("bye")
      wait_for(function() return one ~= nil end)
      assert.equals("CANCELED", one[3])
      assert.equals(0, http.active())
    end)
  end)

  it("runs many requests concurrently on the one loop", function()
    srv = fixture.start(function(req, conn)
      async.sleep(20)
      conn:respond(200, nil, req.path)
    end)
    run(function()
      local fns = {}
      for i = 1, 30 do
        fns[i] = function() return http.request { url = srv.url .. "/n" .. i } end
      end
      local results = async.all(fns)
      for i = 1, 30 do
        assert.is_true(results[i][1])
        assert.equals("/n" .. i, results[i][2].body)
      end
      assert.equals(0, http.active())
    end)
  end)

end)
