-- Specs of lua/autopgo/pgo_stable.lua: the worker's stable-serving decision after a merge (kept,
-- changed, recorded; nothing for apps without stable = true or profiles go cannot use) and the
-- bytes the API picks, over a real (memory) store.
local support = require "tests.lua.support"
local profiles = require "tests.lua.profiles"
local blob = require "autopgo.blob"
local keys = require "autopgo.keys"
local metrics = require "autopgo.metrics"
local pgo = require "autopgo.pgo"
local pgo_stable = require "autopgo.pgo_stable"
local core = require "autopgo.core"

local run = support.run

local function store()
  return assert(blob.open("mem://pgostable-" .. core.crypto.hex(core.crypto.random(5))))
end

local function signature_of(bytes)
  return pgo.signature(assert(pgo.shape(bytes, { decisions = true })).decisions)
end

local full = profiles.file("goapp-go123-cpu-1.pb.gz")
local other = profiles.file("goapp-go123-cpu-2.pb.gz")

describe("pgo_stable", function()
  it("records the first merge, keeps the bytes while decisions hold, replaces them when they change", function()
    run(function()
      local s = store()
      local policy = { ["*"] = { stable = true } }
      local kept = metrics.counter("autopgo_pgo_stable_kept_total")
      local changes = metrics.counter("autopgo_pgo_decision_changes_total")
      assert.equals("recorded", pgo_stable.after_merge(s, policy, "a", full))
      local first = assert(s:get(keys.pgo_served("a"))).body
      assert.equals(signature_of(full), signature_of(first))
      local twice = assert(core.pprof.merge({ full, full }))
      assert.equals("kept", pgo_stable.after_merge(s, policy, "a", twice))
      assert.equals(1, kept:get({ app = "a" }))
      assert.equals(first, assert(s:get(keys.pgo_served("a"))).body)
      assert.equals("changed", pgo_stable.after_merge(s, policy, "a", other))
      assert.equals(1, changes:get({ app = "a" }))
      assert.equals(signature_of(other), signature_of(assert(s:get(keys.pgo_served("a"))).body))
    end)
  end)

  it("does nothing for an app without stable = true or a profile go build -pgo cannot use", function()
    run(function()
      local s = store()
      assert.is_nil(pgo_stable.after_merge(s, { a = { stable = true } }, "b", full))
      assert.is_nil(pgo_stable.after_merge(s, { a = { stable = true } }, "a", profiles.file("goapp-cpu-1.pb.gz")))
      assert.is_nil(s:stat(keys.pgo_served("a")))
      assert.is_nil(s:stat(keys.pgo_served("b")))
    end)
  end)

  it("applies no_inline to the bytes it records, and the API picks them only for the same decisions", function()
    run(function()
      local s = store()
      local policy = { a = { stable = true, no_inline = { "regexp.(*machine).step" } } }
      assert.equals("recorded", pgo_stable.after_merge(s, policy, "a", full))
      local served = assert(s:get(keys.pgo_served("a"))).body
      local r = assert(pgo.shape(full, { format = "pgo", decisions = true, no_inline = policy.a.no_inline }))
      assert.equals(r.bytes, served)
      assert.equals(served, pgo_stable.pick(s, "a", "fresh", pgo.signature(r.decisions)))
      -- the same profile without no_inline: other decisions, so the fresh bytes
      assert.equals("fresh", pgo_stable.pick(s, "a", "fresh", signature_of(full)))
      -- nothing recorded: the fresh bytes
      assert.equals("fresh", pgo_stable.pick(s, "b", "fresh", signature_of(full)))
    end)
  end)
end)
