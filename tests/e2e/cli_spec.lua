-- End-to-end: the utilities (upload, download, list, delete, clean) against a running
-- `autopgo server` on the embedded default, every error path included. Two behaviours a real
-- server cannot be made to show on demand (a body cut off half-way, a 5xx) are played by the
-- HTTP test server.
local uv = require "luv"
local cjson = require "cjson"
local http = require "autopgo.http"
local async = require "autopgo.async"
local support = require "tests.lua.support"
local fixture = require "tests.lua.http_fixture"
local e2e = require "tests.e2e.scrape_support"
local profiles = require "tests.lua.profiles"

local run = support.run
local corpus = support.root .. "/tests/testdata/pprof"
local good = { corpus .. "/goapp-go123-cpu-1.pb.gz", corpus .. "/goapp-go123-cpu-2.pb.gz" }

describe("autopgo utilities (end to end)", function()
  local dir, server

  -- Runs the CLI against `url` (default: the server).
  local function cli(args, opts)
    opts = opts or {}
    local all = {}
    for _, a in ipairs(args) do all[#all + 1] = a end
    all[#all + 1] = "--api-url"
    all[#all + 1] = opts.url or server.url
    return support.autopgo(all, { stdin = opts.stdin, cwd = opts.cwd })
  end

  local function listed()
    local res = assert(http.request { url = server.url .. "/api/profile" })
    local apps = {}
    for _, p in ipairs(cjson.decode(res.body).profiles or {}) do apps[p.key] = p end
    return apps
  end

  local function upload_and_merge(app, file)
    local code, out, err = cli { "upload", "--app", app, file or good[1] }
    assert.equals(0, code, err)
    assert.matches("^" .. app:gsub("%-", "%%-") .. "/staging/%d+\n$", out)
    e2e.wait_for(function() return listed()[app] end, 30000, "the merge of " .. app)
  end

  local function leftovers(path)
    local names = {}
    for name in uv.fs_scandir_next, uv.fs_scandir(path) do
      if name:find("%.tmp%-") then names[#names + 1] = name end
    end
    return names
  end

  setup(function()
    dir = support.tmpdir()
    run(function() server = e2e.start_server(dir) end)
  end)
  teardown(function()
    run(function() e2e.stop(server.proc) end)
    support.rm_rf(dir)
  end)

  describe("upload", function()
    it("prints the staged key", function()
      run(function() upload_and_merge("upload-ok") end)
    end)

    it("streams standard input with -", function()
      run(function()
        local code, out, err = cli({ "upload", "--app", "from-stdin", "-" }, { stdin = support.read_file(good[2]) })
        assert.equals(0, code, err)
        assert.matches("^from%-stdin/staging/%d+\n$", out)
      end)
    end)

    it("shows the server's message and code when the server refuses", function()
      run(function()
        local code, out, err = cli { "upload", "--app", "bad-input", corpus .. "/bad/random.bin" }
        assert.equals(1, code)
        assert.equals("", out)
        assert.matches("^autopgo upload: .+ %(400%)\n$", err)
      end)
    end)

    it("says first what Go's parser says of each malformed profile: in the 400 body and on stderr", function()
      run(function()
        for _, name in ipairs(profiles.bad_files()) do
          local words = assert(profiles.go_parse_errors[name], name)
          local res = assert(http.request { url = server.url .. "/api/profile/bad-corpus", method = "POST",
            body = support.read_file(corpus .. "/" .. name) })
          assert.equals(400, res.status, name)
          local doc = cjson.decode(res.body)
          assert.equals(words, doc.message:sub(1, #words), name .. ": " .. doc.message)
          local code, out, err = cli { "upload", "--app", "bad-corpus", corpus .. "/" .. name }
          assert.equals(1, code, name)
          assert.equals("", out)
          assert.equals("autopgo upload: " .. doc.message .. " (400)\n", err, name)
        end
        assert.is_nil(listed()["bad-corpus"])
      end)
    end)

    it("fails on a missing file, a bad app name and an unreachable server", function()
      run(function()
        local code, _, err = cli { "upload", "--app", "x", dir .. "/nope.pprof" }
        assert.equals(1, code)
        assert.equals("autopgo upload: file " .. dir .. "/nope.pprof does not exist\n", err)
        code, _, err = cli { "upload", "--app", "Not_Valid", good[1] }
        assert.equals(2, code)
        assert.matches("invalid value for %-%-app", err)
        code, _, err = cli { "upload", good[1] }
        assert.equals(2, code)
        assert.matches("%-%-app is required", err)
        code, _, err = cli({ "upload", "--app", "x", good[1] }, { url = "http://127.0.0.1:" .. support.free_port() })
        assert.equals(1, code)
        assert.matches("^autopgo upload: UNAVAILABLE: POST http://127%.0%.0%.1:%d+/api/profile/x", err)
      end)
    end)
  end)

  describe("download", function()
    it("writes the merged profile, then leaves it untouched on 304", function()
      run(function()
        upload_and_merge("dl-app")
        local out = dir .. "/dl/default.pgo"
        uv.fs_mkdir(dir .. "/dl", 493)
        local code, _, err = cli { "download", "dl-app", "-o", out }
        assert.equals(0, code, err)
        local res = assert(http.request { url = server.url .. "/api/profile/dl-app" })
        assert.is_true(support.read_file(out) == res.body)
        assert.is_string(res.headers.etag)
        local before = uv.fs_stat(out)
        async.sleep(20)
        code, _, err = cli { "download", "dl-app", "-o", out }
        assert.equals(0, code, err)
        assert.matches("profile unchanged", err)
        local after = uv.fs_stat(out)
        assert.same(before.mtime, after.mtime)
        assert.equals(before.ino, after.ino)
        -- a file changed here is downloaded again
        support.write_file(out, "edited")
        code, _, err = cli { "download", "dl-app", "-o", out }
        assert.equals(0, code, err)
        assert.matches("profile downloaded", err)
        assert.is_true(support.read_file(out) == res.body)
        assert.same({}, leftovers(dir .. "/dl"))
      end)
    end)

    it("leaves a current file it never downloaded untouched (a fresh runner, a committed profile)", function()
      run(function()
        upload_and_merge("dl-fresh")
        local res = assert(http.request { url = server.url .. "/api/profile/dl-fresh" })
        uv.fs_mkdir(dir .. "/fresh", 493)
        local out = dir .. "/fresh/default.pgo"
        support.write_file(out, res.body)
        local before = uv.fs_stat(out)
        async.sleep(20)
        local code, _, err = cli { "download", "dl-fresh", "-o", out }
        assert.equals(0, code, err)
        assert.matches("profile unchanged", err)
        local after = uv.fs_stat(out)
        assert.same(before.mtime, after.mtime)
        assert.equals(before.ino, after.ino)
        assert.same({}, leftovers(dir .. "/fresh"))
      end)
    end)

    it("fails on an unknown app without creating the output, --fail-open or not", function()
      run(function()
        local out = dir .. "/none.pgo"
        for _, extra in ipairs { {}, { "--fail-open" } } do
          local args = { "download", "no-such-app", "-o", out }
          for _, a in ipairs(extra) do args[#args + 1] = a end
          local code, _, err = cli(args)
          assert.equals(1, code)
          assert.equals("autopgo download: no merged profile for app no-such-app yet\n", err)
          assert.is_nil(uv.fs_stat(out))
        end
      end)
    end)

    it("--fail-open keeps the existing file when the server is unreachable", function()
      run(function()
        local out = support.write_file(dir .. "/keep.pgo", "previous profile")
        local gone = "http://127.0.0.1:" .. support.free_port()
        local code, _, err = cli({ "download", "any", "-o", out, "--fail-open" }, { url = gone })
        assert.equals(0, code, err)
        assert.matches("level=warn", err)
        assert.matches("fail%-open", err)
        assert.equals("previous profile", support.read_file(out))
        code, _, err = cli({ "download", "any", "-o", out }, { url = gone })
        assert.equals(1, code)
        assert.matches("^autopgo download: UNAVAILABLE: ", err)
        assert.equals("previous profile", support.read_file(out))
      end)
    end)

    it("--fail-open covers a 5xx answer; without it the server's message is shown", function()
      local down = fixture.start(function(_, conn)
        conn:respond(503, { { "Content-Type", "application/json" } }, '{"message":"store unavailable","code":503}')
      end)
      run(function()
        local out = support.write_file(dir .. "/keep5.pgo", "previous profile")
        local code, _, err = cli({ "download", "any", "-o", out, "--fail-open" }, { url = down.url })
        assert.equals(0, code, err)
        assert.matches("store unavailable %(503%)", err)
        code, _, err = cli({ "download", "any", "-o", out }, { url = down.url })
        assert.equals(1, code)
        assert.equals("autopgo download: store unavailable (503)\n", err)
        assert.equals("previous profile", support.read_file(out))
      end)
      down.close()
    end)

    it("never leaves a truncated profile behind when the transfer breaks", function()
      local broken = fixture.start(function(_, conn)
        conn:write("HTTP/1.1 200 OK\r\nContent-Length: 100000\r\nETag: \"x\"\r\n\r\n" .. ("p"):rep(40000))
        async.sleep(50)
        conn:reset()
      end)
      run(function()
        uv.fs_mkdir(dir .. "/trunc", 493)
        local out = support.write_file(dir .. "/trunc/default.pgo", "previous profile")
        local code, _, err = cli({ "download", "any", "-o", out }, { url = broken.url })
        assert.equals(1, code)
        assert.matches("^autopgo download: UNAVAILABLE: ", err)
        assert.equals("previous profile", support.read_file(out))
        assert.same({}, leftovers(dir .. "/trunc"))
        -- the same with no file before: nothing appears
        local fresh = dir .. "/trunc/fresh.pgo"
        code = cli({ "download", "any", "-o", fresh }, { url = broken.url })
        assert.equals(1, code)
        assert.is_nil(uv.fs_stat(fresh))
        assert.same({}, leftovers(dir .. "/trunc"))
      end)
      broken.close()
    end)
  end)

  describe("list", function()
    it("prints APP  SIZE  LAST MODIFIED, and --json the server's response", function()
      run(function()
        upload_and_merge("list-app")
        local code, out, err = cli { "list" }
        assert.equals(0, code, err)
        local lines = {}
        for l in out:gmatch("[^\n]+") do lines[#lines + 1] = l end
        assert.matches("^APP +SIZE +LAST MODIFIED$", lines[1])
        local row
        for _, l in ipairs(lines) do
          if l:match("^list%-app ") then row = l end
        end
        assert.is_string(row, out)
        assert.matches("^list%-app +[%d%.]+ [KMG]?i?B +%d%d%d%d%-%d%d%-%d%d %d%d:%d%d:%d%d", row)
        code, out = cli { "list", "--json" }
        assert.equals(0, code)
        local doc = cjson.decode(out)
        local found
        for _, p in ipairs(doc.profiles) do
          if p.key == "list-app" then found = p end
        end
        assert.is_table(found)
        assert.is_number(found.size)
        assert.is_string(found.lastModified)
      end)
    end)

    it("fails with the transport error when the server is unreachable", function()
      run(function()
        local code, _, err = cli({ "list" }, { url = "http://127.0.0.1:" .. support.free_port() })
        assert.equals(1, code)
        assert.matches("^autopgo list: UNAVAILABLE: GET ", err)
      end)
    end)
  end)

  describe("delete", function()
    it("deletes an application's profiles; deleting again is a 404", function()
      run(function()
        upload_and_merge("del-app")
        local code, _, err = cli { "delete", "del-app" }
        assert.equals(0, code, err)
        e2e.wait_for(function() return not listed()["del-app"] end, 30000, "the deletion")
        code, _, err = cli { "delete", "del-app" }
        assert.equals(1, code)
        assert.matches("^autopgo delete: .*%(404%)\n$", err)
      end)
    end)
  end)

  describe("clean", function()
    local own
    setup(function()
      run(function() own = e2e.start_server(dir .. "/clean") end)
    end)
    teardown(function()
      run(function() e2e.stop(own.proc) end)
    end)

    it("needs --older-than or --larger-than", function()
      run(function()
        local code, _, err = cli({ "clean" }, { url = own.url })
        assert.equals(2, code)
        assert.matches("one of %-%-older%-than or %-%-larger%-than must be set", err)
      end)
    end)

    it("prints what it would delete with --dry-run, then deletes it", function()
      run(function()
        for _, app in ipairs { "clean-a", "clean-b" } do
          local code, _, err = cli({ "upload", "--app", app, good[1] }, { url = own.url })
          assert.equals(0, code, err)
        end
        local function apps()
          local res = assert(http.request { url = own.url .. "/api/profile" })
          local set = {}
          for _, p in ipairs(cjson.decode(res.body).profiles or {}) do set[p.key] = true end
          return set
        end
        e2e.wait_for(function() local a = apps() return a["clean-a"] and a["clean-b"] end, 30000, "the merges")
        local code, out, err = cli({ "clean", "--larger-than", "1", "--dry-run" }, { url = own.url })
        assert.equals(0, code, err)
        assert.equals("Would delete profile 'clean-a'\nWould delete profile 'clean-b'\n", out)
        assert.same({ ["clean-a"] = true, ["clean-b"] = true }, apps())
        code, out = cli({ "clean", "--older-than", "24h", "--larger-than", "1GiB" }, { url = own.url })
        assert.equals(0, code)
        assert.equals("No profile matches (not updated for 24h0m0s or larger than 1073741824 bytes): nothing deleted\n",
          out)
        code, out = cli({ "clean", "--older-than", "24h", "--dry-run" }, { url = own.url })
        assert.equals(0, code)
        assert.equals("No profile matches (not updated for 24h0m0s): nothing would be deleted\n", out)
        code, out, err = cli({ "clean", "-s", "1" }, { url = own.url })
        assert.equals(0, code, err)
        assert.equals("Deleted profile 'clean-a'\nDeleted profile 'clean-b'\n", out)
        e2e.wait_for(function() return next(apps()) == nil end, 30000, "the deletions")
      end)
    end)
  end)
end)
