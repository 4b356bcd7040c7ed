-- Profile fixtures for specs: the corpus files, and variants of a real Go 1.23 CPU profile whose
-- hottest function is renamed "upload_<n>", so a merged profile tells how many times each
-- upload was counted (its flat value divided by the original's).
local support = require "tests.lua.support"
local pprof = require("autopgo.core").pprof

local M = {}

--- The bytes of a corpus file (path relative to tests/testdata/pprof).
function M.file(name)
  return assert(support.read_file(support.root .. "/tests/testdata/pprof/" .. name), name)
end

M.usable = { "goapp-go123-cpu-1.pb.gz", "goapp-go123-cpu-2.pb.gz", "goapp-go123-cpu-3.pb.gz" }

local base = M.file("goapp-go123-cpu-1.pb.gz")
local hottest, weight
do
  local p = assert(pprof.decode(base))
  local top = p:top(1)
  hottest, weight = top[1].name, top[1].flat
  p:close()
end
M.weight = weight

--- The profile with its hottest function renamed "upload_<n>" (encoded).
function M.variant(n)
  local p = assert(pprof.decode(base))
  p:rename_functions(function(name)
    if name == hottest then return "upload_" .. n end
  end)
  local bytes = p:encode()
  p:close()
  return bytes
end

--- How many times each variant was counted in a merged profile: { [n] = count }.
function M.counts(bytes)
  local p = assert(pprof.decode(bytes))
  local out = {}
  for _, t in ipairs(p:top(100000)) do
    local n = t.name:match("^upload_(%d+)$")
    if n then out[tonumber(n)] = t.flat / weight end
  end
  p:close()
  return out
end

local function varint(n)
  local out = {}
  repeat
    local b = n & 0x7f
    n = n >> 7 -- logical shift: a negative int64 takes its ten bytes, as protobuf wants
    out[#out + 1] = string.char(n ~= 0 and (b | 0x80) or b)
  until n == 0
  return table.concat(out)
end

local function read_varint(s, pos)
  local n, shift = 0, 0
  while true do
    local b = assert(s:byte(pos), "truncated varint")
    n = n | ((b & 0x7f) << shift)
    pos, shift = pos + 1, shift + 7
    if b < 0x80 then return n, pos end
  end
end

--- The profile `bytes` (any form) as uncompressed protobuf with time_nanos set to `time` (0:
-- absent) and, when given, duration_nanos to `duration`: profiles "captured" at chosen times.
function M.with_time(bytes, time, duration)
  local p = assert(pprof.decode(bytes))
  local raw = p:encode { raw = true }
  p:close()
  local out, pos = {}, 1
  while pos <= #raw do
    local start = pos
    local key
    key, pos = read_varint(raw, pos)
    local field, wire = key >> 3, key & 7
    if wire == 0 then
      pos = select(2, read_varint(raw, pos))
    elseif wire == 2 then
      local len
      len, pos = read_varint(raw, pos)
      pos = pos + len
    else
      error("unexpected wire type " .. wire .. " in a profile")
    end
    if field ~= 9 and not (duration and field == 10) then out[#out + 1] = raw:sub(start, pos - 1) end
  end
  if time ~= 0 then out[#out + 1] = varint(9 << 3) .. varint(time) end
  if duration then out[#out + 1] = varint(10 << 3) .. varint(duration) end
  return table.concat(out)
end

--- The total of the default sample type (cpu/nanoseconds for the corpus CPU profiles).
function M.total(bytes)
  local info = assert(pprof.validate(bytes))
  return info.sample_types[info.default_index or #info.sample_types].total
end

-- What Go's profile.Parse says of each file of bad/ (tests/testdata/pprof/README.md): our
-- message for it starts with these words, then adds where it went wrong.
M.go_parse_errors = {
  ["bad/bad-wire-type.pb.gz"] = "parsing profile: unrecognized profile format",
  ["bad/concatenated.pb"] = "parsing profile: concatenated profiles detected",
  ["bad/dangling-function-id.pb.gz"] = "malformed profile: ",
  ["bad/dangling-location-id.pb.gz"] = "malformed profile: ",
  ["bad/duplicate-function-id.pb.gz"] = "malformed profile: ",
  ["bad/empty"] = "parsing profile: empty input file",
  ["bad/empty-gzip.pb.gz"] = "parsing profile: empty input file",
  ["bad/gzip-garbage.pb.gz"] = "parsing profile: unrecognized profile format",
  ["bad/gzip-text.pb.gz"] = "parsing profile: unrecognized profile format",
  ["bad/location-id-zero.pb.gz"] = "malformed profile: ",
  ["bad/overlong-field.pb.gz"] = "parsing profile: unrecognized profile format",
  ["bad/random.bin"] = "parsing profile: unrecognized profile format",
  ["bad/string-index-out-of-range.pb.gz"] = "parsing profile: unrecognized profile format",
  ["bad/string0-not-empty.pb.gz"] = "parsing profile: unrecognized profile format",
  ["bad/truncated-goapp.pb.gz"] = "decompressing profile: unexpected EOF",
  ["bad/truncated-header.pb.gz"] = "decompressing profile: unexpected EOF",
  ["bad/truncated.pb.gz"] = "decompressing profile: unexpected EOF",
  ["bad/value-count-mismatch.pb.gz"] = "malformed profile: ",
}

--- The files of bad/, sorted (so a file added to the corpus without an entry above is noticed).
function M.bad_files()
  local uv = require "luv"
  local out = {}
  for name in uv.fs_scandir_next, assert(uv.fs_scandir(support.root .. "/tests/testdata/pprof/bad")) do
    out[#out + 1] = "bad/" .. name
  end
  table.sort(out)
  return out
end

return M
