-- The Redis blob store (redis://[user:password@]host:6379/0?prefix=…&ttl=…, rediss:// for TLS):
-- each object is a small meta hash plus chunk strings named by the object's version, swapped in by
-- a server-side script, so writes are atomic (create-only and if_match included) and a reader
-- holding a version reads exactly that version. TTLs are set by Redis itself; every key of an app
-- shares one hash tag, and a Redis Cluster is followed slot by slot (see README.md).
local uv = require "luv"
local core = require "autopgo.core"
local async = require "autopgo.async"
local fail = require "autopgo.fail"
local retry = require "autopgo.retry"
local units = require "autopgo.units"
local blob = require "autopgo.blob"
local blobkeys = require "autopgo.keys"

local redis, crypto, bytes = core.redis, core.crypto, core.bytes

local M = {}

M.CHUNK_SIZE = 1024 * 1024 -- bytes per chunk string (Redis strings stop at 512 MB)
M.WINDOW = 4               -- chunks in flight per get or put
M.GRACE = 60               -- seconds a replaced or deleted version stays readable
M.UPLOAD_TTL = 3600        -- seconds the chunks of a put that never commits stay around
M.RETRY_FOR = 60           -- seconds an operation retries transient failures (5 for health)

-- Kinds of key (autopgo.keys.kind_of) that `ttl` applies to, and those `ttl_base` applies to.
M.TTL_KINDS = { staging = true, rejected = true, history = true }
M.BASE_KINDS = { base = true, ledger = true }

local KNOWN = {
  prefix = true, ttl = true, ttl_base = true, grace = true, chunk_size = true, retry_for = true,
  timeout = true, ca_file = true, cert_file = true, key_file = true, server_name = true, skip_verify = true,
}

local Store = {}
Store.__index = Store

-- Commits a version whose chunks are written: checks the condition, makes the new chunks live
-- (TTL or none), points the meta hash at them and leaves the old chunks `grace` ms to readers.
-- KEYS[1] meta. ARGV: cond ("", "absent", "match"), expected version, new version, size, nchunks,
-- content type, ttl ms (0: none), grace ms, chunk key base.
local COMMIT = [[
if redis.replicate_commands then redis.replicate_commands() end -- TIME before writes (Redis < 7)
local meta = KEYS[1]
local cond, want, newv = ARGV[1], ARGV[2], ARGV[3]
local n, ttl, grace, base = tonumber(ARGV[5]), tonumber(ARGV[7]), tonumber(ARGV[8]), ARGV[9]
local cur = redis.call('HMGET', meta, 'v', 'n', 't')
if cur[1] == newv then return {'ok', cur[3]} end
local function drop_new()
  for i = 0, n - 1 do redis.call('DEL', base .. newv .. ':' .. i) end
end
if cond == 'absent' and cur[1] then drop_new() return {'exists', cur[1]} end
if cond == 'match' and cur[1] ~= want then drop_new() return {'mismatch', cur[1] or ''} end
for i = 0, n - 1 do
  if redis.call('EXISTS', base .. newv .. ':' .. i) == 0 then drop_new() return {'lost', tostring(i)} end
end
for i = 0, n - 1 do
  local ck = base .. newv .. ':' .. i
  if ttl > 0 then redis.call('PEXPIRE', ck, ttl + grace) else redis.call('PERSIST', ck) end
end
if cur[1] then
  for i = 0, tonumber(cur[2]) - 1 do redis.call('PEXPIRE', base .. cur[1] .. ':' .. i, grace) end
end
local t = redis.call('TIME')
local ms = tostring(tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
redis.call('DEL', meta)
redis.call('HSET', meta, 'v', newv, 'n', ARGV[5], 's', ARGV[4], 't', ms, 'c', ARGV[6])
if ttl > 0 then redis.call('PEXPIRE', meta, ttl) end
return {'ok', ms}
]]

-- Deletes an object: the meta hash now, its chunks after `grace` ms (readers may hold them).
-- KEYS[1] meta. ARGV: grace ms, chunk key base.
local DELETE = [[
local cur = redis.call('HMGET', KEYS[1], 'v', 'n')
if not cur[1] then return 0 end
for i = 0, tonumber(cur[2]) - 1 do redis.call('PEXPIRE', ARGV[2] .. cur[1] .. ':' .. i, tonumber(ARGV[1])) end
redis.call('DEL', KEYS[1])
return 1
]]

-- Redis error replies as failures of the house vocabulary.
local TRANSIENT_REPLIES = { LOADING = true, BUSY = true, MASTERDOWN = true, TRYAGAIN = true, CLUSTERDOWN = true,
  READONLY = true }

local function server_failure(name, msg)
  local word = msg:match("^(%u+)")
  if word == "WRONGPASS" then
    return fail.new("UNAUTHORIZED", "%s: %s (check the password in the URL or AUTOPGO_REDIS_PASSWORD)", name, msg)
  elseif word == "NOAUTH" then
    return fail.new("UNAUTHORIZED", "%s: %s (the server wants a password: put it in the URL or "
      .. "AUTOPGO_REDIS_PASSWORD)", name, msg)
  elseif word == "NOPERM" then
    return fail.new("FORBIDDEN", "%s: %s", name, msg)
  elseif TRANSIENT_REPLIES[word] then
    return fail.new("UNAVAILABLE", "%s: %s", name, msg)
  elseif msg:find("AUTH", 1, true) and msg:find("without any password", 1, true) then
    return fail.new("UNAUTHORIZED", "%s: %s", name, msg)
  end
  return fail.new("SERVER", "%s: %s", name, msg)
end

-- One command on connection c: true, reply | nil, err, code (a Redis error is "SERVER: <text>").
local function command(c, args)
  return async.await(function(cb)
    local ok, err = c:call(args, function(e, reply) cb(e, true, reply) end)
    if not ok then cb(err) end
  end)
end

-- Keys -------------------------------------------------------------------------------------------

-- Braces would move the hash tag, "%" is the escape itself; everything else stays readable.
local function enc(s)
  return (s:gsub("[%%{}]", function(ch) return ("%%%02X"):format(ch:byte()) end))
end

local function dec(s)
  return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

-- The tagged form of an object key: its first segment (the app) in braces, so every key of an app
-- hashes to one Redis Cluster slot. "app/staging/1" -> "{app}/staging/1".
local function tagged(key)
  local first, rest = key:match("^([^/]*)(.*)$")
  return "{" .. enc(first) .. "}" .. enc(rest)
end

function Store:meta_key(key) return self.prefix .. "o:" .. tagged(key) end
function Store:chunk_base(key) return self.prefix .. "c:" .. tagged(key) .. "#" end

-- The object key of a listed meta key, or nil.
function Store:key_of(meta)
  local head = self.prefix .. "o:{"
  if meta:sub(1, #head) ~= head then return nil end
  local first, rest = meta:sub(#head + 1):match("^([^}]*)}(.*)$")
  if not first then return nil end
  return dec(first) .. dec(rest)
end

local function glob_escape(s) return (s:gsub("[%*%?%[%]\\]", "\\%0")) end

-- The SCAN pattern of the meta keys of every object whose key starts with `prefix`.
function Store:match_of(prefix)
  local first, rest = prefix:match("^([^/]*)(/.*)$")
  if first then return glob_escape(self.prefix .. "o:{" .. enc(first) .. "}" .. enc(rest)) .. "*" end
  return glob_escape(self.prefix .. "o:{" .. enc(prefix)) .. "*"
end

-- The lifetime (ms, 0: none) of an object written under key.
function Store:ttl_of(key)
  local kind = blobkeys.kind_of(key)
  if kind and M.TTL_KINDS[kind] then return self.ttl_ms end
  if kind and M.BASE_KINDS[kind] then return self.ttl_base_ms end
  return 0
end

-- Connection -------------------------------------------------------------------------------------

-- "host:port" -> host, port ("[::1]:7000" too).
local function split_addr(addr)
  local host, port = addr:match("^%[(.*)%]:(%d+)$")
  if not host then host, port = addr:match("^(.*):(%d+)$") end
  return host, tonumber(port)
end

-- A new connection to addr, authenticated (AUTH [user] password), on the database, answering PING.
function Store:dial(addr)
  local o = self.conn_opts
  if addr ~= self.seed then
    o = {}
    for k, v in pairs(self.conn_opts) do o[k] = v end
    o.host, o.port = split_addr(addr)
  end
  local c, err, code = async.await(redis.connect, o)
  if not c then return nil, err, code end
  local steps = {}
  if self.password then
    steps[#steps + 1] = self.user and { "AUTH", self.user, self.password } or { "AUTH", self.password }
  end
  if self.db ~= 0 then steps[#steps + 1] = { "SELECT", self.db } end
  steps[#steps + 1] = { "PING" }
  for _, args in ipairs(steps) do
    local ok, reply, rcode = command(c, args)
    if not ok then
      c:close()
      if rcode == "SERVER" then return server_failure(self.name, fail.message(reply)) end
      return nil, reply, rcode
    end
  end
  return c
end

-- A usable connection to addr (one per node, shared by all the store's coroutines: commands are
-- pipelined on it).
function Store:connection(addr)
  local node = self.nodes[addr]
  if not node then
    node = {}
    self.nodes[addr] = node
  end
  local c = node.conn
  if c and c:usable() then return c end
  if c then
    node.conn = nil
    c:close()
  end
  if self.closed then return fail.new("CLOSED", "%s is closed", self.name) end
  if node.connecting then return node.connecting.wait() end
  local ev = async.event()
  node.connecting = ev
  local conn, err, code = self:dial(addr)
  node.connecting = nil
  if conn then
    if self.closed then
      conn:close()
      conn, err, code = fail.new("CLOSED", "%s is closed", self.name)
    else
      node.conn = conn
    end
  end
  ev.set(conn, err, code)
  return conn, err, code
end

-- CRC16/XMODEM, which Redis Cluster hashes keys with.
local CRC16 = {}
for i = 0, 255 do
  local crc = i << 8
  for _ = 1, 8 do
    crc = (crc & 0x8000 ~= 0) and (((crc << 1) ~ 0x1021) & 0xFFFF) or ((crc << 1) & 0xFFFF)
  end
  CRC16[i] = crc
end

--- The Redis Cluster slot of a Redis key: CRC16 of its hash tag (or of the whole key) mod 16384.
function M.slot_of(rkey)
  local open = rkey:find("{", 1, true)
  if open then
    local close = rkey:find("}", open + 1, true)
    if close and close > open + 1 then rkey = rkey:sub(open + 1, close - 1) end
  end
  local crc = 0
  for i = 1, #rkey do crc = ((crc << 8) & 0xFFFF) ~ CRC16[((crc >> 8) ~ rkey:byte(i)) & 0xFF] end
  return crc % 16384
end

-- Learns whether the seed is a cluster node and, if so, which master serves which slots
-- (CLUSTER SLOTS). A server without cluster support, or a user not allowed CLUSTER, is taken as
-- one endpoint (MOVED replies still teach the slots of a cluster later).
function Store:discover()
  if self.cluster ~= nil then return true end
  if self.discovering then return self.discovering.wait() end
  local ev = async.event()
  self.discovering = ev
  local function done(...)
    self.discovering = nil
    ev.set(...)
    return ...
  end
  local c, err, code = self:connection(self.seed)
  if not c then return done(nil, err, code) end
  local ok, reply, rcode = command(c, { "CLUSTER", "SLOTS" })
  if not ok then
    if rcode ~= "SERVER" then return done(nil, reply, rcode) end
    self.cluster = false
    return done(true)
  end
  for _, range in ipairs(reply) do
    local master = range[3]
    if type(master) == "table" and master[1] and master[2] then
      local host = master[1] ~= "" and master[1] or self.conn_opts.host
      local addr = (host:find(":", 1, true) and "[%s]:%d" or "%s:%d"):format(host, master[2])
      for slot = range[1], range[2] do self.slots[slot] = addr end
    end
  end
  self.cluster = #reply > 0
  return done(true)
end

-- The node that serves the Redis key rkey (the seed for a single endpoint).
function Store:node_for(rkey)
  if not self.cluster or not rkey then return self.seed end
  return self.slots[M.slot_of(rkey)] or self.seed
end

-- Every master of the cluster (the seed alone for a single endpoint).
function Store:masters()
  if not self.cluster then return { self.seed } end
  local seen, out = {}, {}
  for slot = 0, 16383 do
    local addr = self.slots[slot]
    if addr and not seen[addr] then
      seen[addr] = true
      out[#out + 1] = addr
    end
  end
  if #out == 0 then out[1] = self.seed end
  return out
end

-- Commands whose second argument is not a key; EVAL's first key is its fourth argument.
local KEYLESS = { PING = true, SCAN = true, AUTH = true, SELECT = true, CLUSTER = true, INFO = true }

local function key_of_args(args)
  if args[1] == "EVAL" then return args[4] end
  if KEYLESS[args[1]] then return nil end
  return args[2]
end

-- One command, retried (reconnecting) on transient failures: true, reply | nil, err, code. It
-- goes to the node serving its key (or to `addr`), following MOVED and ASK redirections.
function Store:call(args, retry_for, addr)
  return retry.run(function()
    local ok, err, code = self:discover()
    if not ok then return nil, err, code end
    local to, asking = addr or self:node_for(key_of_args(args)), false
    for _ = 1, 8 do
      local c, cerr, ccode = self:connection(to)
      if not c then return nil, cerr, ccode end
      if asking then c:call({ "ASKING" }, function() end) end -- pipelined just before the command
      local done, reply, rcode = command(c, args)
      if done then return true, reply end
      if rcode ~= "SERVER" then
        if rcode == "CLOSED" and not self.closed then return fail.new("UNAVAILABLE", "%s", fail.message(reply)) end
        return nil, reply, rcode
      end
      local msg = fail.message(reply)
      local kind, slot, target = msg:match("^(%u+) (%d+) (%S+)$")
      if kind == "MOVED" then
        self.cluster = true
        self.slots[tonumber(slot)] = target
        to, asking = target, false
      elseif kind == "ASK" then
        to, asking = target, true
      else
        return server_failure(self.name, msg)
      end
    end
    return fail.new("UNAVAILABLE", "%s: too many cluster redirections for %s", self.name, tostring(args[1]))
  end, { deadline = retry_for or self.retry_for })
end

-- A script: EVAL sends its text each time (a few hundred bytes); Redis caches the compiled form.
local function eval(self, script, keys, args)
  local cmd = { "EVAL", script, #keys }
  for _, k in ipairs(keys) do cmd[#cmd + 1] = k end
  for _, a in ipairs(args) do cmd[#cmd + 1] = a end
  return self:call(cmd)
end

-- Bodies ------------------------------------------------------------------------------------------

-- A function returning the body's pieces in order (nil at the end), and its announced size.
local function reader_of(body)
  if type(body) == "string" or bytes.is(body) then
    local done = false
    return function()
      if done then return nil end
      done = true
      return body
    end, #body
  end
  if type(body) ~= "table" then return fail.new("INVALID", "body must be a string or a table") end
  if body.path then
    local fd, err = async.await(uv.fs_open, body.path, "r", 0)
    if not fd then return fail.new("IO", "cannot open %s: %s", body.path, tostring(err)) end
    local st = async.await(uv.fs_fstat, fd)
    local offset, closed = 0, false
    return function()
      if closed then return nil end
      local data, rerr = async.await(uv.fs_read, fd, 256 * 1024, offset)
      if not data or data == "" then
        closed = true
        uv.fs_close(fd)
        if not data then error(select(2, fail.new("IO", "reading %s: %s", body.path, tostring(rerr))), 0) end
        return nil
      end
      offset = offset + #data
      return data
    end, st and st.size or nil, function()
      if not closed then
        closed = true
        uv.fs_close(fd)
      end
    end
  end
  if type(body.producer) == "function" then return body.producer, body.size end
  return fail.new("INVALID", "body table needs path or producer")
end

-- Splits a stream of pieces into chunks of exactly `size` bytes (the last may be shorter),
-- copying each byte once whatever the pieces' sizes (a 100 MB string body included); returns
-- next_chunk() -> string | nil, and total() -> bytes read so far.
local function chunker(next_piece, size)
  local cur, pos, total, eof = "", 1, 0, false
  local function next_chunk()
    local parts, have = {}, 0
    while have < size do
      if pos > #cur then
        if eof then break end
        local p = next_piece()
        if p == nil then
          eof = true
          break
        end
        cur, pos = p, 1
        total = total + #p
      else
        local take = math.min(size - have, #cur - pos + 1)
        parts[#parts + 1] = (pos == 1 and take == #cur) and cur or cur:sub(pos, pos + take - 1)
        pos = pos + take
        have = have + take
      end
    end
    if have == 0 then return nil end
    return #parts == 1 and parts[1] or table.concat(parts)
  end
  return next_chunk, function() return total end
end

-- Chunks of an autopgo.bytes (an upload's body) as views of it, which the Redis binding copies
-- straight into its output buffer (no Lua string); same returns as chunker.
local function view_chunker(body, size)
  local off = 0
  return function()
    if off >= #body then return nil end
    local chunk = body:view(off + 1, off + size)
    off = off + #chunk
    return chunk
  end, function() return off end
end

-- The store ---------------------------------------------------------------------------------------

local function check_key(key)
  if type(key) ~= "string" or key == "" then return fail.new("INVALID", "blob key must be a non-empty string") end
  return true
end

-- The meta of key: { version, nchunks, size, last_modified, content_type } | nil, NOT_FOUND.
function Store:meta(key)
  local ok, reply, code = self:call { "HMGET", self:meta_key(key), "v", "n", "s", "t", "c" }
  if not ok then return nil, reply, code end
  if not reply[1] then return fail.new("NOT_FOUND", "no object %q in %s", key, self.name) end
  return { version = reply[1], nchunks = tonumber(reply[2]) or 0, size = tonumber(reply[3]) or 0,
    last_modified = (tonumber(reply[4]) or 0) / 1000, content_type = reply[5] or nil }
end

function Store:put(key, body, opts)
  opts = opts or {}
  local ok, err, code = check_key(key)
  if not ok then return nil, err, code end
  local next_piece, announced, close_reader = reader_of(body)
  if not next_piece then return nil, announced, close_reader end
  local function finish(...)
    if close_reader then close_reader() end
    return ...
  end
  -- Refused early, before any byte moves, when the condition already fails (the commit checks
  -- again atomically: this is only a shortcut).
  if opts.if_none_match == "*" or opts.if_match then
    local cur, merr, mcode = self:meta(key)
    if not cur and mcode ~= "NOT_FOUND" then return finish(nil, merr, mcode) end
    if opts.if_none_match == "*" and cur then
      return finish(fail.new("PRECONDITION_FAILED", "%q already exists in %s", key, self.name))
    end
    if opts.if_match and (not cur or cur.version ~= opts.if_match) then
      return finish(fail.new("PRECONDITION_FAILED", "%q is not at version %s in %s", key, opts.if_match, self.name))
    end
  end
  local version = crypto.hex(crypto.random(10))
  local base = self:chunk_base(key)
  local next_chunk, total
  if bytes.is(body) then
    next_chunk, total = view_chunker(body, self.chunk_size)
  else
    next_chunk, total = chunker(next_piece, self.chunk_size)
  end
  local n, upload_ms = 0, M.UPLOAD_TTL * 1000
  local read_ok, read_err = pcall(function()
    while true do
      local batch = {}
      for _ = 1, M.WINDOW do
        local chunk = next_chunk()
        if not chunk then break end
        local ck = base .. version .. ":" .. n
        n = n + 1
        batch[#batch + 1] = function()
          local sent, reply, rcode = self:call { "SET", ck, chunk, "PX", upload_ms }
          if bytes.is(chunk) then chunk:release() end -- its bytes are in the output buffer now
          return sent, reply, rcode
        end
      end
      if #batch == 0 then return end
      for _, r in ipairs(async.all(batch)) do
        if not r[1] then error(r[2], 0) end
        if not r[2] then error({ r[3], r[4] }, 0) end
      end
      if #batch < M.WINDOW then return end
    end
  end)
  if not read_ok then
    if type(read_err) == "table" then return finish(nil, read_err[1], read_err[2]) end
    if fail.code(read_err) then return finish(nil, read_err, fail.code(read_err)) end
    finish()
    error(read_err, 0)
  end
  local size = total()
  if announced and announced ~= size then
    return finish(fail.new("INVALID", "the body gave %d bytes, %d were announced", size, announced))
  end
  local cond, want = "", ""
  if opts.if_none_match == "*" then
    cond = "absent"
  elseif opts.if_match then
    cond, want = "match", opts.if_match
  end
  local done, reply, ecode = eval(self, COMMIT, { self:meta_key(key) }, { cond, want, version, size, n,
    opts.content_type or "", self:ttl_of(key), self.grace_ms, base })
  if not done then return finish(nil, reply, ecode) end
  if reply[1] == "exists" then
    return finish(fail.new("PRECONDITION_FAILED", "%q already exists in %s", key, self.name))
  elseif reply[1] == "mismatch" then
    return finish(fail.new("PRECONDITION_FAILED", "%q is at version %s, not %s, in %s", key,
      reply[2] ~= "" and reply[2] or "(none)", want, self.name))
  elseif reply[1] == "lost" then
    return finish(fail.new("UNAVAILABLE", "chunk %s of %q vanished before the commit in %s (a Redis restart "
      .. "without persistence, or eviction)", reply[2], key, self.name))
  end
  return finish({ etag = version, size = size, last_modified = (tonumber(reply[2]) or 0) / 1000 })
end

--- store:get(key, opts): opts.sink as in the contract; opts.version (or opts.if_match): read only
-- that version (PRECONDITION_FAILED if the object is at another one).
function Store:get(key, opts)
  opts = opts or {}
  local ok, err, code = check_key(key)
  if not ok then return nil, err, code end
  local m
  m, err, code = self:meta(key)
  if not m then return nil, err, code end
  local want = opts.version or opts.if_match
  if want and want ~= m.version then
    return fail.new("PRECONDITION_FAILED", "%q is at version %s, not %s, in %s", key, m.version, want, self.name)
  end
  local base = self:chunk_base(key) .. m.version .. ":"
  local parts = not opts.sink and {} or nil
  local got = 0
  for first = 0, m.nchunks - 1, M.WINDOW do
    local batch = {}
    for i = first, math.min(first + M.WINDOW, m.nchunks) - 1 do
      batch[#batch + 1] = function() return self:call { "GET", base .. i } end
    end
    local results = async.all(batch)
    for j, r in ipairs(results) do
      if not r[1] then error(r[2], 0) end
      if not r[2] then return nil, r[3], r[4] end
      local piece = r[3]
      if type(piece) ~= "string" then
        return fail.new("PRECONDITION_FAILED", "%q changed while it was read: version %s is gone from %s "
          .. "(replaced more than the grace period ago, or evicted)", key, m.version, self.name)
      end
      results[j] = nil
      got = got + #piece
      if parts then parts[#parts + 1] = piece else opts.sink(piece) end
    end
  end
  if got ~= m.size then
    return fail.new("INTERNAL", "%q: read %d bytes of version %s, its size is %d", key, got, m.version, m.size)
  end
  local res = { etag = m.version, size = m.size, last_modified = m.last_modified, content_type = m.content_type }
  if parts then res.body = table.concat(parts) end
  return res
end

function Store:stat(key)
  local ok, err, code = check_key(key)
  if not ok then return nil, err, code end
  local m
  m, err, code = self:meta(key)
  if not m then return nil, err, code end
  return { etag = m.version, size = m.size, last_modified = m.last_modified, content_type = m.content_type }
end

function Store:delete(key)
  local ok, err, code = check_key(key)
  if not ok then return nil, err, code end
  local done, reply, ecode = eval(self, DELETE, { self:meta_key(key) }, { self.grace_ms, self:chunk_base(key) })
  if not done then return nil, reply, ecode end
  if reply == 0 then return fail.new("NOT_FOUND", "no object %q in %s", key, self.name) end
  return true
end

--- Lists with SCAN (never KEYS), then reads each object's meta, 64 at a time (only of the keys
-- opts.after / opts.limit leave: see autopgo.blob).
function Store:list(prefix, opts)
  prefix = prefix or ""
  local match = self:match_of(prefix)
  local seen, found = {}, {}
  local ok, err, code = self:discover()
  if not ok then return nil, err, code end
  -- A prefix naming a whole app is one hash tag, so one node; anything else asks every master.
  local app = prefix:match("^([^/]*)/")
  local nodes = app and { self:node_for(self:meta_key(app .. "/")) } or self:masters()
  for _, node in ipairs(nodes) do
    local cursor = "0"
    repeat
      local done, reply, rcode = self:call({ "SCAN", cursor, "MATCH", match, "COUNT", self.scan_count }, nil, node)
      if not done then return nil, reply, rcode end
      cursor = reply[1]
      for _, mk in ipairs(reply[2]) do
        local key = self:key_of(mk)
        if key and not seen[key] and key:sub(1, #prefix) == prefix then
          seen[key] = true
          found[#found + 1] = { key = key, meta = mk }
        end
      end
    until cursor == "0"
  end
  table.sort(found, function(a, b) return a.key < b.key end)
  found = blob.window(found, opts and { after = opts.after })
  local out, limit = {}, opts and opts.limit or math.huge
  for first = 1, #found, 64 do
    if #out >= limit then break end
    local batch = {}
    for i = first, math.min(first + 63, #found) do
      batch[#batch + 1] = function() return self:call { "HMGET", found[i].meta, "v", "s", "t" } end
    end
    for j, r in ipairs(async.all(batch)) do
      if not r[1] then error(r[2], 0) end
      if not r[2] then return nil, r[3], r[4] end
      local v = r[3]
      if v[1] then -- gone since the SCAN: not listed
        out[#out + 1] = { key = found[first + j - 1].key, etag = v[1], size = tonumber(v[2]) or 0,
          last_modified = (tonumber(v[3]) or 0) / 1000 }
      end
    end
  end
  table.sort(out, function(a, b) return a.key < b.key end)
  return blob.window(out, opts and { limit = opts.limit })
end

function Store:health()
  local ok, err, code = self:call({ "PING" }, math.min(5, self.retry_for), self.seed)
  if not ok then return fail.new(code or "UNAVAILABLE", "%s health check: %s", self.name, fail.message(err)) end
  return true
end

function Store:close()
  self.closed = true
  for _, node in pairs(self.nodes) do
    local c = node.conn
    node.conn = nil
    if c then c:close() end
  end
end

-- Opening -----------------------------------------------------------------------------------------

local function duration_ms(q, name, default_s)
  local v = q[name]
  if v == nil or v == "" then return math.floor(default_s * 1000) end
  local s, err = units.parse_duration(v)
  if not s then return fail.new("INVALID", "%s: %s", name, fail.message(err)) end
  if s < 0 then return fail.new("INVALID", "%s must not be negative, got %q", name, v) end
  return math.floor(s * 1000 + 0.5)
end

local function bool(q, name)
  local v = q[name]
  if v == nil or v == "" or v == "false" or v == "0" then return false end
  if v == "true" or v == "1" then return true end
  return nil, fail.new("INVALID", "%s must be true or false, got %q", name, v)
end

--- Opens the store for a parsed redis:// or rediss:// URL. opts: insecure (skip TLS
-- verification), getenv, scan_count (SCAN's COUNT hint, 1000).
function M.open(u, opts)
  opts = opts or {}
  local getenv = opts.getenv or os.getenv
  local q = u.query or {}
  for k in pairs(q) do
    if not KNOWN[k] then
      return fail.new("INVALID", "unknown option %q in %s:// URL (known: prefix, ttl, ttl_base, grace, chunk_size, "
        .. "retry_for, timeout, ca_file, cert_file, key_file, server_name, skip_verify)", k, u.scheme)
    end
  end
  local tls = u.scheme == "rediss"
  local host = u.host ~= "" and u.host or "127.0.0.1"
  local port = u.port or 6379
  local db = 0
  local path = (u.path or ""):gsub("^/", "")
  if path ~= "" then
    db = tonumber(path:match("^(%d+)/?$") or "")
    if not db then
      return fail.new("INVALID", "the path of a %s:// URL is a database number, got %q", u.scheme, path)
    end
  end
  local prefix = q.prefix or ""
  if prefix:find("[{}]") then return fail.new("INVALID", "prefix must not contain { or } (they make hash tags)") end
  local ttl, err = duration_ms(q, "ttl", 0)
  if not ttl then return nil, err, "INVALID" end
  local ttl_base
  ttl_base, err = duration_ms(q, "ttl_base", 0)
  if not ttl_base then return nil, err, "INVALID" end
  local grace
  grace, err = duration_ms(q, "grace", M.GRACE)
  if not grace then return nil, err, "INVALID" end
  local retry_for
  retry_for, err = duration_ms(q, "retry_for", M.RETRY_FOR)
  if not retry_for then return nil, err, "INVALID" end
  local timeout
  timeout, err = duration_ms(q, "timeout", 30)
  if not timeout then return nil, err, "INVALID" end
  local chunk_size = M.CHUNK_SIZE
  if q.chunk_size then
    chunk_size = units.parse_size(q.chunk_size)
    if not chunk_size or chunk_size < 1024 or chunk_size > 256 * 1024 * 1024 then
      return fail.new("INVALID", "chunk_size must be a size from 1KiB to 256MiB, got %q", q.chunk_size)
    end
  end
  local skip
  skip, err = bool(q, "skip_verify")
  if skip == nil then return nil, err, "INVALID" end
  if not tls then
    for _, k in ipairs { "ca_file", "cert_file", "key_file", "server_name", "skip_verify" } do
      if q[k] then return fail.new("INVALID", "%s is a TLS option: use rediss:// for TLS", k) end
    end
  end
  local password = u.password or getenv("AUTOPGO_REDIS_PASSWORD")
  if password == "" then password = nil end
  local user = u.user ~= "" and u.user or nil
  local shown = host:find(":", 1, true) and ("[" .. host .. "]") or host
  local name = ("%s://%s:%d/%d"):format(u.scheme, shown, port, db) .. (prefix ~= "" and ("?prefix=" .. prefix) or "")
  local self = setmetatable({
    name = name, prefix = prefix, db = db, user = user, password = password,
    ttl_ms = ttl, ttl_base_ms = ttl_base, grace_ms = grace, retry_for = retry_for / 1000,
    chunk_size = chunk_size, scan_count = opts.scan_count or 1000,
    seed = (shown .. ":" .. port), nodes = {}, slots = {}, cluster = nil,
    conn_opts = { host = host, port = port, tls = tls, ca_file = q.ca_file, cert_file = q.cert_file,
      key_file = q.key_file, server_name = q.server_name, verify = not (skip or opts.insecure),
      timeout_ms = timeout },
  }, Store)
  return self
end

return M
