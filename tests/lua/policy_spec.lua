-- Specs of lua/autopgo/policy.lua: prune rules from the --prune file and the config table, hooks,
-- the policy schema.
local support = require "tests.lua.support"
local policy = require "autopgo.policy"

describe("policy", function()
  local dir
  before_each(function() dir = support.tmpdir() end)
  after_each(function() support.rm_rf(dir) end)

  local function prune_file(text)
    return support.write_file(dir .. "/prune.json", text)
  end

  it("takes the --prune file's first entry for an app, then the config table's rules", function()
    local path = prune_file('[{"app":"a","rules":[{"drop":"x\\\\.y","keep":null}]},'
      .. '{"app":"a","rules":[{"drop":"ignored"}]},{"app":"b","rules":[{"drop":"z"}]}]')
    local p = assert(policy.new { prune = path, policy = {
      a = { prune = { { drop = "^extra", keep = "^extra%.keep" } } },
      ["*"] = { prune = { { drop = "^all" } } },
    } })
    assert.same({ { drop = "x\\.y" }, { drop = "^extra", keep = "^extra%.keep" } }, p:rules_for("a"))
    assert.same({ { drop = "z" }, { drop = "^all" } }, p:rules_for("b"))
    assert.same({ { drop = "^all" } }, p:rules_for("c"))
  end)

  it("has no rules and no hook without configuration", function()
    local p = assert(policy.new {})
    assert.same({}, p:rules_for("a"))
    assert.is_nil(p:hook_for("a"))
  end)

  it("only warns about a --prune file that does not exist, as the original", function()
    local p = assert(policy.new { prune = dir .. "/missing.json" })
    assert.same({}, p:rules_for("a"))
  end)

  it("refuses bad JSON, bad rules and bad regular expressions", function()
    assert.is_nil(policy.new { prune = prune_file("{not json") })
    assert.is_nil(policy.new { prune = prune_file('[{"app":"a","rules":[{"keep":"x"}]}]') })
    local p, err, code = policy.new { prune = prune_file('[{"app":"a","rules":[{"drop":"("}]}]') }
    assert.is_nil(p)
    assert.equals("BAD_PATTERN", code)
    assert.matches('app "a"', err)
    p, err, code = policy.new { policy = { a = { prune = { { drop = "[" } } } } }
    assert.is_nil(p)
    assert.equals("POLICY", code)
    assert.matches('policy %["a"%]%.prune', err)
    p, err, code = policy.new { policy = { ["Bad App"] = {} } }
    assert.is_nil(p)
    assert.equals("POLICY", code)
    assert.matches("invalid application name", err)
  end)

  it("owns the policy schema, which config files are checked with", function()
    assert.is_true(policy.validate { ["*"] = { prune = { { drop = "a", keep = "b" } } }, app = { hook = print } })
    local bad = {
      { { ["Bad App"] = {} }, "invalid application name" },
      { { [("a"):rep(129)] = {} }, "invalid application name" },
      { { app = 1 }, "must be a table" },
      { { app = { prune = "x" } }, "prune must be a list" },
      { { app = { prune = { { keep = "x" } } } }, "prune%[1%] must be" },
      { { app = { hook = "x" } }, "hook must be a function" },
      { { app = { other = 1 } }, "unknown key \"other\"" },
      { { app = { default = "latest" } }, "default must be \"all\"" },
      { { app = { window = "soon" } }, "window must be a duration" },
      { { app = { half_life = 3 } }, "half_life must be a duration" },
      { { app = { window = "1h", half_life = "1h" } }, "one of default = \"all\", window or half_life" },
      { { app = { normalize = "loud" } }, "normalize must be" },
    }
    for _, case in ipairs(bad) do
      local ok, why = policy.validate(case[1])
      assert.is_nil(ok)
      assert.matches(case[2], why)
      assert.same({ nil, why }, { require("autopgo.config").validate_policy(case[1]) })
    end
  end)

  it("says what default.pgo is and how uploads are weighted, per app (history views)", function()
    local p = assert(policy.new { policy = { ["*"] = { normalize = "equal" }, roll = { window = "168h" },
      dec = { half_life = "72h", normalize = "duration" }, all = { default = "all" } } })
    assert.same({ kind = "window", seconds = 168 * 3600 }, p:view_for("roll"))
    assert.same({ kind = "decay", half_life = 72 * 3600 }, p:view_for("dec"))
    assert.same({ kind = "all" }, p:view_for("all"))
    assert.same({ kind = "all" }, p:view_for("other"))
    assert.equals("duration", p:normalize_for("dec"))
    assert.equals("equal", p:normalize_for("other"))
    assert.equals("none", p:normalize_for("all"))
    assert.is_true(p:needs_history())
    assert.is_false(assert(policy.new { policy = { a = { normalize = "equal" } } }):needs_history())
  end)

  it("runs the app's hook (or the '*' one) and reports its failures", function()
    local seen = {}
    local p = assert(policy.new { policy = {
      a = { hook = function(profile, app) seen[#seen + 1] = app .. ":" .. profile.tag end },
      ["*"] = { hook = function(profile) return setmetatable({ tag = profile.tag .. "!" }, {}) end },
      bad = { hook = function() error("broken hook") end },
    } })
    local profile = { tag = "p" }
    assert.equals(profile, p:apply_hook("a", profile))
    assert.same({ "a:p" }, seen)
    local res, err, code = p:apply_hook("other", profile)
    assert.is_nil(res)
    assert.equals("POLICY", code)
    assert.matches("returned a table, not a profile", err)
    res, err, code = p:apply_hook("bad", profile)
    assert.is_nil(res)
    assert.equals("POLICY", code)
    assert.matches("the policy hook of bad failed: .*broken hook", err)
  end)
end)
