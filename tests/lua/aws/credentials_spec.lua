-- Specs for lua/autopgo/aws/credentials.lua that need no network: the order of the chain,
-- environment and profile credentials, credential_process (a real child process), caching and
-- refresh before expiry, and the errors users see. The STS, ECS and IMDS paths are covered
-- against loopback endpoints in credentials_http_spec.lua.
local credentials = require "autopgo.aws.credentials"
local utc = require "autopgo.utc"
local support = require "tests.lua.support"

local function env_of(t) return function(k) return t[k] end end

describe("aws credentials", function()
  local dir
  before_each(function() dir = support.tmpdir() end)
  after_each(function() support.rm_rf(dir) end)

  local function files(creds, config)
    support.write_file(dir .. "/credentials", creds or "")
    support.write_file(dir .. "/config", config or "")
    return { AWS_SHARED_CREDENTIALS_FILE = dir .. "/credentials", AWS_CONFIG_FILE = dir .. "/config",
      AWS_EC2_METADATA_DISABLED = "true" }
  end

  it("prefers the environment over every other source", function()
    local env = files("[default]\naws_access_key_id = FILE\naws_secret_access_key = FS\n")
    env.AWS_ACCESS_KEY_ID, env.AWS_SECRET_ACCESS_KEY, env.AWS_SESSION_TOKEN = "ENVID", "ENVSECRET", "TOK"
    local c = assert(support.run(function() return credentials.new({ getenv = env_of(env), home = dir }):get() end))
    assert.same({ access_key_id = "ENVID", secret_access_key = "ENVSECRET", session_token = "TOK",
      source = "environment" }, c)
  end)

  it("reads static keys of AWS_PROFILE, or of the profile the URL names", function()
    local env = files("[default]\naws_access_key_id = D\naws_secret_access_key = DS\n"
      .. "[ci]\naws_access_key_id = CI\naws_secret_access_key = CIS\naws_session_token = CIT\n")
    env.AWS_PROFILE = "ci"
    local c = assert(support.run(function() return credentials.new({ getenv = env_of(env), home = dir }):get() end))
    assert.equals("CI", c.access_key_id)
    assert.equals("CIT", c.session_token)
    assert.equals("profile ci", c.source)
    c = assert(support.run(function()
      return credentials.new({ getenv = env_of(env), home = dir, profile = "default" }):get()
    end))
    assert.equals("D", c.access_key_id)
  end)

  it("takes the region from the environment, else from the profile", function()
    local env = files(nil, "[profile r]\nregion = eu-north-1\n")
    env.AWS_PROFILE = "r"
    assert.equals("eu-north-1", credentials.region({ getenv = env_of(env), home = dir }))
    env.AWS_DEFAULT_REGION = "us-east-2"
    assert.equals("us-east-2", credentials.region({ getenv = env_of(env), home = dir }))
    env.AWS_REGION = "us-west-1"
    assert.equals("us-west-1", credentials.region({ getenv = env_of(env), home = dir }))
    assert.equals("x-1", credentials.region({ getenv = env_of(env), home = dir, region = "x-1" }))
  end)

  it("fails clearly for a missing or unusable profile and when nothing is configured", function()
    local env = files("", "[profile sso]\nsso_start_url = https://x\n[profile role]\nrole_arn = arn:x\n"
      .. "[profile loop1]\nrole_arn = arn:a\nsource_profile = loop2\n"
      .. "[profile loop2]\nrole_arn = arn:b\nsource_profile = loop1\n")
    local function get(profile)
      return support.run(function()
        return credentials.new({ getenv = env_of(env), home = dir, profile = profile }):get()
      end)
    end
    local c, err, code = get("nope")
    assert.is_nil(c)
    assert.equals("INVALID", code)
    assert.matches('AWS profile "nope" not found', err, 1, true)
    assert.is_nil(c)
    c, err, code = get("sso")
    assert.is_nil(c)
    assert.equals("UNAUTHORIZED", code)
    assert.matches("AWS SSO", err, 1, true)
    c, err, code = get("role")
    assert.is_nil(c)
    assert.equals("INVALID", code)
    assert.matches("has role_arn but no source_profile", err, 1, true)
    c, err, code = get("loop1")
    assert.is_nil(c)
    assert.equals("INVALID", code)
    assert.matches("source_profile loop", err, 1, true)
    c, err, code = get(nil)
    assert.equals("UNAUTHORIZED", code)
    assert.matches("no AWS credentials found", err, 1, true)
    assert.is_nil(c)
  end)

  it("runs credential_process and refreshes its temporary keys before they expire", function()
    local counter = dir .. "/calls"
    local script = support.write_file(dir .. "/creds.sh", ([[
n=$(cat '%s' 2>/dev/null || echo 0); n=$((n+1)); echo $n > '%s'
printf '{"Version":1,"AccessKeyId":"PROC%%s","SecretAccessKey":"S","SessionToken":"T","Expiration":"%%s"}' "$n" "$1"
]]):format(counter, counter))
    local now = 1700000000
    local expiry = utc.iso8601(now + 3600)
    local env = files(nil, ("[profile proc]\ncredential_process = sh %s %s\n"):format(script, expiry))
    local source = credentials.new({ getenv = env_of(env), home = dir, profile = "proc",
      now = function() return now end })
    local c = assert(support.run(function() return source:get() end))
    assert.equals("PROC1", c.access_key_id)
    assert.equals(now + 3600, c.expires)
    assert.equals("credential_process (profile proc)", c.source)
    now = now + 3600 - 301 -- still outside the 300 s refresh margin: cached
    assert.equals("PROC1", assert(support.run(function() return source:get() end)).access_key_id)
    now = now + 2 -- inside the margin: refreshed
    assert.equals("PROC2", assert(support.run(function() return source:get() end)).access_key_id)
    source:invalidate()
    assert.equals("PROC3", assert(support.run(function() return source:get() end)).access_key_id)
  end)

  it("serves concurrent callers with one refresh", function()
    local counter = dir .. "/calls"
    local script = support.write_file(dir .. "/slow.sh", ([[
sleep 0.2; n=$(cat '%s' 2>/dev/null || echo 0); n=$((n+1)); echo $n > '%s'
printf '{"Version":1,"AccessKeyId":"P%%s","SecretAccessKey":"S"}' "$n"
]]):format(counter, counter))
    local env = files(nil, ("[profile p]\ncredential_process = sh %s\n"):format(script))
    local source = credentials.new({ getenv = env_of(env), home = dir, profile = "p" })
    local async = require "autopgo.async"
    local results = support.run(function()
      return async.all({
        function() return source:get() end, function() return source:get() end, function() return source:get() end,
      })
    end)
    for _, r in ipairs(results) do assert.equals("P1", r[2].access_key_id) end
    assert.equals("1\n", support.read_file(counter))
  end)

  it("reports a failing credential_process", function()
    local env = files(nil, "[profile bad]\ncredential_process = sh -c 'echo denied >&2; exit 3'\n")
    local c, err, code = support.run(function()
      return credentials.new({ getenv = env_of(env), home = dir, profile = "bad" }):get()
    end)
    assert.is_nil(c)
    assert.equals("UNAUTHORIZED", code)
    assert.matches("exited with 3: denied", err, 1, true)
  end)
end)
