-- Kubernetes exec credential plugins (client.authentication.k8s.io v1 and v1beta1), the way
-- EKS, GKE and AKS clusters authenticate: runs the kubeconfig's command with its args and env
-- plus KUBERNETES_EXEC_INFO, reads the ExecCredential it prints, and returns the token or client
-- certificate with the time it expires. The caller caches it until then.
local fail = require "autopgo.fail"
local uv = require "luv"
local cjson = require "cjson.safe"
local async = require "autopgo.async"
local utc = require "autopgo.utc"

local M = {}

-- Seconds a plugin may run before it is killed.
M.timeout = 60
M.max_output = 1024 * 1024

-- Runs argv with env (a list of "K=V") and an empty stdin; returns code, stdout, stderr or nil, err.
local function run(command, args, env)
  local stdin, stdout, stderr = uv.new_pipe(), uv.new_pipe(), uv.new_pipe()
  local out, errs, size = {}, {}, 0
  local exited, streams = async.event(), async.event()
  local open = 2
  local handle, pid = uv.spawn(command, { args = args, env = env, stdio = { stdin, stdout, stderr } },
    function(code, signal) exited.set(code, signal) end)
  if not handle then
    stdin:close()
    stdout:close()
    stderr:close()
    return nil, tostring(pid)
  end
  stdin:close() -- not interactive: the plugin reads end-of-file
  local function reader(buf)
    return function(rerr, data)
      if data and not rerr then
        size = size + #data
        if size <= M.max_output then buf[#buf + 1] = data end
      else
        open = open - 1
        if open == 0 then streams.set() end
      end
    end
  end
  stdout:read_start(reader(out))
  stderr:read_start(reader(errs))
  local code, signal = exited.wait(M.timeout * 1000)
  if code == nil then
    uv.kill(pid, "sigkill")
    exited.wait()
    code, signal = nil, "timeout"
  end
  streams.wait(5000)
  for _, p in ipairs { stdout, stderr } do
    if not p:is_closing() then p:close() end
  end
  handle:close()
  if signal == "timeout" then return nil, ("did not finish within %d s"):format(M.timeout) end
  return code, table.concat(out), table.concat(errs), signal
end

local function environment(extra)
  local env = uv.os_environ()
  for _, e in ipairs(extra) do env[e.name] = e.value end
  local list = {}
  for k, v in pairs(env) do list[#list + 1] = k .. "=" .. v end
  table.sort(list)
  return list
end

--- Runs the plugin `exec` (as autopgo.kube.config checked it) for the cluster described by
-- `cluster` (sent when provideClusterInfo is set). Returns { token?, cert_pem?, key_pem?,
-- expires? (epoch seconds) } or fail.new("UNAUTHORIZED", "...").
function M.get(exec, cluster)
  local info = { apiVersion = exec.api_version, kind = "ExecCredential",
    spec = { interactive = false, cluster = exec.provide_cluster_info and cluster or nil } }
  local env = {}
  for i, e in ipairs(exec.env) do env[i] = e end
  env[#env + 1] = { name = "KUBERNETES_EXEC_INFO", value = cjson.encode(info) }
  local code, out, errs = run(exec.command, exec.args, environment(env))
  local function bad(why)
    local hint = exec.install_hint and ("; " .. exec.install_hint) or ""
    return fail.new("UNAUTHORIZED", "the exec credential plugin %s %s%s", exec.command, why, hint)
  end
  if code == nil then return bad("could not run: " .. tostring(out)) end
  if code ~= 0 then
    local text = (errs or ""):gsub("%s+", " "):gsub("^ ", ""):gsub(" $", ""):sub(1, 300)
    return bad(("exited with %d%s"):format(code, text ~= "" and (": " .. text) or ""))
  end
  local doc = cjson.decode(out)
  if type(doc) ~= "table" then return bad("printed no ExecCredential JSON") end
  if doc.kind ~= "ExecCredential" or doc.apiVersion ~= exec.api_version then
    return bad(("printed %s %s, want ExecCredential %s"):format(tostring(doc.apiVersion), tostring(doc.kind),
      exec.api_version))
  end
  local status = type(doc.status) == "table" and doc.status or {}
  local cred = {}
  if type(status.token) == "string" and status.token ~= "" then cred.token = status.token end
  local cert, key = status.clientCertificateData, status.clientKeyData
  if type(cert) == "string" and cert ~= "" and type(key) == "string" and key ~= "" then
    cred.cert_pem, cred.key_pem = cert, key
  elseif (type(cert) == "string" and cert ~= "") or (type(key) == "string" and key ~= "") then
    return bad("returned a client certificate without its key, or a key without its certificate")
  end
  if not cred.token and not cred.cert_pem then return bad("returned neither a token nor a client certificate") end
  if status.expirationTimestamp ~= nil and status.expirationTimestamp ~= cjson.null then
    cred.expires = utc.parse_rfc3339(status.expirationTimestamp)
    if not cred.expires then
      return bad(("returned an expirationTimestamp that is not RFC 3339: %s"):format(
        tostring(status.expirationTimestamp)))
    end
  end
  return cred
end

return M
