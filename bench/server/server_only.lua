-- The server's upload path alone, for bench/server: the real API (validation, file store) with the
-- events dropped instead of published, as when the worker runs elsewhere. A custom role script, run
-- with `autopgo run bench/server/server_only.lua --port P --data-dir D [--auth-file F]` (with an auth
-- file, every upload is checked against its grants as on the real server).
local opts = require("autopgo.cli").parse("server", arg)
local daemon = require "autopgo.daemon"
local httpd = require "autopgo.httpd"
local api = require "autopgo.api"
local auth = require "autopgo.auth"

local store = daemon.open_store(opts)
local dropped = 0
local writer = {
  name = "discard://",
  publish = function() dropped = dropped + 1 return true end,
  health = function() return true end,
  close = function() end,
}
local guard = assert(auth.guard { auth_file = opts.auth_file, host = opts.host,
  allowed_origins = opts.allowed_origins })
local router = httpd.router { guard = guard }
api.new({ store = store, writer = writer, max_upload_size = opts.max_upload_size }):routes(router)
local srv = assert(httpd.listen { port = opts.port, max_body = opts.max_upload_size, handler = router })
local stop = daemon.stop_signals()
stop.wait()
srv:shutdown()
stop.close()
return 0
