-- The scraper's work, used by lua/roles/scraper.lua: rounds that pick up to sample_size targets
-- at random and profile them concurrently. A profile up to hold_limit bytes (nearly all CPU
-- profiles) is read whole: one without samples (an idle service) is skipped, and the upload is
-- retried with back-off when the server is briefly unreachable. A larger one is streamed from the
-- target straight into POST {api_url}/api/profile/{app} through a small bounded pipe, so memory
-- per target stays bounded whatever the profile's size (its upload is retried only while none
-- of it has been sent). Failures are logged and counted, never fatal; rounds never overlap;
-- stop() aborts what is in flight so nothing half-sent is ever staged.
local uv = require "luv"
local async = require "autopgo.async"
local http = require "autopgo.http"
local client = require "autopgo.client"
local retry = require "autopgo.retry"
local log = require "autopgo.log"
local units = require "autopgo.units"
local pprof = require("autopgo.core").pprof

local M = {}

M.pipe_capacity = 256 * 1024
-- A profile up to this size is held whole (checked for samples, uploaded again after a failure).
M.hold_limit = 1024 * 1024
-- Extra time a target may take beyond the profiling duration (to start, write, send).
M.target_grace = 60
-- An error document from a target is logged, up to this many bytes.
M.max_error_body = 4096
-- Upload retries within a round when the server is unreachable or answers 502/503/504: jittered
-- back-off from `base` up to `cap` seconds, at most `attempts` tries within `deadline` seconds.
M.upload_retry = { base = 0.5, cap = 8, attempts = 6, deadline = 30 }

local Scraper = {}
Scraper.__index = Scraper

--- opts: app, api_url, sample_size, frequency, duration (seconds), insecure, ca_cert, client_cert,
-- client_key, token (towards the server only; targets use the system CAs and no token); upload_retry
-- (optional, overrides fields of M.upload_retry). source: a discovery source
-- (autopgo.discovery). hooks (optional): on_result(kind, target, bytes, detail) with kind
-- "success" | "empty" | "target_error" | "upload_error" | "canceled", on_round(targets_known,
-- picked), on_retry(target, attempt, delay, err).
function M.new(opts, source, hooks)
  local retry_opts = {}
  for k, v in pairs(M.upload_retry) do retry_opts[k] = v end
  for k, v in pairs(opts.upload_retry or {}) do retry_opts[k] = v end
  return setmetatable({
    opts = opts, source = source, hooks = hooks or {}, stopping = async.event(), round = nil,
    retry = retry_opts,
    stats = { rounds = 0, success = 0, empty = 0, target_error = 0, upload_error = 0, canceled = 0, bytes = 0 },
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

local function target_name(t) return t.address .. t.path end

-- An upload failure worth another try: the server could not be reached or said it is briefly
-- unable to answer (a proxy in front of a restarting server, a server shutting down).
local function transient(code, status)
  if status then return status == 502 or status == 503 or status == 504 end
  return code == "UNAVAILABLE" or code == "TIMEOUT"
end

-- Runs upload(attempt) -> key | nil, err, code, status, again while it fails transiently (and
-- may_retry() holds), with back-off bounded by self.retry. Returns key, attempts | nil, err, status.
function Scraper:upload_with_retry(target, upload, may_retry)
  local attempts, status = 0, nil
  local key, err = retry.run(function(attempt)
    attempts = attempt
    local k, e, code, st = upload(attempt)
    status = st
    if k then return k end
    -- the status rides in fifth place: retry.run reads a number in fourth place as Retry-After
    return nil, e, code, false, st
  end, {
    base = self.retry.base, cap = self.retry.cap, attempts = self.retry.attempts, deadline = self.retry.deadline,
    retryable = function(code, _, _, st)
      return not self.stopping.is_set and transient(code, st) and (may_retry == nil or may_retry())
    end,
    sleep = function(s) self.stopping.wait(math.floor(s * 1000 + 0.5)) end,
    on_retry = function(attempt, delay, e)
      log.warn("upload failed; retrying", "target", target_name(target), "attempt", attempt,
        "retry_in", units.format_duration(math.floor(delay * 1000 + 0.5) / 1000), "error", client.message(e, status))
      if self.hooks.on_retry then self.hooks.on_retry(target, attempt, delay, e) end
    end,
  })
  if key then return key, attempts end
  return nil, err, status
end

-- Profiles one target and forwards the profile. Returns kind, bytes, detail (the staged key on
-- success, else why), attempts.
function Scraper:forward(target, canceler)
  local opts = self.opts
  local api = client.new(opts.api_url, client.options(opts, { cancel = canceler }))
  local upload_timeout = opts.duration + 2 * M.target_grace
  local held, held_size = {}, 0 -- the profile while it fits in hold_limit
  local pipe, upload_done       -- once it does not: streamed
  local bytes, errdoc = 0, {}

  -- Streams the held start and then the pipe into one upload. The start stays held, so an
  -- attempt that failed before taking anything from the pipe (the server could not be reached;
  -- the HTTP client may read ahead before it connects) can be made again from the beginning.
  local function start_streaming(length, start)
    pipe = http.pipe(M.pipe_capacity)
    upload_done = async.event()
    local from_pipe = false
    async.spawn(function()
      local key, err_or_attempts, status = self:upload_with_retry(target, function()
        local i = 0
        return api:upload(opts.app, { timeout = upload_timeout, body_length = length, source = target_name(target),
          body_producer = function()
            if i < #start then
              i = i + 1
              return start[i]
            end
            from_pipe = true
            return pipe:read()
          end })
      end, function() return not from_pipe end)
      -- an upload that ends early (rejected, unreachable) must not leave the download blocked
      pipe:abandon(not key and err_or_attempts or "the upload has finished")
      upload_done.set(key or false, err_or_attempts, status)
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
      bytes = bytes + #chunk
      if not pipe then
        held[#held + 1] = chunk
        held_size = held_size + #chunk
        if held_size <= M.hold_limit then return end
        start_streaming(math.tointeger(tonumber(r.headers["content-length"] or "")), held)
        held = nil
        return
      end
      local ok, why = pipe:write(chunk)
      if not ok then return false, "the upload stopped: " .. tostring(why) end
    end,
  }

  if pipe then
    -- a broken download aborts the upload: the server never sees the end of a truncated body
    pipe:close(not (res and res.status == 200) and (err or "the target failed") or nil)
    local key, uerr, ustatus = upload_done.wait() -- uerr: the number of attempts on success
    if key then return "success", bytes, key, uerr end
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
  if bytes == 0 then return "target_error", bytes, "the target sent an empty profile" end

  local body = table.concat(held)
  -- An idle service sends a profile without samples: it would add nothing. Anything that does
  -- not parse goes on to the server, whose answer says what is wrong with it.
  local info = async.await(pprof.validate_async, body, nil)
  if info and info.samples == 0 then
    return "empty", bytes, "the profile has no samples (the target was idle)"
  end
  local key, uerr, ustatus = self:upload_with_retry(target, function()
    return api:upload(opts.app, { body = body, timeout = upload_timeout, source = target_name(target) })
  end)
  if key then return "success", bytes, key, uerr end -- uerr: the number of attempts
  if canceler.canceled then return "canceled", bytes, uerr end
  return "upload_error", bytes, client.message(uerr, ustatus)
end

--- One round: the source's targets, a random sample, all profiled concurrently. Returns the
-- number of targets scraped; self.last_round counts what became of them.
function Scraper:run_round()
  local targets, derr = self.source:list()
  if derr then log.warn("target discovery failed; using the last known targets", "error", derr, "targets", #targets) end
  local picked = M.sample(targets, self.opts.sample_size)
  self.stats.rounds = self.stats.rounds + 1
  local counts = { success = 0, empty = 0, target_error = 0, upload_error = 0, canceled = 0 }
  self.last_round = counts
  if self.hooks.on_round then self.hooks.on_round(#targets, #picked) end
  if #picked == 0 then
    log.warn("no targets to scrape", "round", self.stats.rounds, "mode", self.source.name)
    return 0
  end
  local names = {}
  for i, t in ipairs(picked) do names[i] = target_name(t) end
  log.info("scrape round started", "round", self.stats.rounds, "known", #targets, "picked", #picked,
    "targets", table.concat(names, ","), "duration", units.format_duration(self.opts.duration))
  local canceler = http.canceler()
  self.round = canceler
  local fns = {}
  for i, t in ipairs(picked) do
    fns[i] = function()
      local started = uv.hrtime()
      local kind, bytes, detail, attempts = self:forward(t, canceler)
      self.stats[kind] = self.stats[kind] + 1
      counts[kind] = counts[kind] + 1
      self.stats.bytes = self.stats.bytes + bytes
      local fields = { "target", target_name(t), "bytes", bytes, "ms", math.floor((uv.hrtime() - started) / 1e6) }
      if kind == "success" then
        if attempts and attempts > 1 then fields[#fields + 1], fields[#fields + 2] = "attempts", attempts end
        log.info("profile forwarded", "key", detail, table.unpack(fields))
      elseif kind == "empty" then
        log.info("profile skipped", "reason", detail, table.unpack(fields))
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

-- "1m30s" for milliseconds, rounded to the second above one second.
local function after(ms)
  local secs = ms / 1000
  if secs >= 1 then secs = math.floor(secs + 0.5) end
  return units.format_duration(secs)
end

--- Runs rounds every `frequency` until stop(). The first round starts one period after the
-- start, as the original's ticker does; a round that overruns its period is followed by the
-- next one at once (never two at a time). The schedule is logged at the start and after every
-- round.
function Scraper:run()
  local period = math.max(1, math.floor(self.opts.frequency * 1000 + 0.5))
  local next_at = uv.now() + period
  log.info("scrape schedule", "first_round_in", after(period), "every", units.format_duration(self.opts.frequency),
    "sample_size", self.opts.sample_size, "duration", units.format_duration(self.opts.duration))
  while not self.stopping.is_set do
    local wait = next_at - uv.now()
    if wait > 0 and self.stopping.wait(wait) then break end
    if self.stopping.is_set then break end
    uv.update_time()
    local started = uv.now()
    self:run_round()
    uv.update_time()
    next_at = math.max(started + period, uv.now())
    if self.stopping.is_set then break end
    local c = self.last_round
    log.info("scrape round finished", "round", self.stats.rounds, "forwarded", c.success, "skipped_empty", c.empty,
      "failed", c.target_error + c.upload_error, "next_round_in", after(next_at - uv.now()))
  end
end

--- Stops run() and aborts the scrapes in flight.
function Scraper:stop(reason)
  self.stopping.set(true)
  if self.round then self.round:cancel(reason or "the scraper is stopping") end
end

return M
