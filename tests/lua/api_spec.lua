-- Specs of lua/autopgo/api.lua over a real HTTP server: every answer of the original's API, the
-- error paths with their status codes and JSON bodies, and nothing half-done after a failure.
local support = require "tests.lua.support"
local httpc = require "tests.lua.httpc"
local profiles = require "tests.lua.profiles"
local httpd = require "autopgo.httpd"
local api = require "autopgo.api"
local async = require "autopgo.async"
local blob = require "autopgo.blob"
local bus = require "autopgo.bus"
local events = require "autopgo.events"
local json = require "autopgo.json"
local utc = require "autopgo.utc"
local crypto = require("autopgo.core").crypto

local run = support.run

-- A store or writer whose chosen methods fail with UNAVAILABLE.
local function failing(real, methods)
  local wrapper = setmetatable({ name = real.name }, { __index = function(_, k)
    return function(_, ...) return real[k](real, ...) end
  end })
  for _, name in ipairs(methods) do
    wrapper[name] = function() return nil, "UNAVAILABLE: " .. name .. " is down", "UNAVAILABLE" end
  end
  return wrapper
end

local function serve(o)
  o = o or {}
  local id = crypto.hex(crypto.random(5))
  local e = { store = assert(blob.open("mem://api-" .. id)), url = "mem://api-" .. id }
  e.writer = assert(bus.writer(e.url))
  e.reader = assert(bus.reader(e.url))
  local router = httpd.router()
  api.new({ store = o.store and o.store(e.store) or e.store, writer = o.writer and o.writer(e.writer) or e.writer,
    max_upload_size = o.max or 1024 * 1024, max_decompressed = o.max_decompressed, budget = o.budget,
    small_budget = o.small_budget,
    history = o.history and require("autopgo.history").new { store = e.store, segment = 3600 } or nil }):routes(router)
  e.srv = assert(httpd.listen { host = "127.0.0.1", port = 0, handler = router, max_body = o.max or 1024 * 1024 })
  function e.request(method, path, opts) return httpc.request(e.srv.port, method, path, opts) end
  function e.next_event()
    local msg = assert(e.reader:receive())
    msg:ack()
    return assert(events.parse(msg.body))
  end
  function e.close()
    e.srv:shutdown()
    e.reader:close()
  end
  return e
end

local function keys(store, prefix)
  local out = {}
  for _, item in ipairs(assert(store:list(prefix))) do out[#out + 1] = item.key end
  return out
end

local function error_body(code, message)
  return ('{"message":%s,"code":%d}\n'):format(json.encode(message), code)
end

describe("api", function()
  describe("POST /api/profile/{app}", function()
    it("stages a valid profile, announces it and answers 201 with its key", function()
      run(function()
        local e = serve()
        local body = profiles.file(profiles.usable[1])
        local r = e.request("POST", "/api/profile/my-app", { body = body })
        assert.equals(201, r.status)
        assert.equals("application/json", r.headers["content-type"])
        local key = r.body:match('^{"key":"(my%-app/staging/%d+)"}\n$')
        assert.is_string(key, r.body)
        assert.equals(body, assert(e.store:get(key)).body)
        local env = e.next_event()
        assert.equals("profile.uploaded", env.type)
        assert.same({ app = "my-app", profileKey = key }, env.payload)
        e.close()
      end)
    end)

    it("gives every upload its own key", function()
      run(function()
        local e = serve()
        local body = profiles.file(profiles.usable[2])
        local results = require("autopgo.async").all((function()
          local fns = {}
          for i = 1, 10 do fns[i] = function() return e.request("POST", "/api/profile/a", { body = body }) end end
          return fns
        end)())
        local seen, distinct = {}, 0
        for _, r in ipairs(results) do
          assert.equals(201, r[2].status)
          if not seen[r[2].body] then distinct = distinct + 1 end
          seen[r[2].body] = true
        end
        assert.equals(10, distinct)
        assert.equals(10, #keys(e.store, "a/staging/"))
        e.close()
      end)
    end)

    it("refuses an invalid app name with 400 saying why, a name over 128 characters included", function()
      run(function()
        local e = serve()
        local chars = "an application name is made of a-z, 0-9 and '-', got "
        for path, why in pairs {
          ["/api/profile/My-App"] = chars .. '"My-App"',
          ["/api/profile/a_b"] = chars .. '"a_b"',
          ["/api/profile/"] = "an application name must not be empty",
          ["/api/profile/a%2Fb"] = chars .. '"a/b"',
          ["/api/profile/" .. ("a"):rep(129)] = "an application name has at most 128 characters, got 129",
          ["/api/profile/" .. ("a"):rep(256)] = "an application name has at most 128 characters, got 256",
        } do
          local r = e.request("POST", path, { body = profiles.file(profiles.usable[1]) })
          assert.equals(400, r.status, path)
          assert.equals(error_body(400, "invalid app name: " .. why), r.body)
        end
        local r = e.request("POST", "/api/profile/" .. ("a"):rep(128), { body = profiles.file(profiles.usable[1]) })
        assert.equals(201, r.status, "128 characters are allowed")
        assert.equals(1, #keys(e.store, ""))
        e.close()
      end)
    end)

    it("keeps paths and errno names out of error bodies, and answers 507 when the disk is full", function()
      run(function()
        local root = support.tmpdir()
        local err = "IO: ENAMETOOLONG: name too long: " .. root .. "/app/staging/1"
        local e = serve { store = function(real)
          return setmetatable({ put = function() return nil, err, "IO" end, stat = function() return nil, err, "IO" end,
            list = function() return nil, err, "IO" end },
            { __index = function(_, k) return function(_, ...) return real[k](real, ...) end end })
        end }
        local body = profiles.file(profiles.usable[1])
        for _, req in ipairs { { "POST", "/api/profile/app", "cannot store the profile" },
          { "GET", "/api/profile/app", "cannot read the merged profile" },
          { "GET", "/api/profile", "cannot list the merged profiles" },
          { "DELETE", "/api/profile/app", "cannot read the profiles of the app" } } do
          local r = e.request(req[1], req[2], { body = req[1] == "POST" and body or nil })
          assert.equals(500, r.status, req[2])
          assert.equals(error_body(500, req[3] .. " (IO); details are in the server log"), r.body)
        end
        err = "IO: ENOSPC: no space left on device: " .. root .. "/.autopgo/tmp/x"
        local r = e.request("POST", "/api/profile/app", { body = body })
        assert.equals(507, r.status)
        assert.equals(error_body(507, "cannot store the profile: the server is out of storage space"), r.body)
        e.close()
        support.rm_rf(root)
      end)
    end)

    it("refuses what does not parse with 400 and the decoder's message", function()
      run(function()
        local e = serve()
        for _, f in ipairs { "bad/truncated.pb.gz", "bad/random.bin", "bad/empty", "bad/dangling-location-id.pb.gz" } do
          local r = e.request("POST", "/api/profile/app", { body = profiles.file(f) })
          assert.equals(400, r.status, f)
          local doc = json.decode(r.body)
          assert.equals(400, doc.code)
          assert.is_true(#doc.message > 0)
          assert.is_nil(doc.message:match("^MALFORMED"), "the message is the decoder's, without our code")
        end
        assert.same({}, keys(e.store, ""))
        e.close()
      end)
    end)

    it("refuses profiles go build -pgo cannot use with 400 saying why", function()
      run(function()
        local e = serve()
        local r = e.request("POST", "/api/profile/app", { body = profiles.file("edge/heap-sample-types.pb.gz") })
        assert.equals(400, r.status)
        assert.equals(error_body(400, "profile cannot be used by go build -pgo: profile has no samples/count or "
          .. "cpu/nanoseconds sample type (not a CPU profile)"), r.body)
        r = e.request("POST", "/api/profile/app", { body = profiles.file("goapp-cpu-1.pb.gz") })
        assert.equals(400, r.status)
        assert.equals(error_body(400, "profile cannot be used by go build -pgo: profile has no Function.start_line "
          .. "(written by Go older than 1.20?)"), r.body)
        assert.same({}, keys(e.store, ""))
        e.close()
      end)
    end)

    it("answers 503 with Retry-After when validation has no room, and stores nothing", function()
      run(function()
        local budget = require "autopgo.budget"
        local lanes = { budget.new { slots = 1, max_waiting = 0 }, budget.new { slots = 1, max_waiting = 0 } }
        local e = serve { budget = lanes[1], small_budget = lanes[2] }
        local held = { assert(lanes[1]:acquire(1)), assert(lanes[2]:acquire(1)) }
        local r = e.request("POST", "/api/profile/app", { body = profiles.file(profiles.usable[1]) })
        assert.equals(503, r.status)
        assert.matches("^%d+$", r.headers["retry-after"])
        assert.matches('"code":503', r.body)
        assert.same({}, keys(e.store, ""))
        lanes[1]:release(held[1])
        lanes[2]:release(held[2])
        r = e.request("POST", "/api/profile/app", { body = profiles.file(profiles.usable[1]) })
        assert.equals(201, r.status)
        e.close()
      end)
    end)

    it("holds an upload to what it may decompress to, read from its gzip trailer before inflating", function()
      run(function()
        local body = profiles.file(profiles.usable[1])
        local e = serve { max_decompressed = 4096 }
        local r = e.request("POST", "/api/profile/app", { body = body })
        assert.equals(413, r.status)
        e.close()
        -- a trailer that understates the size: decompression stops where it said, 413
        e = serve()
        local lying = body:sub(1, -5) .. string.pack("<I4", 1)
        r = e.request("POST", "/api/profile/app", { body = lying })
        assert.is_true(string.unpack("<I4", body:sub(-4)) > 64 * 1024) -- more than the least reserved
        assert.equals(413, r.status)
        assert.same({}, keys(e.store, ""))
        e.close()
      end)
    end)

    it("refuses a body over the size limit with 413 before reading it", function()
      run(function()
        local e = serve { max = 20000 }
        -- from the headers alone: the body is never sent
        local c = httpc.connect(e.srv.port)
        c:send("POST /api/profile/app HTTP/1.1\r\nHost: x\r\nContent-Length: 20001\r\n\r\n")
        local r = assert(c:read_response(5000))
        assert.equals(413, r.status)
        assert.equals(error_body(413, "request body is larger than the limit of 20000 bytes"), r.body)
        c:close()
        r = e.request("POST", "/api/profile/app", { body = profiles.file(profiles.usable[1]) })
        assert.equals(413, r.status)
        assert.equals(error_body(413, "request body is larger than the limit of 20000 bytes"), r.body)
        assert.same({}, keys(e.store, ""))
        e.close()
      end)
    end)

    it("holds an upload to the limits the worker merges under, so a 201 is never refused later", function()
      local limits = require "autopgo.limits"
      local saved = limits.profile.max_decompressed
      run(function()
        local e = serve()
        local body = profiles.file(profiles.usable[1])
        limits.profile.max_decompressed = 1000 -- the profile decompresses to more than this
        local ok, r = pcall(e.request, "POST", "/api/profile/app", { body = body })
        limits.profile.max_decompressed = saved
        assert(ok, r)
        assert.equals(413, r.status)
        assert.matches("1000", r.body)
        assert.same({}, keys(e.store, ""))
        assert.equals(201, e.request("POST", "/api/profile/app", { body = body }).status)
        e.close()
      end)
      limits.profile.max_decompressed = saved
    end)

    it("answers 500 and stages nothing when the store cannot write", function()
      run(function()
        local e = serve { store = function(s) return failing(s, { "put" }) end }
        local r = e.request("POST", "/api/profile/app", { body = profiles.file(profiles.usable[1]) })
        assert.equals(500, r.status)
        assert.equals(error_body(500, "cannot store the profile (UNAVAILABLE); details are in the server log"),
          r.body)
        assert.same({}, keys(e.store, ""))
        e.close()
      end)
    end)

    it("answers 500 and removes the staged upload when the event cannot be published", function()
      run(function()
        local e = serve { writer = function(w) return failing(w, { "publish" }) end }
        local r = e.request("POST", "/api/profile/app", { body = profiles.file(profiles.usable[1]) })
        assert.equals(500, r.status)
        assert.equals(error_body(500, "cannot announce the upload (UNAVAILABLE); details are in the server log"),
          r.body)
        assert.same({}, keys(e.store, ""), "a staged upload without its event would be merged by a later pass")
        e.close()
      end)
    end)
  end)

  describe("GET /api/profile/{app}", function()
    it("answers 404 when there is no merged profile and 400 for a bad name", function()
      run(function()
        local e = serve()
        local r = e.request("GET", "/api/profile/app")
        assert.equals(404, r.status)
        assert.equals(error_body(404, "no merged profile for app app yet"), r.body)
        r = e.request("GET", "/api/profile/App")
        assert.equals(400, r.status)
        assert.equals(error_body(400, "invalid app name: an application name is made of a-z, 0-9 and '-', got \"App\""),
          r.body)
        e.close()
      end)
    end)

    it("streams the merged profile with its sha256 as ETag and answers 304 to a matching If-None-Match", function()
      run(function()
        local e = serve()
        local body = profiles.file("autopgo/default.pgo")
        assert(e.store:put("app/default.pgo", body))
        local etag = '"sha256:' .. crypto.hex(crypto.digest("sha256", body)) .. '"'
        local r = e.request("GET", "/api/profile/app")
        assert.equals(200, r.status)
        assert.equals(body, r.body)
        assert.equals("application/x-gzip", r.headers["content-type"])
        assert.equals(etag, r.headers.etag)
        local head = e.request("HEAD", "/api/profile/app")
        assert.equals(200, head.status)
        assert.equals(etag, head.headers.etag)
        assert.equals(tostring(#body), head.headers["content-length"])
        r = e.request("GET", "/api/profile/app", { headers = { ["If-None-Match"] = etag } })
        assert.equals(304, r.status)
        assert.equals("", r.body)
        assert.equals(etag, r.headers.etag)
        r = e.request("GET", "/api/profile/app", { headers = { ["If-None-Match"] = '"old", W/' .. etag } })
        assert.equals(304, r.status)
        r = e.request("GET", "/api/profile/app", { headers = { ["If-None-Match"] = "*" } })
        assert.equals(304, r.status)
        r = e.request("GET", "/api/profile/app", { headers = { ["If-None-Match"] = '"old"' } })
        assert.equals(200, r.status)
        assert.equals(body, r.body)
        -- a new version with the same bytes keeps the ETag; other bytes change it
        assert(e.store:put("app/default.pgo", body .. ""))
        r = e.request("GET", "/api/profile/app", { headers = { ["If-None-Match"] = etag } })
        assert.equals(304, r.status)
        local other = profiles.file(profiles.usable[1])
        assert(e.store:put("app/default.pgo", other))
        r = e.request("GET", "/api/profile/app", { headers = { ["If-None-Match"] = etag } })
        assert.equals(200, r.status)
        assert.equals(other, r.body)
        assert.equals('"sha256:' .. crypto.hex(crypto.digest("sha256", other)) .. '"', r.headers.etag)
        e.close()
      end)
    end)

    it("hashes a new version once however many requests ask for it at the same time", function()
      run(function()
        local gets = 0
        local e = serve { store = function(real)
          return setmetatable({ get = function(_, ...)
            gets = gets + 1
            async.sleep(20) -- a slow store, so the requests overlap
            return real:get(...)
          end }, { __index = function(_, k) return function(_, ...) return real[k](real, ...) end end })
        end }
        local body = profiles.file("autopgo/default.pgo")
        assert(e.store:put("app/default.pgo", body))
        -- with its ledger, as the worker writes it: hashed, not checked again
        assert(e.store:put("app/ledger/" .. crypto.hex(crypto.digest("sha256", body)) .. ".json", "{}"))
        local etag = '"sha256:' .. crypto.hex(crypto.digest("sha256", body)) .. '"'
        local fns = {}
        for i = 1, 5 do
          fns[i] = function()
            return e.request("GET", "/api/profile/app", { headers = { ["If-None-Match"] = etag } }).status
          end
        end
        for _, res in ipairs(async.all(fns)) do assert.same({ true, 304, n = 2 }, res) end
        assert.equals(1, gets)
        e.close()
      end)
    end)

    it("sends one version whole under its own digest when a merge lands between the hash and the body", function()
      run(function()
        local old = profiles.file("autopgo/default.pgo")
        local new, piece, gets = nil, nil, 0
        -- the second read (the body of the first request) finds a newer version in place; pieces
        -- of `piece` bytes
        local e = serve { store = function(real)
          return setmetatable({ get = function(_, key, opts)
            gets = gets + 1
            if gets == 2 and new then assert(real:put(key, new)) end
            if not piece or not opts or not opts.sink then return real:get(key, opts) end
            return real:get(key, { if_match = opts.if_match, sink = function(chunk)
              for i = 1, #chunk, piece do opts.sink(chunk:sub(i, i + piece - 1)) end
            end })
          end }, { __index = function(_, k) return function(_, ...) return real[k](real, ...) end end })
        end }
        local function digest(b) return '"sha256:' .. crypto.hex(crypto.digest("sha256", b)) .. '"' end
        for _, p in ipairs { false, 1000 } do
          piece, gets, new = p or nil, 0, old .. (p and "y" or "x")
          assert(e.store:put("app/ledger/" .. crypto.hex(crypto.digest("sha256", old)) .. ".json", "{}"))
          assert(e.store:put("app/ledger/" .. crypto.hex(crypto.digest("sha256", new)) .. ".json", "{}"))
          assert(e.store:put("app/default.pgo", old))
          local r = e.request("GET", "/api/profile/app")
          assert.equals(200, r.status)
          assert.equals(new, r.body)
          assert.equals(digest(new), r.headers.etag)
          assert.is_true(gets >= 3, "the new version was hashed, then sent")
          old = new
        end
        e.close()
      end)
    end)

    it("never serves a merged profile that does not parse, and checks only bases without a ledger", function()
      run(function()
        local gets = 0
        local e = serve { store = function(real)
          return setmetatable({ get = function(_, ...)
            gets = gets + 1
            return real:get(...)
          end }, { __index = function(_, k) return function(_, ...) return real[k](real, ...) end end })
        end }
        local good = profiles.file("autopgo/default.pgo")
        local function hex(b) return crypto.hex(crypto.digest("sha256", b)) end
        for _, bad in ipairs { good:sub(1, #good // 2), "garbled" .. good, "not a profile at all" } do
          assert(e.store:put("app/default.pgo", bad))
          local r = e.request("GET", "/api/profile/app")
          assert.equals(500, r.status)
          assert.equals(error_body(500, "the merged profile of app app is damaged and is not served "
            .. "(details in the server log)"), r.body)
          assert.is_nil(r.headers.etag)
          r = e.request("GET", "/api/profile/app", { headers = { ["If-None-Match"] = '"sha256:' .. hex(bad) .. '"' } })
          assert.equals(500, r.status, "never a 304 for a damaged base")
        end
        -- a base without a ledger that parses is served (checked once: hash, check, then bodies)
        assert(e.store:put("app/default.pgo", good))
        gets = 0
        for _ = 1, 3 do
          local r = e.request("GET", "/api/profile/app")
          assert.equals(200, r.status)
          assert.equals(good, r.body)
        end
        assert.equals(2 + 3, gets)
        -- a base with its ledger (the worker wrote it whole) is not read a second time to check it
        local other = good .. ""
        assert(e.store:put("app/ledger/" .. hex(other) .. ".json", "{}"))
        assert(e.store:put("app/default.pgo", other))
        gets = 0
        assert.equals(200, e.request("GET", "/api/profile/app").status)
        assert.equals(2, gets)
        e.close()
      end)
    end)

    it("answers 500 when the store fails", function()
      run(function()
        local e = serve { store = function(s) return failing(s, { "stat" }) end }
        local r = e.request("GET", "/api/profile/app")
        assert.equals(500, r.status)
        assert.equals(error_body(500, "cannot read the merged profile (UNAVAILABLE); details are in the server log"),
          r.body)
        e.close()
      end)
    end)
  end)

  describe("GET /api/profile", function()
    it("lists the merged profiles only, with key, size and lastModified", function()
      run(function()
        local e = serve()
        local r = e.request("GET", "/api/profile")
        assert.equals(200, r.status)
        assert.equals('{"profiles":[]}\n', r.body)
        assert(e.store:put("b/default.pgo", "bbb"))
        assert(e.store:put("a/default.pgo", "a"))
        assert(e.store:put("a/staging/1", "x"))
        assert(e.store:put("a/ledger/x.json", "{}"))
        r = e.request("GET", "/api/profile")
        local doc = json.decode(r.body)
        assert.equals(2, #doc.profiles)
        assert.equals("a", doc.profiles[1].key)
        assert.equals(1, doc.profiles[1].size)
        assert.equals("b", doc.profiles[2].key)
        assert.equals(3, doc.profiles[2].size)
        assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d[.%d]*Z$", doc.profiles[1].lastModified)
        assert.matches('^{"profiles":%[{"key":"a","size":1,"lastModified":"[^"]+"},{"key":"b"', r.body)
        e.close()
      end)
    end)

    it("gives lastModified as Go's RFC 3339 form of the store's modification time", function()
      run(function()
        local e = serve()
        assert(e.store:put("a/default.pgo", "a"))
        local doc = json.decode(e.request("GET", "/api/profile").body)
        assert.equals(utc.rfc3339(assert(e.store:stat("a/default.pgo")).last_modified), doc.profiles[1].lastModified)
        e.close()
      end)
    end)
  end)

  describe("GET /api/profile/{app}/uploads", function()
    it("lists the merged profile, staged uploads and rejected ones with their reasons, oldest first", function()
      run(function()
        local e = serve()
        local r = e.request("GET", "/api/profile/app/uploads")
        assert.equals(200, r.status)
        assert.equals("application/json", r.headers["content-type"])
        assert.equals('{"app":"app","merged":null,"staged":[],"rejected":[]}\n', r.body)
        assert(e.store:put("app/staging/2", "22"))
        async.sleep(5)
        assert(e.store:put("app/staging/1", "1"))
        assert(e.store:put("app/default.pgo", "base"))
        assert(e.store:put("app/ledger/abc.json", "{}"))
        assert(e.store:put("app/rejected/7", "bad"))
        assert(e.store:put("app/rejected/7.reason", "POLICY: the policy hook of app failed: no thanks\n"))
        assert(e.store:put("app/rejected/8", "worse"))
        assert(e.store:put("other/staging/3", "x"))
        r = e.request("GET", "/api/profile/app/uploads")
        assert.equals(200, r.status)
        local doc = json.decode(r.body)
        assert.equals("app", doc.app)
        assert.equals(4, doc.merged.size)
        assert.equals(utc.rfc3339(assert(e.store:stat("app/default.pgo")).last_modified), doc.merged.lastModified)
        assert.equals(2, #doc.staged)
        assert.same({ "app/staging/2", "app/staging/1" }, { doc.staged[1].key, doc.staged[2].key })
        assert.equals(2, doc.staged[1].size)
        assert.equals(utc.rfc3339(assert(e.store:stat("app/staging/2")).last_modified), doc.staged[1].lastModified)
        assert.equals(2, #doc.rejected)
        assert.equals("app/rejected/7", doc.rejected[1].key)
        assert.equals("POLICY: the policy hook of app failed: no thanks", doc.rejected[1].reason)
        assert.matches("^%d%d%d%d%-", doc.rejected[1].lastModified)
        assert.equals("app/rejected/8", doc.rejected[2].key)
        assert.equals("no reason was recorded", doc.rejected[2].reason)
        r = e.request("GET", "/api/profile/App/uploads")
        assert.equals(400, r.status)
        e.close()
      end)
    end)

    it("answers 500 without internals when the store cannot list", function()
      run(function()
        local e = serve { store = function(s) return failing(s, { "list" }) end }
        local r = e.request("GET", "/api/profile/app/uploads")
        assert.equals(500, r.status)
        assert.equals(error_body(500, "cannot list the uploads of the app (UNAVAILABLE); "
          .. "details are in the server log"), r.body)
        e.close()
      end)
    end)
  end)

  describe("DELETE /api/profile/{app}", function()
    it("announces the deletion of an app with a merged profile, or only staged uploads", function()
      run(function()
        local e = serve()
        assert(e.store:put("app/default.pgo", "x"))
        assert(e.store:put("staged-only/staging/1", "x"))
        for _, app in ipairs { "app", "staged-only" } do
          local r = e.request("DELETE", "/api/profile/" .. app)
          assert.equals(200, r.status)
          assert.equals("{}\n", r.body)
          local env = e.next_event()
          assert.equals("profile.deleted", env.type)
          assert.same({ app = app }, env.payload)
        end
        e.close()
      end)
    end)

    it("answers 404 for an app with nothing, 400 for a bad name, 500 when publishing fails", function()
      run(function()
        local e = serve()
        local r = e.request("DELETE", "/api/profile/nothing")
        assert.equals(404, r.status)
        assert.equals(error_body(404, "Not Found"), r.body)
        r = e.request("DELETE", "/api/profile/No")
        assert.equals(400, r.status)
        assert.equals(error_body(400, "invalid app name: an application name is made of a-z, 0-9 and '-', got \"No\""),
          r.body)
        e.close()
        local f = serve { writer = function(w) return failing(w, { "publish" }) end }
        assert(f.store:put("app/default.pgo", "x"))
        r = f.request("DELETE", "/api/profile/app")
        assert.equals(500, r.status)
        assert.equals(error_body(500, "cannot announce the deletion (UNAVAILABLE); details are in the server log"),
          r.body)
        f.close()
      end)
    end)
  end)

  describe("DELETE /api/profile/{app}?from=&to=", function()
    it("announces a range delete with both bounds, in UTC", function()
      run(function()
        local e = serve { history = true }
        local r = e.request("DELETE", "/api/profile/app?from=2026-12-01T10:00:00%2B01:00&to=2026-12-01T12:00:00Z")
        assert.equals(200, r.status, r.body)
        assert.equals("{}\n", r.body)
        local env = e.next_event()
        assert.equals("profile.range_deleted", env.type)
        assert.same({ app = "app", from = "2026-12-01T09:00:00Z", to = "2026-12-01T12:00:00Z" }, env.payload)
        e.close()
      end)
    end)

    it("answers a bad range with a 400 and a JSON message saying what is wrong, announcing nothing", function()
      run(function()
        local e = serve { history = true }
        local from, to = "from=2026-12-01T10:00:00Z", "to=2026-12-01T12:00:00Z"
        for q, message in pairs {
          [from] = "a range delete needs both from and to (RFC 3339)",
          [to] = "a range delete needs both from and to (RFC 3339)",
          ["window=72h"] = "a range delete takes from and to, not window",
          ["from=2026-12-01T12:00:00Z&" .. to] = "from must be before to",
          ["from=2026-12-01T13:00:00Z&" .. to] = "from must be before to",
          ["from=yesterday&" .. to] = 'from: timestamp "yesterday" is not RFC 3339 (like 2024-10-28T12:16:34.964Z)',
          [from .. "&to=2026-02-30T00:00:00Z"] = 'to: timestamp "2026-02-30T00:00:00Z" is out of range',
          [from .. "&to=2026-12-01T12:00:00"] = 'to: timestamp "2026-12-01T12:00:00" has no time zone (Z or +hh:mm)',
        } do
          local r = e.request("DELETE", "/api/profile/app?" .. q)
          assert.equals(400, r.status, q)
          assert.equals(error_body(400, message), r.body, q)
        end
        e.close()
        -- without history there is no range to delete
        local n = serve()
        assert(n.store:put("app/default.pgo", "x"))
        local r = n.request("DELETE", "/api/profile/app?" .. from .. "&" .. to)
        assert.equals(400, r.status)
        assert.equals(error_body(400, "this server keeps no history (--segment 0): no range to delete"), r.body)
        n.close()
        -- nothing was announced by any of these: the app is still there to delete whole
        local d = serve { history = true }
        assert(d.store:put("app/default.pgo", "x"))
        for _, q in ipairs { from, "window=1h", "from=x&to=y" } do
          assert.equals(400, d.request("DELETE", "/api/profile/app?" .. q).status)
        end
        assert.equals(200, d.request("DELETE", "/api/profile/app").status)
        assert.equals("profile.deleted", d.next_event().type)
        d.close()
      end)
    end)
  end)

  it("answers other paths and methods like Go's ServeMux", function()
    run(function()
      local e = serve()
      local r = e.request("GET", "/api/nope")
      assert.equals(404, r.status)
      assert.equals("404 page not found\n", r.body)
      r = e.request("PUT", "/api/profile/app", { body = "" })
      assert.equals(405, r.status)
      assert.equals("DELETE, GET, HEAD, POST", r.headers.allow)
      e.close()
    end)
  end)
end)
