-- Specs for lua/discovery/kube.lua and autopgo.kube.* against the recorded-response Kubernetes
-- API server (tests/fakes/kube.js) on a TLS listener: label and field selectors, paging, the
-- watch (added, changed, relabelled, deleted pods; bookmarks; 410 Gone), every credential a
-- kubeconfig can carry (token, token file, basic auth, client certificates, exec plugins), the
-- in-cluster service account with a rotating token, KUBECONFIG merging and ~/.kube/config,
-- errors that keep the last targets, and kubectl run against the same server as a cross-check
-- of the fixtures, the kubeconfigs (written with `kubectl config`) and the requests.
local cjson = require "cjson.safe"
local discovery = require "autopgo.discovery"
local kube_config = require "autopgo.kube.config"
local pod_watch = require "autopgo.kube.pod_watch"
local support = require "tests.lua.support"
local fake = require "tests.fakes.fake"

local run = support.run

local sel_long = "autopgo.scrape=true,autopgo.scrape.app=checkout"
local sel_short = "autopgo.scrape=true,autopgo.app=checkout"

local everything = {
  { address = "http://10.244.1.17:8080", path = "/debug/pprof/profile" },
  { address = "https://[fd00:10:244:1::5]:6060", path = "/internal/pprof/profile" },
}

local function b64(s)
  return require("autopgo.core").crypto.base64_encode(s)
end

local function kubectl(args)
  local proc = support.spawn("kubectl", args)
  local code, _, out, err = proc:wait(60000)
  return code, out, err
end

describe("kube discovery", function()
  local dir, certs, srv, restore, sources
  local saved_sa, saved_page = kube_config.service_account_dir, pod_watch.page_size

  setup(function()
    dir = support.tmpdir()
    certs = fake.certs(dir)
    -- in bin/: the kubeconfigs name them bin/plugin.sh, relative to their own directory
    os.execute("mkdir -p " .. dir .. "/bin")
    support.write_file(dir .. "/bin/plugin.sh", [[#!/bin/sh
# An exec credential plugin for the specs: counts its runs, keeps what it was given, prints
# the ExecCredential the spec wrote.
here=$(dirname "$0")/..
echo "$*" >> "$here/exec-runs"
printf '%s' "$KUBERNETES_EXEC_INFO" > "$here/exec-info.json"
printf '%s' "$PLUGIN_REGION" > "$here/exec-env"
cat "$here/exec-output.json"
]])
    support.write_file(dir .. "/bin/failing-plugin.sh",
      "#!/bin/sh\necho 'no credentials for this cluster' >&2\nexit 3\n")
    os.execute("chmod +x " .. dir .. "/bin/plugin.sh " .. dir .. "/bin/failing-plugin.sh")
  end)
  teardown(function() support.rm_rf(dir) end)

  before_each(function()
    sources = {}
    -- nothing from the machine running the specs: no in-cluster variables, no KUBECONFIG, a HOME
    -- without a kube config
    restore = fake.setenv({ KUBECONFIG = false, HOME = dir .. "/nohome" }, { "KUBERNETES_" })
  end)

  after_each(function()
    run(function()
      for _, src in ipairs(sources) do src:stop() end
      if srv then srv:stop() end
    end)
    srv = nil
    restore()
    kube_config.service_account_dir, pod_watch.page_size = saved_sa, saved_page
    os.remove(dir .. "/exec-runs")
  end)

  local function start(config)
    config = config or {}
    config.api = "kube"
    config.tls = config.tls or { cert = certs.server_cert, key = certs.server_key, ca = certs.ca,
      client_certs = "request" }
    if config.auth == nil then config.auth = { tokens = { "scraper-token" } } end
    srv = fake.start(config, dir)
    return srv
  end

  -- A kubeconfig written by kubectl itself: cluster "fake" with the CA embedded, user "scraper"
  -- with `user_args` (set-credentials flags), context "fake" as the current context.
  local function kubeconfig(name, user_args, cluster_args)
    local path = dir .. "/" .. name
    os.remove(path)
    local function config(args)
      local all = { "config", "--kubeconfig", path }
      for _, a in ipairs(args) do all[#all + 1] = a end
      local code, _, err = kubectl(all)
      assert(code == 0, "kubectl config failed: " .. err)
    end
    config { "set-cluster", "fake", "--server", srv.url, table.unpack(cluster_args or
      { "--certificate-authority", certs.ca, "--embed-certs=true" }) }
    config { "set-credentials", "scraper", table.unpack(user_args) }
    config { "set-context", "fake", "--cluster", "fake", "--user", "scraper" }
    config { "use-context", "fake" }
    -- some kubectl builds (the Cloud SDK's dispatcher) ask the server for /version to pick a
    -- client version, running the exec plugin too: start the record afresh
    srv:clear()
    os.remove(dir .. "/exec-runs")
    return path
  end

  local function open(arg, log)
    local src = assert(discovery.open("kube", arg, { app = "checkout", log = log or fake.log() }))
    sources[#sources + 1] = src
    local ok, err = src:start()
    assert(ok, err)
    return src, err
  end

  local function is_list(r) return r.path == "/api/v1/pods" and r.query.watch == nil end
  local function is_watch(r) return r.path == "/api/v1/pods" and r.query.watch == "true" end
  local function count(pred)
    local n = 0
    for _, r in ipairs(srv:requests()) do
      if pred(r) then n = n + 1 end
    end
    return n
  end
  local function watches_open() return srv:call("GET", "/pods").watchers end
  local function pod_fixture(name)
    for _, p in ipairs(fake.fixture("kube_pods.json").items) do
      if p.metadata.name == name then return p end
    end
    error("no fixture pod " .. name)
  end
  local function has(targets, address)
    for _, t in ipairs(targets) do
      if t.address == address then return true end
    end
    return false
  end

  it("lists the app's running pods in all namespaces by either app label, skipping pods with no IP or port", function()
    run(function()
      start()
      local kc = kubeconfig("token.yaml", { "--token", "scraper-token" })
      local log = fake.log()
      local src = open(kc, log)
      assert.same(everything, fake.sorted(src.targets))

      local lists = {}
      for _, r in ipairs(srv:requests()) do
        if is_list(r) then
          lists[#lists + 1] = r
          assert.equals("Bearer scraper-token", r.headers.authorization)
          assert.equals(200, r.status)
        end
      end
      assert.same({ labelSelector = sel_long, fieldSelector = "status.phase=Running", limit = "500" }, lists[1].query)
      assert.same({ labelSelector = sel_short, fieldSelector = "status.phase=Running", limit = "500" }, lists[2].query)
      assert.equals(2, #lists)

      -- then one watch per selector, from the list's resourceVersion
      local rv = math.tointeger(srv:call("GET", "/pods").rv)
      fake.wait_for(function() return watches_open() == 2 end, "two open watches")
      for _, r in ipairs(srv:requests()) do
        if is_watch(r) then
          assert.equals(tostring(rv), r.query.resourceVersion)
          assert.equals("true", r.query.allowWatchBookmarks)
          assert.equals("status.phase=Running", r.query.fieldSelector)
          local t = tonumber(r.query.timeoutSeconds)
          assert.is_true(t >= 300 and t <= 600, r.query.timeoutSeconds)
        end
      end

      local warned = log.find("warn", "^skipping pod")
      assert.equals(2, #warned)
      local msgs = { warned[1].msg, warned[2].msg }
      table.sort(msgs)
      assert.same({ "skipping pod default/checkout-canary-0: it has no pod IP",
        "skipping pod payments/checkout-7d9f8b6c4-r8w2c: it has no autopgo.scrape.port or autopgo.port annotation" },
        msgs)
      assert.same(everything, fake.sorted((src:list())))
      assert.equals(2, #log.find("warn", "^skipping pod"), "a skipped pod is reported once, not every round")
      assert.equals(2, count(is_list), "rounds are answered from the watch")
    end)
  end)

  it("asks what kubectl asks and sees the pods kubectl sees, listed and watched (cross-check)", function()
    run(function()
      start()
      local kc = kubeconfig("token.yaml", { "--token", "scraper-token" })
      local src = open(kc)
      local ours = {}
      for _, w in ipairs(src.ctx.state.kube.watches) do
        local names = {}
        for _, pod in pairs(w.pods) do names[#names + 1] = pod.metadata.namespace .. "/" .. pod.metadata.name end
        table.sort(names)
        ours[w.label_selector] = names
      end
      local our_queries = {}
      for _, r in ipairs(srv:requests()) do
        if is_list(r) then our_queries[r.query.labelSelector] = r.query end
      end
      for _, selector in ipairs { sel_long, sel_short } do
        srv:clear()
        local code, out, err = kubectl { "--kubeconfig", kc, "--cache-dir", dir .. "/kcache", "get", "pods", "-A",
          "-l", selector, "--field-selector", "status.phase=Running", "-o",
          'jsonpath={range .items[*]}{.metadata.namespace}/{.metadata.name}{"\\n"}{end}' }
        assert.equals(0, code, err)
        local theirs = {}
        for line in out:gmatch("[^\n]+") do theirs[#theirs + 1] = line end
        table.sort(theirs)
        assert.same(theirs, ours[selector])
        local kubectl_lists = srv:requests_to("/api/v1/pods")
        assert.equals(1, #kubectl_lists)
        assert.same(kubectl_lists[1].query, our_queries[selector])
        assert.matches("^kubectl/", kubectl_lists[1].headers["user-agent"])
        assert.equals("Bearer scraper-token", kubectl_lists[1].headers.authorization)
      end

      -- kubectl reads the watch stream the scraper reads
      local watcher = support.spawn("kubectl", { "--kubeconfig", kc, "--cache-dir", dir .. "/kcache", "get", "pods",
        "-A", "-l", sel_long, "--field-selector", "status.phase=Running", "--watch-only", "-o",
        'jsonpath={.metadata.namespace}/{.metadata.name}{"\\n"}' })
      local ok, err = pcall(function()
        fake.wait_for(function()
          for _, r in ipairs(srv:requests_to("/api/v1/pods")) do
            if r.query.watch == "true" and r.headers["user-agent"]:match("^kubectl/") then return true end
          end
        end, "kubectl's watch")
        local new = pod_fixture("checkout-7d9f8b6c4-x2k9p")
        new.metadata.name, new.metadata.uid = "checkout-7d9f8b6c4-w4tch", nil
        srv:put("/pods", new)
        srv:call("DELETE", "/pods/default/checkout-canary-0")
        fake.wait_for(function()
          local out = watcher.output()
          return out:find("payments/checkout-7d9f8b6c4-w4tch\n", 1, true) and out:find("default/checkout-canary-0\n",
            1, true)
        end, "kubectl to print the added and the deleted pod")
        local function has_pod(name)
          for _, pod in pairs(src.ctx.state.kube.watches[1].pods) do
            if pod.metadata.name == name then return true end
          end
          return false
        end
        fake.wait_for(function() return has_pod("checkout-7d9f8b6c4-w4tch") and not has_pod("checkout-canary-0") end,
          "the scraper's watch to see the same")
      end)
      watcher:kill()
      watcher:wait(10000)
      assert(ok, err)
    end)
  end)

  it("follows the watch: added, changed, relabelled and deleted pods, without listing again", function()
    run(function()
      start()
      local src = open(kubeconfig("token.yaml", { "--token", "scraper-token" }))
      fake.wait_for(function() return watches_open() == 2 end, "two open watches")

      local new = pod_fixture("checkout-7d9f8b6c4-x2k9p")
      new.metadata.name, new.metadata.uid, new.status.podIP = "checkout-7d9f8b6c4-n3w0p", nil, "10.244.1.99"
      srv:put("/pods", new)
      fake.wait_for(function() return has(src:list(), "http://10.244.1.99:8080") end, "the added pod")

      local changed = pod_fixture("checkout-7d9f8b6c4-x2k9p")
      changed.metadata.annotations["autopgo.scrape.port"] = "9090"
      srv:put("/pods", changed)
      fake.wait_for(function()
        local t = src:list()
        return has(t, "http://10.244.1.17:9090") and not has(t, "http://10.244.1.17:8080")
      end, "the changed port")

      local relabelled = pod_fixture("checkout-7d9f8b6c4-m4q7z")
      relabelled.metadata.labels["autopgo.app"] = "someone-else"
      srv:put("/pods", relabelled)
      fake.wait_for(function() return not has(src:list(), "https://[fd00:10:244:1::5]:6060") end,
        "the relabelled pod to go")

      srv:call("DELETE", "/pods/payments/checkout-7d9f8b6c4-n3w0p")
      fake.wait_for(function() return not has(src:list(), "http://10.244.1.99:8080") end, "the deleted pod to go")

      -- a pod that stops running leaves through the field selector
      local stopped = pod_fixture("checkout-7d9f8b6c4-x2k9p")
      stopped.metadata.annotations["autopgo.scrape.port"] = "9090"
      stopped.status.phase = "Succeeded"
      srv:put("/pods", stopped)
      fake.wait_for(function() return #src:list() == 0 end, "no targets left")
      assert.equals(2, count(is_list))
    end)
  end)

  it("reopens an ended watch from its last resourceVersion and lists again when that has expired", function()
    run(function()
      start()
      local log = fake.log()
      local src = open(kubeconfig("token.yaml", { "--token", "scraper-token" }), log)
      fake.wait_for(function() return watches_open() == 2 end, "two open watches")
      local rv = math.tointeger(srv:call("POST", "/bookmark").rv)
      srv:call("POST", "/close-watches")
      fake.wait_for(function() return count(is_watch) == 4 and watches_open() == 2 end, "the watches to reopen")
      local reqs = srv:requests()
      local last = {}
      for _, r in ipairs(reqs) do
        if is_watch(r) then last[#last + 1] = r.query.resourceVersion end
      end
      assert.same({ tostring(rv), tostring(rv) }, { last[3], last[4] })
      assert.equals(2, count(is_list))

      -- everything before the next change is forgotten: the reopened watches get 410 Gone
      srv:call("POST", "/compact", { rv = rv + 1000 })
      srv:call("POST", "/bookmark")
      srv:call("POST", "/close-watches")
      fake.wait_for(function() return #log.find("info", "resourceVersion expired") == 2 end, "two expired watches")
      srv:call("POST", "/compact", { rv = 0 })
      assert.same(everything, fake.sorted((src:list())))
      assert.equals(4, count(is_list), "listed again after 410")
      fake.wait_for(function() return watches_open() == 2 end, "watches from the new list")
    end)
  end)

  it("lists page by page with limit and continue", function()
    run(function()
      pod_watch.page_size = 1
      start()
      local src = open(kubeconfig("token.yaml", { "--token", "scraper-token" }))
      assert.same(everything, fake.sorted(src.targets))
      local continued = 0
      for _, r in ipairs(srv:requests()) do
        if is_list(r) then
          assert.equals("1", r.query.limit)
          if r.query.continue then continued = continued + 1 end
        end
      end
      -- three pods match the first selector and one the second: 2 + 0 follow-up pages
      assert.equals(2, continued)
    end)
  end)

  it("keeps the last targets while the API server fails and reports it in health", function()
    run(function()
      start()
      local log = fake.log()
      local src = open(kubeconfig("token.yaml", { "--token", "scraper-token" }), log)
      assert.is_true(src:health())
      fake.wait_for(function() return watches_open() == 2 end, "two open watches")
      local status = cjson.encode { kind = "Status", apiVersion = "v1", status = "Failure", code = 503,
        reason = "ServiceUnavailable", message = "etcdserver: leader changed" }
      srv:fail(503, nil, status)
      srv:call("POST", "/close-watches")
      fake.wait_for(function() return #log.find("warn", "the pod watch failed") == 2 end, "the watches to fail")
      local targets, err = src:list()
      assert.same(everything, fake.sorted(targets))
      assert.matches("^SERVER: GET https://127%.0%.0%.1:%d+/api/v1/pods: etcdserver: leader changed %(503%)$", err)
      local ok, herr = src:health()
      assert.is_nil(ok)
      assert.matches("etcdserver: leader changed", herr)
      srv:heal()
      targets, err = src:list()
      assert.is_nil(err)
      assert.same(everything, fake.sorted(targets))
      assert.is_true(src:health())
      fake.wait_for(function() return watches_open() == 2 end, "the watches back")
    end)
  end)

  it("authenticates with a client certificate, embedded or from files relative to the kubeconfig", function()
    run(function()
      start { auth = { tokens = {} } }
      local src = open(kubeconfig("certs.yaml", { "--client-certificate", certs.client_cert, "--client-key",
        certs.client_key, "--embed-certs=true" }))
      assert.same(everything, fake.sorted(src.targets))
      for _, r in ipairs(srv:requests()) do
        assert.equals("autopgo-scraper", r.clientCert)
        assert.is_nil(r.headers.authorization)
      end

      -- hand-written YAML with relative paths, flow style and comments
      os.execute(("mkdir -p %s/sub/pki && cp %s %s %s %s/sub/pki/"):format(dir, certs.ca, certs.client_cert,
        certs.client_key, dir))
      local kc = support.write_file(dir .. "/sub/relative.yaml", ([[
# written by hand
apiVersion: v1
kind: Config
clusters:
  - name: fake
    cluster: {server: "%s", certificate-authority: pki/ca.crt}
users:
  - name: scraper
    user:
      client-certificate: pki/client.crt
      client-key: 'pki/client.key'
contexts:
  - {name: fake, context: {cluster: fake, user: scraper, namespace: payments}}
current-context: fake
preferences: {}
]]):format(srv.url))
      srv:clear()
      src = open(kc)
      assert.same(everything, fake.sorted(src.targets))
      assert.equals("autopgo-scraper", srv:requests()[1].clientCert)

      -- a certificate the cluster's CA did not sign is not a credential
      src = open(kubeconfig("stranger.yaml", { "--client-certificate", certs.stranger_cert, "--client-key",
        certs.stranger_key, "--embed-certs=true" }))
      local _, err = src:list()
      assert.matches("^UNAUTHORIZED: GET https://127%.0%.0%.1:%d+/api/v1/pods: Unauthorized %(401%)$", err)
    end)
  end)

  it("authenticates with basic auth, skips verification when told, and reports a refused token", function()
    run(function()
      start { auth = { basic = "scraper:s3cret", tokens = { "scraper-token" } } }
      local src = open(kubeconfig("basic.yaml", { "--username", "scraper", "--password", "s3cret" }))
      assert.same(everything, fake.sorted(src.targets))
      assert.equals("Basic " .. b64("scraper:s3cret"), srv:requests()[1].headers.authorization)

      src = open(kubeconfig("insecure.yaml", { "--token", "scraper-token" },
        { "--insecure-skip-tls-verify=true" }))
      assert.same(everything, fake.sorted(src.targets))

      -- without the CA the server's certificate is refused
      src = open(kubeconfig("noca.yaml", { "--token", "scraper-token" }, {}))
      local _, err = src:list()
      assert.matches("^TLS: GET https://", err)

      src = open(kubeconfig("wrong.yaml", { "--token", "not-the-token" }))
      _, err = src:list()
      assert.matches("Unauthorized %(401%)$", err)
      assert.is_nil((src:health()))
    end)
  end)

  it("names the server with tls-server-name and goes through proxy-url, as kubectl does", function()
    run(function()
      -- a certificate for api.cluster.internal only, on a server reached at 127.0.0.1
      start { tls = { cert = certs.named_cert, key = certs.named_key } }
      local _, err = open(kubeconfig("unnamed.yaml", { "--token", "scraper-token" })):list()
      assert.matches("^TLS: GET https://127%.0%.0%.1:", err)

      local kc = kubeconfig("named.yaml", { "--token", "scraper-token" }, { "--certificate-authority", certs.ca,
        "--embed-certs=true", "--tls-server-name=api.cluster.internal", "--proxy-url=" .. srv.proxy })
      local src = open(kc)
      assert.same(everything, fake.sorted(src.targets))
      local reqs = srv:requests()
      assert.is_true(#reqs > 0)
      for _, r in ipairs(reqs) do
        assert.equals("api.cluster.internal", r.servername)
        assert.equals("127.0.0.1:" .. srv.port, r.headers.host)
      end
      -- every connection went through the proxy, tunnelled to the server's real address
      for _, what in ipairs(srv:proxied()) do assert.equals("CONNECT 127.0.0.1:" .. srv.port, what) end
      assert.is_true(#srv:proxied() > 0)

      -- kubectl, given the same file, gets the same answer through the same proxy
      srv:clear()
      local code, out, kerr = kubectl { "--kubeconfig", kc, "--cache-dir", dir .. "/kcache", "get", "pods", "-A",
        "-l", sel_long, "-o", "name" }
      assert.equals(0, code, kerr)
      assert.matches("pod/", out)
      assert.equals("api.cluster.internal", srv:requests_to("/api/v1/pods")[1].servername)
    end)
  end)

  it("re-reads a tokenFile before every request, as rotated tokens need", function()
    run(function()
      start { auth = { tokens = { "first-token" } } }
      local token_file = support.write_file(dir .. "/token", "first-token\n")
      local kc = support.write_file(dir .. "/tokenfile.yaml", ([[
apiVersion: v1
kind: Config
clusters:
- cluster:
    certificate-authority-data: %s
    server: %s
  name: fake
contexts:
- context:
    cluster: fake
    user: scraper
  name: fake
current-context: fake
users:
- name: scraper
  user:
    tokenFile: %s
]]):format(b64(support.read_file(certs.ca)), srv.url, token_file))
      local src = open(kc)
      assert.same(everything, fake.sorted(src.targets))
      support.write_file(token_file, "second-token")
      srv:set_auth { tokens = { "second-token" } }
      srv:clear()
      assert.is_true(src:health())
      assert.equals("Bearer second-token", srv:requests()[1].headers.authorization)
    end)
  end)

  describe("exec credential plugins", function()
    local function runs()
      local n = 0
      for _ in (support.read_file(dir .. "/exec-runs") or ""):gmatch("[^\n]+") do n = n + 1 end
      return n
    end
    local function credential(status, api)
      support.write_file(dir .. "/exec-output.json", cjson.encode { apiVersion = api or
        "client.authentication.k8s.io/v1", kind = "ExecCredential", status = status })
    end
    -- Written by hand rather than with `kubectl config`: older kubectl releases (Debian's 1.20)
    -- lack the --exec-interactive-mode and --exec-provide-cluster-info flags. The command is
    -- relative to the kubeconfig's directory.
    local function exec_kubeconfig(name, o)
      o = o or {}
      return support.write_file(dir .. "/" .. name, ([[
apiVersion: v1
kind: Config
clusters:
- name: fake
  cluster:
    server: %s
    certificate-authority-data: %s
users:
- name: scraper
  user:
    exec:
      apiVersion: %s
      command: %s
      args: [token, "--cluster=fake"]
      env:
      - name: PLUGIN_REGION
        value: eu-west-1
      interactiveMode: Never
      provideClusterInfo: %s
%scontexts:
- name: fake
  context: {cluster: fake, user: scraper}
current-context: fake
]]):format(srv.url, b64(support.read_file(certs.ca)), o.api or "client.authentication.k8s.io/v1",
        o.command or "bin/plugin.sh", tostring(o.provide_cluster_info == true),
        o.install_hint and ("      installHint: " .. o.install_hint .. "\n") or ""))
    end

    it("runs the plugin once and caches its token until expirationTimestamp", function()
      run(function()
        start { auth = { tokens = { "exec-token-1" } } }
        credential { token = "exec-token-1", expirationTimestamp = "2999-01-01T00:00:00Z" }
        local src = open(exec_kubeconfig("exec.yaml", { provide_cluster_info = true }))
        assert.same(everything, fake.sorted(src.targets))
        for _ = 1, 3 do assert.is_true(src:health()) end
        assert.equals(1, runs())
        assert.equals("token --cluster=fake", support.read_file(dir .. "/exec-runs"):match("^[^\n]*"))
        assert.equals("eu-west-1", support.read_file(dir .. "/exec-env"))
        local info = cjson.decode(support.read_file(dir .. "/exec-info.json"))
        assert.equals("client.authentication.k8s.io/v1", info.apiVersion)
        assert.equals("ExecCredential", info.kind)
        assert.is_false(info.spec.interactive)
        assert.equals(srv.url, info.spec.cluster.server)
        assert.equals(b64(support.read_file(certs.ca)), info.spec.cluster["certificate-authority-data"])
        for _, r in ipairs(srv:requests()) do assert.equals("Bearer exec-token-1", r.headers.authorization) end
      end)
    end)

    it("runs the plugin again once the credential has expired, and after a 401", function()
      run(function()
        start { auth = { tokens = { "exec-token-1" } } }
        credential { token = "exec-token-1", expirationTimestamp = "2020-01-01T00:00:00+01:00" }
        local src = open(exec_kubeconfig("exec.yaml"))
        assert.same(everything, fake.sorted(src.targets))
        local before = runs()
        assert.is_true(src:health())
        assert.equals(before + 1, runs(), "an expired credential is not reused")

        credential { token = "exec-token-1", expirationTimestamp = "2999-01-01T00:00:00.5Z" }
        assert.is_true(src:health())
        before = runs()
        assert.is_true(src:health())
        assert.equals(before, runs())

        -- the cluster stops accepting the token: the 401 makes the plugin run again
        srv:set_auth { tokens = { "exec-token-2" } }
        credential { token = "exec-token-2", expirationTimestamp = "2999-01-01T00:00:00Z" }
        assert.is_true(src:health())
        assert.equals(before + 1, runs())
        local info = cjson.decode(support.read_file(dir .. "/exec-info.json"))
        assert.is_nil(info.spec.cluster, "no cluster information unless provideClusterInfo")
      end)
    end)

    it("takes a client certificate from a v1beta1 plugin", function()
      run(function()
        start { auth = { tokens = {} } }
        credential({ clientCertificateData = support.read_file(certs.client_cert),
          clientKeyData = support.read_file(certs.client_key) }, "client.authentication.k8s.io/v1beta1")
        local src = open(exec_kubeconfig("exec-beta.yaml", { api = "client.authentication.k8s.io/v1beta1" }))
        assert.same(everything, fake.sorted(src.targets))
        assert.equals("autopgo-scraper", srv:requests()[1].clientCert)
        local info = cjson.decode(support.read_file(dir .. "/exec-info.json"))
        assert.equals("client.authentication.k8s.io/v1beta1", info.apiVersion)
      end)
    end)

    it("reports a plugin that fails or answers nonsense, with its install hint", function()
      run(function()
        start()
        local kc = exec_kubeconfig("failing.yaml", { command = "bin/failing-plugin.sh",
          install_hint = "install it with your package manager" })
        local _, err = open(kc):list()
        assert.equals(("UNAUTHORIZED: the exec credential plugin %s/bin/failing-plugin.sh exited with 3: "
          .. "no credentials for this cluster; install it with your package manager"):format(dir), err)

        credential({ token = "x" }, "client.authentication.k8s.io/v1beta1")
        _, err = open(exec_kubeconfig("mismatch.yaml")):list()
        assert.matches("printed client%.authentication%.k8s%.io/v1beta1 ExecCredential, want ExecCredential "
          .. "client%.authentication%.k8s%.io/v1", err)
        credential { expirationTimestamp = "2999-01-01T00:00:00Z" }
        _, err = open(exec_kubeconfig("empty.yaml")):list()
        assert.matches("returned neither a token nor a client certificate", err)
        credential { token = "x", expirationTimestamp = "tomorrow" }
        _, err = open(exec_kubeconfig("badtime.yaml")):list()
        assert.matches("expirationTimestamp that is not RFC 3339: tomorrow", err)
        local missing = exec_kubeconfig("plugin-missing.yaml", { command = "no-such-plugin-anywhere" })
        _, err = open(missing):list()
        assert.matches("^UNAUTHORIZED: the exec credential plugin no%-such%-plugin%-anywhere could not run: ", err)
      end)
    end)
  end)

  it("uses the service account in a pod and follows its token as it rotates", function()
    run(function()
      start { auth = { tokens = { "sa-token-1" } } }
      local sa = dir .. "/serviceaccount"
      os.execute("mkdir -p " .. sa .. " && cp " .. certs.ca .. " " .. sa .. "/ca.crt")
      support.write_file(sa .. "/token", "sa-token-1")
      support.write_file(sa .. "/namespace", "autopgo\n")
      kube_config.service_account_dir = sa
      local undo = fake.setenv { KUBERNETES_SERVICE_HOST = "127.0.0.1", KUBERNETES_SERVICE_PORT = tostring(srv.port) }
      local log = fake.log()
      local ok, err = pcall(function()
        local src, first = open(nil, log)
        assert.is_nil(first)
        assert.same(everything, fake.sorted(src.targets))
        assert.equals(1, #log.find("info", "kube discovery configured"))
        assert.same({ "source", "in-cluster service account" }, { table.unpack(log.lines[1].fields, 1, 2) })
        -- the kubelet writes a new token; the API server stops taking the old one
        support.write_file(sa .. "/token", "sa-token-2")
        srv:set_auth { tokens = { "sa-token-2" } }
        srv:clear()
        assert.is_true(src:health())
        assert.equals("Bearer sa-token-2", srv:requests()[1].headers.authorization)
      end)
      undo()
      assert(ok, err)
    end)
  end)

  it("falls back to KUBECONFIG (merged like kubectl) and then ~/.kube/config", function()
    run(function()
      start()
      local ca = b64(support.read_file(certs.ca))
      local first = support.write_file(dir .. "/first.yaml", [[
current-context: mine
contexts:
- name: mine
  context: {cluster: shared, user: me}
users:
- name: me
  user: {token: scraper-token}
]])
      local second = support.write_file(dir .. "/second.yaml", ([[
current-context: theirs
contexts:
- name: mine
  context: {cluster: nowhere, user: nobody}
clusters:
- name: shared
  cluster: {server: "%s", certificate-authority-data: %s}
users:
- name: me
  user: {token: wrong-token}
]]):format(srv.url, ca))
      local undo = fake.setenv { KUBECONFIG = dir .. "/absent.yaml:" .. first .. ":" .. second }
      local ok, err = pcall(function()
        local log = fake.log()
        local src, lerr = open(nil, log)
        assert.is_nil(lerr)
        assert.same(everything, fake.sorted(src.targets))
        assert.equals("KUBECONFIG " .. first .. ":" .. second, log.lines[1].fields[2])
      end)
      undo()
      assert(ok, err)

      local home = dir .. "/home"
      os.execute("mkdir -p " .. home .. "/.kube")
      support.write_file(home .. "/.kube/config", support.read_file(kubeconfig("token.yaml", { "--token",
        "scraper-token" })))
      undo = fake.setenv { HOME = home }
      ok, err = pcall(function() assert.same(everything, fake.sorted(open(nil).targets)) end)
      undo()
      assert(ok, err)

      local src = assert(discovery.open("kube", nil, { app = "checkout", log = fake.log() }))
      local started, serr = src:start()
      assert.is_nil(started)
      assert.matches("^INVALID: kube mode found no cluster configuration", serr)
    end)
  end)

  it("refuses kubeconfigs it cannot use, saying why", function()
    run(function()
      start()
      local ca = b64(support.read_file(certs.ca))
      local function cfg(cluster, user, extra)
        return ([[
apiVersion: v1
clusters:
- name: c
  cluster: %s
users:
- name: u
  user: %s
contexts:
- name: x
  context: {cluster: c, user: u}
%s]]):format(cluster, user, extra or "current-context: x\n")
      end
      local server = ('{server: "%s"}'):format(srv.url)
      for text, why in pairs {
        [cfg(server, "{token: t}", "")] = "has no current%-context",
        [cfg(server, "{token: t}", "current-context: y\n")] = 'the current context "y" is not defined',
        [cfg("{}", "{token: t}")] = 'cluster "c" needs a server URL',
        [cfg(('{server: "%s", certificate-authority-data: "not base64!"}'):format(srv.url), "{}")] =
          "certificate%-authority%-data is not valid base64",
        [cfg(('{server: "%s", certificate-authority-data: %s, insecure-skip-tls-verify: true}'):format(srv.url, ca),
          "{}")] = "cannot be combined with insecure%-skip%-tls%-verify",
        [cfg(server, "{auth-provider: {name: gcp}}")] = 'auth%-provider "gcp" is not supported; use an exec',
        [cfg(server, "{exec: {command: x, apiVersion: client.authentication.k8s.io/v1, interactiveMode: Always}}")] =
          "needs a terminal",
        [cfg(server, "{exec: {command: x, apiVersion: client.authentication.k8s.io/v1alpha1}}")] =
          'exec apiVersion "client.authentication.k8s.io/v1alpha1" is not supported',
        [cfg(server, "{client-certificate-data: " .. ca .. "}")] = "a client certificate needs a client key",
        [cfg(server, "{tokenFile: /no/such/token}")] = "cannot read tokenFile /no/such/token",
        [cfg(('{server: "%s", proxy-url: "ftp://proxy:21"}'):format(srv.url), "{token: t}")] =
          'proxy%-url "ftp://proxy:21" must be an http, https or socks5 URL',
        ["clusters: [\n"] = "is not valid YAML",
        ["just a string\n"] = "is not a kubeconfig",
      } do
        local path = support.write_file(dir .. "/bad.yaml", text)
        local src = assert(discovery.open("kube", path, { app = "checkout", log = fake.log() }))
        local ok, err = src:start()
        assert.is_nil(ok, text)
        assert.matches("^INVALID: .*" .. why, err)
      end
      local src = assert(discovery.open("kube", dir .. "/nothing.yaml", { app = "checkout", log = fake.log() }))
      local _, err = src:start()
      assert.matches("^INVALID: cannot read the kubeconfig .*nothing%.yaml", err)
    end)
  end)

  it("re-reads the kubeconfig on reload, keeping the old one when the new one is broken", function()
    run(function()
      start()
      local kc = kubeconfig("token.yaml", { "--token", "scraper-token" })
      local src = open(kc)
      fake.wait_for(function() return watches_open() == 2 end, "two open watches")
      srv:set_auth { tokens = { "new-token" } }
      local text = support.read_file(kc)
      support.write_file(kc, text:gsub("token: scraper%-token", "token: new-token"))
      assert(src:reload())
      srv:clear()
      assert.same(everything, fake.sorted((src:list())))
      for _, r in ipairs(srv:requests()) do assert.equals("Bearer new-token", r.headers.authorization) end
      fake.wait_for(function() return count(is_watch) == 2 and watches_open() == 2 end, "the new watches only")

      support.write_file(kc, "clusters: [")
      local ok, err = src:reload()
      assert.is_nil(ok)
      assert.matches("is not valid YAML", err)
      assert.is_true(src:health())

      src:stop()
      fake.wait_for(function() return watches_open() == 0 end, "the watches to close at stop")
    end)
  end)
end)
