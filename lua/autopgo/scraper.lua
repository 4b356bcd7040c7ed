-- The scraper's work, used by lua/roles/scraper.lua: rounds that pick up to sample_size targets
-- at random and profile them concurrently, each profile streamed from the target straight into
-- POST {api_url}/api/profile/{app} through a small bounded pipe, so memory per target stays the
-- same whatever the profile's size. Failures are logged and counted, never fatal; rounds never
-- overlap; stop() aborts what is in flight so nothing half-sent is ever staged.
local uv = require "luv"
local async = require "autopgo.async"
local http = require "autopgo.http"
local client = require "autopgo.client"
local log = require "autopgo.log"

local M = {}

M.pipe_capacity = 256 * 1024
-- Extra time a target may take beyond the profiling duration (to start, write, send).
M.target_grace = 60
-- An error document from a target is logged, up to this many bytes.
M.max_error_body = 4096

local Scraper = {}
Scraper.__index = Scraper

--- opts: app, api_url, sample_size, frequency, duration (seconds), insecure.
-- source: a discovery source (autopgo.discovery). hooks (optional): on_result(kind, target,
-- bytes, err) with kind "success" | "target_error" | "upload_error" | "canceled",
-- on_round(targets_known, picked).
function M.new(opts, source, hooks)
  return setmetatable({
    opts = opts, source = source, hooks = hooks or {}, stopping = async.event(), round = nil,
    stats = { rounds = 0, success = 0, target_error = 0, upload_error = 0, canceled = 0, bytes = 0 },
  }, Scraper)
end

--- Up to n of the targets, chosen at random (a partial Fisher-Yates shuffle of a copy).
function M.sample(targets, n)
  local copy = table.move(targets, 1, #targets, 1, {})
  local k = math.min(n, #copy)
  for i = 1, k do
    local j = math.random(i, #copy)
    copy[i], copy[j] = copy[j], copy[i]
  end
  return table.move(copy, 1, k, 1, {})
end

-- "30", "0.5": the seconds parameter as Go's strconv.FormatFloat(d, 'g', -1, 64) writes it.
local function seconds(d)
  local i = math.tointeger(d)
  if i then return tostring(i) end
  return (("%.9f"):format(d):gsub("0+$", ""))
end

function M.profile_url(target, duration)
  local sep = target.path:find("?", 1, true) and "&" or "?"
  return target.address .. target.path .. sep .. "seconds=" .. seconds(duration)
end

-- Profiles one target and forwards the profile as it arrives. Returns kind, bytes, err.
function Scraper:forward(target, canceler)
  local opts = self.opts
  local api = client.new(opts.api_url, { insecure = opts.insecure, cancel = canceler })
  local pipe = http.pipe(M.pipe_capacity)
  local upload_done = async.event()
  local upload_started = false
  local bytes, errdoc = 0, {}

  local function start_upload(length)
    upload_started = true
    async.spawn(function()
      local key, err, _, status = api:upload(opts.app, { body_producer = pipe.producer, body_length = length,
        timeout = opts.duration + 2 * M.target_grace })
      -- an upload that ends early (rejected, unreachable) must not leave the download blocked
      pipe:abandon(err or "the upload has finished")
      upload_done.set(key or false, err, status)
    end)
  end

  local res, err = http.request {
    url = M.profile_url(target, opts.duration), cancel = canceler, insecure = opts.insecure,
    timeout = opts.duration + M.target_grace,
    sink = function(chunk, r)
      if r.status ~= 200 then
        errdoc[#errdoc + 1] = chunk
        if #table.concat(errdoc) > M.max_error_body then return false, ("the target answered %d"):format(r.status) end
        return
      end
      if not upload_started then start_upload(math.tointeger(tonumber(r.headers["content-length"] or ""))) end
      bytes = bytes + #chunk
      local ok, why = pipe:write(chunk)
      if not ok then return false, "the upload stopped: " .. tostring(why) end
    end,
  }

  if upload_started then
    -- a broken download aborts the upload: the server never sees the end of a truncated body
    pipe:close(not (res and res.status == 200) and (err or "the target failed") or nil)
    local key, uerr, ustatus = upload_done.wait()
    if key then return "success", bytes, key end
    if canceler.canceled then return "canceled", bytes, uerr end
    if not res and err and not err:find("the upload stopped", 1, true) then
      return "target_error", bytes, err
    end
    return "upload_error", bytes, client.message(uerr, ustatus)
  end
  if canceler.canceled then return "canceled", bytes, err end
  if not res then return "target_error", bytes, err end
  if res.status ~= 200 then
    local text = table.concat(errdoc):sub(1, M.max_error_body):gsub("%s+", " "):gsub(" $", "")
    return "target_error", bytes, ("the target answered %d%s"):format(res.status, text ~= "" and (": " .. text) or "")
  end
  return "target_error", bytes, "the target sent an empty profile"
end

--- One round: the source's targets, a random sample, all profiled concurrently. Returns the
-- number of targets scraped.
function Scraper:run_round()
  local targets, derr = self.source:list()
  if derr then log.warn("target discovery failed; using the last known targets", "error", derr, "targets", #targets) end
  local picked = M.sample(targets, self.opts.sample_size)
  self.stats.rounds = self.stats.rounds + 1
  if self.hooks.on_round then self.hooks.on_round(#targets, #picked) end
  if #picked == 0 then
    log.warn("no targets to scrape", "mode", self.source.name)
    return 0
  end
  local canceler = http.canceler()
  self.round = canceler
  log.debug("scrape round", "targets", #targets, "picked", #picked)
  local fns = {}
  for i, t in ipairs(picked) do
    fns[i] = function()
      local started = uv.hrtime()
      local kind, bytes, detail = self:forward(t, canceler)
      self.stats[kind] = self.stats[kind] + 1
      self.stats.bytes = self.stats.bytes + bytes
      local fields = { "target", t.address .. t.path, "bytes", bytes, "ms", math.floor((uv.hrtime() - started) / 1e6) }
      if kind == "success" then
        log.info("profile forwarded", "key", detail, table.unpack(fields))
      elseif kind == "canceled" then
        log.info("scrape aborted", "reason", detail, table.unpack(fields))
      else
        log.error(kind == "upload_error" and "failed to upload profile" or "failed to profile target",
          "error", detail, table.unpack(fields))
      end
      if self.hooks.on_result then self.hooks.on_result(kind, t, bytes, detail) end
    end
  end
  async.all(fns)
  self.round = nil
  return #picked
end

--- Runs rounds every `frequency` until stop(). The first round starts one period after the
-- start, as the original's ticker does; a round that overruns its period is followed by the
-- next one at once (never two at a time).
function Scraper:run()
  local period = math.max(1, math.floor(self.opts.frequency * 1000 + 0.5))
  local next_at = uv.now() + period
  while not self.stopping.is_set do
    local wait = next_at - uv.now()
    if wait > 0 and self.stopping.wait(wait) then break end
    if self.stopping.is_set then break end
    uv.update_time()
    local started = uv.now()
    self:run_round()
    next_at = math.max(started + period, uv.now())
  end
end

--- Stops run() and aborts the scrapes in flight.
function Scraper:stop(reason)
  self.stopping.set(true)
  if self.round then self.round:cancel(reason or "the scraper is stopping") end
end

return M
