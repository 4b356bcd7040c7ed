-- Specs of an upload's body held once (core/http/server.c, core/lua/http_server.c, httpd.lua's
-- req:body_bytes()) over HTTP/1.1 and HTTP/2 (TLS, curl): the body is one autopgo.bytes in C on
-- both; an HTTP/2 stream reset, or an HTTP/1 connection closed, while the validator and the file
-- writer read it cannot free it under them (run under ASan); an HTTP/1 response waits for them.
local support = require "tests.lua.support"
local httpc = require "tests.lua.httpc"
local httpd = require "autopgo.httpd"
local async = require "autopgo.async"
local core = require "autopgo.core"
local bytes, crypto, pprof = core.bytes, core.crypto, core.pprof

local run = support.run

local function sha(s) return crypto.hex(crypto.digest("sha256", s)) end

local dir

local function listen(handler, tls)
  local opts = { host = "127.0.0.1", port = 0, handler = handler, max_body = 256 * 1024 * 1024 }
  if tls then opts.tls_cert, opts.tls_key = dir .. "/tls.crt", dir .. "/tls.key" end
  return assert(httpd.listen(opts))
end

-- curl posting the file at path: over HTTP/2 with TLS (h2 by ALPN), or plain HTTP/1.1.
local function curl(srv, proto, path)
  local args = { "-sS", "-o", "/dev/null", "-w", "%{http_version} %{http_code}", "--data-binary", "@" .. path,
    "-H", "content-type: application/octet-stream" }
  if proto == "h2" then
    for _, a in ipairs { "--http2", "--cacert", dir .. "/tls.crt", ("https://127.0.0.1:%d/p"):format(srv.port) } do
      args[#args + 1] = a
    end
  else
    for _, a in ipairs { "--http1.1", ("http://127.0.0.1:%d/p"):format(srv.port) } do args[#args + 1] = a end
  end
  return support.spawn("curl", args)
end


setup(function()
  dir = support.tmpdir()
  assert(os.execute(("cd %s && openssl req -x509 -newkey rsa:2048 -nodes -keyout tls.key -out tls.crt " ..
    "-days 2 -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 >/dev/null 2>&1"):format(dir)))
end)

teardown(function() support.rm_rf(dir) end)

describe("an upload's body", function()
  for _, proto in ipairs { "h1", "h2" } do
    it(("is one autopgo.bytes held in C (%s)"):format(proto), function()
      local data = crypto.random(1024):rep(3 * 1024) .. "end"
      local path = support.write_file(dir .. "/body-" .. proto, data)
      run(function()
        local seen
        local srv = listen(function(req, res)
          local b = assert(req:body_bytes())
          seen = { is = bytes.is(b), same = rawequal(b, req:body_bytes()), len = #b, size = req.body_size,
            sha = sha(b), piece = b:view(1021, 1030):sub(), tail = b:sub(-3) }
          res:send("ok")
        end, proto == "h2")
        local code, _, out, err = curl(srv, proto, path):wait(30000)
        assert.equals(0, code, err)
        assert.equals((proto == "h2" and "2" or "1.1") .. " 200", out)
        assert.same({ is = true, same = true, len = #data, size = #data, sha = sha(data),
          piece = data:sub(1021, 1030), tail = "end" }, seen)
        srv:shutdown()
      end, 60000)
    end)

    it(("stays whole for its readers when the client goes away mid-validation (%s)"):format(proto), function()
      local data = support.padded_profile(24 * 1024 * 1024)
      local path = support.write_file(dir .. "/profile-" .. proto, data)
      run(function()
        local arrived, killed, finished = async.event(), async.event(), async.event()
        local report = {}
        local srv = listen(function(req, res)
          local b = assert(req:body_bytes())
          local validated = async.event()
          local info, verr
          pprof.validate_async(b, { max_decompressed = 64 * 1024 * 1024 }, function(e, i)
            info, verr = i, e
            validated.set()
          end)
          arrived.set()
          killed.wait(30000)
          if proto == "h2" then
            -- the reset stream is gone from h2o: only our references keep the body
            for _ = 1, 500 do
              if res:state() == "gone" then break end
              async.sleep(10)
            end
          end
          report.state = res:state()
          validated.wait(30000)
          report.validated, report.verr = info and info.size, verr
          local out = dir .. "/written-" .. proto
          local w, werr = async.await(core.fs.write_new_async, out, b)
          report.written, report.werr = w and w.size, werr
          report.sha = sha(support.read_file(out) or "")
          report.tail = b:sub(-16)
          res:send("too late")
          finished.set()
        end, proto == "h2")
        local client = curl(srv, proto, path)
        assert.is_true(arrived.wait(60000))
        client:kill("sigkill")
        client:wait(10000)
        killed.set()
        assert.is_true(finished.wait(60000))
        if proto == "h2" then assert.equals("gone", report.state) end
        assert.is_nil(report.verr)
        assert.equals(#data, report.validated)
        assert.is_nil(report.werr)
        assert.equals(#data, report.written)
        assert.equals(sha(data), report.sha)
        assert.equals(data:sub(-16), report.tail)
        srv:shutdown()
      end, 120000)
    end)
  end

  it("holds an HTTP/1 response's end until the body's readers are done", function()
    local data = crypto.random(4096):rep(8 * 1024) -- 32 MiB
    run(function()
      local written = false
      local srv = listen(function(req, res)
        local b = assert(req:body_bytes())
        core.fs.write_new_async(dir .. "/deferred", b, function(err)
          assert(not err, err)
          written = true
        end)
        -- answered before the write is done: h2o would reuse the connection's buffer once the
        -- response is out, so its end waits for the writer
        res:send("answered")
      end)
      local r = httpc.request(srv.port, "POST", "/p", { body = data })
      assert.equals(200, r.status)
      assert.equals("answered", r.body)
      assert.is_true(written, "the response ended before the body's reader was done")
      assert.equals(sha(data), sha(support.read_file(dir .. "/deferred")))
      srv:shutdown()
    end, 60000)
  end)
end)
