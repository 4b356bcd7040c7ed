-- The 50 MB generated profile of the end-to-end specs (build/test-data, made once with the Go
-- reference's pprofgen): 1 070 000 samples over 300 000 paths, a flat profile with 235 703 hot
-- call sites for the compiler.
local support = require "tests.lua.support"
local goref = require "tests.e2e.goref"

local M = {}

--- The file's path, generated first when missing (inside a coroutine).
function M.path()
  local root = support.root
  local path = root .. "/build/test-data/ui-50mb.pb.gz"
  if support.read_file(path) then return path end
  goref.ensure()
  os.execute("mkdir -p '" .. root .. "/build/test-data'")
  local code, _, out, err = support.spawn(root .. "/build/goref/bin/pprofgen", { "-o", path .. ".tmp", "-samples",
    "1070000", "-paths", "300000", "-functions", "20000", "-locations", "100000", "-seed", "50", "-labels", "2",
    "-path-labels", "-mappings", "3", "-inline", "0.2" }):wait(300000)
  assert(code == 0, "pprofgen failed: " .. out .. err)
  assert(os.rename(path .. ".tmp", path))
  return path
end

return M
