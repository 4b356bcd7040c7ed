-- The limits a profile is held to, in one place: the API checks an upload against them and the
-- worker and `autopgo merge` merge under them, so nothing accepted with a 201 is refused later.
local pprof = require("autopgo.core").pprof

local M = {}

-- pprof limits table: max_decompressed (bytes of protobuf after gunzip), max_memory (bytes a
-- decoded profile may use). The values are the C core's defaults (core/pprof/pprof.h).
M.profile = {
  max_decompressed = pprof.default_limits.max_decompressed,
  max_memory = pprof.default_limits.max_memory,
}

return M
