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
