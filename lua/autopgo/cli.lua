-- The command line: subcommands, flags, AUTOPGO_* variables and the config file, resolved with
-- the precedence flag > env > config file > default, plus --help text and usage errors (exit 2).
local options = require "autopgo.options"
local config = require "autopgo.config"
local log = require "autopgo.log"
local modules = require "autopgo.modules"
local fail = require "autopgo.fail"

local M = {}

local version = require("autopgo.version").version
M.version = version

local role_options = { "log_level", "event_writer_url", "blob_store_url", "port", "host", "tls_cert", "tls_key",
  "tls_client_ca", "max_connections", "request_timeout" }
-- who may use a listener (autopgo.auth)
local access_options = { "auth_file", "metrics_scope", "allowed_origins" }
-- Every command that talks to the server over HTTP(S): TLS settings and the token it sends.
local client_options = { "insecure", "ca_cert", "client_cert", "client_key", "token", "token_file" }

local function list(...)
  local out = {}
  for _, t in ipairs { ... } do
    for _, v in ipairs(t) do out[#out + 1] = v end
  end
  return out
end

-- Every command: what it takes and what runs it (a role script or a module with run(opts, args)).
M.commands = {
  { name = "server", script = "roles/server.lua",
    summary = "Run the profile server (and, on the embedded default, the worker in the same process)",
    options = list(role_options, { "event_reader_url", "prune", "data_dir", "max_upload_size", "min_free_space",
      "policy", "max_buffered_uploads", "max_decompressed", "max_decompressing", "max_validations", "ui",
      "segment", "retention" }, access_options) },
  { name = "worker", script = "roles/worker.lua",
    summary = "Merge uploaded profiles into one base profile per application",
    options = list(role_options, { "event_reader_url", "prune", "data_dir", "min_free_space", "policy",
      "segment", "retention" }, access_options) },
  { name = "scrape", script = "roles/scraper.lua", args = { 0, 1, "[FILE|KUBECONFIG]" },
    summary = "Periodically profile Go applications and forward the profiles to the server",
    options = list({ "log_level", "api_url", "port", "host", "sample_size", "app", "frequency", "duration", "mode" },
      client_options),
    required = { "sample_size", "app" } },
  { name = "upload", module = "autopgo.commands.upload", args = { 1, 1, "FILE" },
    summary = "Upload a pprof profile to the server to be merged (FILE may be - for stdin)",
    options = list({ "log_level", "api_url", "app" }, client_options), required = { "app" } },
  { name = "download", module = "autopgo.commands.download", args = { 1, 1, "APP" },
    summary = "Download the merged profile of an application (or of a time window with --window, --from/--to)",
    options = list({ "log_level", "api_url", "output", "fail_open", "format", "window", "from", "to" },
      client_options) },
  { name = "list", module = "autopgo.commands.list",
    summary = "List the merged profiles managed by the server",
    options = list({ "log_level", "api_url", "json" }, client_options) },
  { name = "status", module = "autopgo.commands.status", args = { 1, 1, "APP" },
    summary = "Show an application's merged profile and its staged and rejected uploads (with why)",
    options = list({ "log_level", "api_url", "json" }, client_options) },
  { name = "history", module = "autopgo.commands.history", args = { 1, 1, "APP" },
    summary = "Show an application's profile history: its time segments and the uploads in them",
    options = list({ "log_level", "api_url", "json" }, client_options) },
  { name = "delete", module = "autopgo.commands.delete", args = { 1, 1, "APP" },
    summary = "Delete the merged and any pending profiles of an application",
    options = list({ "log_level", "api_url" }, client_options) },
  { name = "clean", module = "autopgo.commands.clean",
    summary = "Delete merged profiles larger than a size or not updated for a duration",
    options = list({ "log_level", "api_url", "older_than", "larger_than", "dry_run" }, client_options) },
  { name = "merge", module = "autopgo.commands.merge", args = { 1, math.huge, "PROFILE..." },
    summary = "Merge local profiles into one (optionally pruned with --prune and --app, or only those "
      .. "captured between --from and --to)",
    options = { "log_level", "output", "force", "prune", "app", "from", "to" } },
  { name = "inspect", module = "autopgo.commands.inspect", args = { 1, 1, "PROFILE" },
    summary = "Describe a profile: sample types, sizes, PGO usability, top functions (--pgo: what the compiler does)",
    options = { "log_level", "pgo", "json" } },
  { name = "diff", module = "autopgo.commands.diff", args = { 2, 2, "A B" },
    summary = "Compare the compiler's decisions of two profiles (files, or app:NAME through the API)",
    options = list({ "log_level", "api_url", "json" }, client_options) },
  { name = "run", args = { 1, math.huge, "SCRIPT [ARGS...]" }, passthrough = true,
    summary = "Run a Lua script on the event loop with the autopgo library available",
    options = { "log_level" } },
  { name = "version", summary = "Print the version", options = { "log_level" } },
  { name = "help", args = { 0, 1, "[COMMAND]" }, summary = "Show help for a command", options = {} },
}

M.by_name = {}
for _, c in ipairs(M.commands) do
  c.args = c.args or { 0, 0, "" }
  if c.name ~= "help" then
    c.options[#c.options + 1] = "config"
    c.options[#c.options + 1] = "lua_path"
  end
  M.by_name[c.name] = c
end

-- Exit: raised to stop a command with a status and a message (usage errors use status 2).
local Exit = {}
Exit.__index = Exit
Exit.__tostring = function(e) return e.message or ("exit " .. e.status) end
M.Exit = Exit

function M.exit(status, message)
  error(setmetatable({ status = status, message = message }, Exit), 0)
end

--- v, or exits with status 1 and the failure's message (a role's dependency that cannot be opened).
function M.must(v, err)
  if v == nil then M.exit(1, "autopgo: " .. fail.message(err)) end
  return v
end

function M.is_exit(v)
  return getmetatable(v) == Exit
end

local function usage_error(cmd, fmt, ...)
  local where = cmd and ("autopgo " .. cmd.name) or "autopgo"
  local hint = cmd and (" (see autopgo %s --help)"):format(cmd.name) or " (see autopgo --help)"
  M.exit(2, where .. ": " .. fmt:format(...) .. hint)
end

local function option_label(o)
  return "--" .. o.flag
end

local type_names = { url = "url", int = "int", port = "int", duration = "duration", size = "size",
  enum = "string", string = "string", path = "path", app = "name", time = "time", bool = "", list = "list" }

--- The --help text of a command.
function M.help(cmd)
  if not cmd then
    local out = { "autopgo: profile-guided optimisation for Go services", "",
      "Usage: autopgo <command> [flags] [args]", "", "Commands:" }
    for _, c in ipairs(M.commands) do out[#out + 1] = ("  %-9s %s"):format(c.name, c.summary) end
    out[#out + 1] = ""
    out[#out + 1] = "Run 'autopgo <command> --help' for the flags of a command."
    return table.concat(out, "\n") .. "\n"
  end
  local out = { ("Usage: autopgo %s [flags]%s"):format(cmd.name, cmd.args[3] ~= "" and " " .. cmd.args[3] or ""),
    "", cmd.summary, "", "Flags:" }
  local rows = {}
  for _, name in ipairs(cmd.options) do
    local o = options.by_name[name]
    if o.flag then
      local left = ("%s%s %s"):format(o.short and ("-" .. o.short .. ", ") or "    ", option_label(o),
        type_names[o.type])
      local extra = { "env " .. o.env }
      if o.default ~= nil then
        extra[#extra + 1] = ("default %s"):format(type(o.default) == "string" and ("%q"):format(o.default)
          or tostring(o.default))
      end
      for _, r in ipairs(cmd.required or {}) do
        if r == name then extra[#extra + 1] = "required" end
      end
      rows[#rows + 1] = { left, ("%s (%s)"):format(o.desc, table.concat(extra, ", ")) }
    end
  end
  rows[#rows + 1] = { "-h, --help", "Show this help" }
  local width = 0
  for _, r in ipairs(rows) do width = math.max(width, #r[1]) end
  for _, r in ipairs(rows) do out[#out + 1] = ("  %-" .. width .. "s   %s"):format(r[1], r[2]) end
  return table.concat(out, "\n") .. "\n"
end

local rank = { flag = 3, env = 2, config = 1 }

-- --token and --token-file: the one from the stronger source (flag > env > config) wins, both from
-- the same source is a usage error; a token file's content (trimmed) becomes opts.token.
local function resolve_token(cmd, values, source)
  if values.token ~= nil and values.token:find("[%c ]") then
    usage_error(cmd, "the token must not contain spaces or control characters")
  end
  if values.token_file == nil then return end
  if values.token ~= nil then
    local t, f = rank[source.token], rank[source.token_file]
    if t == f then usage_error(cmd, "give one of --token (AUTOPGO_TOKEN) and --token-file (AUTOPGO_TOKEN_FILE)") end
    if t > f then return end
  end
  local path = values.token_file
  local fh, err = io.open(path, "rb")
  if not fh then M.exit(1, ("autopgo %s: cannot read the token file: %s"):format(cmd.name, err)) end
  local text = fh:read("a") or ""
  fh:close()
  text = text:match("^%s*(.-)%s*$")
  if text == "" then M.exit(1, ("autopgo %s: the token file %s is empty"):format(cmd.name, path)) end
  if text:find("[%c ]") then
    M.exit(1, ("autopgo %s: the token file %s holds more than one token (spaces or line breaks inside)")
      :format(cmd.name, path))
  end
  values.token, source.token = text, "token_file"
end

local function find_command(name)
  return type(name) == "string" and M.by_name[name] or nil
end

--- Parses `argv` (a list of strings) for command `name`. Returns opts, args where opts maps
-- option names to typed values and opts._source maps them to "flag", "env", "config" or
-- "default". Raises M.Exit on --help (status 0) and on usage errors (status 2).
function M.parse(name, argv, env)
  local cmd = assert(find_command(name), "unknown command " .. tostring(name))
  env = env or os.getenv
  local long, short, allowed = {}, {}, {}
  for _, n in ipairs(cmd.options) do
    local o = options.by_name[n]
    allowed[n] = o
    if o.flag then long[o.flag] = o end
    if o.short then short[o.short] = o end
  end

  local values, source, args = {}, {}, {}
  local i = 1
  while i <= #argv do
    local a = argv[i]
    if a == "--" then
      for j = i + 1, #argv do args[#args + 1] = argv[j] end
      break
    elseif cmd.passthrough and #args >= 1 then
      args[#args + 1] = a
    elseif a == "-h" or a == "--help" then
      M.exit(0, M.help(cmd))
    elseif a:sub(1, 1) == "-" and a ~= "-" then
      local o, val, label
      if a:sub(1, 2) == "--" then
        local key, v = a:match("^%-%-([^=]+)=(.*)$")
        key = key or a:sub(3)
        val = v
        o = long[key]
        label = "--" .. key
      else
        local key = a:sub(2, 2)
        local rest = a:sub(3)
        if rest:sub(1, 1) == "=" then rest = rest:sub(2) end
        if rest ~= "" then val = rest end
        o = short[key]
        label = "-" .. key
      end
      if not o then usage_error(cmd, "unknown flag %s", label) end
      if o.type == "bool" then
        val = val or "true"
      elseif val == nil then
        if i == #argv then usage_error(cmd, "flag %s needs a value", label) end
        i = i + 1
        val = argv[i]
      end
      local v, why = options.coerce(o, val)
      if v == nil then usage_error(cmd, "invalid value for %s: %s", label, why) end
      values[o.name], source[o.name] = v, "flag"
    else
      args[#args + 1] = a
    end
    i = i + 1
  end

  local min, max, label = cmd.args[1], cmd.args[2], cmd.args[3]
  if #args < min then
    usage_error(cmd, "missing argument %s", label)
  elseif #args > max then
    usage_error(cmd, "unexpected argument %q", args[max + 1])
  end

  for n, o in pairs(allowed) do
    if values[n] == nil and o.env then
      local raw = env(o.env)
      if raw ~= nil and raw ~= "" then
        local v, why = options.coerce(o, raw)
        if v == nil then usage_error(cmd, "invalid value for %s: %s", o.env, why) end
        values[n], source[n] = v, "env"
      end
    end
  end

  if values.config then
    local cfg, err = config.load(values.config)
    if not cfg then M.exit(2, ("autopgo %s: %s"):format(cmd.name, fail.message(err))) end
    for n, v in pairs(cfg) do
      if allowed[n] and values[n] == nil then values[n], source[n] = v, "config" end
    end
  end

  for n, o in pairs(allowed) do
    if values[n] == nil and o.default ~= nil then
      values[n], source[n] = options.default(o), "default"
    end
  end

  if allowed.token_file then resolve_token(cmd, values, source) end

  for _, n in ipairs(cmd.required or {}) do
    if values[n] == nil then
      local o = options.by_name[n]
      usage_error(cmd, "%s is required (or set %s)", option_label(o), o.env)
    end
  end

  local format = env("AUTOPGO_LOG_FORMAT")
  if format ~= nil and format ~= "" then
    if format ~= "json" and format ~= "text" then
      usage_error(cmd, "invalid value for AUTOPGO_LOG_FORMAT: must be text or json, got %q", format)
    end
    log.set_format(format)
  end
  if values.log_level then log.set_level(values.log_level) end
  if log.enabled("debug") then
    local names = {}
    for n in pairs(values) do names[#names + 1] = n end
    table.sort(names)
    local fields = {}
    for _, n in ipairs(names) do
      local v = values[n]
      fields[#fields + 1] = n
      if options.by_name[n].secret then v = "(redacted)" end
      fields[#fields + 1] = (type(v) == "table" or type(v) == "function") and type(v)
        or (tostring(v) .. " (" .. source[n] .. ")")
    end
    log.debug("options resolved", "command", cmd.name, table.unpack(fields))
  end

  values._source = source
  return values, args
end

--- Ends a daemon (exit 1) whose HTTP listener could not open `host`:`port`, saying what to do;
-- a port in use is the common case (scraper and worker default to 8080 like the server).
function M.listen_failed(name, host, port, err)
  local msg = fail.message(err)
  if msg:find("address already in use", 1, true) then
    msg = ("%s: another process has port %d; pass another with -p/--port or AUTOPGO_PORT (e.g. -p %d)")
      :format(msg, port, port == 65535 and 8081 or port + 1)
  elseif not msg:find(host, 1, true) then
    msg = ("cannot listen on %s:%d: %s"):format(host, port, msg)
  end
  M.exit(1, ("autopgo %s: %s"):format(name, msg))
end

local function write(stream, text)
  stream:write(text)
  stream:flush()
end

-- Runs a module command: require it, then module.run(opts, args) -> status.
local function run_module(cmd, argv)
  local opts, args = M.parse(cmd.name, argv)
  local mod = modules.require(cmd.module)
  if not mod then M.exit(1, ("autopgo %s: not built yet"):format(cmd.name)) end
  return mod.run(opts, args)
end

--- Entry point: dispatches argv (without the program name) and returns the exit status.
function M.main(argv)
  local script = require "autopgo.script"
  local ok, status = xpcall(function()
    local name = argv[1]
    if name == nil then M.exit(2, "autopgo: missing command (autopgo help lists them)") end
    if name == "-h" or name == "--help" then M.exit(0, M.help(nil)) end
    if name == "--version" then name = "version" end
    local cmd = find_command(name)
    if not cmd then usage_error(nil, "unknown command %q", name) end
    local rest = table.move(argv, 2, #argv, 1, {})
    if cmd.name == "help" then
      local _, args = M.parse("help", rest)
      local target = args[1] and find_command(args[1])
      if args[1] and not target then usage_error(cmd, "unknown command %q", args[1]) end
      write(io.stdout, M.help(target))
      return 0
    elseif cmd.name == "version" then
      M.parse("version", rest)
      local core = require "autopgo.core"
      log.debug("build", "version", version, "lua", _VERSION, "abi", core.abi)
      write(io.stdout, ("autopgo %s\n"):format(version))
      return 0
    elseif cmd.name == "run" then
      local opts, args = M.parse("run", rest)
      local path = table.remove(args, 1)
      return script.run(path, args, opts)
    elseif cmd.script then
      return script.run(cmd.script, rest, nil, cmd.name)
    end
    return run_module(cmd, rest)
  end, script.handler)
  return script.outcome(ok, status)
end

return M
