-- The cost of access control per request, in-process: one guard:check (SHA-256 of the token,
-- constant-time compares with ten grant digests, the app pattern) as every upload with
-- --auth-file pays it. `autopgo run bench/server/auth_check.lua [checks]`; prints microseconds.
local auth = require "autopgo.auth"
local crypto = require("autopgo.core").crypto
local uv = require "luv"

local n = math.tointeger(tonumber(arg[1] or "")) or 200000
local token = crypto.hex(crypto.random(24))
local doc = {}
for i = 1, 9 do
  doc[#doc + 1] = ('{"name":"other-%d","sha256":"%s","scopes":["download"],"apps":["*"]}')
    :format(i, crypto.hex(crypto.digest("sha256", "other-" .. i)))
end
doc[#doc + 1] = ('{"name":"bench","sha256":"%s","scopes":["upload"],"apps":["bench-*"]}')
  :format(crypto.hex(crypto.digest("sha256", token)))
local path = os.tmpname()
local f = assert(io.open(path, "w"))
f:write("[" .. table.concat(doc, ",") .. "]")
f:close()
local guard = assert(auth.guard { auth_file = path })
os.remove(path)
local req = { method = "POST", headers = { host = "127.0.0.1:8080", authorization = "Bearer " .. token },
  params = { app = "bench-app" } }
local t0 = uv.hrtime()
for _ = 1, n do
  req.grant = nil
  assert(guard:check(req, nil, "upload"))
end
print(("%.2f us per check (%d checks, 10 grants)"):format((uv.hrtime() - t0) / n / 1000, n))
return 0
