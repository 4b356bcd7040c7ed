-- Specs for `autopgo history` (lua/autopgo/commands/history.lua) and the time-window flags of
-- `autopgo download` (--window, --from/--to): the real binary against a local HTTP server that
-- answers as the API does, and the usage errors caught before any request.
local cjson = require "cjson"
local support = require "tests.lua.support"
local fixture = require "tests.lua.http_fixture"
local history = require "autopgo.commands.history"

local run = support.run

local doc = {
  app = "my-app",
  segment = "1h",
  segments = {
    { start = "2024-10-28T00:00:00Z", ["end"] = "2024-10-28T01:00:00Z", uploads = 2, samples = 1234,
      bytes = 5678 },
    { start = "2024-10-28T01:00:00Z", ["end"] = "2024-10-28T02:00:00Z", uploads = 1, samples = 99,
      bytes = 3 * 1024 * 1024 },
  },
  uploads = {
    { key = "my-app/staging/1730075435000000001", captured = "2024-10-28T00:30:35Z", duration = 30.0,
      size = 12345, source = "10.0.0.7:6060", segment = "2024-10-28T00:00:00Z" },
    { key = "my-app/staging/1730075436000000002", captured = "2024-10-28T00:45:00.5Z", duration = 60.0,
      size = 512, source = "autopgo/1.0", segment = "2024-10-28T00:00:00Z" },
    { key = "my-app/staging/1730079000000000003", captured = "2024-10-28T01:30:00Z", duration = 1.5,
      size = 2048, source = "curl/8.5.0", segment = "2024-10-28T01:00:00Z" },
  },
}

local want_text = table.concat {
  "my-app: 2 segments of 1h, 3 uploads\n",
  "\nsegments:\n",
  "  START                 END                   UPLOADS  SAMPLES  SIZE\n",
  "  2024-10-28T00:00:00Z  2024-10-28T01:00:00Z  2        1234     5.5 KiB\n",
  "  2024-10-28T01:00:00Z  2024-10-28T02:00:00Z  1        99       3.0 MiB\n",
  "\nuploads:\n",
  "  CAPTURED                KEY                                 DURATION  SIZE      SOURCE\n",
  "  2024-10-28T00:30:35Z    my-app/staging/1730075435000000001  30s       12.1 KiB  10.0.0.7:6060\n",
  "  2024-10-28T00:45:00.5Z  my-app/staging/1730075436000000002  1m0s      512 B     autopgo/1.0\n",
  "  2024-10-28T01:30:00Z    my-app/staging/1730079000000000003  1.5s      2.0 KiB   curl/8.5.0\n",
}

describe("autopgo history", function()
  local srv, body

  setup(function()
    body = cjson.encode(doc)
    srv = fixture.start(function(req, conn)
      if req.path == "/api/profile/my-app/history" then
        conn:respond(200, { { "Content-Type", "application/json" } }, body)
      elseif req.path == "/api/profile/old/history" then
        conn:respond(404, { { "Content-Type", "text/plain" } }, "404 page not found\n")
      else
        conn:respond(404, { { "Content-Type", "application/json" } }, '{"message":"no such app","code":404}')
      end
    end)
  end)

  teardown(function() srv:close() end)

  it("formats segments and uploads as tables, with times as the server sent them", function()
    assert.equals(want_text, history.format(cjson.decode(body)))
    assert.equals("app: no history (no upload captured within retention)\n",
      history.format { app = "app", segment = "1h", segments = {}, uploads = {} })
  end)

  it("prints the server's history, or its raw JSON with --json", function()
    run(function()
      local code, out, err = support.autopgo { "history", "my-app", "--api-url", srv.url }
      assert.equals(0, code, err)
      assert.equals(want_text, out)
      code, out, err = support.autopgo { "history", "my-app", "--json", "--api-url", srv.url }
      assert.equals(0, code, err)
      assert.equals(body .. "\n", out)
    end)
    assert.equals("GET", srv.requests[1].method)
    assert.equals("/api/profile/my-app/history", srv.requests[1].target)
  end)

  it("says what went wrong: an unknown app, a server without history", function()
    run(function()
      local code, out, err = support.autopgo { "history", "nope", "--api-url", srv.url }
      assert.equals(1, code)
      assert.equals("", out)
      assert.equals("autopgo history: no history for app nope: no such app (404)\n", err)
      code, out, err = support.autopgo { "history", "old", "--api-url", srv.url }
      assert.equals(1, code)
      assert.equals("", out)
      assert.equals("autopgo history: no history for app old: the server answered 404: 404 page not found\n", err)
    end)
  end)
end)

describe("autopgo download --window / --from / --to", function()
  local srv, dir

  setup(function()
    dir = support.tmpdir()
    srv = fixture.start(function(req, conn)
      if req.query:find("from=2024-10-29", 1, true) then
        conn:respond(404, { { "Content-Type", "application/json" } },
          '{"message":"no profile for app a in that window","code":404}')
        return
      end
      conn:respond(200, { { "Content-Type", "application/octet-stream" }, { "ETag", '"sha256:x"' } },
        "profile for " .. req.target)
    end)
  end)

  teardown(function()
    srv:close()
    support.rm_rf(dir)
  end)

  local function download(args)
    local all = { "download", "a", "--api-url", srv.url }
    for _, v in ipairs(args) do all[#all + 1] = v end
    return run(function() return support.autopgo(all) end)
  end

  it("asks for the window as query parameters", function()
    local code, _, err = download { "-o", dir .. "/w.pgo", "--window", "72h" }
    assert.equals(0, code, err)
    assert.equals("profile for /api/profile/a?window=72h0m0s", support.read_file(dir .. "/w.pgo"))
    code, _, err = download { "-o", dir .. "/r.pgo", "--from", "2024-10-28T00:00:00Z", "--to",
      "2024-10-28T06:00:00+02:00" }
    assert.equals(0, code, err)
    assert.equals("profile for /api/profile/a?from=2024-10-28T00%3A00%3A00Z&to=2024-10-28T06%3A00%3A00%2B02%3A00",
      support.read_file(dir .. "/r.pgo"))
    code, _, err = download { "-o", dir .. "/f.pgo", "--from", "2024-10-28T00:00:00Z" }
    assert.equals(0, code, err)
    assert.equals("profile for /api/profile/a?from=2024-10-28T00%3A00%3A00Z", support.read_file(dir .. "/f.pgo"))
    code, _, err = download { "-o", dir .. "/d.pgo" }
    assert.equals(0, code, err)
    assert.equals("profile for /api/profile/a", support.read_file(dir .. "/d.pgo"))
  end)

  it("says when the window holds nothing", function()
    local code, _, err = download { "-o", dir .. "/none.pgo", "--from", "2024-10-29T00:00:00Z" }
    assert.equals(1, code)
    assert.equals("autopgo download: no profile for app a in that window (404)\n", err)
    assert.is_nil(support.read_file(dir .. "/none.pgo"))
  end)

  it("refuses bad windows before asking the server", function()
    local before = #srv.requests
    for _, c in ipairs {
      { { "--window", "72h", "--from", "2024-10-28T00:00:00Z" }, "--window cannot be combined with --from or --to" },
      { { "--window", "72h", "--to", "2024-10-28T00:00:00Z" }, "--window cannot be combined with --from or --to" },
      { { "--from", "2024-10-28T06:00:00Z", "--to", "2024-10-28T00:00:00Z" },
        "--from 2024-10-28T06:00:00Z is not before --to 2024-10-28T00:00:00Z" },
      { { "--from", "2024-10-28T00:00:00Z", "--to", "2024-10-28T01:00:00+01:00" }, "is not before --to" },
      { { "--window", "3 days" }, "--window" },
      { { "--window", "0s" }, "--window" },
      { { "--from", "yesterday" }, "is not RFC 3339" },
      { { "--to", "2024-10-28T00:00:00" }, "has no time zone" },
    } do
      local code, out, err = download(c[1])
      assert.equals(2, code, table.concat(c[1], " ") .. ": " .. err)
      assert.equals("", out)
      assert.truthy(err:find(c[2], 1, true), err)
      assert.truthy(err:find("autopgo download", 1, true), err)
    end
    assert.equals(before, #srv.requests)
  end)
end)
