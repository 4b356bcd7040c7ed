-- The deployment examples under deploy/ parse and promise what the README says: the Kubernetes
-- manifests (lyaml, then `kubectl kustomize`), the compose stack and the Nomad job; every flag and
-- AUTOPGO_* variable they give is one the binary's --help lists. (tests/deploy/run.sh runs the
-- image and the compose stack for real; the cluster examples are only parsed here.)
local lyaml = require "lyaml"
local support = require "tests.lua.support"

local root = support.root
local deploy = root .. "/deploy"

local function read(path)
  return (assert(support.read_file(path), "cannot read " .. path))
end

-- lyaml's null sentinel becomes nil; "<<" merge keys (compose's x- anchors) are applied.
local function clean(v)
  if v == lyaml.null then return nil end
  if type(v) ~= "table" then return v end
  local merge = v["<<"]
  v["<<"] = nil
  for k, x in pairs(v) do v[k] = clean(x) end
  if merge then
    merge = clean(merge)
    for k, x in pairs(merge) do
      if v[k] == nil then v[k] = x end
    end
  end
  return v
end

local function yaml_docs(path)
  local ok, docs = pcall(lyaml.load, read(path), { all = true })
  assert(ok, path .. " is not valid YAML: " .. tostring(docs))
  local out = {}
  for _, d in ipairs(docs) do
    d = clean(d)
    if d then out[#out + 1] = d end
  end
  return out
end

local function run_cmd(cmd, args)
  return support.run(function()
    local code, _, stdout, stderr = support.spawn(cmd, args):wait(60000)
    return code, stdout, stderr
  end, 70000)
end

-- The binary's version (the image tag) and the flags and variables each command's --help lists.
local help = {}
local function help_of(command)
  if not help[command] then
    local code, out = run_cmd(support.bin, { command, "--help" })
    assert.equals(0, code)
    help[command] = out
  end
  return help[command]
end
local function version()
  local code, out = run_cmd(support.bin, { "--version" })
  assert.equals(0, code)
  return (assert(out:match("^autopgo (%S+)\n$"), out))
end

-- Variables the examples set that are not flags of autopgo (libraries' and clouds' own).
local other_vars = { NATS_SERVER_URL = true, AUTOPGO_LOG_FORMAT = true, AWS_ACCESS_KEY_ID = true,
  AWS_SECRET_ACCESS_KEY = true, NOMAD_ADDR = true }

local function assert_known_args(args, where)
  local command = args[1]
  local commands = { server = true, worker = true, scrape = true }
  assert.is_truthy(commands[command], where .. ": command " .. tostring(command))
  local text = help_of(command)
  for i = 2, #args do
    local flag = tostring(args[i]):match("^(%-%-[%w-]+)")
    if flag then
      assert.is_truthy(text:find(flag .. " ", 1, true), ("%s: autopgo %s has no flag %s"):format(where, command, flag))
    end
  end
end

local function assert_known_env(command, names, where)
  local text = help_of(command)
  for _, name in ipairs(names) do
    if not other_vars[name] then
      assert.is_truthy(text:find("env " .. name .. "[,)]"), ("%s: autopgo %s reads no %s"):format(where, command, name))
    end
  end
end

describe("deploy/kubernetes", function()
  local dir = deploy .. "/kubernetes"
  local objects, by = {}, {}

  setup(function()
    local kust = yaml_docs(dir .. "/kustomization.yaml")[1]
    assert.equals("autopgo", kust.namespace)
    for _, f in ipairs(kust.resources) do
      for _, o in ipairs(yaml_docs(dir .. "/" .. f)) do
        objects[#objects + 1] = o
        by[o.kind .. "/" .. o.metadata.name] = o
      end
    end
  end)

  local function get(kind, name)
    return assert(by[kind .. "/" .. name], kind .. " " .. name .. " is missing")
  end

  local function container(deployment)
    local spec = deployment.spec.template.spec
    assert.equals(1, #spec.containers)
    return spec.containers[1], spec
  end

  local function env_names(c, configmap)
    local names = {}
    for _, e in ipairs(c.env or {}) do names[#names + 1] = e.name end
    for _, ef in ipairs(c.envFrom or {}) do
      if ef.configMapRef then
        for k in pairs(get("ConfigMap", ef.configMapRef.name).data) do names[#names + 1] = k end
      end
    end
    if configmap then
      for k in pairs(configmap.data) do names[#names + 1] = k end
    end
    return names
  end

  local function env_value(c, name)
    for _, e in ipairs(c.env or {}) do
      if e.name == name then return e.value end
    end
    for _, ef in ipairs(c.envFrom or {}) do
      if ef.configMapRef then
        local v = get("ConfigMap", ef.configMapRef.name).data[name]
        if v then return v end
      end
    end
  end

  -- The promises every Deployment keeps: selector matches, non-root, the image, probes on the
  -- health endpoints through the named port, resource requests, a known command line.
  local function assert_deployment(d, command)
    local c, spec = container(d)
    for k, v in pairs(d.spec.selector.matchLabels) do
      assert.equals(v, d.spec.template.metadata.labels[k], d.metadata.name .. ": selector label " .. k)
    end
    assert.equals("autopgo:" .. version(), c.image)
    assert.is_true(spec.securityContext.runAsNonRoot)
    assert.equals(65532, spec.securityContext.runAsUser)
    assert.is_false(c.securityContext.allowPrivilegeEscalation)
    assert.equals(command, c.args[1])
    assert_known_args(c.args, d.metadata.name)
    assert.equals("/api/ready", c.readinessProbe.httpGet.path)
    assert.equals("/api/health", c.livenessProbe.httpGet.path)
    local pname = c.ports[1].name
    assert.is_truthy(pname == "http" or pname == "https", d.metadata.name .. ": port named http or https")
    assert.equals(pname, c.readinessProbe.httpGet.port)
    assert.equals(pname, c.livenessProbe.httpGet.port)
    local scheme = pname == "https" and "HTTPS" or nil
    assert.equals(scheme, c.readinessProbe.httpGet.scheme)
    assert.equals(scheme, c.livenessProbe.httpGet.scheme)
    local port = tostring(c.ports[1].containerPort)
    local flag_port
    for i, a in ipairs(c.args) do
      if a == "--port" then flag_port = c.args[i + 1] end
    end
    assert.equals(port, flag_port, d.metadata.name .. ": the container port is the --port")
    assert.is_truthy(c.resources.requests.cpu)
    assert.is_truthy(c.resources.requests.memory)
    assert_known_env(command, env_names(c), d.metadata.name)
    return c, spec
  end

  it("lists every manifest of the directory in kustomization.yaml", function()
    local listed = {}
    for _, f in ipairs(yaml_docs(dir .. "/kustomization.yaml")[1].resources) do listed[f] = true end
    local p = assert(io.popen(("ls %q"):format(dir)))
    for f in p:lines() do
      if f ~= "kustomization.yaml" then assert.is_true(listed[f] == true, f .. " is not in kustomization.yaml") end
    end
    p:close()
    for _, o in ipairs(objects) do
      if o.kind ~= "Namespace" and o.kind ~= "ClusterRole" and o.kind ~= "ClusterRoleBinding" then
        assert.equals("autopgo", o.metadata.namespace, o.kind .. " " .. o.metadata.name)
      end
    end
  end)

  it("has the server Deployment with two replicas behind a Service", function()
    local d = get("Deployment", "autopgo-server")
    assert.equals(2, d.spec.replicas)
    local c = assert_deployment(d, "server")
    assert.matches("^nats://[%w.]+%?jetstream=true$", env_value(c, "AUTOPGO_EVENT_WRITER_URL"))
    assert.is_truthy(env_value(c, "AUTOPGO_BLOB_STORE_URL"))
    local svc = get("Service", "autopgo-server")
    for k, v in pairs(svc.spec.selector) do
      assert.equals(v, d.spec.template.metadata.labels[k], "the Service selects the server pods by " .. k)
    end
    assert.equals("https", svc.spec.ports[1].targetPort)
    -- HTTPS from the autopgo-tls Secret and tokens from the autopgo-auth Secret, both mounted
    local mounts, volumes = {}, {}
    for _, m in ipairs(c.volumeMounts) do mounts[m.name] = m.mountPath end
    for _, v in ipairs(d.spec.template.spec.volumes) do volumes[v.name] = v end
    local function arg(flag)
      for i, a in ipairs(c.args) do if a == flag then return c.args[i + 1] end end
    end
    assert.equals("autopgo-tls", volumes.tls.secret.secretName)
    assert.equals(mounts.tls .. "/tls.crt", arg("--tls-cert"))
    assert.equals(mounts.tls .. "/tls.key", arg("--tls-key"))
    assert.equals("autopgo-auth", volumes.auth.secret.secretName)
    assert.equals(mounts.auth .. "/auth.json", arg("--auth-file"))
    local grants = require("cjson").decode(get("Secret", "autopgo-auth").stringData["auth.json"])
    local scopes = {}
    for _, g in ipairs(grants) do
      assert.matches("^%x+$", g.sha256)
      assert.equals(64, #g.sha256)
      for _, sc in ipairs(g.scopes) do scopes[sc] = true end
    end
    assert.is_true(scopes.upload and scopes.download, "grants for the scrapers (upload) and CI (download)")
  end)

  it("has the worker Deployment consuming one shared JetStream queue", function()
    local d = get("Deployment", "autopgo-worker")
    assert.equals(2, d.spec.replicas)
    local c = assert_deployment(d, "worker")
    assert.matches("^nats://[%w.]+%?jetstream=true&queue=workers$", env_value(c, "AUTOPGO_EVENT_READER_URL"))
    assert.is_truthy(env_value(c, "AUTOPGO_BLOB_STORE_URL"))
  end)

  it("has the kube-mode scraper with a service account allowed to list and watch pods", function()
    local d = get("Deployment", "autopgo-scraper-example-app")
    local c, spec = assert_deployment(d, "scrape")
    local mode
    for i, a in ipairs(c.args) do
      if a == "--mode" then mode = c.args[i + 1] end
    end
    assert.equals("kube", mode)
    assert.is_truthy(env_value(c, "AUTOPGO_APP"))
    assert.is_truthy(tonumber(env_value(c, "AUTOPGO_SAMPLE_SIZE")))
    assert.equals("https://autopgo-server.autopgo.svc", env_value(c, "AUTOPGO_API_URL"))
    assert.equals("/etc/autopgo/tls/ca.crt", env_value(c, "AUTOPGO_CA_CERT"))
    local token
    for _, e in ipairs(c.env) do
      if e.name == "AUTOPGO_TOKEN" then token = e.valueFrom.secretKeyRef end
    end
    assert.equals("autopgo-scraper-token", token.name)
    assert.is_truthy(get("Secret", token.name).stringData[token.key])
    local sa = get("ServiceAccount", spec.serviceAccountName)
    local role = get("ClusterRole", "autopgo-scraper")
    assert.same({ "" }, role.rules[1].apiGroups)
    assert.same({ "pods" }, role.rules[1].resources)
    assert.same({ "list", "watch" }, role.rules[1].verbs)
    local binding = get("ClusterRoleBinding", "autopgo-scraper")
    assert.equals("ClusterRole", binding.roleRef.kind)
    assert.equals(role.metadata.name, binding.roleRef.name)
    assert.equals("ServiceAccount", binding.subjects[1].kind)
    assert.equals(sa.metadata.name, binding.subjects[1].name)
    assert.equals(sa.metadata.namespace, binding.subjects[1].namespace)
  end)

  it("builds with kubectl kustomize into the same objects", function()
    local code, out, err = run_cmd("kubectl", { "kustomize", dir })
    assert.equals(0, code, err)
    local built = {}
    for _, o in ipairs(clean(lyaml.load(out, { all = true }))) do
      built[#built + 1] = o.kind .. "/" .. o.metadata.name
    end
    local want = {}
    for _, o in ipairs(objects) do want[#want + 1] = o.kind .. "/" .. o.metadata.name end
    table.sort(built)
    table.sort(want)
    assert.same(want, built)
  end)
end)

describe("deploy/compose", function()
  local compose

  setup(function()
    compose = yaml_docs(deploy .. "/compose/docker-compose.yml")[1]
  end)

  -- ${VAR:-default} as docker-compose substitutes it with no variable set
  local function subst(s)
    return (tostring(s):gsub("%${[%w_]+:%-([^}]*)}", "%1"))
  end

  local function args_of(svc)
    local out = {}
    for i, a in ipairs(svc.command) do out[i] = subst(a) end
    return out
  end

  it("runs NATS JetStream, two servers, two workers, the Go service and a scraper on one network", function()
    local names = {}
    for name, svc in pairs(compose.services) do
      names[#names + 1] = name
      assert.equals("host", svc.network_mode, name .. " uses the host's network")
    end
    table.sort(names)
    assert.same({ "goservice", "nats", "scraper", "server-1", "server-2", "worker-1", "worker-2" }, names)
    assert.equals("autopgo-nats:latest", compose.services.nats.image)
    assert.is_truthy(args_of(compose.services.nats)[1] == "--jetstream")
    assert.equals("autopgo-goservice:latest", compose.services.goservice.image)
  end)

  it("gives the servers and workers one store and one bus, with flags and variables autopgo knows", function()
    local ports = {}
    for _, name in ipairs { "server-1", "server-2", "worker-1", "worker-2" } do
      local svc = compose.services[name]
      local command = name:match("^(%a+)")
      assert.equals("autopgo:latest", subst(svc.image))
      local args = args_of(svc)
      assert.equals(command, args[1])
      assert_known_args(args, name)
      ports[#ports + 1] = args[3]
      assert.same({ "store:/var/lib/autopgo/store" }, svc.volumes)
      local env = svc.environment
      assert.equals("file:///var/lib/autopgo/store", env.AUTOPGO_BLOB_STORE_URL)
      assert.equals("nats://autopgo.events?jetstream=true", env.AUTOPGO_EVENT_WRITER_URL)
      assert.equals("nats://127.0.0.1:4222", subst(env.NATS_SERVER_URL))
      if command == "worker" then
        assert.equals("nats://autopgo.events?jetstream=true&queue=workers", env.AUTOPGO_EVENT_READER_URL)
      end
      local names = {}
      for k in pairs(env) do names[#names + 1] = k end
      assert_known_env(command, names, name)
    end
    table.sort(ports)
    assert.same({ "8080", "8081", "8090", "8091" }, ports)
    -- the named volumes (empty mappings, so read from the text)
    assert.matches("\nvolumes:\n  store:\n  nats:\n", read(deploy .. "/compose/docker-compose.yml"))
  end)

  it("points the scraper at the Go service through its targets file", function()
    local svc = compose.services.scraper
    local args = args_of(svc)
    assert.equals("scrape", args[1])
    assert_known_args(args, "scraper")
    assert.equals("/etc/autopgo/targets.json", args[#args])
    assert.same({ "./targets.json:/etc/autopgo/targets.json:ro" }, { subst(svc.volumes[1]) })
    local targets = require("cjson").decode(read(deploy .. "/compose/targets.json"))
    local port = args_of(compose.services.goservice)[2]:match(":(%d+)$")
    assert.equals("http://127.0.0.1:" .. port, targets[1].address)
    assert.equals("http://127.0.0.1:8080", subst(svc.environment.AUTOPGO_API_URL))
    local names = {}
    for k in pairs(svc.environment) do names[#names + 1] = k end
    assert_known_env("scrape", names, "scraper")
  end)
end)

-- A reader for the HCL the Nomad job uses: blocks (`type "label" { … }`), attributes
-- (`key = value`) with strings, numbers, lists and heredocs. Blocks are { type, labels, attrs, blocks }.
local function parse_hcl(text)
  local pos = 1
  local function skip()
    while true do
      local s, e = text:find("^[ \t\r\n]+", pos)
      if s then pos = e + 1 end
      if text:sub(pos, pos) == "#" then
        pos = (text:find("\n", pos) or #text) + 1
      else
        return
      end
    end
  end
  local function err(what) error(("HCL: %s at byte %d: %q"):format(what, pos, text:sub(pos, pos + 30)), 0) end
  local value
  local function string_lit()
    local s, e, body = text:find('^"(.-)"', pos)
    if not s then err("string expected") end
    pos = e + 1
    return body
  end
  function value()
    skip()
    local c = text:sub(pos, pos)
    if c == '"' then return string_lit() end
    if c == "[" then
      pos = pos + 1
      local list = {}
      while true do
        skip()
        if text:sub(pos, pos) == "]" then
          pos = pos + 1
          return list
        end
        list[#list + 1] = value()
        skip()
        if text:sub(pos, pos) == "," then pos = pos + 1 end
      end
    end
    local s, e, marker = text:find("^<<%-?([%w_]+)\n", pos)
    if s then
      local body_end, after = text:find("\n[ \t]*" .. marker .. "\n", e)
      if not body_end then err("unterminated heredoc") end
      local body = text:sub(e + 1, body_end)
      pos = after
      return body
    end
    local num
    s, e, num = text:find("^(%d+)", pos)
    if s then
      pos = e + 1
      return tonumber(num)
    end
    s, e = text:find("^[%w_]+", pos)
    if s then
      pos = e + 1
      return text:sub(s, e)
    end
    err("value expected")
  end
  local function body(block, closing)
    while true do
      skip()
      if pos > #text then
        if closing then err("missing }") end
        return block
      end
      if text:sub(pos, pos) == "}" then
        if not closing then err("unexpected }") end
        pos = pos + 1
        return block
      end
      local s, e, ident = text:find("^([%w_]+)", pos)
      if not s then err("identifier expected") end
      pos = e + 1
      skip()
      if text:sub(pos, pos) == "=" then
        pos = pos + 1
        block.attrs[ident] = value()
      else
        local child = { type = ident, labels = {}, attrs = {}, blocks = {} }
        while true do
          skip()
          if text:sub(pos, pos) == "{" then break end
          child.labels[#child.labels + 1] = string_lit()
        end
        pos = pos + 1
        body(child, true)
        block.blocks[#block.blocks + 1] = child
      end
    end
  end
  return body({ type = "file", labels = {}, attrs = {}, blocks = {} }, false)
end

local function blocks(b, type)
  local out = {}
  for _, c in ipairs(b.blocks) do
    if c.type == type then out[#out + 1] = c end
  end
  return out
end
local function one(b, type, label)
  for _, c in ipairs(blocks(b, type)) do
    if label == nil or c.labels[1] == label then return c end
  end
  error(("no %s %s in %s %s"):format(type, label or "", b.type, b.labels[1] or ""), 2)
end

describe("deploy/nomad", function()
  local job

  setup(function()
    local file = parse_hcl(read(deploy .. "/nomad/autopgo.nomad.hcl"))
    job = one(file, "job", "autopgo")
  end)

  local function task_of(group)
    local task = one(one(job, "group", group), "task", group)
    assert.equals("docker", task.attrs.driver)
    return task
  end

  it("runs two servers and two workers from the image with health checks", function()
    for _, name in ipairs { "server", "worker" } do
      local group = one(job, "group", name)
      assert.equals(2, group.attrs.count)
      local task = task_of(name)
      local config = one(task, "config")
      assert.equals("autopgo:" .. version(), config.attrs.image)
      assert.equals(name, config.attrs.args[1])
      assert_known_args(config.attrs.args, "nomad " .. name)
      local env = one(task, "env").attrs
      local names = {}
      for k in pairs(env) do names[#names + 1] = k end
      assert_known_env(name, names, "nomad " .. name)
      assert.matches("^nats://", env.AUTOPGO_EVENT_WRITER_URL)
      if name == "worker" then assert.matches("queue=workers", env.AUTOPGO_EVENT_READER_URL) end
      local check = one(one(group, "service"), "check")
      assert.equals("http", check.attrs.type)
      assert.matches("^/api/", check.attrs.path)
    end
  end)

  it("runs a nomad-mode scraper for the example app, whose service has the seed's tags", function()
    local task = task_of("scraper")
    local args = one(task, "config").attrs.args
    assert_known_args(args, "nomad scraper")
    local mode
    for i, a in ipairs(args) do
      if a == "--mode" then mode = args[i + 1] end
    end
    assert.equals("nomad", mode)
    local env = one(task, "env").attrs
    assert.equals("example-app", env.AUTOPGO_APP)
    local names = {}
    for k in pairs(env) do names[#names + 1] = k end
    assert_known_env("scrape", names, "nomad scraper")
    assert.matches("NOMAD_ADDR=", one(task, "template").attrs.data)
    assert.matches("AUTOPGO_API_URL=", one(task, "template").attrs.data)
    local service = one(task_of("example-app"), "service")
    local tags = {}
    for _, t in ipairs(service.attrs.tags) do tags[t] = true end
    assert.is_true(tags["autopgo.scrape=true"])
    assert.is_true(tags["autopgo.scrape.app=" .. env.AUTOPGO_APP])
    assert.is_true(tags["autopgo.scrape.path=/debug/pprof/profile"])
    assert.is_true(tags["autopgo.scrape.scheme=http"])
  end)
end)
