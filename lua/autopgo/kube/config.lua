-- Where the kube discovery mode finds its cluster and how it proves who it is: a kubeconfig
-- file given as the scraper's argument; else the pod's service account (in-cluster); else the
-- files in KUBECONFIG (merged as kubectl merges them) or ~/.kube/config. Kubeconfig support:
-- the current context, the cluster's server, CA data or file, insecure-skip-tls-verify,
-- tls-server-name, proxy-url, the user's token or token file, client certificate and key (data
-- or files), basic auth and exec credential plugins. Kubeconfig files are YAML, read with lyaml
-- (Debian's lua-yaml: libyaml).
local fail = require "autopgo.fail"
local crypto = require("autopgo.core").crypto

local M = {}

M.service_account_dir = "/var/run/secrets/kubernetes.io/serviceaccount"

local exec_versions = {
  ["client.authentication.k8s.io/v1"] = true,
  ["client.authentication.k8s.io/v1beta1"] = true,
}

local function read(path)
  local f, err = io.open(path, "rb")
  if not f then return nil, err end
  local text = f:read("a")
  f:close()
  return text
end

local function exists(path)
  local f = io.open(path, "rb")
  if f then f:close() end
  return f ~= nil
end

local function dirname(path)
  return path:match("^(.*)/[^/]*$") or "."
end

local function absolute(path, base)
  if path:sub(1, 1) == "/" then return path end
  return base .. "/" .. path
end

-- YAML scalars that kubeconfig fields hold as strings (a token of digits parses as a number).
local function str(v)
  if type(v) == "string" then return v end
  if type(v) == "number" then return tostring(math.tointeger(v) or v) end
  return nil
end

local function nonempty(v)
  v = str(v)
  if v == "" then return nil end
  return v
end

-- lyaml turns YAML null into a sentinel table; drop it so absent and null read the same.
local function strip_null(v, null)
  if v == null then return nil end
  if type(v) == "table" then
    for k, x in pairs(v) do v[k] = strip_null(x, null) end
  end
  return v
end

local function parse_yaml(text, path)
  local ok, lyaml = pcall(require, "lyaml")
  if not ok then
    return fail.new("INVALID", "reading a kubeconfig needs the lyaml Lua module (Debian package lua-yaml): "
      .. tostring(lyaml))
  end
  local pok, doc = pcall(lyaml.load, text)
  if not pok then return fail.new("INVALID", "%s is not valid YAML: %s", path, tostring(doc)) end
  return strip_null(doc, lyaml.null)
end

-- One kubeconfig file: its named clusters, users and contexts with relative paths resolved
-- against the file's directory (as kubectl does), and its current-context.
local function load_file(path)
  local text, err = read(path)
  if not text then return fail.new("INVALID", "cannot read the kubeconfig %s: %s", path, err) end
  local doc
  doc, err = parse_yaml(text, path)
  if err then return nil, err end
  doc = doc or {}
  if type(doc) ~= "table" then return fail.new("INVALID", "%s is not a kubeconfig (a YAML mapping)", path) end
  local base = dirname(absolute(path, require("luv").cwd()))
  local out = { current = nonempty(doc["current-context"]), clusters = {}, users = {}, contexts = {}, path = path }
  for kind, field in pairs { clusters = "cluster", users = "user", contexts = "context" } do
    local list = doc[kind]
    if list ~= nil and type(list) ~= "table" then
      return fail.new("INVALID", "%s: %s must be a list", path, kind)
    end
    for i, entry in ipairs(list or {}) do
      local name = type(entry) == "table" and str(entry.name)
      if not name or type(entry[field] or {}) ~= "table" then
        return fail.new("INVALID", "%s: %s[%d] needs a name and a %s mapping", path, kind, i - 1, field)
      end
      if out[kind][name] == nil then out[kind][name] = entry[field] or {} end
    end
  end
  for _, c in pairs(out.clusters) do
    if nonempty(c["certificate-authority"]) then
      c["certificate-authority"] = absolute(str(c["certificate-authority"]), base)
    end
  end
  for _, u in pairs(out.users) do
    for _, k in ipairs { "client-certificate", "client-key", "tokenFile" } do
      if nonempty(u[k]) then u[k] = absolute(str(u[k]), base) end
    end
    local exec = u.exec
    if type(exec) == "table" and nonempty(exec.command) and exec.command:find("/", 1, true) then
      exec.command = absolute(exec.command, base)
    end
  end
  return out
end

-- Several files merged the way kubectl merges KUBECONFIG: the first file to define a name or a
-- current-context wins.
local function merge(files)
  local out = { clusters = {}, users = {}, contexts = {}, paths = {} }
  for _, f in ipairs(files) do
    out.current = out.current or f.current
    out.paths[#out.paths + 1] = f.path
    for _, kind in ipairs { "clusters", "users", "contexts" } do
      for name, v in pairs(f[kind]) do
        if out[kind][name] == nil then out[kind][name] = v end
      end
    end
  end
  return out
end

local function decode_data(value, what, where)
  local data = crypto.base64_decode((str(value):gsub("%s+", "")))
  if not data then return fail.new("INVALID", "%s: %s is not valid base64", where, what) end
  return data
end

local function check_exec(exec, where)
  if type(exec) ~= "table" then return fail.new("INVALID", "%s: exec must be a mapping", where) end
  local command = nonempty(exec.command)
  if not command then return fail.new("INVALID", "%s: exec needs a command", where) end
  local api = str(exec.apiVersion)
  if not exec_versions[api or ""] then
    return fail.new("INVALID", "%s: exec apiVersion %q is not supported (client.authentication.k8s.io/v1 or v1beta1)",
      where, tostring(api))
  end
  local args = {}
  for i, a in ipairs(type(exec.args) == "table" and exec.args or {}) do
    args[i] = str(a)
    if not args[i] then return fail.new("INVALID", "%s: exec args must be strings", where) end
  end
  local env = {}
  for _, e in ipairs(type(exec.env) == "table" and exec.env or {}) do
    if type(e) ~= "table" or not nonempty(e.name) then
      return fail.new("INVALID", "%s: exec env entries need a name and a value", where)
    end
    env[#env + 1] = { name = str(e.name), value = str(e.value) or "" }
  end
  local mode = str(exec.interactiveMode) or "IfAvailable"
  if mode == "Always" then
    return fail.new("INVALID", "%s: the exec plugin %s needs a terminal (interactiveMode: Always), which the scraper "
      .. "does not have", where, command)
  elseif mode ~= "Never" and mode ~= "IfAvailable" then
    return fail.new("INVALID", "%s: exec interactiveMode %q is not Never, IfAvailable or Always", where, mode)
  end
  return { command = command, args = args, env = env, api_version = api,
    provide_cluster_info = exec.provideClusterInfo == true, install_hint = str(exec.installHint) }
end

-- The cluster, TLS and credential settings of the current context.
local function resolve(kc, source)
  local name = kc.current
  if not name then return fail.new("INVALID", "%s has no current-context", source) end
  local context = kc.contexts[name]
  if not context then return fail.new("INVALID", "%s: the current context %q is not defined", source, name) end
  local cluster_name = nonempty(context.cluster)
  local cluster = cluster_name and kc.clusters[cluster_name]
  if not cluster then
    return fail.new("INVALID", "%s: context %q names cluster %q, which is not defined", source, name,
      tostring(cluster_name))
  end
  local user_name = nonempty(context.user)
  local user = {}
  if user_name then
    user = kc.users[user_name]
    if not user then
      return fail.new("INVALID", "%s: context %q names user %q, which is not defined", source, name, user_name)
    end
  end
  local server = nonempty(cluster.server)
  if not server or not server:match("^https?://[^/%s]+") then
    return fail.new("INVALID", "%s: cluster %q needs a server URL such as https://host:6443, got %q", source,
      cluster_name, tostring(server))
  end
  local where = ("%s: cluster %q"):format(source, cluster_name)
  local cfg = { server = (server:gsub("/+$", "")), source = source, context = name, cluster_name = cluster_name,
    namespace = nonempty(context.namespace), warnings = {}, auth = {}, tls = {} }
  local err
  if nonempty(cluster["certificate-authority-data"]) then
    cfg.tls.ca_pem, err = decode_data(cluster["certificate-authority-data"], "certificate-authority-data", where)
    if err then return nil, err end
  elseif nonempty(cluster["certificate-authority"]) then
    local ca = str(cluster["certificate-authority"])
    if not exists(ca) then return fail.new("INVALID", "%s: cannot read certificate-authority %s", where, ca) end
    cfg.tls.ca_file = ca
  end
  if cluster["insecure-skip-tls-verify"] == true then
    if cfg.tls.ca_pem or cfg.tls.ca_file then
      return fail.new("INVALID", "%s: a certificate authority cannot be combined with insecure-skip-tls-verify", where)
    end
    cfg.tls.insecure = true
  end
  cfg.tls.tls_server_name = nonempty(cluster["tls-server-name"])
  cfg.proxy = nonempty(cluster["proxy-url"])
  if cfg.proxy and not (cfg.proxy:match("^https?://[^/]") or cfg.proxy:match("^socks5h?://[^/]")) then
    return fail.new("INVALID", "%s: proxy-url %q must be an http, https or socks5 URL", where, cfg.proxy)
  end
  cfg.exec_cluster = { server = cfg.server, ["insecure-skip-tls-verify"] = cfg.tls.insecure or nil,
    ["certificate-authority-data"] = cfg.tls.ca_pem and crypto.base64_encode(cfg.tls.ca_pem) or nil,
    ["tls-server-name"] = cfg.tls.tls_server_name, ["proxy-url"] = cfg.proxy }
  for _, ext in ipairs(type(cluster.extensions) == "table" and cluster.extensions or {}) do
    if type(ext) == "table" and ext.name == "client.authentication.k8s.io/exec" then
      cfg.exec_cluster.config = ext.extension
    end
  end

  where = ("%s: user %q"):format(source, tostring(user_name))
  if user["auth-provider"] ~= nil then
    local provider = type(user["auth-provider"]) == "table" and str(user["auth-provider"].name) or "?"
    return fail.new("INVALID", "%s: auth-provider %q is not supported; use an exec credential plugin "
      .. "(gke-gcloud-auth-plugin, kubelogin, aws eks get-token)", where, provider)
  end
  if nonempty(user["client-certificate-data"]) then
    cfg.tls.client_cert_pem, err = decode_data(user["client-certificate-data"], "client-certificate-data", where)
    if err then return nil, err end
  elseif nonempty(user["client-certificate"]) then
    cfg.tls.client_cert = str(user["client-certificate"])
    if not exists(cfg.tls.client_cert) then
      return fail.new("INVALID", "%s: cannot read client-certificate %s", where, cfg.tls.client_cert)
    end
  end
  if nonempty(user["client-key-data"]) then
    cfg.tls.client_key_pem, err = decode_data(user["client-key-data"], "client-key-data", where)
    if err then return nil, err end
  elseif nonempty(user["client-key"]) then
    cfg.tls.client_key = str(user["client-key"])
    if not exists(cfg.tls.client_key) then
      return fail.new("INVALID", "%s: cannot read client-key %s", where, cfg.tls.client_key)
    end
  end
  if (cfg.tls.client_cert or cfg.tls.client_cert_pem) and not (cfg.tls.client_key or cfg.tls.client_key_pem) then
    return fail.new("INVALID", "%s: a client certificate needs a client key", where)
  elseif (cfg.tls.client_key or cfg.tls.client_key_pem) and not (cfg.tls.client_cert or cfg.tls.client_cert_pem) then
    return fail.new("INVALID", "%s: a client key needs a client certificate", where)
  end
  -- the documented precedence: token, then tokenFile (re-read as it rotates), then exec
  cfg.auth.token = nonempty(user.token)
  cfg.auth.token_file = not cfg.auth.token and nonempty(user.tokenFile) or nil
  if cfg.auth.token_file and not exists(cfg.auth.token_file) then
    return fail.new("INVALID", "%s: cannot read tokenFile %s", where, cfg.auth.token_file)
  end
  if user.exec ~= nil then
    cfg.auth.exec, err = check_exec(user.exec, where)
    if err then return nil, err end
  end
  local username, password = nonempty(user.username), str(user.password)
  if username then cfg.auth.basic = username .. ":" .. (password or "") end
  return cfg
end

--- Loads the kubeconfig files in `paths` (merged in order) and resolves the current context.
function M.from_files(paths, source)
  local files = {}
  for _, p in ipairs(paths) do
    local f, err = load_file(p)
    if not f then return nil, err end
    files[#files + 1] = f
  end
  return resolve(merge(files), source or ("kubeconfig " .. table.concat(paths, ":")))
end

--- True when the process runs in a pod with a service account: KUBERNETES_SERVICE_HOST and
-- KUBERNETES_SERVICE_PORT are set and the token file exists (client-go's test).
function M.in_cluster_possible(getenv)
  getenv = getenv or os.getenv
  local host, port = getenv("KUBERNETES_SERVICE_HOST"), getenv("KUBERNETES_SERVICE_PORT")
  return host ~= nil and host ~= "" and port ~= nil and port ~= "" and exists(M.service_account_dir .. "/token")
end

--- The in-cluster settings: the API server's service address, the service account's CA, and
-- its token file, which the client re-reads as the kubelet rotates it.
function M.in_cluster(getenv)
  getenv = getenv or os.getenv
  local host, port = getenv("KUBERNETES_SERVICE_HOST"), getenv("KUBERNETES_SERVICE_PORT")
  if not host or host == "" or not port or port == "" then
    return fail.new("INVALID", "not in a cluster: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT must be set")
  end
  if host:find(":", 1, true) then host = "[" .. host .. "]" end
  local dir = M.service_account_dir
  local token = dir .. "/token"
  if not exists(token) then
    return fail.new("INVALID", "in-cluster: cannot read the service account token %s", token)
  end
  local cfg = { server = ("https://%s:%s"):format(host, port), source = "in-cluster service account",
    auth = { token_file = token }, tls = {}, warnings = {} }
  if exists(dir .. "/ca.crt") then cfg.tls.ca_file = dir .. "/ca.crt" end
  local ns = read(dir .. "/namespace")
  cfg.namespace = ns and ns:match("^%s*(.-)%s*$") or nil
  cfg.exec_cluster = { server = cfg.server }
  return cfg
end

--- The configuration for the scraper's argument `path` (may be nil): that kubeconfig; else
-- in-cluster; else KUBECONFIG (a ":"-separated list) or ~/.kube/config.
function M.load(path, getenv)
  getenv = getenv or os.getenv
  if path and path ~= "" then return M.from_files({ path }) end
  if M.in_cluster_possible(getenv) then return M.in_cluster(getenv) end
  local list = getenv("KUBECONFIG")
  if list and list ~= "" then
    local paths = {}
    for p in list:gmatch("[^:]+") do
      if exists(p) then paths[#paths + 1] = p end
    end
    if #paths == 0 then
      return fail.new("INVALID", "none of the files in KUBECONFIG=%s can be read", list)
    end
    return M.from_files(paths, "KUBECONFIG " .. table.concat(paths, ":"))
  end
  local home = getenv("HOME")
  if home and home ~= "" and exists(home .. "/.kube/config") then
    return M.from_files({ home .. "/.kube/config" })
  end
  return fail.new("INVALID", "kube mode found no cluster configuration: give a kubeconfig path as the argument, run in "
    .. "a pod with a service account, or set KUBECONFIG or create ~/.kube/config")
end

return M
