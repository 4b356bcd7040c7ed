-- Example autopgo configuration: a Lua file returning a table, passed with --config FILE or
-- AUTOPGO_CONFIG. Every key is optional; precedence is flag > AUTOPGO_* env var > this file >
-- built-in default. Unknown keys and wrong types stop start-up with an error naming the key.
-- Durations are Go syntax ("30s", "1m30s", "24h") or seconds; sizes are bytes or "64MiB".
return {
  -- All commands ---------------------------------------------------------------------------
  -- Log verbosity: "debug", "info", "warn" or "error". (--log-level, AUTOPGO_LOG_LEVEL)
  log_level = "info",

  -- server and worker -------------------------------------------------------------------------
  -- Port for HTTP traffic: the API on the server, health and metrics on worker and scraper.
  -- (--port, AUTOPGO_PORT)
  port = 8080,
  -- The address to listen on; "127.0.0.1" keeps the port on this machine. (--host, AUTOPGO_HOST)
  host = "0.0.0.0",
  -- Where profiles live, as a gocloud.dev URL: s3://bucket?region=..., gs://bucket,
  -- azblob://container, file:///path, mem://. Unset: a file store under data_dir.
  -- (--blob-store-url, AUTOPGO_BLOB_STORE_URL)
  -- blob_store_url = "s3://profiles?region=eu-west-1",
  -- Directory of the embedded default file store. (--data-dir, AUTOPGO_DATA_DIR)
  data_dir = "./autopgo-data",
  -- Event bus to publish to / consume from, as gocloud.dev URLs: kafka://topic, nats://subject,
  -- awssqs://..., awssns:///arn:..., gcppubsub://projects/P/topics/T, azuresb://topic, mem://.
  -- Unset on the server: an in-process bus with the worker running in the same process.
  -- (--event-writer-url / --event-reader-url, AUTOPGO_EVENT_WRITER_URL / AUTOPGO_EVENT_READER_URL)
  -- event_writer_url = "kafka://profiles",
  -- event_reader_url = "kafka://autopgo-workers?topic=profiles",
  -- Largest accepted upload. (--max-upload-size, AUTOPGO_MAX_UPLOAD_SIZE)
  max_upload_size = "64MiB",
  -- /api/health reports unhealthy ("disk") when the disk of data_dir has less free space than this
  -- (file store only). (--min-free-space, AUTOPGO_MIN_FREE_SPACE)
  min_free_space = "512MiB",
  -- The web view under /ui/ (flame graphs, top functions, the compiler's view). (--ui, AUTOPGO_UI)
  ui = true,
  -- Access control (README "Access control"): a JSON file of token grants; unset, the API is open
  -- to anyone who can reach the port. Reloaded on SIGHUP. (--auth-file, AUTOPGO_AUTH_FILE)
  -- auth_file = "/etc/autopgo/auth.json",
  -- The scope a token needs for /metrics when auth_file is set: "open" (no token), "metrics",
  -- "download", "upload" or "delete". (--metrics-scope, AUTOPGO_METRICS_SCOPE)
  metrics_scope = "open",
  -- Origins besides the server's own that may send POST/DELETE (browsers); "*" allows any.
  -- (--allowed-origins, AUTOPGO_ALLOWED_ORIGINS, comma-separated)
  -- allowed_origins = { "https://dashboard.example.com" },
  -- Pruning rules in the original's JSON format. (--prune, AUTOPGO_PRUNE)
  -- prune = "/etc/autopgo/prune.json",
  -- Merge policy per application ("*" applies to every app without its own entry): prune rules
  -- (same meaning as the JSON file's) and a hook that may edit each uploaded profile before it is
  -- merged. Only settable here. What the server serves (lua/autopgo/pgo.lua): serve = "pgo" makes
  -- a plain download return the minimal profile holding exactly the compiler's call edges (default
  -- "pprof", the full profile); stable = true keeps serving the same minimal bytes and ETag while
  -- the compiler's decisions do not change; no_inline lists callees that must never be hot inline
  -- targets (the total weight and every other decision stay as they were).
  policy = {
    -- ["example-app"] = {
    --   prune = { { drop = "github.com/example/.*", keep = "github.com/example/example-dependency" } },
    --   hook = function(profile, app) return profile end,
    --   serve = "pgo", stable = true, no_inline = { "runtime.gopark" },
    -- },
  },

  -- scrape ------------------------------------------------------------------------------------
  -- Profile server to send profiles to. (--api-url, AUTOPGO_API_URL; also upload/download/...)
  api_url = "http://localhost:8080",
  -- Application the scraped profiles belong to. (--app, AUTOPGO_APP)
  -- app = "example-app",
  -- Maximum number of targets profiled at once. (--sample-size, AUTOPGO_SAMPLE_SIZE)
  -- sample_size = 3,
  -- Interval between profiling rounds. (--frequency, AUTOPGO_FREQUENCY)
  frequency = "60s",
  -- How long each target is profiled for. (--duration, AUTOPGO_DURATION)
  duration = "30s",
  -- Target discovery: "file", "kube", "nomad", "consul" or a Lua module path. (--mode, AUTOPGO_MODE)
  mode = "file",
  -- A file holding the bearer token for the profile server (scrape and every client command);
  -- the token itself is only a flag or variable, never a config key. (--token-file,
  -- AUTOPGO_TOKEN_FILE; --token, AUTOPGO_TOKEN)
  -- token_file = "/etc/autopgo/token",
  -- Skip TLS verification for outbound HTTPS (targets, API). (--insecure, AUTOPGO_INSECURE)
  insecure = false,

  -- download / clean / list -------------------------------------------------------------------
  -- Where download writes the profile. (--output, AUTOPGO_OUTPUT)
  output = "default.pgo",
  -- download: keep going without a profile when the server is down. (--fail-open, AUTOPGO_FAIL_OPEN)
  fail_open = false,
  -- list: print the raw JSON response. (--json, AUTOPGO_JSON)
  json = false,
  -- download: pprof (full), pgo (minimal, same compiler decisions) or preprofile (GO PREPROFILE
  -- V1, for -gcflags=all=-pgoprofile=; go build -pgo does not read it); default: the server's
  -- policy. (--format, AUTOPGO_FORMAT)
  -- format = "pgo",
  -- clean: age and size thresholds, and a dry run. (--older-than / --larger-than / --dry-run)
  -- older_than = "24h",
  -- larger_than = 10240,
  dry_run = false,
}
