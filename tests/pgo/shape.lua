-- tests/pgo/run.sh's helper: writes autopgo's form of a profile, or its decisions.
-- usage: autopgo run tests/pgo/shape.lua IN (pgo|preprofile|hot|thres) OUT [NO_INLINE...]
-- "hot": the hot functions, one a line; "thres": hot-callsite-thres-from-CDF as Go prints it.
local pgo = require "autopgo.pgo"
local async = require "autopgo.async"

local input, what, output = arg[1], arg[2], arg[3]
local no_inline = { table.unpack(arg, 4) }

-- Go's %v of a float64: the shortest decimal that reads back the same (no exponent in 1e-4..1e21).
local function go_float(x)
  if x == math.floor(x) and math.abs(x) < 1e21 then return ("%d"):format(x) end
  for prec = 1, 17 do
    local s = ("%." .. prec .. "g"):format(x)
    if tonumber(s) == x then return s end
  end
  return ("%.17g"):format(x)
end

async.spawn_with(function(ok, err)
  if not ok then
    io.stderr:write(tostring(err), "\n")
    os.exit(1)
  end
end, function()
  local format = (what == "pgo" or what == "preprofile") and what or nil
  local r, err = pgo.shape({ file = input }, { format = format, decisions = not format, no_inline = no_inline })
  if not r then error(err, 0) end
  if not r.info.usable then error("not usable: " .. r.info.reason, 0) end
  local out = r.bytes
  if what == "hot" then
    out = table.concat(r.decisions.hot_functions, "\n") .. "\n"
  elseif what == "thres" then
    out = go_float(r.decisions.threshold_from_cdf) .. "\n"
  end
  local f = assert(io.open(output, "wb"))
  f:write(out)
  f:close()
end)
