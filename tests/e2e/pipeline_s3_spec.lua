-- End-to-end: the whole pipeline with `--blob-store-url s3://…` against a real Ceph RGW: the
-- utilities upload profiles to the real server, its worker merges them into the bucket, and
-- download, list, delete and clean work on what is in the bucket; two servers merging into one
-- bucket lose no upload (the conditional writes); a wrong secret shows in /api/health.
local cjson = require "cjson"
local url = require "autopgo.url"
local http = require "autopgo.http"
local crypto = require("autopgo.core").crypto
local s3 = require "autopgo.blob.s3"
local support = require "tests.lua.support"
local services = require "tests.lua.services"
local serverproc = require "tests.e2e.serverproc"
local goref = require "tests.e2e.goref"

local run = support.run
local corpus = support.root .. "/tests/testdata/pprof"
local profiles = {
  corpus .. "/goapp-go123-cpu-1.pb.gz", corpus .. "/goapp-go123-cpu-2.pb.gz",
  corpus .. "/goapp-go123-cpu-1.pb.gz", corpus .. "/goapp-go123-cpu-2.pb.gz",
}

describe("the pipeline on S3 (Ceph RGW)", function()
  local rgw = services.get("rgw")
  local bucket = "autopgo-e2e-" .. crypto.hex(crypto.random(4))
  local store_url = ("s3://%s?endpoint=%s&use_path_style=true&region=us-east-1"):format(bucket,
    url.escape(rgw.AUTOPGO_TEST_S3_ENDPOINT))
  local good_env = { "AWS_ACCESS_KEY_ID=" .. rgw.AUTOPGO_TEST_S3_ACCESS_KEY,
    "AWS_SECRET_ACCESS_KEY=" .. rgw.AUTOPGO_TEST_S3_SECRET_KEY, "AWS_EC2_METADATA_DISABLED=true",
    "AWS_CONFIG_FILE=/nonexistent", "AWS_SHARED_CREDENTIALS_FILE=/nonexistent" }
  local dir, store

  local function getenv(k)
    for _, kv in ipairs(good_env) do
      local name, v = kv:match("^([^=]+)=(.*)$")
      if name == k then return v end
    end
  end

  setup(function()
    run(function()
      store = assert(s3.open(assert(url.parse(store_url)), { getenv = getenv, home = "/nonexistent" }))
      assert(store:create_bucket())
      goref.ensure()
    end, 600000)
  end)
  before_each(function() dir = support.tmpdir() end)
  after_each(function()
    run(serverproc.cleanup)
    support.rm_rf(dir)
  end)

  -- The utilities against a server.
  local function cli(s, args)
    local all = {}
    for _, a in ipairs(args) do all[#all + 1] = a end
    all[#all + 1] = "--api-url"
    all[#all + 1] = s.url
    return support.autopgo(all, { timeout = 60000 })
  end

  local function keys(prefix)
    local out = {}
    for _, item in ipairs(assert(store:list(prefix))) do out[#out + 1] = item.key end
    return out
  end

  local function start(args, env)
    local all = { "--blob-store-url", store_url }
    for _, a in ipairs(args or {}) do all[#all + 1] = a end
    return serverproc.start(dir, all, env or good_env)
  end

  it("uploads, merges, downloads, lists, deletes and cleans with the profiles in the bucket", function()
    run(function()
      local s = start()
      local health = assert(http.request { url = s.url .. "/api/health" })
      assert.equals(200, health.status, health.body)
      for _, f in ipairs(profiles) do
        local code, out, err = cli(s, { "upload", "--app", "demo", f })
        assert.equals(0, code, err)
        assert.matches("^demo/staging/%d+\n$", out)
      end
      serverproc.wait_until("every staged upload is merged", function()
        return #keys("demo/staging/") == 0 and #keys("demo/default.pgo") == 1
      end, 60000)

      -- the merged profile in the bucket is the Go reference's merge of the uploads
      local want = goref.canon(goref.merge(dir .. "/want.pgo", profiles))
      local code, _, err = cli(s, { "download", "demo", "-o", dir .. "/got.pgo" })
      assert.equals(0, code, err)
      assert.equals(want, goref.canon(dir .. "/got.pgo"))
      local obj = assert(store:get("demo/default.pgo"))
      assert.equals(support.read_file(dir .. "/got.pgo"), obj.body)

      local out
      code, out, err = cli(s, { "list" })
      assert.equals(0, code, err)
      assert.matches("demo", out, 1, true)

      -- clean removes what is larger than 1 byte: the merged profile
      assert.equals(0, (cli(s, { "upload", "--app", "other", profiles[1] })))
      serverproc.wait_until("other is merged", function() return #keys("other/default.pgo") == 1 end, 60000)
      code, out, err = cli(s, { "clean", "--larger-than", "1" })
      assert.equals(0, code, err .. out)
      serverproc.wait_until("the cleaned profiles are gone from the bucket", function()
        return #keys("other/") == 0 and #keys("demo/") == 0
      end, 60000)

      -- delete removes every object of the app
      assert.equals(0, (cli(s, { "upload", "--app", "gone", profiles[2] })))
      serverproc.wait_until("gone is merged", function() return #keys("gone/default.pgo") == 1 end, 60000)
      code, _, err = cli(s, { "delete", "gone" })
      assert.equals(0, code, err)
      serverproc.wait_until("every object of the deleted app is gone", function() return #keys("gone/") == 0 end,
        60000)
      assert.equals(404, assert(http.request { url = s.url .. "/api/profile/gone" }).status)
      local stop_code, stop_err = serverproc.stop(s)
      assert.equals(0, stop_code, stop_err)
    end, 600000)
  end)

  it("loses no upload when two servers merge into the same bucket", function()
    run(function()
      local a = start()
      local b = serverproc.start(support.tmpdir(), { "--blob-store-url", store_url }, good_env)
      local n = 0
      for round = 1, 4 do
        for _, f in ipairs { profiles[1], profiles[2] } do
          local s = (round + n) % 2 == 0 and a or b
          n = n + 1
          local code, _, err = cli(s, { "upload", "--app", "race", f })
          assert.equals(0, code, err)
        end
      end
      serverproc.wait_until("both workers are done", function()
        return #keys("race/staging/") == 0 and #keys("race/default.pgo") == 1
      end, 120000)
      local uploaded = {}
      for _ = 1, 4 do
        uploaded[#uploaded + 1] = profiles[1]
        uploaded[#uploaded + 1] = profiles[2]
      end
      local want = goref.canon(goref.merge(dir .. "/want.pgo", uploaded))
      support.write_file(dir .. "/got.pgo", assert(store:get("race/default.pgo")).body)
      assert.equals(want, goref.canon(dir .. "/got.pgo"))
      for _, item in ipairs(assert(store:list("race/"))) do store:delete(item.key) end
    end, 600000)
  end)

  it("reports a wrong secret in /api/health and refuses uploads it cannot store", function()
    run(function()
      local wrong = {}
      for _, kv in ipairs(good_env) do
        wrong[#wrong + 1] = kv:match("^AWS_SECRET_ACCESS_KEY=") and "AWS_SECRET_ACCESS_KEY=wrong" or kv
      end
      -- not ready with a store it cannot use, so not started through serverproc (which waits for ready)
      local port = support.free_port()
      local proc = support.spawn(support.bin, { "server", "--port", tostring(port), "--blob-store-url", store_url },
        { cwd = dir, env = wrong })
      local s = { url = "http://127.0.0.1:" .. port }
      local health
      serverproc.wait_until("the server answers", function()
        health = http.request { url = s.url .. "/api/health", timeout = 5 }
        return health ~= nil or proc.code ~= nil
      end, 30000)
      assert.is_table(health, "the server exited: " .. table.concat(proc.err))
      assert.are_not.equal(200, health.status)
      assert.matches("SignatureDoesNotMatch", health.body, 1, true)
      local doc = cjson.decode(health.body)
      assert.is_table(doc)
      local code = cli(s, { "upload", "--app", "denied", profiles[1] })
      assert.are_not.equal(0, code)
      assert.same({}, keys("denied/"))
      proc:kill("sigterm")
      proc:wait(30000)
    end, 120000)
  end)
end)
