-- Resident memory of the real `autopgo server` (plain build) while it takes one 100+ MB upload over
-- HTTP/1.1 and over HTTP/2 (TLS, curl), into file://, s3:// (Ceph RGW) and redis://: the body is
-- held once, in C (autopgo.bytes: h2o's buffer, or an HTTP/2 stream's buffer taken over), and the
-- validator and every store read it there, so the server grows by about the body's size, not twice
-- it. Events go to a NATS subject nobody reads, so no merge runs in the server while it is measured.
local support = require "tests.lua.support"
local services = require "tests.lua.services"
local async = require "autopgo.async"
local http = require "autopgo.http"
local url = require "autopgo.url"
local crypto = require("autopgo.core").crypto
local s3 = require "autopgo.blob.s3"

local run = support.run

local size = 100 * 1024 * 1024 + 77
-- About once the body (plus the process's own growth); a second copy would be twice.
local bound = size * 3 // 2

local function status_kb(pid, field)
  local text = support.read_file(("/proc/%d/status"):format(pid)) or ""
  return tonumber(text:match(field .. ":%s+(%d+)")) * 1024
end


local function unique(what) return "autopgo-upmem-" .. what .. "-" .. crypto.hex(crypto.random(4)) end

describe("a 100+ MB upload is held once by the server (plain build)", function()
  local dir, body_path, small_path, nats, rgw, redis_env
  local procs = {}

  setup(function()
    assert.is_false(support.sanitized(), "this spec must run in the plain build")
    dir = support.tmpdir()
    body_path = support.write_file(dir .. "/big.pb", support.padded_profile(size))
    small_path = support.testdata .. "/goapp-go123-cpu-2.pb.gz"
    assert(os.execute(("cd %s && openssl req -x509 -newkey rsa:2048 -nodes -keyout tls.key -out tls.crt " ..
      "-days 2 -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 >/dev/null 2>&1"):format(dir)))
    nats = services.get("nats")
    rgw = services.get("rgw")
    redis_env = services.get("redis")
  end)

  after_each(function()
    run(function()
      for p in pairs(procs) do
        p:kill("sigkill")
        pcall(p.wait, p, 10000)
        procs[p] = nil
      end
    end)
  end)

  teardown(function() support.rm_rf(dir) end)

  local s3_env = function()
    return { "AWS_ACCESS_KEY_ID=" .. rgw.AUTOPGO_TEST_S3_ACCESS_KEY,
      "AWS_SECRET_ACCESS_KEY=" .. rgw.AUTOPGO_TEST_S3_SECRET_KEY, "AWS_EC2_METADATA_DISABLED=true",
      "AWS_CONFIG_FILE=/nonexistent", "AWS_SHARED_CREDENTIALS_FILE=/nonexistent" }
  end

  local stores = {
    { "file://", function(sdir) return { "--data-dir", sdir .. "/data" }, {} end },
    { "s3:// (Ceph RGW)", function()
      local bucket = unique("s3")
      local raw = ("s3://%s?endpoint=%s&use_path_style=true&region=us-east-1"):format(bucket,
        url.escape(rgw.AUTOPGO_TEST_S3_ENDPOINT))
      local env = s3_env()
      local st = assert(s3.open(assert(url.parse(raw)), { home = "/nonexistent", getenv = function(k)
        for _, kv in ipairs(env) do
          local name, v = kv:match("^([^=]+)=(.*)$")
          if name == k then return v end
        end
      end }))
      assert(st:create_bucket())
      return { "--blob-store-url", raw }, env
    end },
    { "redis://", function()
      return { "--blob-store-url", redis_env.REDIS_URL .. "?prefix=" .. unique("redis") .. "/" }, {}
    end },
  }

  -- Starts the server; returns its process and base URL once /api/ready answers.
  local function start(sdir, proto, store_args, env)
    local port = support.free_port()
    local args = { "server", "--host", "127.0.0.1", "--port", tostring(port), "--max-upload-size", "256MiB",
      "--event-writer-url", "nats://" .. unique("events"):gsub("-", "_") }
    for _, a in ipairs(store_args) do args[#args + 1] = a end
    local scheme = "http"
    if proto == "h2" then
      scheme = "https"
      for _, a in ipairs { "--tls-cert", dir .. "/tls.crt", "--tls-key", dir .. "/tls.key" } do args[#args + 1] = a end
    end
    env[#env + 1] = "NATS_SERVER_URL=" .. nats.NATS_SERVER_URL
    local proc = support.spawn(support.bin, args, { cwd = sdir, env = env })
    procs[proc] = true
    local base = ("%s://127.0.0.1:%d"):format(scheme, port)
    for _ = 1, 400 do
      local res = http.request { url = base .. "/api/ready", timeout = 2, ca_file = dir .. "/tls.crt" }
      if res and res.status == 200 then return proc, base end
      if proc.code then break end
      async.sleep(25)
    end
    error("the server did not come up: " .. table.concat({ proc.output() }, "\n"))
  end

  local function upload(base, proto, path)
    local args = { "-sS", "-o", "/dev/null", "-w", "%{http_version} %{http_code}", "--data-binary", "@" .. path,
      "-H", "content-type: application/octet-stream", "--cacert", dir .. "/tls.crt",
      proto == "h2" and "--http2" or "--http1.1", base .. "/api/profile/upmem" }
    local code, _, out, err = support.spawn("curl", args):wait(300000)
    assert.equals(0, code, err)
    return out
  end

  for _, proto in ipairs { "h1", "h2" } do
    for _, s in ipairs(stores) do
      it(("%s into %s grows resident memory by about the body, not twice"):format(proto, s[1]), function()
        run(function()
          local sdir = support.tmpdir()
          local store_args, env = s[2](sdir)
          local proc, base = start(sdir, proto, store_args, env)
          -- one small upload first: connections, TLS and the store client are set up outside the window
          assert.equals((proto == "h2" and "2" or "1.1") .. " 201", upload(base, proto, small_path))
          async.sleep(200)
          local before = status_kb(proc.pid, "VmRSS")
          support.write_file(("/proc/%d/clear_refs"):format(proc.pid), "5") -- VmHWM := VmRSS
          assert.equals((proto == "h2" and "2" or "1.1") .. " 201", upload(base, proto, body_path))
          local growth = status_kb(proc.pid, "VmHWM") - before
          print(("\n%s %s: resident memory grew by %.1f MiB for a %.1f MiB upload (%.2fx)"):format(proto, s[1],
            growth / 2 ^ 20, size / 2 ^ 20, growth / size))
          assert.is_true(growth < bound,
            ("%s %s: grew by %d bytes for a %d byte body"):format(proto, s[1], growth, size))
          support.rm_rf(sdir)
        end, 900000)
      end)
    end
  end
end)
