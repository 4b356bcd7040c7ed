-- Consul discovery (`--mode consul`): before every round, the catalog's services tagged
-- autopgo.scrape=true and autopgo.scrape.app=<app> (or autopgo.app=<app>) are read, and each
-- instance becomes a target at its service address (the node's address when the service has
-- none of its own) and service port, with the scheme and path from its autopgo.scrape.scheme and
-- autopgo.scrape.path tags. Configured like the consul CLI: CONSUL_HTTP_ADDR, CONSUL_HTTP_TOKEN,
-- CONSUL_HTTP_TOKEN_FILE, CONSUL_HTTP_AUTH, CONSUL_HTTP_SSL, CONSUL_HTTP_SSL_VERIFY,
-- CONSUL_CACERT, CONSUL_CAPATH, CONSUL_CLIENT_CERT, CONSUL_CLIENT_KEY, CONSUL_NAMESPACE,
-- CONSUL_PARTITION. The positional argument is not used.
local fail = require "autopgo.fail"
local env = require "autopgo.hashicorp_env"
local json_api = require "autopgo.json_api"
local tags = require "autopgo.scrape_tags"
local url = require "autopgo.url"

local M = {}

M.default_addr = "127.0.0.1:8500"

local function read_token_file(path)
  local f, err = io.open(path, "rb")
  if not f then return fail.new("INVALID", "CONSUL_HTTP_TOKEN_FILE: %s", err) end
  local token = (f:read("a") or ""):match("^%s*(.-)%s*$")
  f:close()
  return token
end

-- The client settings from the environment, or nil, "INVALID: ...".
function M.config(getenv)
  getenv = getenv or os.getenv
  local ssl, err = env.bool(getenv, "CONSUL_HTTP_SSL")
  if err then return nil, err end
  local base
  base, err = env.base_url("CONSUL_HTTP_ADDR", env.get(getenv, "CONSUL_HTTP_ADDR") or M.default_addr, ssl)
  if not base then return nil, err end
  local tls
  tls, err = env.tls(getenv, { cacert = "CONSUL_CACERT", capath = "CONSUL_CAPATH", client_cert = "CONSUL_CLIENT_CERT",
    client_key = "CONSUL_CLIENT_KEY", server_name = "CONSUL_TLS_SERVER_NAME",
    skip_verify = "CONSUL_HTTP_SSL_VERIFY", skip_verify_inverted = true })
  if not tls then return nil, err end
  local headers = {}
  -- as the Go client: a token file wins over CONSUL_HTTP_TOKEN when it holds a token
  local token = env.get(getenv, "CONSUL_HTTP_TOKEN")
  local token_file = env.get(getenv, "CONSUL_HTTP_TOKEN_FILE")
  if token_file then
    local from_file, ferr = read_token_file(token_file)
    if not from_file then return nil, ferr end
    if from_file ~= "" then token = from_file end
  end
  if token then headers["x-consul-token"] = token end
  local auth = env.get(getenv, "CONSUL_HTTP_AUTH")
  if auth then headers.authorization = env.basic_auth(auth) end
  return {
    base = base, tls = tls, headers = headers,
    namespace = env.get(getenv, "CONSUL_NAMESPACE"),
    partition = env.get(getenv, "CONSUL_PARTITION"),
  }
end

local function get(ctx, path)
  local cfg = ctx.state.cfg
  return env.get_json(cfg, path, { filter = ctx.state.filter, ns = cfg.namespace, partition = cfg.partition })
end

function M.start(ctx)
  return env.start(ctx, M.config, "ServiceTags")
end

function M.list(ctx)
  local names, res, code = get(ctx, "/v1/catalog/services")
  if not names then return nil, res, code end
  -- an agent with default-deny ACLs answers a token-less query with nothing rather than 403
  local filtered = res.headers["x-consul-results-filtered-by-acls"] == "true"
  if filtered and not ctx.state.acl_warned then
    ctx.log.warn("Consul filtered the catalog by ACLs; set CONSUL_HTTP_TOKEN to a token with service:read",
      "token_set", ctx.state.cfg.headers["x-consul-token"] ~= nil)
  end
  ctx.state.acl_warned = filtered
  local sorted = {}
  for name in pairs(json_api.table(names) or {}) do
    if type(name) == "string" then sorted[#sorted + 1] = name end
  end
  table.sort(sorted)
  local targets, seen = {}, {}
  for _, name in ipairs(sorted) do
    local nodes, nerr, ncode = get(ctx, "/v1/catalog/service/" .. url.escape(name))
    if not nodes then return nil, nerr, ncode end
    for _, sn in ipairs(json_api.table(nodes) or {}) do
      local address = sn.ServiceAddress
      if type(address) ~= "string" or address == "" then address = sn.Address end
      local id = ("%s/%s"):format(tostring(sn.Node), tostring(sn.ServiceID or name))
      local t, why = tags.target(address, sn.ServicePort, tags.parse_tags(json_api.table(sn.ServiceTags)))
      if t then
        if not seen[id] then
          seen[id] = true
          targets[#targets + 1] = t
        end
      elseif ctx.state.warned[id] ~= sn.ModifyIndex then
        ctx.state.warned[id] = sn.ModifyIndex
        ctx.log.warn("skipping a Consul service instance: " .. why, "service", name, "node", sn.Node,
          "service_id", sn.ServiceID)
      end
    end
  end
  return targets
end

--- Reachability: the same catalog query the rounds start with (address, token and filter).
function M.health(ctx)
  local ok, err = get(ctx, "/v1/catalog/services")
  if not ok then return nil, err end
  return true
end

return M
