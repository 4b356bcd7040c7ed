-- A cache of the pods that match a label and field selector across all namespaces, kept up to
-- date by a watch: sync() lists them (page by page) and opens a watch from the list's
-- resourceVersion; the watch applies ADDED, MODIFIED, DELETED and BOOKMARK events as they
-- arrive and is reopened from the last resourceVersion when the server ends it. When the watch
-- fails (the API is unreachable, the resourceVersion has expired with 410 Gone, the credentials
-- were refused), the cache is marked stale and the next sync() lists again; until then the pods
-- last seen are kept.
local fail = require "autopgo.fail"
local uv = require "luv"
local cjson = require "cjson.safe"
local async = require "autopgo.async"
local http = require "autopgo.http"
local json_api = require "autopgo.json_api"

local M = {}

M.page_size = 500
-- The server is asked to end each watch after between this and twice this many seconds, as
-- client-go's reflector does, so a silently broken connection is noticed.
M.min_watch_timeout = 300
-- A watch that ends sooner than this without an event counts as failed (no tight loop against
-- a server that closes watches at once).
M.min_watch_ms = 1000

local Watch = {}
Watch.__index = Watch

--- A watch of pods through `client` (autopgo.kube.client). opts: label_selector,
-- field_selector, log.
function M.new(client, opts)
  return setmetatable({
    client = client, label_selector = opts.label_selector, field_selector = opts.field_selector,
    log = opts.log, pods = {}, rv = nil, synced = false, running = false, stopped = false,
    canceler = http.canceler(), lists = 0, watches = 0,
  }, Watch)
end

local function key(pod)
  local md = type(pod) == "table" and json_api.table(pod.metadata)
  if not md then return nil end
  if type(md.uid) == "string" and md.uid ~= "" then return md.uid end
  if type(md.name) == "string" then return tostring(md.namespace) .. "/" .. md.name end
  return nil
end

local function resource_version(obj)
  local md = type(obj) == "table" and json_api.table(obj.metadata)
  local rv = md and md.resourceVersion
  return type(rv) == "string" and rv ~= "" and rv or nil
end

function Watch:query(extra)
  local q = { labelSelector = self.label_selector, fieldSelector = self.field_selector }
  for k, v in pairs(extra or {}) do q[k] = v end
  return q
end

--- Lists the pods (all pages) into the cache and starts watching from there. Returns true or
-- nil, err, code; on failure the cache keeps what it had.
function Watch:sync()
  local pods, continue, rv = {}, nil, nil
  repeat
    local doc, err, code = self.client:get_json("/api/v1/pods",
      self:query { limit = M.page_size, continue = continue }, { cancel = self.canceler })
    if not doc then return nil, err, code end
    if doc.kind ~= nil and doc.kind ~= "PodList" then
      return fail.new("SERVER", "GET /api/v1/pods answered a %s, not a PodList", tostring(doc.kind))
    end
    for _, pod in ipairs(json_api.table(doc.items) or {}) do
      local k = key(pod)
      if k then pods[k] = pod end
    end
    local md = json_api.table(doc.metadata) or {}
    continue = type(md.continue) == "string" and md.continue ~= "" and md.continue or nil
    rv = resource_version(doc) or rv
  until not continue
  self.lists = self.lists + 1
  self.pods, self.rv, self.synced = pods, rv, true
  if not self.running and not self.stopped then
    self.running = true
    async.spawn(function() self:watch_loop() end)
  end
  return true
end

-- Applies one watch event line; returns true, or nil and "EXPIRED" or an error.
function Watch:apply(line)
  local ev = cjson.decode(line)
  if type(ev) ~= "table" or type(ev.type) ~= "string" or type(ev.object) ~= "table" then
    return fail.new("SERVER", "the watch sent something that is not an event: " .. line:sub(1, 120))
  end
  local t, obj = ev.type, ev.object
  if t == "ERROR" then
    if obj.code == 410 then return nil, "EXPIRED" end
    return fail.new("SERVER", "the watch failed: %s", tostring(obj.message or obj.reason or line:sub(1, 120)))
  end
  local rv = resource_version(obj)
  if t == "ADDED" or t == "MODIFIED" then
    local k = key(obj)
    if k then self.pods[k] = obj end
  elseif t == "DELETED" then
    local k = key(obj)
    if k then self.pods[k] = nil end
  elseif t ~= "BOOKMARK" then
    return fail.new("SERVER", "the watch sent an event of unknown type " .. t)
  end
  if rv then self.rv = rv end
  return true
end

-- One watch request from self.rv; returns "again" (the server ended it: reopen), or nil and why
-- the cache is now stale.
function Watch:watch_once()
  local timeout = M.min_watch_timeout + math.random(0, M.min_watch_timeout)
  local started = uv.now()
  local parts, errdoc, events, failure = {}, {}, 0, nil
  self.watches = self.watches + 1
  local res, err = self.client:request {
    url = self.client:url("/api/v1/pods", self:query { watch = "true", resourceVersion = self.rv,
      allowWatchBookmarks = "true", timeoutSeconds = timeout }),
    timeout = timeout + 30, cancel = self.canceler, headers = { accept = "application/json" },
    sink = function(chunk, r)
      if r.status ~= 200 then
        errdoc[#errdoc + 1] = chunk
        return
      end
      if not chunk:find("\n", 1, true) then
        parts[#parts + 1] = chunk
        return
      end
      parts[#parts + 1] = chunk
      local text = table.concat(parts)
      parts = {}
      local from = 1
      while true do
        local nl = text:find("\n", from, true)
        if not nl then break end
        local line = text:sub(from, nl - 1)
        from = nl + 1
        if line:find("%S") then
          local ok, why = self:apply(line)
          if not ok then
            failure = why
            return false, why
          end
          events = events + 1
        end
      end
      if from <= #text then parts[1] = text:sub(from) end
    end,
  }
  if self.stopped then return nil, "stopped" end
  if failure then return nil, failure end
  if not res then return nil, err end
  if res.status ~= 200 then
    res.body = table.concat(errdoc)
    local _, serr, _, status = json_api.status_error("GET", self.client:url("/api/v1/pods"), res)
    if status == 401 then self.client:invalidate() end
    if status == 410 then return nil, "EXPIRED" end
    return nil, serr
  end
  if events == 0 and uv.now() - started < M.min_watch_ms then
    return fail.new("SERVER", "the API server ended the watch at once")
  end
  return "again"
end

function Watch:watch_loop()
  while self.synced and not self.stopped do
    local again, why = self:watch_once()
    if not again then
      if not self.stopped then
        self.synced = false
        if why == "EXPIRED" then
          self.log.info("the pod watch's resourceVersion expired; listing again next round",
            "labelSelector", self.label_selector)
        else
          self.log.warn("the pod watch failed; listing again next round", "labelSelector", self.label_selector,
            "error", why)
        end
      end
      break
    end
  end
  self.running = false
end

--- Stops the watch (at shutdown or when the configuration is replaced).
function Watch:stop()
  self.stopped = true
  self.synced = false
  self.canceler:cancel("the kube discovery mode is stopping")
end

return M
