-- The one declarative schema of every option: its flag, short flag, AUTOPGO_* variable, config
-- file key, type, default and description. The CLI, --help, env lookup and config validation all
-- read this table. Short flags are only unique per command (-d is --duration in scrape and
-- --older-than in clean, as in the original).
local M = {}

-- type: string | url | int | port | duration | size | time | bool | enum | path | list | table; secret: never logged
M.list = {
  { name = "log_level", short = "l", type = "enum", values = { "debug", "info", "warn", "error" },
    default = "info",
    desc = "Controls the verbosity of log output, valid values are debug, info, warn & error" },
  { name = "config", type = "path", config = false,
    desc = "A Lua file returning a table of options (see config.example.lua)" },
  { name = "lua_path", type = "path", config = false,
    desc = "A directory holding an editable copy of lua/ that takes priority over the built-in one" },
  { name = "api_url", short = "u", type = "url", default = "http://localhost:8080",
    desc = "The base URL of the profile server" },
  { name = "port", short = "p", type = "port", default = 8080,
    desc = "Specifies the port to use for HTTP traffic" },
  { name = "host", type = "string", default = "0.0.0.0",
    desc = "The address to listen on for HTTP traffic (127.0.0.1 keeps it on this machine)" },
  { name = "sample_size", short = "s", type = "int", min = 1,
    desc = "Specifies the maximum number of targets to profile concurrently" },
  { name = "app", short = "a", type = "app",
    desc = "Specifies the application name that profiles will be uploaded for" },
  { name = "frequency", short = "f", type = "duration", default = "60s", min = 0.001,
    desc = "Specifies the interval between profiling runs" },
  { name = "duration", short = "d", type = "duration", default = "30s", min = 1,
    desc = "Specifies the amount of time a target will be profiled for" },
  { name = "mode", short = "m", type = "string", default = "file",
    desc = "What mode to run the scraper in (file, kube, nomad, consul, or a Lua discovery module)" },
  { name = "event_writer_url", type = "string",
    desc = "Specifies the event bus to use for publishing profile events (default: in-process)" },
  { name = "event_reader_url", type = "string",
    desc = "Specifies the event bus to use for consuming profile events (default: in-process)" },
  { name = "blob_store_url", type = "string",
    desc = "Specifies the blob storage provider to use for reading & writing profiles "
      .. "(default: file:// under --data-dir)" },
  { name = "prune", type = "path",
    desc = "Specifies the location of the configuration file for profile pruning" },
  { name = "data_dir", type = "path", default = "./autopgo-data",
    desc = "Where the embedded default file store keeps profiles when no --blob-store-url is given" },
  { name = "max_upload_size", type = "size", default = "64MiB",
    desc = "The largest profile upload accepted, in bytes or with a unit (KiB, MiB, GiB)" },
  { name = "min_free_space", type = "size", default = "512MiB",
    desc = "Below this much free disk space under --data-dir, /api/health reports unhealthy" },
  { name = "ui", type = "bool", default = true,
    desc = "Serve the web view (apps, flame graphs, top functions) under /ui/; --ui=false turns it off" },
  { name = "output", short = "o", type = "string", default = "default.pgo",
    desc = "The location on the local file system to store the profile" },
  { name = "force", type = "bool", default = false, config = false,
    desc = "Replace an existing output file that -o does not name explicitly" },
  { name = "fail_open", type = "bool", default = false,
    desc = "When the server is unreachable or fails, warn and exit 0 keeping any existing file" },
  { name = "window", type = "duration", min = 1, config = false,
    desc = "Only the uploads captured in this last span of time, e.g. 72h (segment granularity)" },
  { name = "from", type = "time", config = false,
    desc = "Only profiles captured at or after this RFC 3339 time, e.g. 2024-10-28T00:00:00Z" },
  { name = "to", type = "time", config = false,
    desc = "Only profiles captured before this RFC 3339 time" },
  { name = "json", type = "bool", default = false, desc = "Print the raw JSON response" },
  { name = "format", type = "enum", values = { "pprof", "pgo", "preprofile" },
    desc = "What to download: pprof (the full merged profile), pgo (the minimal profile with exactly the "
      .. "compiler's call edges) or preprofile (GO PREPROFILE V1, for -gcflags=all=-pgoprofile= and Bazel; "
      .. "not for go build -pgo); default: the server's policy (serve)" },
  { name = "pgo", type = "bool", default = false, config = false,
    desc = "Show what go build -pgo will do with the profile: hot call sites, hot functions, "
      .. "devirtualization targets" },
  { name = "older_than", short = "d", type = "duration", min = 0,
    desc = "How long a profile must not have been updated for to be eligible for cleaning" },
  { name = "larger_than", short = "s", type = "size",
    desc = "The minimum size (in bytes) a profile must be to be eligible for cleaning" },
  { name = "dry_run", type = "bool", default = false, desc = "Print what would be deleted without deleting" },
  { name = "insecure", type = "bool", default = false,
    desc = "Skip TLS certificate verification for outbound HTTPS requests" },
  { name = "auth_file", type = "path",
    desc = "A JSON file of token grants (name, sha256, scopes, apps); without it the API is open to anyone"
      .. " who can reach the port. Reloaded on SIGHUP" },
  { name = "metrics_scope", type = "enum", values = { "open", "metrics", "download", "upload", "delete" },
    default = "open", desc = "The token scope /metrics needs when --auth-file is given (open: no token)" },
  { name = "allowed_origins", type = "list",
    desc = "Comma-separated origins (scheme://host[:port], or *) that may send POST/DELETE besides the"
      .. " server's own; other cross-origin state-changing requests get 403" },
  { name = "token", type = "string", secret = true, config = false, -- config files get committed: token_file
    desc = "The bearer token sent to the autopgo server (prefer --token-file or AUTOPGO_TOKEN)" },
  { name = "token_file", type = "path",
    desc = "A file holding the bearer token sent to the autopgo server (surrounding whitespace is ignored)" },
  -- TLS ----------------------------------------------------------------------------------------
  { name = "tls_cert", type = "path",
    desc = "PEM certificate (chain) to serve HTTPS with, HTTP/2 and HTTP/1.1 by ALPN (with --tls-key); "
      .. "read again on SIGHUP" },
  { name = "tls_key", type = "path", desc = "PEM private key of --tls-cert; read again on SIGHUP" },
  { name = "tls_client_ca", type = "path",
    desc = "PEM CA certificates: require clients to present a certificate signed by one (mutual TLS)" },
  { name = "ca_cert", type = "path",
    desc = "PEM CA certificates to verify the server's HTTPS certificate with (default: the system's)" },
  { name = "client_cert", type = "path",
    desc = "PEM client certificate to present to a server that asks for one (mutual TLS, with --client-key)" },
  { name = "client_key", type = "path", desc = "PEM private key of --client-cert" },
  -- Budgets ------------------------------------------------------------------------------------
  { name = "max_connections", type = "int", min = 1, default = 8192,
    desc = "Connections past this many are closed as soon as they are accepted" },
  { name = "request_timeout", type = "duration", default = "120s", min = 0.1,
    desc = "Time a client has to send a request's headers and body; also how long an idle "
      .. "keep-alive connection stays open" },
  { name = "max_buffered_uploads", type = "size", default = "512MiB",
    desc = "Request bytes (compressed uploads) the server buffers at once; past it, requests still "
      .. "arriving get 503 with Retry-After" },
  { name = "max_decompressed", type = "size", default = "256MiB",
    desc = "What one upload may decompress to; larger gets 413 (validation stops at the limit)" },
  { name = "max_decompressing", type = "size", default = "512MiB",
    desc = "Decompressed bytes all uploads being validated may reserve at once; past it uploads wait "
      .. "(then 503 with Retry-After)" },
  { name = "max_validations", type = "int", min = 1, default = 2,
    desc = "Uploads validated at once on the thread pool, in each of two lanes (up to 4 MiB decompressed, "
      .. "and larger), so file operations keep threads free" },
  { name = "segment", type = "duration", default = "1h", min = 0,
    desc = "The length of the history's time segments (whole seconds; 0 keeps no history)" },
  { name = "retention", type = "duration", min = 1,
    desc = "How long history is kept (e.g. 720h; default: everything); staged uploads are never dropped" },
  { name = "policy", type = "table", flag = false,
    desc = "Per-app merge policy: { [app] = { prune = { {drop=..., keep=...} }, hook = function(profile, app) } }" },
}

M.by_name = {}
for _, o in ipairs(M.list) do
  if o.flag == nil then o.flag = o.name:gsub("_", "-") end
  if o.env == nil and o.flag then o.env = "AUTOPGO_" .. o.name:upper() end
  if o.config == nil then o.config = true end
  M.by_name[o.name] = o
end

local units = require "autopgo.units"
local keys = require "autopgo.keys"
local fail = require "autopgo.fail"
local utc = require "autopgo.utc"

-- until api.lua, config.lua and events.lua use keys
M.is_app_name = keys.is_app_name

local booleans = { ["true"] = true, ["1"] = true, yes = true, on = true,
  ["false"] = false, ["0"] = false, no = false, off = false }

-- Each checker takes a raw value (a string from a flag or env var, or any Lua value from the
-- config file) and returns the typed value, or nil and a message saying what was expected.
local check = {}

function check.string(_, v)
  if type(v) ~= "string" then return nil, "must be a string" end
  return v
end
check.path = check.string

function check.url(_, v)
  if type(v) ~= "string" then return nil, "must be a string" end
  if not v:match("^https?://[^/%s]+") then return nil, ("must be an http:// or https:// URL, got %q"):format(v) end
  return (v:gsub("/+$", ""))
end

function check.app(_, v)
  local problem = keys.app_name_problem(v)
  if problem then return nil, problem end
  return v
end

function check.int(o, v)
  local n = v
  if type(v) == "string" then n = tonumber(v, 10) end
  n = math.tointeger(n)
  if not n then return nil, ("must be an integer, got %q"):format(tostring(v)) end
  if o.min and n < o.min then return nil, ("must be at least %d, got %d"):format(o.min, n) end
  if o.max and n > o.max then return nil, ("must be at most %d, got %d"):format(o.max, n) end
  return n
end

function check.port(_, v)
  return check.int({ min = 0, max = 65535 }, v)
end

function check.duration(o, v)
  local secs = v
  if type(v) == "string" then
    local err
    secs, err = units.parse_duration(v)
    if not secs then return nil, fail.message(err) end
  elseif type(v) ~= "number" then
    return nil, "must be a duration such as \"30s\", \"1m30s\" or \"24h\""
  end
  if o.min and secs < o.min then
    return nil, ("must be at least %s, got %s"):format(units.format_duration(o.min), units.format_duration(secs))
  end
  return secs
end

-- An RFC 3339 time, kept as written (it is sent on as it is); utc.parse_rfc3339 gives its value.
function check.time(_, v)
  local t, err = utc.parse_rfc3339(v)
  if not t then return nil, fail.message(err) end
  return v
end

function check.size(_, v)
  local n, err = units.parse_size(v)
  if not n then return nil, fail.message(err) end
  return n
end

function check.bool(_, v)
  if type(v) == "boolean" then return v end
  local b = type(v) == "string" and booleans[v:lower()]
  if b == nil then return nil, ("must be true or false, got %q"):format(tostring(v)) end
  return b
end

function check.enum(o, v)
  for _, allowed in ipairs(o.values) do
    if v == allowed then return v end
  end
  return nil, ("must be one of %s, got %q"):format(table.concat(o.values, ", "), tostring(v))
end

function check.list(_, v)
  if type(v) == "string" then
    local out = {}
    for item in v:gmatch("[^,]+") do
      item = item:match("^%s*(.-)%s*$")
      if item ~= "" then out[#out + 1] = item end
    end
    return out
  end
  if type(v) ~= "table" then return nil, "must be a list (comma-separated, or a table of strings)" end
  for _, item in ipairs(v) do
    if type(item) ~= "string" then return nil, "must be a list of strings" end
  end
  return v
end

function check.table(_, v)
  if type(v) ~= "table" then return nil, "must be a table" end
  return v
end

--- Converts a raw value for option `o`; returns the value or nil, message.
function M.coerce(o, v)
  return check[o.type](o, v)
end

--- The option's default, converted (defaults are written as users would write them).
function M.default(o)
  if o.default == nil then return nil end
  local v, why = M.coerce(o, o.default)
  assert(v ~= nil, why)
  return v
end

return M
