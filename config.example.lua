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
  -- Length of the history's time segments (README "Time model"); 0 keeps no history.
  -- (--segment, AUTOPGO_SEGMENT)
  segment = "1h",
  -- How long history (segments, provenance) is kept; default: everything. Staged uploads are never
  -- dropped by it. (--retention, AUTOPGO_RETENTION)
  -- retention = "720h",
  -- Pruning rules in the original's JSON format. (--prune, AUTOPGO_PRUNE)
  -- prune = "/etc/autopgo/prune.json",
  -- Merge policy per application ("*" applies to every app without its own entry): prune rules
  -- (same meaning as the JSON file's) and a hook that may edit each uploaded profile before it is
  -- merged. Only settable here.
  policy = {
    -- ["example-app"] = {
    --   prune = { { drop = "github.com/example/.*", keep = "github.com/example/example-dependency" } },
    --   hook = function(profile, app) return profile end,
    --   -- what default.pgo is (README "Profile history"): default = "all" (the running sum, the
    --   -- default), window = "168h" (a rolling window) or half_life = "72h" (a decayed sum)
    --   window = "168h",
    --   -- how each upload is weighted before it is merged: "none", "duration" or "equal"
    --   normalize = "duration",
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
  -- Skip TLS verification for outbound HTTPS (targets, API). (--insecure, AUTOPGO_INSECURE)
  insecure = false,

  -- download / clean / list -------------------------------------------------------------------
  -- Where download writes the profile. (--output, AUTOPGO_OUTPUT)
  output = "default.pgo",
  -- download: keep going without a profile when the server is down. (--fail-open, AUTOPGO_FAIL_OPEN)
  fail_open = false,
  -- list: print the raw JSON response. (--json, AUTOPGO_JSON)
  json = false,
  -- clean: age and size thresholds, and a dry run. (--older-than / --larger-than / --dry-run)
  -- older_than = "24h",
  -- larger_than = 10240,
  dry_run = false,
}
