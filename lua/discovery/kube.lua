-- Kubernetes discovery (`--mode kube [kubeconfig]`): the running pods in all namespaces labelled
-- autopgo.scrape=true and autopgo.scrape.app=<app> (or autopgo.app=<app>) are the targets, at
-- scheme://podIP:port with the port, path and scheme from their autopgo.scrape.port,
-- autopgo.scrape.path and autopgo.scrape.scheme annotations (or autopgo.port, ...). Pods without
-- an IP or a port annotation are skipped with a warning naming them. The pods are listed once
-- and then followed with a watch, so a round costs no API request while the watch holds; after
-- a failure the next round lists again, and while the API cannot be reached the scraper keeps
-- the targets it last had. The argument is a kubeconfig; without one the pod's service account
-- is used, then KUBECONFIG or ~/.kube/config (see autopgo.kube.config). SIGHUP re-reads it.
local kube_config = require "autopgo.kube.config"
local kube_client = require "autopgo.kube.client"
local pod_watch = require "autopgo.kube.pod_watch"
local json_api = require "autopgo.json_api"
local tags = require "autopgo.scrape_tags"

local M = {}

M.field_selector = "status.phase=Running"

--- The label selectors for `app`: the original's label name first, the seed README's second.
-- (A selector cannot say "either label", so each gets its own list and watch.)
function M.label_selectors(app)
  local out = {}
  for i, name in ipairs(tags.names.app) do
    out[i] = ("%s=true,%s=%s"):format(tags.scrape, name, app)
  end
  return out
end

local function open(ctx, arg)
  local cfg, err = kube_config.load(arg)
  if not cfg then return nil, err end
  for _, w in ipairs(cfg.warnings) do ctx.log.warn("kubeconfig: " .. w, "source", cfg.source) end
  local client = kube_client.new(cfg)
  local watches = {}
  for i, selector in ipairs(M.label_selectors(ctx.app)) do
    watches[i] = pod_watch.new(client, { label_selector = selector, field_selector = M.field_selector, log = ctx.log })
  end
  ctx.log.info("kube discovery configured", "source", cfg.source, "context", cfg.context, "server", cfg.server)
  return { cfg = cfg, client = client, watches = watches }
end

local function close(k)
  for _, w in ipairs(k and k.watches or {}) do w:stop() end
end

function M.start(ctx, arg)
  local k, err = open(ctx, arg)
  if not k then return nil, err end
  ctx.state.kube = k
  ctx.state.warned = {}
  return true
end

--- SIGHUP: read the configuration again (new certificates, tokens, contexts). A bad one keeps the
-- old; a good one replaces it and the next round lists the pods afresh.
function M.reload(ctx, arg)
  local k, err = open(ctx, arg)
  if not k then return nil, err end
  close(ctx.state.kube)
  ctx.state.kube = k
  return true
end

local function pod_name(pod)
  local md = json_api.table(pod.metadata) or {}
  return ("%s/%s"):format(tostring(md.namespace), tostring(md.name))
end

-- The pod's target, or nil and why it is skipped (nil, nil: skipped silently).
local function target(pod)
  local status = json_api.table(pod.status) or {}
  if status.phase ~= "Running" then return nil, nil end
  local md = json_api.table(pod.metadata) or {}
  local annotations = json_api.table(md.annotations) or {}
  local ip = status.podIP
  if type(ip) ~= "string" or ip == "" then return nil, "it has no pod IP" end
  local port = tags.lookup(annotations, "port")
  if not port then
    return nil, ("it has no %s annotation"):format(table.concat(tags.names.port, " or "))
  end
  return tags.target(ip, port, annotations)
end

function M.list(ctx)
  local k = ctx.state.kube
  for _, w in ipairs(k.watches) do
    if not w.synced then
      local ok, err, code = w:sync()
      if not ok then return nil, err, code end
    end
  end
  local pods, names = {}, {}
  for _, w in ipairs(k.watches) do
    for id, pod in pairs(w.pods) do
      if not pods[id] then
        pods[id] = pod
        names[#names + 1] = id
      end
    end
  end
  table.sort(names, function(a, b) return pod_name(pods[a]) < pod_name(pods[b]) end)
  local targets, warned = {}, {}
  for _, id in ipairs(names) do
    local pod = pods[id]
    local t, why = target(pod)
    if t then
      targets[#targets + 1] = t
    elseif why then
      -- once per pod version, not every round
      local version = tostring((json_api.table(pod.metadata) or {}).resourceVersion)
      if ctx.state.warned[id] ~= version then
        ctx.log.warn("skipping pod " .. pod_name(pod) .. ": " .. why, "pod", pod_name(pod))
      end
      warned[id] = version
    end
  end
  ctx.state.warned = warned
  return targets
end

--- Reachability: one pod of the app, asked with the scraper's own credentials and selectors.
function M.health(ctx)
  local k = ctx.state.kube
  local doc, err = k.client:get_json("/api/v1/pods", { labelSelector = M.label_selectors(ctx.app)[1],
    fieldSelector = M.field_selector, limit = 1 }, { timeout = 10 })
  if not doc then return nil, err end
  return true
end

function M.stop(ctx)
  close(ctx.state.kube)
end

return M
