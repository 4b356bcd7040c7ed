-- Specs for lua/autopgo/blob/redis.lua: URL options, then the shared blob contract on a plain
-- redis-server and on a TLS one with a password, and the Redis specifics (TTLs by kind of key, hash
-- tags, versioned reads, wrong passwords and TLS mismatches named in the failure, a put and a get
-- across a kill -9) against real redis-server processes started by tests/services/redis.sh (and,
-- for the kill, one with an append-only file started here).
local redis = require "autopgo.blob.redis"
local blob = require "autopgo.blob"
local url = require "autopgo.url"
local async = require "autopgo.async"
local crypto = require("autopgo.core").crypto
local support = require "tests.lua.support"
local services = require "tests.lua.services"

local run = support.run

local NO_ENV = function() return nil end

local function open_url(raw, opts)
  opts = opts or {}
  opts.getenv = opts.getenv or NO_ENV
  return redis.open(assert(url.parse(raw)), opts)
end

local function unique_prefix()
  return "t" .. crypto.hex(crypto.random(5)) .. ":"
end

describe("redis URL options", function()
  it("reads host, port, database, user and password, with the password also from AUTOPGO_REDIS_PASSWORD", function()
    local st = assert(open_url("redis://alice:s3cret@cache.example:6380/3?prefix=autopgo/"))
    assert.equals("cache.example", st.conn_opts.host)
    assert.equals(6380, st.conn_opts.port)
    assert.equals(3, st.db)
    assert.equals("alice", st.user)
    assert.equals("s3cret", st.password)
    assert.equals("autopgo/", st.prefix)
    assert.is_false(st.conn_opts.tls)
    assert.equals("redis://cache.example:6380/3?prefix=autopgo/", st.name, "no password in the name")
    st = assert(open_url("rediss://cache.example", { getenv = function(k)
      return k == "AUTOPGO_REDIS_PASSWORD" and "from-env" or nil
    end }))
    assert.equals("from-env", st.password)
    assert.is_nil(st.user)
    assert.equals(6379, st.conn_opts.port)
    assert.equals(0, st.db)
    assert.is_true(st.conn_opts.tls)
    assert.is_true(st.conn_opts.verify)
  end)

  it("takes ttl, ttl_base, grace, chunk_size and the TLS options, and refuses unknown or misplaced ones", function()
    local st = assert(open_url("rediss://h/0?ttl=720h&ttl_base=2h&grace=10s&chunk_size=64KiB"
      .. "&ca_file=/ca.pem&cert_file=/c.pem&key_file=/k.pem&server_name=redis.internal&skip_verify=true"))
    assert.equals(720 * 3600 * 1000, st.ttl_ms)
    assert.equals(2 * 3600 * 1000, st.ttl_base_ms)
    assert.equals(10000, st.grace_ms)
    assert.equals(65536, st.chunk_size)
    assert.equals("/ca.pem", st.conn_opts.ca_file)
    assert.equals("redis.internal", st.conn_opts.server_name)
    assert.is_false(st.conn_opts.verify)
    local function refused(raw, pattern)
      local res, err, code = open_url(raw)
      assert.is_nil(res, raw)
      assert.equals("INVALID", code, raw)
      assert.matches(pattern, err, 1, true)
    end
    refused("redis://h?bogus=1", '"bogus"')
    refused("redis://h?ca_file=/x", "use rediss://")
    refused("redis://h?ttl=soon", "ttl")
    refused("redis://h/db1", "database number")
    refused("redis://h?prefix={x}", "hash tags")
    refused("redis://h?chunk_size=1", "chunk_size")
  end)

  it("gives the TTL to staged uploads and rejected ones, the base and ledgers only with ttl_base", function()
    local st = assert(open_url("redis://h?ttl=1h"))
    assert.equals(3600000, st:ttl_of("app/staging/1730075435311000001"))
    assert.equals(3600000, st:ttl_of("app/rejected/1730075435311000001"))
    assert.equals(3600000, st:ttl_of("app/rejected/1730075435311000001.reason"))
    assert.equals(0, st:ttl_of("app/default.pgo"))
    assert.equals(0, st:ttl_of("app/ledger/abc.json"))
    assert.equals(0, st:ttl_of("not an app key"))
    st = assert(open_url("redis://h?ttl=1h&ttl_base=30m"))
    assert.equals(1800000, st:ttl_of("app/default.pgo"))
    assert.equals(1800000, st:ttl_of("app/ledger/abc.json"))
    assert.equals(0, assert(open_url("redis://h")):ttl_of("app/staging/1"))
  end)

  it("keeps every key of an app in one hash tag, escaping braces, and lists by prefix patterns", function()
    local st = assert(open_url("redis://h?prefix=p/"))
    assert.equals("p/o:{app}/staging/1", st:meta_key("app/staging/1"))
    assert.equals("p/c:{app}/default.pgo#", st:chunk_base("app/default.pgo"))
    assert.equals("p/o:{a%7Bb%7D}/x%25y", st:meta_key("a{b}/x%y"))
    assert.equals("a{b}/x%y", st:key_of(st:meta_key("a{b}/x%y")))
    assert.equals("plain", st:key_of(st:meta_key("plain")))
    assert.equals("p/o:{app}/staging/*", st:match_of("app/staging/"))
    assert.equals("p/o:{ap*", st:match_of("ap"))
    assert.equals("p/o:{a\\*}/\\?*", st:match_of("a*/?"))
  end)

  it("hashes keys to Redis Cluster slots as Redis does (CRC16 of the hash tag, mod 16384)", function()
    assert.equals(12182, redis.slot_of("foo"))
    assert.equals(12739, redis.slot_of("123456789"))
    assert.equals(redis.slot_of("user1000"), redis.slot_of("{user1000}.following"))
    assert.equals(redis.slot_of("{user1000}.following"), redis.slot_of("x{user1000}y{other}"))
    assert.equals(redis.slot_of("{}x"), redis.slot_of("{}x"))
    assert.are_not.equal(redis.slot_of("x"), redis.slot_of("{}x"), "an empty tag hashes the whole key")
    local st = assert(open_url("redis://h?prefix=p/"))
    assert.equals(redis.slot_of("app"), redis.slot_of(st:meta_key("app/default.pgo")))
    assert.equals(redis.slot_of("app"), redis.slot_of(st:chunk_base("app/staging/1") .. "v:0"))
  end)

  it("is chosen by the redis and rediss schemes", function()
    assert.equals("autopgo.blob.redis", blob.schemes.redis)
    assert.equals("autopgo.blob.redis", blob.schemes.rediss)
  end)
end)

local env = services.get("redis")

-- A plain redis:// store on the service, with its own key prefix.
local function plain_url(query)
  return env.REDIS_URL .. "?prefix=" .. unique_prefix() .. (query and ("&" .. query) or "")
end

local function tls_url(query)
  return env.REDIS_TLS_URL .. "?prefix=" .. unique_prefix() .. "&ca_file=" .. url.escape(env.REDIS_CA_FILE)
    .. (query and ("&" .. query) or "")
end

-- Every Redis key matching pattern (SCAN to the end).
local function scan_all(st, pattern)
  local cursor, all = "0", {}
  repeat
    local _, reply = st:call { "SCAN", cursor, "MATCH", pattern, "COUNT", 1000 }
    cursor = reply[1]
    for _, k in ipairs(reply[2]) do all[#all + 1] = k end
  until cursor == "0"
  return all
end

local function with_password(k) return k == "AUTOPGO_REDIS_PASSWORD" and env.REDIS_PASSWORD or nil end

require("tests.lua.blob.contract")("redis:// (plain)", {
  open = function() return open_url(plain_url(), { scan_count = 5 }) end,
  close = function(store) store:close() end,
  page_size = 5,
})

require("tests.lua.blob.contract")("rediss:// (TLS, AUTH from AUTOPGO_REDIS_PASSWORD)", {
  open = function() return open_url(tls_url(), { getenv = with_password, scan_count = 5 }) end,
  close = function(store) store:close() end,
  page_size = 5,
})

require("tests.lua.blob.contract")("redis:// (Redis Cluster, three masters)", {
  open = function() return open_url(env.REDIS_CLUSTER_URL .. "?prefix=" .. unique_prefix(), { scan_count = 5 }) end,
  close = function(store) store:close() end,
  page_size = 5,
})

describe("redis store on a Redis Cluster", function()
  it("spreads apps over the masters, follows redirections and lists across every master", function()
    run(function()
      local st = assert(open_url(env.REDIS_CLUSTER_URL .. "?prefix=" .. unique_prefix()))
      assert.is_true(st:health())
      local masters = {}
      for i = 1, 30 do
        local key = ("app-%02d/default.pgo"):format(i)
        assert(st:put(key, tostring(i):rep(3000)))
        masters[st:node_for(st:meta_key(key))] = true
      end
      assert.is_true(st.cluster)
      assert.equals(3, #st:masters())
      local used = 0
      for _ in pairs(masters) do used = used + 1 end
      assert.equals(3, used, "30 apps should land on all three masters")
      local all = assert(st:list(""))
      assert.equals(30, #all)
      assert.equals("app-01/default.pgo", all[1].key)
      assert.equals(1, #assert(st:list("app-07/")))
      -- a store that has not learned the slots yet is sent on by MOVED replies
      local fresh = assert(open_url(env.REDIS_CLUSTER_URL .. "?prefix=" .. st.prefix))
      fresh.cluster, fresh.discover = false, function() return true end
      for i = 1, 30 do
        local key = ("app-%02d/default.pgo"):format(i)
        assert.equals(tostring(i):rep(3000), assert(fresh:get(key)).body)
      end
      assert.is_true(fresh.cluster, "MOVED replies should have taught the store the cluster")
      fresh:close()
      for _, item in ipairs(all) do assert(st:delete(item.key)) end
      assert.same({}, assert(st:list("")))
      st:close()
    end, 60000)
  end)
end)

describe("redis store on a Redis Cluster whose slot migrates", function()
  it("follows ASK to the importing master for keys already moved there", function()
    run(function()
      -- grace=0: the deleted object's chunks go at once, so the slot can be handed back empty
      local st = assert(open_url(env.REDIS_CLUSTER_URL .. "?grace=0s&prefix=" .. unique_prefix()))
      assert.is_true(st:health())
      local app = "ask-" .. crypto.hex(crypto.random(4))
      local slot = redis.slot_of(app)
      assert(st:put(app .. "/staging/1", "stays on the source"))
      local src = st:node_for(st:meta_key(app .. "/"))
      local dst
      for _, addr in ipairs(st:masters()) do
        if addr ~= src then dst = addr end
      end
      local function on(addr, ...) return assert(st:call({ "CLUSTER", ... }, nil, addr)) end
      local src_id = select(2, on(src, "MYID"))
      local dst_id = select(2, on(dst, "MYID"))
      on(dst, "SETSLOT", slot, "IMPORTING", src_id)
      on(src, "SETSLOT", slot, "MIGRATING", dst_id)
      local ok, err = pcall(function()
        -- a new object: the source has none of its keys, so it sends every command on with ASK
        local body = ("m"):rep(10000)
        local put = assert(st:put(app .. "/default.pgo", body))
        local _, on_dst = on(dst, "COUNTKEYSINSLOT", slot)
        assert.is_true(on_dst >= 2, "the new object's keys should be on the importing master")
        local got = assert(st:get(app .. "/default.pgo", { if_match = put.etag }))
        assert.equals(body, got.body)
        assert.equals("stays on the source", assert(st:get(app .. "/staging/1")).body)
        assert(st:delete(app .. "/default.pgo"))
        local _, left = on(dst, "COUNTKEYSINSLOT", slot)
        assert.equals(0, left)
      end)
      on(dst, "SETSLOT", slot, "STABLE")
      on(src, "SETSLOT", slot, "STABLE")
      assert(st:delete(app .. "/staging/1"))
      st:close()
      assert(ok, err)
    end, 60000)
  end)
end)

describe("redis store on a real redis-server", function()
  it("authenticates an ACL user given in the URL", function()
    run(function()
      local raw = env.REDIS_TLS_URL:gsub("^rediss://", "rediss://" .. env.REDIS_USER .. ":" .. env.REDIS_USER_PASSWORD
        .. "@") .. "?prefix=" .. unique_prefix() .. "&ca_file=" .. url.escape(env.REDIS_CA_FILE)
      local st = assert(open_url(raw))
      assert.is_true(st:health())
      assert(st:put("app/default.pgo", "acl"))
      assert.equals("acl", assert(st:get("app/default.pgo")).body)
      assert(st:delete("app/default.pgo"))
      st:close()
    end)
  end)

  it("shows a client certificate the server trusts, and names the refusal of one it does not", function()
    run(function()
      local st = assert(open_url(tls_url("cert_file=" .. url.escape(env.REDIS_CLIENT_CERT_FILE) .. "&key_file="
        .. url.escape(env.REDIS_CLIENT_KEY_FILE)), { getenv = with_password }))
      assert.is_true(st:health())
      assert(st:put("app/default.pgo", "with a client certificate"))
      assert(st:delete("app/default.pgo"))
      st:close()
      st = assert(open_url(tls_url("cert_file=" .. url.escape(env.REDIS_STRANGER_CERT_FILE) .. "&key_file="
        .. url.escape(env.REDIS_STRANGER_KEY_FILE)), { getenv = with_password }))
      local ok, err, code = st:health()
      assert.is_nil(ok)
      assert.equals("TLS", code, err)
      assert.matches("unknown ca", err, 1, true)
      st:close()
    end)
  end)

  it("lets an object with a TTL expire, and keeps the base without one", function()
    run(function()
      local st = assert(open_url(plain_url("ttl=1s")))
      assert(st:put("app/staging/1730075435311000001", "staged"))
      assert(st:put("app/default.pgo", "base"))
      local ok, pttl = st:call { "PTTL", st:meta_key("app/staging/1730075435311000001") }
      assert.is_true(ok)
      assert.is_true(pttl > 0 and pttl <= 1000, tostring(pttl))
      local _, base_ttl = st:call { "PTTL", st:meta_key("app/default.pgo") }
      assert.equals(-1, base_ttl)
      local gone = false
      for _ = 1, 100 do
        async.sleep(100)
        local _, _, code = st:stat("app/staging/1730075435311000001")
        if code == "NOT_FOUND" then
          gone = true
          break
        end
      end
      assert.is_true(gone, "the staged object outlived its 1 s TTL by 9 s")
      assert.same({}, assert(st:list("app/staging/")))
      assert.equals("base", assert(st:get("app/default.pgo")).body)
      assert(st:delete("app/default.pgo"))
      st:close()
    end, 30000)
  end)

  it("stores every key of an app (meta and chunks) under the app's hash tag", function()
    run(function()
      local raw = plain_url("chunk_size=4KiB")
      local st = assert(open_url(raw))
      assert(st:put("app/default.pgo", ("x"):rep(20000)))
      assert(st:put("app/staging/1", "y"))
      local all = scan_all(st, st.prefix .. "*")
      assert.equals(8, #all, table.concat(all, " ")) -- 2 meta hashes, 5 + 1 chunks of 4 KiB
      for _, k in ipairs(all) do assert.equals("app", k:match("{(.-)}"), k) end
      assert(st:delete("app/default.pgo"))
      assert(st:delete("app/staging/1"))
      st:close()
    end)
  end)

  it("reads one version to its end while it is replaced, and refuses a version it no longer holds", function()
    run(function()
      local st = assert(open_url(plain_url("chunk_size=4KiB")))
      local v1 = assert(st:put("app/default.pgo", ("1"):rep(64 * 1024)))
      local pieces, replaced = {}, nil
      local got = assert(st:get("app/default.pgo", {
        version = v1.etag,
        sink = function(piece)
          pieces[#pieces + 1] = piece
          if not replaced then replaced = assert(st:put("app/default.pgo", ("2"):rep(64 * 1024))) end
        end,
      }))
      assert.equals(v1.etag, got.etag)
      assert.equals(("1"):rep(64 * 1024), table.concat(pieces))
      local res, err, code = st:get("app/default.pgo", { version = v1.etag })
      assert.is_nil(res)
      assert.equals("PRECONDITION_FAILED", code, err)
      assert.equals(("2"):rep(64 * 1024), assert(st:get("app/default.pgo", { version = replaced.etag })).body)
      -- the old chunks are left to readers for the grace period, then expire
      local _, pttl = st:call { "PTTL", st:chunk_base("app/default.pgo") .. v1.etag .. ":0" }
      assert.is_true(pttl > 0 and pttl <= 60000, tostring(pttl))
      assert(st:delete("app/default.pgo"))
      st:close()
    end)
  end)

  it("lets exactly one of eight writers on eight connections win a race on one etag", function()
    run(function()
      local raw = plain_url("chunk_size=4KiB")
      local stores = {}
      for i = 1, 8 do stores[i] = assert(open_url(raw)) end
      local base = assert(stores[1]:put("app/default.pgo", "base"))
      local fns = {}
      for i = 1, 8 do
        fns[i] = function()
          return stores[i]:put("app/default.pgo", tostring(i):rep(20000), { if_match = base.etag })
        end
      end
      local wins, winner = 0, nil
      for i, r in ipairs(async.all(fns)) do
        assert.is_true(r[1], tostring(r[2]))
        if r[2] then
          wins, winner = wins + 1, i
        else
          assert.equals("PRECONDITION_FAILED", r[4], r[3])
        end
      end
      assert.equals(1, wins)
      assert.equals(tostring(winner):rep(20000), assert(stores[1]:get("app/default.pgo")).body)
      -- the losers' chunks went with their refusal: 5 live chunks, 1 of the base's in its grace
      local chunks = scan_all(stores[1], stores[1].prefix .. "c:*")
      assert.equals(6, #chunks, table.concat(chunks, " "))
      assert(stores[1]:delete("app/default.pgo"))
      for _, st in ipairs(stores) do st:close() end
    end)
  end)

  it("does not leave the chunks of a refused conditional write behind", function()
    run(function()
      local st = assert(open_url(plain_url("chunk_size=4KiB")))
      assert(st:put("app/default.pgo", "first"))
      -- past the early check: the condition fails only in the commit script
      local meta = st.meta
      st.meta = function() return nil, "NOT_FOUND: (skipped)", "NOT_FOUND" end
      local res, _, code = st:put("app/default.pgo", ("z"):rep(10000), { if_none_match = "*" })
      st.meta = meta
      assert.is_nil(res)
      assert.equals("PRECONDITION_FAILED", code)
      local chunks = scan_all(st, st.prefix .. "c:*")
      assert.equals(1, #chunks, table.concat(chunks, " "))
      assert(st:delete("app/default.pgo"))
      st:close()
    end)
  end)

  it("names a wrong password, a missing one, and TLS mismatches in the failure", function()
    run(function()
      local function fails(raw, opts, want_code, pattern)
        local st = assert(open_url(raw, opts))
        local ok, err, code = st:health()
        assert.is_nil(ok, raw)
        assert.equals(want_code, code, err)
        assert.matches(pattern, err, 1, true)
        local res, _, pcode = st:put("app/staging/1", "never acknowledged")
        assert.is_nil(res)
        assert.equals(want_code, pcode)
        st:close()
      end
      fails(tls_url(), { getenv = function(k) return k == "AUTOPGO_REDIS_PASSWORD" and "wrong" or nil end },
        "UNAUTHORIZED", "WRONGPASS")
      fails(tls_url(), nil, "UNAUTHORIZED", "NOAUTH")
      -- TLS to a plain port, plain to a TLS port, a CA that did not sign the server's certificate,
      -- a name the certificate does not carry
      fails(env.REDIS_URL:gsub("^redis:", "rediss:") .. "?timeout=2s&retry_for=1s", nil, "TLS", "TLS handshake")
      fails(env.REDIS_TLS_URL:gsub("^rediss:", "redis:") .. "?retry_for=1s", { getenv = with_password },
        "UNAVAILABLE", "use rediss://")
      fails(env.REDIS_TLS_URL .. "?ca_file=" .. url.escape(env.REDIS_OTHER_CA_FILE), { getenv = with_password },
        "TLS", "certificate verification failed")
      fails(tls_url("server_name=redis.example"), { getenv = with_password }, "TLS", "hostname mismatch")
    end, 60000)
  end)
end)

describe("redis store across a redis-server killed with -9 and restarted on its append-only file", function()
  local big = require "tests.lua.blob.big_body"
  local rdir, port, proc

  local function start_redis()
    proc = support.spawn(env.REDIS_SERVER_BIN, { "--bind", "127.0.0.1", "--port", tostring(port), "--dir", rdir,
      "--appendonly", "yes", "--appendfsync", "always", "--save", "" }, { cwd = rdir })
    local probe = assert(open_url(("redis://127.0.0.1:%d/0?retry_for=30s"):format(port)))
    assert(probe:health(), "redis-server did not come up: " .. table.concat(proc.err))
    probe:close()
  end

  -- Kills redis-server now and starts it again on the same port a second later (in the background).
  local function bounce(done)
    async.spawn(function()
      proc:kill("sigkill")
      proc:wait(10000)
      async.sleep(1000)
      start_redis()
      done.set()
    end)
  end

  before_each(function()
    rdir = support.tmpdir()
    port = support.free_port()
    run(start_redis, 60000)
  end)
  after_each(function()
    run(function()
      proc:kill("sigkill")
      proc:wait(10000)
    end)
    support.rm_rf(rdir)
  end)

  it("finishes a put and a get it broke off, byte for byte", function()
    run(function()
      local st = assert(open_url(("redis://127.0.0.1:%d/0?chunk_size=64KiB&retry_for=30s"):format(port)))
      local data = big.pattern(8 * 1024 * 1024 + 5)
      local piece, pos, n = 32 * 1024, 1, 0
      local put_bounced = async.event()
      local put = assert(st:put("app/default.pgo", {
        size = #data,
        producer = function()
          if pos > #data then return nil end
          n = n + 1
          if n == 40 then bounce(put_bounced) end
          local p = data:sub(pos, pos + piece - 1)
          pos = pos + #p
          return p
        end,
      }))
      assert.is_true(put_bounced.is_set, "the put finished before Redis was back: it did not wait for it")
      assert.equals(#data, put.size)
      local pieces, get_bounced = {}, async.event()
      local got = assert(st:get("app/default.pgo", {
        sink = function(p)
          pieces[#pieces + 1] = p
          if #pieces == 10 then bounce(get_bounced) end
        end,
      }))
      assert.is_true(get_bounced.is_set)
      assert.equals(put.etag, got.etag)
      local function sha(s) return crypto.hex(crypto.digest("sha256", s)) end
      assert.equals(sha(data), sha(table.concat(pieces)))
      st:close()
    end, 120000)
  end)
end)
