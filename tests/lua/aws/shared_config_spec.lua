-- Specs for lua/autopgo/aws/shared_config.lua: INI details of the AWS config files and how a
-- profile's settings merge across the credentials and config files.
local shared_config = require "autopgo.aws.shared_config"
local support = require "tests.lua.support"

describe("aws shared config", function()
  it("parses sections, comments, sub-sections and continuation lines", function()
    local s = shared_config.parse(table.concat({
      "# comment", "[default]", "aws_access_key_id = AKID ; trailing comment", "Region=eu-west-1",
      "", "[profile dev]", "s3 =", "  addressing_style = path", "  max_concurrent_requests = 4",
      "role_arn=arn:aws:iam::123:role/x", "[  spaced  ]", "k = v=with=equals",
    }, "\r\n"))
    assert.same({ aws_access_key_id = "AKID", region = "eu-west-1" }, s.default)
    assert.equals("path", s["profile dev"]["s3.addressing_style"])
    assert.equals("4", s["profile dev"]["s3.max_concurrent_requests"])
    assert.equals("arn:aws:iam::123:role/x", s["profile dev"].role_arn)
    assert.equals("v=with=equals", s.spaced.k)
  end)

  it("merges a profile from both files, the credentials file winning", function()
    local dir = support.tmpdir()
    support.write_file(dir .. "/credentials", "[dev]\naws_access_key_id = FROMCREDS\naws_secret_access_key = S\n")
    support.write_file(dir .. "/config", "[profile dev]\naws_access_key_id = FROMCONFIG\nregion = ap-south-1\n"
      .. "[default]\nregion = us-west-2\n[profile default]\nregion = ignored\n")
    local env = { AWS_SHARED_CREDENTIALS_FILE = dir .. "/credentials", AWS_CONFIG_FILE = dir .. "/config" }
    local files = shared_config.load(function(k) return env[k] end, "/nonexistent")
    local p = shared_config.profile(files, "dev")
    assert.equals("FROMCREDS", p.aws_access_key_id)
    assert.equals("ap-south-1", p.region)
    assert.is_nil(shared_config.profile(files, "missing"))
    assert.is_string(shared_config.profile(files, "default").region)
    support.rm_rf(dir)
  end)

  it("finds the files under the home directory by default", function()
    local home = support.tmpdir()
    os.execute("mkdir -p '" .. home .. "/.aws'")
    support.write_file(home .. "/.aws/config", "[profile p]\nregion = sa-east-1\n")
    local files = shared_config.load(function() return nil end, home)
    assert.equals("sa-east-1", shared_config.profile(files, "p").region)
    assert.equals(home .. "/x", shared_config.expand("~/x", home))
    support.rm_rf(home)
  end)
end)
