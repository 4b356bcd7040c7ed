-- Credential-chain specs for lua/autopgo/aws/credentials.lua against loopback endpoints that
-- answer like the real ones: STS (AssumeRoleWithWebIdentity, AssumeRole), the ECS container
-- credentials endpoint and EC2 instance metadata (IMDSv2), with refresh before expiry. That keys
-- from the chain sign requests RGW accepts is checked in tests/lua/blob/s3_spec.lua.
local credentials = require "autopgo.aws.credentials"
local utc = require "autopgo.utc"
local url = require "autopgo.url"
local cjson = require "cjson"
local support = require "tests.lua.support"
local fixture = require "tests.lua.http_fixture"

local run = support.run

local function env_of(t) return function(k) return t[k] end end

local function sts_answer(action, id, expires)
  return ([[<%sResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><%sResult>
<Credentials><AccessKeyId>%s</AccessKeyId><SecretAccessKey>secret-%s</SecretAccessKey>
<SessionToken>token-%s</SessionToken><Expiration>%s</Expiration></Credentials>
</%sResult></%sResponse>]]):format(action, action, id, id, id, utc.iso8601(expires), action, action)
end

describe("aws credential chain over HTTP", function()
  local dir
  before_each(function() dir = support.tmpdir() end)
  after_each(function() support.rm_rf(dir) end)

  it("assumes a role with a web identity token (IRSA) and refreshes before expiry", function()
    local now = 1700000000
    local calls = {}
    local srv = fixture.start(function(req, conn)
      local form = url.parse_query(req.body or "")
      calls[#calls + 1] = { form = form, headers = req.headers }
      if form.WebIdentityToken ~= "jwt-" .. #calls then
        return conn:respond(400, {}, "<ErrorResponse><Error><Code>InvalidIdentityToken</Code>"
          .. "<Message>Token mismatch</Message></Error></ErrorResponse>")
      end
      conn:respond(200, { { "Content-Type", "text/xml" } },
        sts_answer("AssumeRoleWithWebIdentity", "ASIA" .. #calls, now + 3600))
    end)
    local token_file = support.write_file(dir .. "/token", "jwt-1\n")
    local env = { AWS_WEB_IDENTITY_TOKEN_FILE = token_file, AWS_ROLE_ARN = "arn:aws:iam::123456789012:role/autopgo",
      AWS_ROLE_SESSION_NAME = "pod-7", AWS_ENDPOINT_URL_STS = srv.url, AWS_REGION = "eu-west-1" }
    local source = credentials.new({ getenv = env_of(env), home = dir, now = function() return now end })
    local c = assert(run(function() return source:get() end))
    assert.same({ access_key_id = "ASIA1", secret_access_key = "secret-ASIA1", session_token = "token-ASIA1",
      expires = now + 3600, source = "web identity (arn:aws:iam::123456789012:role/autopgo)" }, c)
    local form = calls[1].form
    assert.equals("AssumeRoleWithWebIdentity", form.Action)
    assert.equals("2011-06-15", form.Version)
    assert.equals("arn:aws:iam::123456789012:role/autopgo", form.RoleArn)
    assert.equals("pod-7", form.RoleSessionName)
    assert.is_nil(calls[1].headers.authorization) -- this call is not signed
    -- Kubernetes rotates the token file; the refresh reads it again
    support.write_file(token_file, "jwt-2")
    now = now + 3600 - 200
    c = assert(run(function() return source:get() end))
    assert.equals("ASIA2", c.access_key_id)
    srv:close()
  end)

  it("reports STS refusals as UNAUTHORIZED, keeping the STS error code", function()
    local srv = fixture.start(function(_, conn)
      conn:respond(403, {}, "<ErrorResponse><Error><Code>AccessDenied</Code><Message>Not authorized to perform "
        .. "sts:AssumeRoleWithWebIdentity</Message></Error></ErrorResponse>")
    end)
    local env = { AWS_WEB_IDENTITY_TOKEN_FILE = support.write_file(dir .. "/t", "jwt"), AWS_ROLE_ARN = "arn:r",
      AWS_ENDPOINT_URL = srv.url }
    local c, err, code = run(function() return credentials.new({ getenv = env_of(env), home = dir }):get() end)
    assert.is_nil(c)
    assert.equals("UNAUTHORIZED", code)
    assert.matches("AccessDenied", err, 1, true)
    assert.matches("Not authorized", err, 1, true)
    env.AWS_WEB_IDENTITY_TOKEN_FILE = dir .. "/missing"
    c, err, code = run(function() return credentials.new({ getenv = env_of(env), home = dir }):get() end)
    assert.is_nil(c)
    assert.equals("UNAUTHORIZED", code)
    assert.matches("cannot read the web identity token", err, 1, true)
    srv:close()
  end)

  it("assumes a profile's role with its source profile's keys, signing the STS call", function()
    local seen
    local srv = fixture.start(function(req, conn)
      seen = { form = url.parse_query(req.body or ""), headers = req.headers }
      conn:respond(200, {}, sts_answer("AssumeRole", "ASIAROLE", os.time() + 3600))
    end)
    support.write_file(dir .. "/credentials", "[base]\naws_access_key_id = AKBASE\naws_secret_access_key = SKBASE\n")
    support.write_file(dir .. "/config", "[profile deploy]\nrole_arn = arn:aws:iam::1:role/deploy\n"
      .. "source_profile = base\nexternal_id = ext-9\nregion = us-west-2\n")
    local env = { AWS_SHARED_CREDENTIALS_FILE = dir .. "/credentials", AWS_CONFIG_FILE = dir .. "/config",
      AWS_PROFILE = "deploy", AWS_ENDPOINT_URL_STS = srv.url }
    local c = assert(run(function() return credentials.new({ getenv = env_of(env), home = dir }):get() end))
    assert.equals("ASIAROLE", c.access_key_id)
    assert.equals("AssumeRole", seen.form.Action)
    assert.equals("arn:aws:iam::1:role/deploy", seen.form.RoleArn)
    assert.equals("ext-9", seen.form.ExternalId)
    assert.matches("^AWS4%-HMAC%-SHA256 Credential=AKBASE/%d+/us%-west%-2/sts/aws4_request", seen.headers.authorization)
    srv:close()
  end)

  it("reads the ECS container endpoint with its authorization token", function()
    local seen
    local srv = fixture.start(function(req, conn)
      seen = req
      if req.headers.authorization ~= "Basic ecs-secret" then return conn:respond(401, {}, "no") end
      conn:respond(200, { { "Content-Type", "application/json" } }, cjson.encode({ AccessKeyId = "ASIAECS",
        SecretAccessKey = "s", Token = "t", Expiration = utc.iso8601(os.time() + 7200), RoleArn = "arn:x" }))
    end)
    local env = { AWS_CONTAINER_CREDENTIALS_FULL_URI = srv.url .. "/v2/credentials/abc",
      AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE = support.write_file(dir .. "/auth", "Basic ecs-secret\n"),
      AWS_CONFIG_FILE = dir .. "/none", AWS_SHARED_CREDENTIALS_FILE = dir .. "/none" }
    local c = assert(run(function() return credentials.new({ getenv = env_of(env), home = dir }):get() end))
    assert.equals("ASIAECS", c.access_key_id)
    assert.equals("t", c.session_token)
    assert.equals("ECS container endpoint", c.source)
    assert.equals("/v2/credentials/abc", seen.path)
    env.AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE = nil
    env.AWS_CONTAINER_AUTHORIZATION_TOKEN = "wrong"
    local none, err, code = run(function() return credentials.new({ getenv = env_of(env), home = dir }):get() end)
    assert.is_nil(none)
    assert.equals("UNAUTHORIZED", code)
    assert.matches("HTTP 401", err, 1, true)
    env.AWS_CONTAINER_CREDENTIALS_FULL_URI = "http://203.0.113.9/creds"
    assert.equals("INVALID", select(3, run(function()
      return credentials.new({ getenv = env_of(env), home = dir }):get()
    end)))
    srv:close()
  end)

  it("uses IMDSv2: a session token first, then the role's credentials", function()
    local requests = {}
    local srv = fixture.start(function(req, conn)
      requests[#requests + 1] = req
      if req.method == "PUT" and req.path == "/latest/api/token" then
        assert.equals("21600", req.headers["x-aws-ec2-metadata-token-ttl-seconds"])
        return conn:respond(200, {}, "imds-session-token")
      end
      if req.headers["x-aws-ec2-metadata-token"] ~= "imds-session-token" then return conn:respond(401, {}, "") end
      if req.path == "/latest/meta-data/iam/security-credentials/" then
        return conn:respond(200, {}, "autopgo-node-role\n")
      end
      if req.path == "/latest/meta-data/iam/security-credentials/autopgo-node-role" then
        return conn:respond(200, {}, cjson.encode({ Code = "Success", Type = "AWS-HMAC", AccessKeyId = "ASIAEC2",
          SecretAccessKey = "s", Token = "t", Expiration = utc.iso8601(os.time() + 21600) }))
      end
      conn:respond(404, {}, "")
    end)
    local env = { AWS_EC2_METADATA_SERVICE_ENDPOINT = srv.url, AWS_CONFIG_FILE = dir .. "/none",
      AWS_SHARED_CREDENTIALS_FILE = dir .. "/none" }
    local c = assert(run(function() return credentials.new({ getenv = env_of(env), home = dir }):get() end))
    assert.equals("ASIAEC2", c.access_key_id)
    assert.equals("EC2 instance metadata (autopgo-node-role)", c.source)
    assert.equals(3, #requests)
    srv:close()
  end)

  it("says no credentials were found when instance metadata is unreachable too", function()
    local env = { AWS_EC2_METADATA_SERVICE_ENDPOINT = "http://127.0.0.1:" .. support.free_port(),
      AWS_CONFIG_FILE = dir .. "/none", AWS_SHARED_CREDENTIALS_FILE = dir .. "/none" }
    local c, err, code = run(function() return credentials.new({ getenv = env_of(env), home = dir }):get() end)
    assert.is_nil(c)
    assert.equals("UNAUTHORIZED", code)
    assert.matches("no AWS credentials found", err, 1, true)
    assert.matches("instance metadata", err, 1, true)
  end)
end)
