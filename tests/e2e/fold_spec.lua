-- Specs of the worker's fold (autopgo.merge_pass folding batches into the base through
-- autopgo.merging.fold) against the Go reference: after passes that fold, compact and start again
-- from a base written by the full merge, the base is what Go's Merge (+ Prune, Compact) of every
-- upload gives, over a real file store; and after `kill -9` of a server whose worker is folding
-- and compacting, every upload is in it exactly once.
local support = require "tests.lua.support"
local httpc = require "tests.lua.httpc"
local serverproc = require "tests.e2e.serverproc"
local goref = require "tests.e2e.goref"
local blob = require "autopgo.blob"
local bus = require "autopgo.bus"
local merge_pass = require "autopgo.merge_pass"
local merging = require "autopgo.merging"
local policy = require "autopgo.policy"

local run = support.run

local GEN = { "-functions", "600", "-locations", "2000", "-samples", "2500", "-paths", "4000", "-depth", "30",
  "-labels", "2", "-path-labels", "-inline", "0.3" }

-- n generated uploads (seeds from, from + 1, ...): their paths and bytes.
local function uploads(dir, from, n, extra)
  local out = {}
  for i = 0, n - 1 do
    local args = { "-seed", tostring(from + i) }
    for _, a in ipairs(GEN) do args[#args + 1] = a end
    for _, a in ipairs(extra or {}) do args[#args + 1] = a end
    local path = goref.gen(("%s/up%d.pb.gz"):format(dir, from + i), args)
    out[#out + 1] = { path = path, body = support.read_file(path) }
  end
  return out
end

local seq = 0
local function stage(store, app, up)
  seq = seq + 1
  assert(store:put(("%s/staging/%d"):format(app, 1700000000000000000 + seq), up.body, { if_none_match = "*" }))
end

local function folds(compacted)
  return merge_pass.metrics.folded:get({ compacted = tostring(compacted) })
end

-- The base of app compared with Go's merge of every upload (opts: goref.merge's); with
-- opts.steps, with the original worker's sequence instead: one merge (and prune) per step of the
-- previous result and the uploads of the step (a list of upload counts).
local function assert_as_go(dir, store, app, ups, opts)
  local base = assert(store:get(app .. "/default.pgo")).body
  support.write_file(dir .. "/base.pgo", base)
  local o = { compatibilize = true }
  for k, v in pairs(opts or {}) do o[k] = v end
  local steps = o.steps or { #ups }
  o.steps = nil
  local n, prev = 0, nil
  for s, count in ipairs(steps) do
    local files = { prev }
    for i = n + 1, n + count do files[#files + 1] = ups[i].path end
    n = n + count
    prev = goref.merge(("%s/go%d.pgo"):format(dir, s), files, o)
  end
  support.write_file(dir .. "/go.pgo", support.read_file(prev))
  local ours, theirs = goref.canon(dir .. "/base.pgo"), goref.canon(dir .. "/go.pgo")
  assert.is_true(ours == theirs, "the folded base differs from Go's merge")
end

local function setup(dir, opts)
  local store = assert(blob.open("file://" .. dir .. "/store"))
  local pass = merge_pass.new { store = store, writer = assert(bus.writer("mem://fold-" .. seq)),
    policy = assert(policy.new(opts or {})) }
  return store, pass
end

describe("folding", function()
  after_each(function() support.run(serverproc.cleanup) end)

  it("gives Go's merge of every upload over passes that fold, extend and compact", function()
    run(function()
      goref.ensure()
      local dir = support.tmpdir()
      local store, pass = setup(dir)
      -- mostly new stacks in every upload: the base doubles on the way (a compaction)
      local ups = uploads(dir, 1, 12, { "-paths", "40000" })
      -- the first pass makes the base with the full merge (today's layout), the next ones fold
      stage(store, "app", ups[1])
      stage(store, "app", ups[2])
      assert(pass:run("app"))
      local f0, c0 = folds(false), folds(true)
      for i = 3, #ups do
        stage(store, "app", ups[i])
        assert.same({ true, 1, false }, { pass:run("app") })
      end
      assert.equals(#ups - 2, folds(false) - f0 + folds(true) - c0)
      assert.is_true(folds(true) > c0, "no compaction on the way")
      assert_as_go(dir, store, "app", ups)
      support.rm_rf(dir)
    end, 240000)
  end)

  it("folds a batch of several uploads, and again after a restart (a new pass over the same store)", function()
    run(function()
      goref.ensure()
      local dir = support.tmpdir()
      local store, pass = setup(dir)
      -- reads of the base: a pass holding the folder committed as the stored version reads none
      local reads, real_get = 0, store.get
      store.get = function(st, key, ...)
        if key == "app/default.pgo" then reads = reads + 1 end
        return real_get(st, key, ...)
      end
      local ups = uploads(dir, 20, 8)
      stage(store, "app", ups[1])
      assert(pass:run("app"))
      local f0 = folds(false) + folds(true)
      for i = 2, 4 do stage(store, "app", ups[i]) end
      assert.same({ true, 3, false }, { pass:run("app") }) -- the base is read: no folder yet
      local r0 = reads
      stage(store, "app", ups[5])
      assert.same({ true, 1, false }, { pass:run("app") })
      assert.equals(r0, reads, "a pass holding the folder of the stored base read it")
      local again_store, again = setup(dir) -- nothing in memory: the folder is made over the stored base
      for i = 6, 8 do stage(again_store, "app", ups[i]) end
      assert.same({ true, 3, false }, { again:run("app") })
      assert.equals(3, folds(false) + folds(true) - f0)
      assert_as_go(dir, store, "app", ups)
      support.rm_rf(dir)
    end, 240000)
  end)

  it("prunes as the original worker did (each merge prunes the whole again)", function()
    run(function()
      goref.ensure()
      local dir = support.tmpdir()
      local rules = { { drop = "^github\\.com/acme/svc/[a-f]", keep = "\\.func\\d$" }, { drop = "sort\\." } }
      local json = require "autopgo.json"
      support.write_file(dir .. "/rules.json", json.encode({ { app = "app", rules = rules } }))
      local store, pass = setup(dir, { prune = dir .. "/rules.json" })
      local ups = uploads(dir, 40, 6)
      stage(store, "app", ups[1])
      assert(pass:run("app"))
      local f0 = folds(false) + folds(true)
      for i = 2, #ups do
        stage(store, "app", ups[i])
        assert(pass:run("app"))
      end
      -- some merges fold, those where a Prune would cut again are made in full
      assert.is_true(folds(false) + folds(true) > f0, "nothing was folded")
      assert_as_go(dir, store, "app", ups,
        { prune = dir .. "/rules.json", app = "app", compact = true, steps = { 1, 1, 1, 1, 1, 1 } })
      support.rm_rf(dir)
    end, 240000)
  end)

  it("merges in full what does not fold (other sample types) and folds again afterwards", function()
    run(function()
      goref.ensure()
      local dir = support.tmpdir()
      local store, pass = setup(dir)
      local ups = uploads(dir, 60, 2)
      local other = uploads(dir, 62, 1, { "-types", "samples/count,cpu/nanoseconds,wall/nanoseconds" })
      local more = uploads(dir, 63, 1)
      stage(store, "app", ups[1])
      assert(pass:run("app"))
      stage(store, "app", ups[2])
      assert(pass:run("app"))
      local f0 = folds(false) + folds(true)
      stage(store, "app", other[1])
      assert(pass:run("app"))
      assert.equals(f0, folds(false) + folds(true))
      stage(store, "app", more[1])
      assert(pass:run("app"))
      assert.equals(f0 + 1, folds(false) + folds(true))
      assert_as_go(dir, store, "app", { ups[1], ups[2], other[1], more[1] })
      support.rm_rf(dir)
    end, 240000)
  end)

  it("spends a folder whose fold failed and says why", function()
    run(function()
      goref.ensure()
      local dir = support.tmpdir()
      local ups = uploads(dir, 70, 2)
      local folder = assert(merging.folder(ups[1].body))
      local res = assert(merging.fold(folder, { ups[2].body }))
      assert.is_true(res.summary.fold.segments > 1)
      local _, err, code = merging.fold(folder, { "not a profile" })
      assert.equals("MALFORMED", code)
      assert.matches("input 1", err)
      local _, _, again = merging.fold(folder, { ups[2].body })
      assert.equals("CLOSED", again)
      support.rm_rf(dir)
    end, 120000)
  end)

  it("counts every upload exactly once after kill -9 while folding and compacting", function()
    run(function()
      goref.ensure()
      local dir = support.tmpdir()
      -- mostly new stacks in every upload: the base doubles several times (compactions)
      local ups = uploads(dir, 100, 24, { "-paths", "40000" })
      local s
      local function upload(i)
        local res = httpc.request(s.port, "POST", "/api/profile/app", { body = ups[i].body })
        assert.equals(201, res.status)
      end
      -- Three lives of the server: uploads one at a time, each answered before the next, then a
      -- kill -9 right after the last answer of the first two lives, while the worker merges.
      for life = 0, 2 do
        s = serverproc.start(dir)
        for i = life * 8 + 1, life * 8 + 8 do upload(i) end
        if life < 2 then serverproc.kill(s) end
      end
      serverproc.wait_until("every staged upload is merged", function()
        return #serverproc.files(s, "app/staging") == 0
      end, 120000)
      local folded = 0
      for n in httpc.request(s.port, "GET", "/metrics").body:gmatch("autopgo_merges_folded_total{[^}]*} (%d+)") do
        folded = folded + tonumber(n)
      end
      assert.is_true(folded > 0, "no batch was folded")
      local base = httpc.request(s.port, "GET", "/api/profile/app")
      assert.equals(200, base.status)
      support.write_file(dir .. "/served.pgo", base.body)
      local files = {}
      for i, u in ipairs(ups) do files[i] = u.path end
      goref.merge(dir .. "/go.pgo", files, { compatibilize = true })
      assert.is_true(goref.canon(dir .. "/served.pgo") == goref.canon(dir .. "/go.pgo"),
        "the served profile differs from Go's merge of every upload (lost or counted twice)")
      assert.equals(0, (serverproc.stop(s)))
      support.rm_rf(dir)
    end, 600000)
  end)
end)
