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

return M
