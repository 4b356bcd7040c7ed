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
  -- TLS on the server's and worker's port: PEM certificate (chain) and key; HTTP/2 and HTTP/1.1 by
  -- ALPN. Both are read again on SIGHUP (new handshakes use them; open connections keep theirs).
  -- (--tls-cert / --tls-key, AUTOPGO_TLS_CERT / AUTOPGO_TLS_KEY)
  -- tls_cert = "/etc/autopgo/tls.crt",
  -- tls_key = "/etc/autopgo/tls.key",
  -- Mutual TLS: clients must present a certificate signed by one of these CAs (PEM), or the
  -- handshake fails. (--tls-client-ca, AUTOPGO_TLS_CLIENT_CA)
  -- tls_client_ca = "/etc/autopgo/clients-ca.crt",
  -- Connections past this many are closed as soon as they are accepted. The soft limit on open
  -- files is raised to the hard limit at start. (--max-connections, AUTOPGO_MAX_CONNECTIONS)
  max_connections = 8192,
  -- Time a client has to send a request's headers and body (a slow or stalled client is cut off
  -- after it); also how long an idle keep-alive connection stays open.
  -- (--request-timeout, AUTOPGO_REQUEST_TIMEOUT)
  request_timeout = "120s",
  -- server: request bytes (compressed uploads) buffered at once; past it, uploads still arriving
  -- get 503 with Retry-After. (--max-buffered-uploads, AUTOPGO_MAX_BUFFERED_UPLOADS)
  max_buffered_uploads = "512MiB",
  -- server: what one upload may decompress to (413 past it; validation stops at the limit).
  -- (--max-decompressed, AUTOPGO_MAX_DECOMPRESSED)
  max_decompressed = "256MiB",
  -- server: decompressed bytes all validations in flight may reserve together (each reserves what
  -- its gzip trailer says, up to max_decompressed); uploads wait for room, then get 503.
  -- (--max-decompressing, AUTOPGO_MAX_DECOMPRESSING)
  max_decompressing = "512MiB",
  -- server: uploads validated at once on the thread pool (8 threads), in each of two lanes (uploads
  -- up to 4 MiB decompressed, and larger ones), leaving threads to file I/O.
  -- (--max-validations, AUTOPGO_MAX_VALIDATIONS)
  max_validations = 2,
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
  -- A file holding the bearer token for the profile server (scrape and every client command);
  -- the token itself is only a flag or variable, never a config key. (--token-file,
  -- AUTOPGO_TOKEN_FILE; --token, AUTOPGO_TOKEN)
  -- token_file = "/etc/autopgo/token",
  -- Skip TLS verification for outbound HTTPS (targets, API). (--insecure, AUTOPGO_INSECURE)
  insecure = false,
  -- scrape, upload, download, list, status, delete, clean: the CAs (PEM) that verify an https://
  -- server (default: the system's), and a client certificate and key for a server that requires
  -- one. (--ca-cert / --client-cert / --client-key, AUTOPGO_CA_CERT / AUTOPGO_CLIENT_CERT /
  -- AUTOPGO_CLIENT_KEY)
  -- ca_cert = "/etc/autopgo/ca.crt",
  -- client_cert = "/etc/autopgo/scraper.crt",
  -- client_key = "/etc/autopgo/scraper.key",

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
