-- The local-disk blob store (file:///dir), the embedded default's store. Keys map to files under
-- the root; every write goes to a temporary file that is fsync'd and then renamed (or linked, for
-- create-only writes) into place, so readers and crashes only ever see whole objects. Conditional
-- writes and deletes serialise on a flock(2) lock the kernel releases if the process dies. Keys
-- that would leave the root (.., absolute paths, empty segments) are refused.
--
-- Temporary files: each store object writes them in its own directory .autopgo/tmp/<id>/ and
-- holds a flock on .autopgo/tmp/<id>.lock for as long as the process lives. Opening a store
-- removes the directories whose lock nobody holds (left by a kill -9), never one of a live
-- process sharing the data directory, whichever process or container that is.
local fail = require "autopgo.fail"
local uv = require "luv"
local async = require "autopgo.async"
local blob = require "autopgo.blob"
local url = require "autopgo.url"
local core = require "autopgo.core"

local M = {}

local INTERNAL = ".autopgo" -- temporary files and the lock live here, never listed
local CHUNK = 256 * 1024

local Store = {}
Store.__index = Store

-- Converts a luv failure ("ENOENT: no such file ...") into the store's codes.
local function io_fail(err, code)
  if code == "ENOENT" or code == "ENOTDIR" or code == "EISDIR" then return fail.new("NOT_FOUND", err) end
  if code == "EACCES" or code == "EPERM" or code == "EROFS" then return fail.new("UNAVAILABLE", err) end
  return fail.new("IO", tostring(err))
end

local function check_key(key)
  if type(key) ~= "string" or key == "" then return fail.new("INVALID", "a key must be a non-empty string") end
  if key:find("%z") then return fail.new("INVALID", "key %q contains a NUL byte", key) end
  if key:sub(1, 1) == "/" then
    return fail.new("INVALID", "key %q is absolute: keys stay under the store's root", key)
  end
  for seg in (key .. "/"):gmatch("([^/]*)/") do
    if seg == "" or seg == "." or seg == ".." then
      return fail.new("INVALID", "key %q has an empty, '.' or '..' segment: keys stay under the store's root", key)
    end
  end
  if key == INTERNAL or key:sub(1, #INTERNAL + 1) == INTERNAL .. "/" then
    return fail.new("INVALID", "key %q is reserved for the store's own files", key)
  end
  return true
end

local function etag_of(st)
  return ('"%x-%x%09d-%x"'):format(st.ino, st.mtime.sec, st.mtime.nsec, st.size)
end

local function meta_of(st)
  return { etag = etag_of(st), size = st.size, last_modified = st.mtime.sec + st.mtime.nsec / 1e9 }
end

-- A stat as luv gives it, from core.fs's { ino, size, mtime_sec, mtime_nsec }.
local function st_of(info)
  return { ino = info.ino, size = info.size, mtime = { sec = info.mtime_sec, nsec = info.mtime_nsec } }
end

local function dirname(path)
  return path:match("^(.*)/[^/]*$")
end

-- mkdir -p, tolerating directories that appear (or exist) concurrently.
local function mkdirs(path)
  local ok, err, code = async.await(uv.fs_mkdir, path, 493)
  if ok or code == "EEXIST" then return true end
  if code ~= "ENOENT" then return io_fail(err, code) end
  local parent = dirname(path)
  if not parent or parent == "" then return io_fail(err, code) end
  local pok, perr, pcode = mkdirs(parent)
  if not pok then return nil, perr, pcode end
  ok, err, code = async.await(uv.fs_mkdir, path, 493)
  if ok or code == "EEXIST" then return true end
  return io_fail(err, code)
end

local function write_all(fd, data, offset)
  local pos = 1
  while pos <= #data do
    local n, err, code = async.await(uv.fs_write, fd, pos == 1 and data or data:sub(pos), offset + pos - 1)
    if not n then return io_fail(err, code) end
    pos = pos + n
  end
  return #data
end

-- Writes body into a new temporary file, fsync'd; returns its path and stat.
function Store:_write_temp(body)
  local tmp, terr, tcode = self:_tmp_path()
  if not tmp then return nil, terr, tcode end
  local fd, err, code = async.await(uv.fs_open, tmp, "wx", 420)
  if not fd then
    if code == "ENOENT" then
      local ok, merr, mcode = mkdirs(dirname(tmp))
      if not ok then return nil, merr, mcode end
      fd, err, code = async.await(uv.fs_open, tmp, "wx", 420)
    end
    if not fd then return io_fail(err, code) end
  end
  local function abort(...)
    async.await(uv.fs_close, fd)
    async.await(uv.fs_unlink, tmp)
    return ...
  end
  local size = 0
  if type(body) == "string" then
    local n, werr, wcode = write_all(fd, body, 0)
    if not n then return abort(nil, werr, wcode) end
  elseif type(body) == "table" and body.path then
    local src, serr, scode = async.await(uv.fs_open, body.path, "r", 0)
    if not src then return abort(io_fail(serr, scode)) end
    while true do
      local data, rerr, rcode = async.await(uv.fs_read, src, CHUNK, size)
      if not data then
        async.await(uv.fs_close, src)
        return abort(io_fail(rerr, rcode))
      end
      if data == "" then break end
      local n, werr, wcode = write_all(fd, data, size)
      if not n then
        async.await(uv.fs_close, src)
        return abort(nil, werr, wcode)
      end
      size = size + n
    end
    async.await(uv.fs_close, src)
  elseif type(body) == "table" and type(body.producer) == "function" then
    while true do
      local ok, piece = pcall(body.producer)
      if not ok then return abort(fail.new("IO", "the body producer failed: %s", tostring(piece))) end
      if piece == nil then break end
      local n, werr, wcode = write_all(fd, piece, size)
      if not n then return abort(nil, werr, wcode) end
      size = size + n
    end
    if body.size and body.size ~= size then
      return abort(fail.new("INVALID", "the producer gave %d bytes, %d were announced", size, body.size))
    end
  else
    return abort(fail.new("INVALID", "body must be a string, { path = ... } or { producer = fn, size = n }"))
  end
  local ok, ferr, fcode = async.await(uv.fs_fsync, fd)
  if not ok then return abort(io_fail(ferr, fcode)) end
  local st, sterr, stcode = async.await(uv.fs_fstat, fd)
  if not st then return abort(io_fail(sterr, stcode)) end
  async.await(uv.fs_close, fd)
  return tmp, st
end

-- Temporary files ------------------------------------------------------------------------------------

-- Removes a directory of temporary files and what is in it (synchronous: start-up only).
local function remove_tree(path)
  local req = uv.fs_scandir(path)
  if req then
    while true do
      local name = uv.fs_scandir_next(req)
      if not name then break end
      uv.fs_unlink(path .. "/" .. name)
    end
  end
  uv.fs_rmdir(path)
end

-- Removes what dead processes left in root/.autopgo/tmp: a <id>/ directory goes once the flock
-- on its <id>.lock can be taken (its holder is gone), and with it the lock; a directory without
-- a lock file lost its lock to an earlier sweep that died half-way. Loose files are temporary
-- files of versions before the per-process directories, removed when an hour old. Returns
-- how many temporary files were removed.
local function sweep_tmp(root)
  local base = ("%s/%s/tmp"):format(root, INTERNAL)
  local req = uv.fs_scandir(base)
  if not req then return 0 end
  local entries = {}
  while true do
    local name, kind = uv.fs_scandir_next(req)
    if not name then break end
    entries[name] = kind
  end
  local removed = 0
  local function count_and_remove(dir)
    local r = uv.fs_scandir(dir)
    if r then
      while uv.fs_scandir_next(r) do removed = removed + 1 end
    end
    remove_tree(dir)
  end
  for name, kind in pairs(entries) do
    local id = name:match("^(.+)%.lock$") or name:match("^%.(.+)%.new$")
    if id and kind == "file" then
      local fd = uv.fs_open(base .. "/" .. name, "r", 0)
      if fd then
        if core.fs.flock(fd, "exclusive") then
          -- Directory first, lock last: a directory is never left without its lock while alive.
          if entries[id] == "directory" then count_and_remove(base .. "/" .. id) end
          uv.fs_unlink(base .. "/" .. name)
          core.fs.flock(fd, "unlock")
        end
        uv.fs_close(fd)
      end
    elseif kind == "directory" and not entries[name .. ".lock"] and not entries["." .. name .. ".new"] then
      count_and_remove(base .. "/" .. name)
    elseif kind == "file" then
      local st = uv.fs_stat(base .. "/" .. name)
      if st and os.time() - st.mtime.sec > 3600 then
        uv.fs_unlink(base .. "/" .. name)
        removed = removed + 1
      end
    end
  end
  return removed
end

-- A new path for a temporary file in this store's own directory, made (with its lock held) the
-- first time. The lock file is created under a name sweeps take for a dead one only once
-- locked, and renamed into place with the lock held, so no sweep can take it in between.
function Store:_tmp_path()
  if not self.tmpdir then
    local base = ("%s/%s/tmp"):format(self.root, INTERNAL)
    local id = core.crypto.uuid4()
    local staging = ("%s/.%s.new"):format(base, id)
    local fd, err, code = uv.fs_open(staging, "wx", 420)
    if not fd and code == "ENOENT" then
      mkdirs(base)
      fd, err, code = uv.fs_open(staging, "wx", 420)
    end
    if not fd then return io_fail(err, code) end
    local ok, lerr = core.fs.flock(fd, "exclusive")
    if ok then ok, lerr = uv.fs_rename(staging, ("%s/%s.lock"):format(base, id)) end
    if ok then ok, lerr = uv.fs_mkdir(("%s/%s"):format(base, id), 493) end
    if not ok then
      uv.fs_close(fd)
      uv.fs_unlink(staging)
      return fail.new("IO", "cannot make the temporary directory under %s: %s", base, tostring(lerr))
    end
    self.tmp_fd, self.tmpdir = fd, ("%s/%s"):format(base, id)
  end
  return ("%s/%s"):format(self.tmpdir, core.crypto.uuid4())
end

-- Runs fn() holding the store's exclusive lock (across processes sharing the directory).
function Store:_locked(fn)
  local path = ("%s/%s/lock"):format(self.root, INTERNAL)
  local fd, err, code = async.await(uv.fs_open, path, "a", 420)
  if not fd and code == "ENOENT" then
    mkdirs(dirname(path))
    fd, err, code = async.await(uv.fs_open, path, "a", 420)
  end
  if not fd then return io_fail(err, code) end
  local wait, waited = 1, 0
  while true do
    local ok, lerr, lcode = core.fs.flock(fd, "exclusive")
    if ok then break end
    if lcode ~= "BUSY" or waited > 30000 then
      async.await(uv.fs_close, fd)
      return fail.new("UNAVAILABLE", "cannot lock %s: %s", path, lerr)
    end
    async.sleep(wait)
    waited = waited + wait
    wait = math.min(wait * 2, 20)
  end
  local res = table.pack(pcall(fn))
  core.fs.flock(fd, "unlock")
  async.await(uv.fs_close, fd)
  if not res[1] then error(res[2], 0) end
  return table.unpack(res, 2, res.n)
end

-- Moves the temporary file into place (one thread-pool job: link or rename, directories made as
-- needed, the directory fsync'd). exclusive: fails with EEXIST rather than replace.
local function place(tmp, path, exclusive)
  return async.await(core.fs.place_async, tmp, path, exclusive)
end

function Store:put(key, body, opts)
  local ok, err, code = check_key(key)
  if not ok then return nil, err, code end
  opts = opts or {}
  local path = self.root .. "/" .. key
  local tmp, st
  if type(body) == "string" or type(body) == "userdata" then
    -- The common case in one thread-pool job: create, write, fsync, stat. A userdata is an
    -- autopgo.bytes (an upload's body, see httpd's req:body_bytes()), written from where it is held.
    local terr, tcode
    tmp, terr, tcode = self:_tmp_path()
    if not tmp then return nil, terr, tcode end
    local info, werr, wcode = async.await(core.fs.write_new_async, tmp, body)
    if not info then return io_fail(werr, wcode) end
    st = st_of(info)
  else
    local wcode
    tmp, st, wcode = self:_write_temp(body)
    if not tmp then return nil, st, wcode end
  end
  local cok, cerr, ccode
  if opts.if_none_match == "*" then
    cok, cerr, ccode = place(tmp, path, true)
    if not cok then async.await(uv.fs_unlink, tmp) end
    if ccode == "EEXIST" then return fail.new("PRECONDITION_FAILED", "%q already exists", key) end
  elseif opts.if_match then
    cok, cerr, ccode = self:_locked(function()
      local cur = async.await(uv.fs_stat, path)
      if not cur or cur.type ~= "file" or etag_of(cur) ~= opts.if_match then
        return fail.new("PRECONDITION_FAILED", "%q is not at version %s", key, opts.if_match)
      end
      return place(tmp, path, false)
    end)
    if not cok then async.await(uv.fs_unlink, tmp) end
    if ccode == "PRECONDITION_FAILED" then return nil, cerr, ccode end
  else
    cok, cerr, ccode = place(tmp, path, false)
    if not cok then async.await(uv.fs_unlink, tmp) end
  end
  if not cok then
    if ccode == "EISDIR" or ccode == "ENOTDIR" or ccode == "EEXIST" or ccode == "EPERM" then
      return fail.new("INVALID", "key %q clashes with a directory of other keys", key)
    end
    return io_fail(cerr, ccode)
  end
  return { etag = etag_of(st), size = st.size }
end

function Store:get(key, opts)
  local ok, err, code = check_key(key)
  if not ok then return nil, err, code end
  local path = self.root .. "/" .. key
  local fd
  fd, err, code = async.await(uv.fs_open, path, "r", 0)
  if not fd then return io_fail(err, code) end
  local st, serr, scode = async.await(uv.fs_fstat, fd)
  if not st or st.type ~= "file" then
    async.await(uv.fs_close, fd)
    if st then return fail.new("NOT_FOUND", "no object %q", key) end
    return io_fail(serr, scode)
  end
  local meta = meta_of(st)
  if opts and opts.if_match and meta.etag ~= opts.if_match then
    async.await(uv.fs_close, fd)
    return fail.new("PRECONDITION_FAILED", "%q is not at version %s", key, opts.if_match)
  end
  -- Everything below reads the open file, so the body is the version just checked even when a
  -- write renames another one into place meanwhile.
  local sink = opts and opts.sink
  local parts, offset = {}, 0
  while true do
    local data, rerr, rcode = async.await(uv.fs_read, fd, CHUNK, offset)
    if not data then
      async.await(uv.fs_close, fd)
      return io_fail(rerr, rcode)
    end
    if data == "" then break end
    offset = offset + #data
    if sink then
      local sok, serr2 = pcall(sink, data)
      if not sok then
        async.await(uv.fs_close, fd)
        return fail.new("IO", "the sink failed: %s", tostring(serr2))
      end
    else
      parts[#parts + 1] = data
    end
  end
  async.await(uv.fs_close, fd)
  if not sink then meta.body = table.concat(parts) end
  return meta
end

function Store:stat(key)
  local ok, err, code = check_key(key)
  if not ok then return nil, err, code end
  local st
  st, err, code = async.await(uv.fs_stat, self.root .. "/" .. key)
  if not st then return io_fail(err, code) end
  if st.type ~= "file" then return fail.new("NOT_FOUND", "no object %q", key) end
  return meta_of(st)
end

function Store:delete(key)
  local ok, err, code = check_key(key)
  if not ok then return nil, err, code end
  local path = self.root .. "/" .. key
  -- Gone already (the profile.merged of an upload its merge pass deleted): no lock to wait for.
  local _, _, scode = async.await(uv.fs_stat, path)
  if scode == "ENOENT" then return fail.new("NOT_FOUND", "no object %q", key) end
  ok, err, code = self:_locked(function()
    local st = async.await(uv.fs_stat, path)
    if st and st.type ~= "file" then return fail.new("NOT_FOUND", "no object %q", key) end
    return async.await(uv.fs_unlink, path)
  end)
  if not ok then
    if code == "NOT_FOUND" then return nil, err, code end
    return io_fail(err, code)
  end
  -- Empty directories left behind are removed (they would only clutter listings of the tree).
  local dir = dirname(path)
  while dir and #dir > #self.root do
    if not async.await(uv.fs_rmdir, dir) then break end
    dir = dirname(dir)
  end
  return true
end

-- Appends { key } of every file under dir (a key prefix ending in "/" or "") to out.
function Store:_walk(rel, prefix, out)
  local dir = rel == "" and self.root or (self.root .. "/" .. rel:sub(1, -2))
  local req, err, code = async.await(uv.fs_scandir, dir)
  if not req then
    if code == "ENOENT" or code == "ENOTDIR" then return true end
    return io_fail(err, code)
  end
  local entries = {}
  while true do
    local name, kind = uv.fs_scandir_next(req)
    if not name then break end
    entries[#entries + 1] = { name, kind }
  end
  for _, e in ipairs(entries) do
    local name, kind = e[1], e[2]
    local key = rel .. name
    if not (rel == "" and name == INTERNAL) then
      if kind == "directory" then
        local sub = key .. "/"
        if sub:sub(1, #prefix) == prefix or prefix:sub(1, #sub) == sub then
          local ok, werr, wcode = self:_walk(sub, prefix, out)
          if not ok then return nil, werr, wcode end
        end
      elseif key:sub(1, #prefix) == prefix then
        out[#out + 1] = { key = key }
      end
    end
  end
  return true
end

-- Names are read first and only the entries opts (after, limit) leave are stat'ed: a bounded
-- listing of a large directory costs one scandir, not a stat per file.
-- One page of a listing (opts.limit, opts.after) when the prefix's directory holds only files:
-- a thread-pool job reads the directory once and stats only the page (core/fs/list.h), so a page
-- of a large staging area costs what the page holds, not a sorted copy of every name. false when
-- a directory there would interleave its keys (the whole walk answers then).
function Store:_page(start, prefix, opts)
  local after = opts.after
  local after_name
  if after ~= nil and after >= start then
    if after:sub(1, #start) ~= start then return {} end -- past every key under start
    after_name = after:sub(#start + 1)
  end
  local dir = start == "" and self.root or (self.root .. "/" .. start:sub(1, -2))
  local out, limit = {}, math.min(opts.limit, 1000000)
  -- A page is short only at the end of the listing: when files of it were deleted meanwhile (a
  -- worker deletes what it merged while the next pass lists), list on after what it covered.
  while true do
    -- files, has_dirs, through | nil, err, code
    local files, has_dirs, through = async.await(core.fs.list_page_async, dir, prefix:sub(#start + 1),
      after_name, limit - #out)
    if not files then
      if through == "ENOENT" or through == "ENOTDIR" then return {} end
      return io_fail(has_dirs, through)
    end
    if has_dirs then return false end
    for _, f in ipairs(files) do
      if not (start == "" and f.name == INTERNAL) then
        local item = meta_of(st_of(f))
        item.key = start .. f.name
        out[#out + 1] = item
      end
    end
    if not through or #out >= limit then return out end
    after_name = through
  end
end

function Store:list(prefix, opts)
  prefix = prefix or ""
  -- Start at the deepest directory the prefix names.
  local start = prefix:match("^(.*/)") or ""
  for seg in start:gmatch("([^/]*)/") do
    if seg == "" or seg == "." or seg == ".." then return fail.new("INVALID", "prefix %q leaves the store", prefix) end
  end
  if opts and opts.limit then
    local page, perr, pcode = self:_page(start, prefix, opts)
    if page then return page end
    if page == nil then return nil, perr, pcode end
  end
  local found = {}
  local ok, err, code = self:_walk(start, prefix, found)
  if not ok then return nil, err, code end
  table.sort(found, function(a, b) return a.key < b.key end)
  local out, limit = {}, opts and opts.limit or math.huge
  for _, e in ipairs(blob.window(found, opts and { after = opts.after })) do
    if #out >= limit then break end
    local st = async.await(uv.fs_stat, self.root .. "/" .. e.key)
    if st and st.type == "file" then -- else gone since the scan: not listed
      local item = meta_of(st)
      item.key = e.key
      out[#out + 1] = item
    end
  end
  return out
end

function Store:health()
  local st, err, code = async.await(uv.fs_stat, self.root)
  if not st then return io_fail(err, code) end
  if st.type ~= "directory" then return fail.new("UNAVAILABLE", "%s is not a directory", self.root) end
  local ok, aerr = async.await(uv.fs_access, self.root, "rw")
  if not ok then return fail.new("UNAVAILABLE", "%s is not readable and writable: %s", self.root, tostring(aerr)) end
  return true
end

--- Releases the temporary directory (what a kill -9 would leave is swept at the next open).
function Store:close()
  if self.tmp_fd then
    local base = self.tmpdir
    remove_tree(base)
    uv.fs_unlink(base .. ".lock")
    uv.fs_close(self.tmp_fd)
    self.tmp_fd, self.tmpdir = nil, nil
  end
end

--- file:///absolute/dir (or file://./relative/dir); the directory is created if missing.
function M.open(u)
  local path = url.unescape(u.path or "")
  if u.host ~= "" and u.host ~= "localhost" then path = url.unescape(u.host) .. path end
  if path == "" then return fail.new("INVALID", "file:// needs a directory, e.g. file:///var/lib/autopgo") end
  if path:sub(1, 1) ~= "/" then path = uv.cwd() .. "/" .. path end
  path = path:gsub("/+$", ""):gsub("/%./", "/")
  if path == "" then path = "/" end
  local st = uv.fs_stat(path)
  if st and st.type ~= "directory" then return fail.new("INVALID", "%s exists and is not a directory", path) end
  if not st then
    -- Once, at start: synchronous mkdir -p is fine here and works outside coroutines too.
    local sofar = ""
    for seg in path:gmatch("[^/]+") do
      sofar = sofar .. "/" .. seg
      local ok, err, code = uv.fs_mkdir(sofar, 493)
      if not ok and code ~= "EEXIST" then
        return fail.new("UNAVAILABLE", "cannot create the store directory %s: %s", path, tostring(err))
      end
    end
  end
  local removed = sweep_tmp(path)
  if removed > 0 then
    require("autopgo.log").info("removed temporary files left by a stopped process", "store", path, "files", removed)
  end
  return setmetatable({ root = path, name = "file://" .. path }, Store)
end

return M
