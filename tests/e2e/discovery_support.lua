-- Helpers for the end-to-end discovery specs (discovery_{kube,nomad,consul}_spec.lua): real Go
-- services on loopback, the real `autopgo server`, the recorded-response control plane pointing
-- at the services, and `autopgo scrape --mode ...`; waits for profiles to arrive and checks that
-- an API failure keeps the scraper going on its last targets and shows in /api/health.
local assert = require "luassert"
local cjson = require "cjson.safe"
local http = require "autopgo.http"
local support = require "tests.lua.support"
local e2e = require "tests.e2e.scrape_support"

local M = {}

--- Waits until the scraper has forwarded a profile from each of `urls` (service base URLs) at
-- least `times` times (default 1).
function M.wait_forwarded(scraper, urls, times)
  e2e.wait_for(function()
    for _, u in ipairs(urls) do
      if #M.forwarded(scraper, u) < (times or 1) then return false end
    end
    return true
  end, 90000, "a profile from each service")
end

--- The "profile forwarded" log lines of a service.
function M.forwarded(scraper, u)
  local out = {}
  for _, line in ipairs(e2e.log_lines(scraper.proc, "profile forwarded")) do
    if line:find("target=" .. u .. "/", 1, true) then out[#out + 1] = line end
  end
  return out
end

--- The scraper's /api/health as { code, doc }.
function M.health(scraper)
  local res = assert(http.request { url = scraper.url .. "/api/health", timeout = 10 })
  return res.status, cjson.decode(res.body)
end

--- The discovery dependency in a health document.
function M.discovery_dep(doc, mode)
  for _, d in ipairs(doc.dependencies or {}) do
    if d.name == "discovery (" .. mode .. ")" then return d end
  end
  error("no discovery dependency in " .. cjson.encode(doc))
end

--- Makes the control plane fail (`break_api()`), checks the scraper reports it in health and
-- goes on profiling `urls` with the targets it had, then heals it (`heal_api()`).
function M.check_resilience(scraper, mode, urls, break_api, heal_api)
  local status, doc = M.health(scraper)
  assert.equals(200, status)
  assert.equals("healthy", M.discovery_dep(doc, mode).status)

  break_api()
  e2e.wait_for(function()
    return #e2e.log_lines(scraper.proc, "target discovery failed; using the last known targets") > 0
  end, 60000, "the scraper to notice the API failure")
  status, doc = M.health(scraper)
  assert.equals(503, status)
  local dep = M.discovery_dep(doc, mode)
  assert.equals("unhealthy", dep.status)
  assert.is_string(dep.message)

  local before = {}
  for i, u in ipairs(urls) do before[i] = #M.forwarded(scraper, u) end
  e2e.wait_for(function()
    for i, u in ipairs(urls) do
      if #M.forwarded(scraper, u) <= before[i] then return false end
    end
    return true
  end, 90000, "profiles from the last known targets while the API fails")
  assert.equals(0, #e2e.log_lines(scraper.proc, "level=error"), "no scrape failed while the API was down")

  heal_api()
  e2e.wait_for(function()
    local s, d = M.health(scraper)
    return s == 200 and M.discovery_dep(d, mode).status == "healthy"
  end, 30000, "the discovery dependency to be healthy again")
end

--- The merged profile of `app` can be downloaded from the server.
function M.assert_merged(server, app, dir)
  e2e.wait_for(function()
    local code = support.autopgo({ "download", app, "-o", dir .. "/" .. app .. ".pgo", "--api-url", server.url })
    return code == 0
  end, 60000, "a merged profile of " .. app)
end

return M
