-- GET requests to a control plane's JSON API (Kubernetes, Nomad, Consul) for the discovery
-- modes: one call that sends the request, turns an unwanted status into a house error carrying
-- the API's own message (a Kubernetes Status, a Nomad or Consul text body) and decodes the JSON.
local fail = require "autopgo.fail"
local http = require "autopgo.http"
local client = require "autopgo.client"
local cjson = require "cjson.safe"

local M = {}

M.default_timeout = 30

-- "https://host:port/path" without the query, for messages.
local function where(u)
  return (u:gsub("%?.*$", ""))
end

--- The error for a response with an unwanted status: nil, "CODE: GET url: message", code, status.
function M.status_error(method, u, res)
  local _, err, code, status = client.response_error(res)
  local _, msg = fail.new(code, "%s %s: %s", method, where(u), fail.message(err))
  return nil, msg, code, status
end

--- GET `opts.url` (any http.request options) and decode a JSON body. Returns doc, res or nil,
-- err, code[, status]. A 200 answer that is not JSON is a SERVER error.
function M.get(opts)
  opts.timeout = opts.timeout or M.default_timeout
  opts.headers = opts.headers or {}
  opts.headers.accept = opts.headers.accept or "application/json"
  local res, err, code = http.request(opts)
  if not res then return nil, err, code end
  if res.status ~= 200 then return M.status_error(opts.method or "GET", opts.url, res) end
  local doc = cjson.decode(res.body or "")
  if doc == nil then
    local _, err_msg, err_code = fail.new("SERVER", "GET %s: the answer is not JSON: %s", where(opts.url),
      (res.body or ""):sub(1, 120))
    return nil, err_msg, err_code, res.status
  end
  return doc, res
end

--- A value from decoded JSON when it is a table (JSON null decodes to a userdata).
function M.table(v)
  return type(v) == "table" and v or nil
end

return M
