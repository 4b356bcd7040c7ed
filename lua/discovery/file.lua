-- File discovery (`--mode file`, the default): the scraper's argument is a JSON file holding an
-- array of { "address": "http://host:port", "path": "/debug/pprof/profile" } (path optional).
-- It is read at start-up, where a bad file stops the scraper, and again on SIGHUP, where a bad
-- file is logged and the targets read before stay in use.
local fail = require "autopgo.fail"
local cjson = require "cjson.safe"

local M = {}

local function read(path)
  if type(path) ~= "string" or path == "" then
    return fail.new("USAGE", "file mode needs the path of a JSON targets file as its argument")
  end
  local f, err = io.open(path, "rb")
  if not f then return fail.new("INVALID", "cannot read the targets file: " .. err) end
  local text = f:read("a")
  f:close()
  local doc, jerr = cjson.decode(text)
  if doc == nil then return fail.new("INVALID", "%s is not valid JSON: %s", path, tostring(jerr)) end
  if type(doc) ~= "table" or (next(doc) ~= nil and doc[1] == nil) then
    return fail.new("INVALID", "%s must hold a JSON array of {\"address\", \"path\"} objects", path)
  end
  local targets = {}
  for i, t in ipairs(doc) do
    if type(t) ~= "table" or type(t.address) ~= "string" then
      return fail.new("INVALID", "%s: entry %d needs an \"address\" string", path, i)
    end
    if t.path ~= nil and type(t.path) ~= "string" then
      return fail.new("INVALID", "%s: entry %d: \"path\" must be a string", path, i)
    end
    targets[i] = { address = t.address, path = t.path }
  end
  -- the scraper checks addresses and paths; doing it here too keeps a bad reload from landing
  local check = require("autopgo.discovery").check_targets
  local ok, cerr = check(targets)
  if not ok then return fail.new("INVALID", "%s: %s", path, fail.message(cerr)) end
  return targets
end

function M.start(ctx, arg)
  local targets, err, code = read(arg)
  if not targets then return nil, err, code end
  ctx.state.targets = targets
  return true
end

-- SIGHUP: the file again; a bad one keeps the targets read last.
M.reload = M.start

function M.list(ctx)
  return ctx.state.targets
end

return M
