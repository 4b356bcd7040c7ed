-- Specs for lua/autopgo/cli.lua: flags, short flags, env, config file, defaults, usage errors.
local cli = require "autopgo.cli"
local options = require "autopgo.options"
local support = require "tests.lua.support"

local function env_of(t)
  return function(k) return t[k] end
end

local function parse(cmd, argv, env)
  return cli.parse(cmd, argv, env_of(env or {}))
end

-- Runs parse and returns the Exit raised (status, message); fails if nothing was raised.
local function exit_of(cmd, argv, env)
  local ok, err = pcall(parse, cmd, argv, env)
  assert.is_false(ok, "expected parse to stop")
  assert.is_true(cli.is_exit(err), tostring(err))
  return err.status, err.message
end

describe("cli.parse", function()
  local dir
  before_each(function() dir = support.tmpdir() end)
  after_each(function() support.rm_rf(dir) end)

  it("applies the seed's defaults", function()
    local o = parse("scrape", { "--app", "a", "-s", "1" })
    assert.equals("http://localhost:8080", o.api_url)
    assert.equals(8080, o.port)
    assert.equals(60, o.frequency)
    assert.equals(30, o.duration)
    assert.equals("file", o.mode)
    assert.equals("info", o.log_level)
    assert.equals("default", o._source.port)
    local d = parse("download", { "app" })
    assert.equals("default.pgo", d.output)
  end)

  it("accepts long, --flag=value and short flags", function()
    local o = parse("scrape", { "--api-url=http://h:1", "-p", "9000", "-a", "svc", "-s3", "-f=5s",
      "--duration", "1m30s", "-m", "kube", "cfg.yaml" })
    assert.equals("http://h:1", o.api_url)
    assert.equals(9000, o.port)
    assert.equals("svc", o.app)
    assert.equals(3, o.sample_size)
    assert.equals(5, o.frequency)
    assert.equals(90, o.duration)
    assert.equals("kube", o.mode)
  end)

  it("resolves flag > env > config file > default", function()
    local cfg = support.write_file(dir .. "/c.lua", [[
      return { port = 7000, api_url = "http://from-config:1", frequency = "10s", mode = "nomad" }
    ]])
    local env = { AUTOPGO_PORT = "7100", AUTOPGO_API_URL = "http://from-env:1", AUTOPGO_CONFIG = cfg }
    local o = parse("scrape", { "-a", "x", "-s", "1", "--port", "7200" }, env)
    assert.equals(7200, o.port)
    assert.equals("flag", o._source.port)
    assert.equals("http://from-env:1", o.api_url)
    assert.equals("env", o._source.api_url)
    assert.equals(10, o.frequency)
    assert.equals("config", o._source.frequency)
    assert.equals("nomad", o.mode)
    assert.equals(30, o.duration)
    assert.equals("default", o._source.duration)
  end)

  it("takes the listening address of every daemon from --host, AUTOPGO_HOST or the config file", function()
    local cfg = support.write_file(dir .. "/h.lua", [[ return { host = "127.0.0.3" } ]])
    for _, cmd in ipairs { "server", "worker", "scrape" } do
      local extra = cmd == "scrape" and { "-a", "x", "-s", "1" } or {}
      local function with(...)
        local argv = table.move(extra, 1, #extra, 1, {})
        for _, a in ipairs { ... } do argv[#argv + 1] = a end
        return argv
      end
      local o = parse(cmd, with())
      assert.equals("0.0.0.0", o.host, cmd)
      assert.equals("default", o._source.host, cmd)
      o = parse(cmd, with("--config", cfg))
      assert.equals("127.0.0.3", o.host, cmd)
      assert.equals("config", o._source.host, cmd)
      o = parse(cmd, with("--config", cfg), { AUTOPGO_HOST = "127.0.0.2" })
      assert.equals("127.0.0.2", o.host, cmd)
      assert.equals("env", o._source.host, cmd)
      o = parse(cmd, with("--config", cfg, "--host", "127.0.0.1"), { AUTOPGO_HOST = "127.0.0.2" })
      assert.equals("127.0.0.1", o.host, cmd)
      assert.equals("flag", o._source.host, cmd)
    end
  end)

  it("takes --config over AUTOPGO_CONFIG", function()
    local a = support.write_file(dir .. "/a.lua", "return { port = 1 }")
    local b = support.write_file(dir .. "/b.lua", "return { port = 2 }")
    local o = parse("server", { "--config", b }, { AUTOPGO_CONFIG = a })
    assert.equals(2, o.port)
  end)

  it("ignores empty env vars", function()
    local o = parse("server", {}, { AUTOPGO_PORT = "" })
    assert.equals(8080, o.port)
  end)

  it("treats bool flags as switches and accepts =false", function()
    assert.is_true(parse("clean", { "--dry-run", "-d", "1h" }).dry_run)
    assert.is_false(parse("clean", { "--dry-run=false", "-d", "1h" }).dry_run)
    assert.is_true(parse("clean", { "-d", "1h" }, { AUTOPGO_DRY_RUN = "true" }).dry_run)
  end)

  it("parses clean's short flags as in the seed", function()
    local o = parse("clean", { "-d", "24h", "-s", "10240" })
    assert.equals(86400, o.older_than)
    assert.equals(10240, o.larger_than)
  end)

  it("passes everything after the script to `run`", function()
    local o, args = parse("run", { "-l", "warn", "x.lua", "--port", "1", "-z" })
    assert.equals("warn", o.log_level)
    assert.same({ "x.lua", "--port", "1", "-z" }, args)
  end)

  it("treats arguments after -- as positional", function()
    local _, args = parse("upload", { "-a", "x", "--", "--weird-file" })
    assert.same({ "--weird-file" }, args)
  end)

  describe("usage errors exit 2 with one line naming the problem", function()
    local cases = {
      { "unknown long flag", "upload", { "--bogus", "f", "-a", "x" }, "unknown flag %-%-bogus" },
      { "unknown short flag", "upload", { "-z", "f", "-a", "x" }, "unknown flag %-z" },
      { "missing value", "download", { "app", "-o" }, "flag %-o needs a value" },
      { "bad integer", "scrape", { "-a", "x", "-s", "many" }, "invalid value for %-s: must be an integer" },
      { "zero sample size", "scrape", { "-a", "x", "-s", "0" }, "must be at least 1" },
      { "bad duration", "scrape", { "-a", "x", "-s", "1", "-f", "soon" }, "invalid value for %-f" },
      { "bad port", "server", { "-p", "70000" }, "must be at most 65535" },
      { "bad log level", "server", { "-l", "loud" }, "must be one of debug, info, warn, error" },
      { "bad url", "list", { "-u", "localhost:8080" }, "must be an http:// or https:// URL" },
      { "bad app", "upload", { "f", "-a", "Bad_App" }, "application name" },
      { "missing argument", "upload", { "-a", "x" }, "missing argument FILE" },
      { "extra argument", "download", { "a", "b" }, "unexpected argument \"b\"" },
      { "required flag", "upload", { "f" }, "%-%-app is required %(or set AUTOPGO_APP%)" },
      { "scrape needs a sample size", "scrape", { "-a", "x" }, "%-%-sample%-size is required" },
      { "a day as a unit", "clean", { "--older-than", "1d" },
        'invalid value for %-%-older%-than: unknown unit "d" in duration "1d" %(durations stop at hours: use "24h"%)' },
      { "an app name too long", "upload", { "f", "-a", ("a"):rep(129) }, "at most 128 characters, got 129" },
    }
    for _, c in ipairs(cases) do
      it(c[1], function()
        local status, msg = exit_of(c[2], c[3])
        assert.equals(2, status)
        assert.matches(c[4], msg)
        assert.matches("^autopgo " .. c[2] .. ": ", msg)
        assert.is_nil(msg:find("\n"), "one line")
      end)
    end

    it("names a bad environment variable", function()
      local status, msg = exit_of("server", {}, { AUTOPGO_PORT = "eighty" })
      assert.equals(2, status)
      assert.matches("invalid value for AUTOPGO_PORT", msg)
    end)

    it("rejects a bad AUTOPGO_LOG_FORMAT", function()
      local status, msg = exit_of("server", {}, { AUTOPGO_LOG_FORMAT = "xml" })
      assert.equals(2, status)
      assert.matches("AUTOPGO_LOG_FORMAT", msg)
    end)
  end)

  it("prints help with every flag, env var and default, exiting 0", function()
    local status, msg = exit_of("upload", { "--help" })
    assert.equals(0, status)
    for _, want in ipairs { "%-l, %-%-log%-level", "AUTOPGO_LOG_LEVEL", "%-u, %-%-api%-url",
      "AUTOPGO_API_URL", "default \"http://localhost:8080\"", "%-a, %-%-app", "AUTOPGO_APP" } do
      assert.matches(want, msg)
    end
    local _, scrape = exit_of("scrape", { "-h" })
    for _, f in ipairs { "sample%-size", "frequency", "duration", "mode", "port" } do
      assert.matches("%-%-" .. f, scrape)
    end
  end)
end)

describe("cli.main", function()
  it("says a command whose module is missing is not built yet, exiting 1", function()
    cli.by_name.fake = { name = "fake", module = "autopgo.commands.does_not_exist", args = { 0, 0, "" },
      options = { "log_level" }, summary = "" }
    local stderr = io.stderr
    local captured = {}
    local fake = {
      write = function(_, ...) for _, s in ipairs { ... } do captured[#captured + 1] = s end end,
      flush = function() end,
    }
    io.stderr = fake -- luacheck: ignore 122
    local ok, status = pcall(cli.main, { "fake" })
    io.stderr = stderr -- luacheck: ignore 122
    cli.by_name.fake = nil
    assert.is_true(ok, tostring(status))
    assert.equals(1, status)
    assert.equals("autopgo fake: not built yet\n", table.concat(captured))
  end)
end)

describe("the option schema", function()
  it("has unique flags and short flags within every command", function()
    for _, cmd in ipairs(cli.commands) do
      local longs, shorts = {}, {}
      for _, n in ipairs(cmd.options) do
        local o = assert(options.by_name[n], cmd.name .. " lists unknown option " .. n)
        if o.flag then
          assert.is_nil(longs[o.flag], cmd.name .. ": duplicate --" .. o.flag)
          longs[o.flag] = true
        end
        if o.short then
          assert.is_nil(shorts[o.short], cmd.name .. ": duplicate -" .. o.short)
          shorts[o.short] = true
        end
      end
    end
  end)

  it("matches the seed README's flags, short flags, env vars and defaults", function()
    local seed = {
      { "log_level", "l", "AUTOPGO_LOG_LEVEL", "info" }, { "api_url", "u", "AUTOPGO_API_URL", "http://localhost:8080" },
      { "port", "p", "AUTOPGO_PORT", 8080 }, { "sample_size", "s", "AUTOPGO_SAMPLE_SIZE" },
      { "app", "a", "AUTOPGO_APP" }, { "frequency", "f", "AUTOPGO_FREQUENCY", "60s" },
      { "duration", "d", "AUTOPGO_DURATION", "30s" }, { "mode", "m", "AUTOPGO_MODE", "file" },
      { "event_writer_url", nil, "AUTOPGO_EVENT_WRITER_URL" }, { "event_reader_url", nil, "AUTOPGO_EVENT_READER_URL" },
      { "blob_store_url", nil, "AUTOPGO_BLOB_STORE_URL" }, { "prune", nil, "AUTOPGO_PRUNE" },
      { "output", "o", "AUTOPGO_OUTPUT", "default.pgo" }, { "older_than", "d", "AUTOPGO_OLDER_THAN" },
      { "larger_than", "s", "AUTOPGO_LARGER_THAN" },
    }
    for _, s in ipairs(seed) do
      local o = options.by_name[s[1]]
      assert.equals(s[2], o.short, s[1])
      assert.equals(s[3], o.env, s[1])
      assert.equals(s[4], o.default, s[1])
    end
  end)

  it("gives every command the seed's flags", function()
    local seed = {
      scrape = { "log_level", "api_url", "port", "sample_size", "app", "frequency", "duration", "mode" },
      server = { "log_level", "event_writer_url", "blob_store_url", "port" },
      worker = { "log_level", "event_writer_url", "event_reader_url", "blob_store_url", "port", "prune" },
      upload = { "log_level", "api_url", "app" }, download = { "log_level", "api_url", "output" },
      list = { "log_level", "api_url" }, delete = { "log_level", "api_url" },
      clean = { "log_level", "api_url", "older_than", "larger_than" },
    }
    for name, want in pairs(seed) do
      local have = {}
      for _, n in ipairs(cli.by_name[name].options) do have[n] = true end
      for _, n in ipairs(want) do assert.is_true(have[n] == true, name .. " lacks --" .. n) end
    end
  end)

  it("gives every client command and the scraper --token and --token-file, and the daemons access control", function()
    for _, name in ipairs { "upload", "download", "list", "status", "delete", "clean", "scrape" } do
      local have = {}
      for _, n in ipairs(cli.by_name[name].options) do have[n] = true end
      assert.is_true(have.token and have.token_file, name)
      assert.is_nil(have.auth_file, name)
    end
    for _, name in ipairs { "server", "worker" } do
      local have = {}
      for _, n in ipairs(cli.by_name[name].options) do have[n] = true end
      assert.is_true(have.auth_file and have.metrics_scope and have.allowed_origins, name)
    end
  end)

  it("reads the token from --token, AUTOPGO_TOKEN or a token file, the stronger source winning", function()
    local dir = support.tmpdir()
    local file = support.write_file(dir .. "/t", "  file-token\n")
    local o = parse("list", { "--token", "flag-token" })
    assert.equals("flag-token", o.token)
    o = parse("list", {}, { AUTOPGO_TOKEN = "env-token" })
    assert.equals("env-token", o.token)
    o = parse("list", { "--token-file", file })
    assert.equals("file-token", o.token)
    assert.equals("token_file", o._source.token)
    o = parse("list", { "--token-file", file }, { AUTOPGO_TOKEN = "env-token" })
    assert.equals("file-token", o.token)
    o = parse("list", { "--token", "flag-token" }, { AUTOPGO_TOKEN_FILE = file })
    assert.equals("flag-token", o.token)
    local cfg = support.write_file(dir .. "/c.lua", ("return { token_file = %q }"):format(file))
    o = parse("upload", { "--app", "a", "--config", cfg, "x" })
    assert.equals("file-token", o.token)
    local status, msg = exit_of("list", { "--token", "a", "--token-file", file })
    assert.equals(2, status)
    assert.matches("give one of --token", msg, 1, true)
    status, msg = exit_of("list", { "--token-file", dir .. "/missing" })
    assert.equals(1, status)
    assert.matches("cannot read the token file", msg, 1, true)
    status, msg = exit_of("list", { "--token-file", support.write_file(dir .. "/empty", "\n") })
    assert.equals(1, status)
    assert.matches("is empty", msg, 1, true)
    status, msg = exit_of("list", { "--token-file", support.write_file(dir .. "/two", "a\nb\n") })
    assert.equals(1, status)
    assert.matches("more than one token", msg, 1, true)
    status, msg = exit_of("list", { "--token", "a b" })
    assert.equals(2, status)
    assert.matches("must not contain spaces", msg, 1, true)
    -- the token is no config key (config files get committed)
    cfg = support.write_file(dir .. "/t.lua", "return { token = 'x' }")
    status, msg = exit_of("list", { "--config", cfg })
    assert.equals(2, status)
    assert.matches("unknown key \"token\"", msg, 1, true)
    support.rm_rf(dir)
  end)

  it("takes --allowed-origins as a comma-separated list and --metrics-scope from its values", function()
    local o = parse("server", { "--allowed-origins", "https://a.example, http://b.example:8080,," })
    assert.same({ "https://a.example", "http://b.example:8080" }, o.allowed_origins)
    assert.equals("open", o.metrics_scope)
    o = parse("server", {}, { AUTOPGO_METRICS_SCOPE = "metrics", AUTOPGO_AUTH_FILE = "/etc/a.json" })
    assert.equals("metrics", o.metrics_scope)
    assert.equals("/etc/a.json", o.auth_file)
    assert.equals(2, (exit_of("server", { "--metrics-scope", "admin" })))
  end)
end)
