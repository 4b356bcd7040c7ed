-- Azure Storage shared access signatures: generating an account SAS from the account key (what
-- `az storage account generate-sas` produces) and normalising a SAS token a user supplies, so it
-- can be appended to request URLs.
local url = require "autopgo.url"
local utc = require "autopgo.utc"
local sharedkey = require "autopgo.azure.sharedkey"

local M = {}

M.VERSION = "2021-08-06"

--- The account SAS string to sign (versions 2015-04-05 and later; 2020-12-06 added the
-- encryption scope line).
function M.account_string_to_sign(account, p)
  local lines = { account, p.permissions, p.services, p.resource_types, p.start or "", p.expiry, p.ip or "",
    p.protocol or "", p.version }
  if p.version >= "2020-12-06" then lines[#lines + 1] = p.encryption_scope or "" end
  return table.concat(lines, "\n") .. "\n"
end

--- An account SAS token (query string without "?"). p: permissions ("rwdlacup"), services
-- ("b"), resource_types ("sco"), expiry (Unix seconds), start?, ip?, protocol? ("https" or
-- "https,http"), version?. Returns the token or nil, err, code for a bad key.
function M.account_sas(account, key_b64, p)
  local params = {
    permissions = p.permissions or "rwdlac", services = p.services or "b", resource_types = p.resource_types or "sco",
    start = p.start and utc.iso8601(p.start) or nil, expiry = utc.iso8601(p.expiry), ip = p.ip,
    protocol = p.protocol, version = p.version or M.VERSION,
  }
  local sig, err = sharedkey.hmac(key_b64, M.account_string_to_sign(account, params))
  if not sig then return nil, err, "INVALID" end
  local q = { sv = params.version, ss = params.services, srt = params.resource_types, sp = params.permissions,
    se = params.expiry, st = params.start, sip = params.ip, spr = params.protocol, sig = sig }
  return url.encode_query(q)
end

--- A SAS token as users paste it ("?sv=...", "sv=...", or a whole URL with one): the bare query.
function M.normalize(token)
  if not token or token == "" then return nil end
  token = token:gsub("^%s+", ""):gsub("%s+$", "")
  local q = token:match("%?(.*)$")
  if q then return q end
  return token
end

--- Appends a SAS token to a URL that may already have a query.
function M.append(u, token)
  if not token then return u end
  return u .. (u:find("?", 1, true) and "&" or "?") .. token
end

return M
