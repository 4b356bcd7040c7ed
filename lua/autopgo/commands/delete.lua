-- `autopgo delete APP`: deletes an application's merged profile and any profiles waiting to be
-- merged. Exit 1 with the server's message on failure (404 when the app has nothing).
local cli = require "autopgo.cli"
local client = require "autopgo.client"
local log = require "autopgo.log"

local M = {}

function M.run(opts, args)
  local app = args[1]
  local api = client.new(opts.api_url, client.options(opts))
  local ok, err, _, status = api:delete(app)
  if not ok then cli.exit(1, "autopgo delete: " .. client.message(err, status)) end
  log.info("profile deleted", "app", app)
  return 0
end

return M
