-- Nomad discovery (`--mode nomad`): before every round, the service registrations tagged
-- autopgo.scrape=true and autopgo.scrape.app=<app> (or autopgo.app=<app>) are read from Nomad's
-- services API, across all namespaces unless NOMAD_NAMESPACE names one; each registration's own
-- address and port become a target, with the scheme and path from its autopgo.scrape.scheme and
-- autopgo.scrape.path tags. Configured like the nomad CLI: NOMAD_ADDR, NOMAD_TOKEN,
-- NOMAD_NAMESPACE, NOMAD_REGION, NOMAD_HTTP_AUTH, NOMAD_CACERT, NOMAD_CAPATH, NOMAD_CLIENT_CERT,
-- NOMAD_CLIENT_KEY, NOMAD_SKIP_VERIFY. The positional argument is not used.
local env = require "autopgo.hashicorp_env"
local json_api = require "autopgo.json_api"
local tags = require "autopgo.scrape_tags"
local url = require "autopgo.url"

local M = {}

M.default_addr = "http://127.0.0.1:4646"

-- The client settings from the environment, or nil, "INVALID: ...".
function M.config(getenv)
  getenv = getenv or os.getenv
  local base, err = env.base_url("NOMAD_ADDR", env.get(getenv, "NOMAD_ADDR") or M.default_addr, false)
  if not base then return nil, err end
  local tls
  tls, err = env.tls(getenv, { cacert = "NOMAD_CACERT", capath = "NOMAD_CAPATH", client_cert = "NOMAD_CLIENT_CERT",
    client_key = "NOMAD_CLIENT_KEY", server_name = "NOMAD_TLS_SERVER_NAME",
    skip_verify = "NOMAD_SKIP_VERIFY" })
  if not tls then return nil, err end
  local headers = {}
  local token = env.get(getenv, "NOMAD_TOKEN")
  if token then headers["x-nomad-token"] = token end
  local auth = env.get(getenv, "NOMAD_HTTP_AUTH")
  if auth then headers.authorization = env.basic_auth(auth) end
  return {
    base = base, tls = tls, headers = headers,
    namespace = env.get(getenv, "NOMAD_NAMESPACE") or "*",
    region = env.get(getenv, "NOMAD_REGION"),
  }
end

local function get(cfg, path, query)
  query.region = cfg.region
  return env.get_json(cfg, path, query)
end

local function list_services(ctx)
  local cfg = ctx.state.cfg
  return get(cfg, "/v1/services", { namespace = cfg.namespace, filter = ctx.state.filter })
end

function M.start(ctx)
  return env.start(ctx, M.config, "Tags")
end

function M.list(ctx)
  local cfg, filter = ctx.state.cfg, ctx.state.filter
  local stubs, err, code = list_services(ctx)
  if not stubs then return nil, err, code end
  local targets, seen = {}, {}
  for _, entry in ipairs(json_api.table(stubs) or {}) do
    local ns = type(entry.Namespace) == "string" and entry.Namespace or "default"
    for _, svc in ipairs(json_api.table(entry.Services) or {}) do
      local name = svc.ServiceName
      if type(name) == "string" then
        local regs, rerr, rcode = get(cfg, "/v1/service/" .. url.escape(name), { namespace = ns, filter = filter })
        if not regs then return nil, rerr, rcode end
        for _, reg in ipairs(json_api.table(regs) or {}) do
          local id = ("%s/%s"):format(ns, tostring(reg.ID or name))
          local t, why = tags.target(reg.Address, reg.Port, tags.parse_tags(json_api.table(reg.Tags)))
          if t then
            if not seen[id] then
              seen[id] = true
              targets[#targets + 1] = t
            end
          elseif ctx.state.warned[id] ~= reg.ModifyIndex then
            ctx.state.warned[id] = reg.ModifyIndex
            ctx.log.warn("skipping a Nomad service registration: " .. why, "service", name, "namespace", ns,
              "id", reg.ID, "alloc", reg.AllocID)
          end
        end
      end
    end
  end
  return targets
end

--- Reachability: the same services query the rounds make (address, token and filter).
function M.health(ctx)
  local ok, err = list_services(ctx)
  if not ok then return nil, err end
  return true
end

return M
