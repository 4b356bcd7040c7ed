-- Azure Storage connection strings ("DefaultEndpointsProtocol=https;AccountName=a;AccountKey=k;
-- EndpointSuffix=core.windows.net", Azurite's "...;BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;",
-- "UseDevelopmentStorage=true", or "BlobEndpoint=...;SharedAccessSignature=sv=...") parsed into
-- the blob endpoint and the credentials they carry.
local fail = require "autopgo.fail"
local M = {}

M.DEV_ACCOUNT = "devstoreaccount1"
M.DEV_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="

local function bad(msg) return fail.new("INVALID", "Azure connection string: " .. msg) end

--- Parses a connection string. Returns { account, key?, sas?, blob_endpoint (no trailing
-- slash), protocol } or fail.new("INVALID", "...").
function M.parse(s)
  if type(s) ~= "string" or not s:find("%S") then return bad("empty") end
  local kv = {}
  for part in s:gmatch("[^;]+") do
    local k, v = part:match("^%s*([^=]-)%s*=%s*(.-)%s*$")
    if k and k ~= "" then
      kv[k:lower()] = v
    elseif part:find("%S") then
      return bad(("%q is not Key=Value"):format(part))
    end
  end
  if (kv.usedevelopmentstorage or ""):lower() == "true" then
    local proxy = kv.developmentstorageproxyuri
    return { account = M.DEV_ACCOUNT, key = M.DEV_KEY, protocol = "http",
      blob_endpoint = proxy and (proxy:gsub("/+$", "") .. ":10000/" .. M.DEV_ACCOUNT)
        or ("http://127.0.0.1:10000/" .. M.DEV_ACCOUNT) }
  end
  local out = { account = kv.accountname, key = kv.accountkey, sas = kv.sharedaccesssignature,
    protocol = kv.defaultendpointsprotocol or "https" }
  if out.sas then out.sas = out.sas:gsub("^%?", "") end
  if kv.blobendpoint then
    out.blob_endpoint = kv.blobendpoint:gsub("/+$", "")
  elseif out.account then
    out.blob_endpoint = ("%s://%s.blob.%s"):format(out.protocol, out.account, kv.endpointsuffix or "core.windows.net")
  else
    return bad("needs AccountName or BlobEndpoint")
  end
  if out.key and not out.account then return bad("has AccountKey but no AccountName") end
  if not out.account then
    -- SAS with an explicit endpoint: the account is the first label of the host, or the first
    -- path segment for emulator-style (IP) endpoints
    local host, path = out.blob_endpoint:match("^%a+://([^/:]+)[^/]*(.*)$")
    if host and host:match("^[%d.]+$") or host == "localhost" then
      out.account = path and path:match("^/([^/]+)")
    elseif host then
      out.account = host:match("^([^.]+)")
    end
  end
  return out
end

return M
