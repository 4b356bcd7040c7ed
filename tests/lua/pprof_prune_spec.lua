-- Specs for the prune configuration loader (lua/autopgo/prune.lua): the seed's JSON format,
-- keep/null/missing handling, the first entry for an app, and errors that name what is wrong.
local prune = require "autopgo.prune"
local support = require "tests.lua.support"

describe("prune configuration", function()
  it("reads the seed's format", function()
    local cfg = assert(prune.parse([==[
      [{"app": "example", "rules": [{"drop": "github.com\/example\/.*", "keep": "github.com\/example\/dep"}]},
       {"app": "other", "rules": [{"drop": "a", "keep": null}, {"drop": "b", "extra": 1}]},
       {"app": "example", "rules": [{"drop": "shadowed"}]},
       {"app": "empty"}]]==]))
    assert.same({ { drop = "github.com/example/.*", keep = "github.com/example/dep" } },
      prune.rules_for(cfg, "example"))
    assert.same({ { drop = "a" }, { drop = "b" } }, prune.rules_for(cfg, "other"))
    assert.same({}, prune.rules_for(cfg, "empty"))
    assert.is_nil(prune.rules_for(cfg, "nope"))
    assert.same({}, assert(prune.parse("[]")))
  end)

  it("says what is wrong", function()
    local cases = {
      { "{", "invalid JSON" },
      { '{"app": "x"}', "expected a JSON list" },
      { '[1]', "entry 1 is not an object" },
      { '[{"app": 1}]', '"app" must be a string' },
      { '[{"app": "x", "rules": {"drop": "a"}}]', "rules" },
      { '[{"app": "x", "rules": [{"keep": "a"}]}]', 'rule 1: "drop" must be a string' },
      { '[{"app": "x", "rules": [{"drop": "a", "keep": 3}]}]', '"keep" must be a string or null' },
    }
    for _, c in ipairs(cases) do
      local cfg, err, code = prune.parse(c[1], "rules.json")
      assert.is_nil(cfg, c[1])
      assert.equals("INVALID", code)
      assert.matches(c[2], err, 1, true)
    end
    local cfg, err, code = prune.parse('[{"app": "x", "rules": [{"drop": "ok"}, {"drop": "a("}]}]', "rules.json")
    assert.is_nil(cfg)
    assert.equals("BAD_PATTERN", code)
    assert.equals('BAD_PATTERN: rules.json: app "x": rule 2: drop pattern "a(": ' ..
      "missing closing parenthesis at offset 2", err)
  end)

  it("loads a file, and says when there is none", function()
    local dir = support.tmpdir()
    local path = support.write_file(dir .. "/rules.json", '[{"app": "a", "rules": [{"drop": "x"}]}]')
    assert.same({ { drop = "x" } }, prune.rules_for(assert(prune.load(path)), "a"))
    local cfg, err, code = prune.load(dir .. "/missing.json")
    assert.is_nil(cfg)
    assert.equals("NOT_FOUND", code)
    assert.matches("missing.json", err)
    support.rm_rf(dir)
  end)
end)
