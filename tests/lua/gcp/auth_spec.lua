-- Specs for lua/autopgo/gcp/auth.lua: the RS256 JWT of a service account key (verified with the
-- openssl command line), the OAuth2 JWT bearer and refresh-token exchanges and the GCE metadata
-- server, each against a loopback HTTP endpoint; token caching and refresh before expiry.
local auth = require "autopgo.gcp.auth"
local cjson = require "cjson"
local crypto = require("autopgo.core").crypto
local url = require "autopgo.url"
local support = require "tests.lua.support"
local fixture = require "tests.lua.http_fixture"

local run = support.run

local function env_of(t) return function(k) return t[k] end end

local function sh(cmd)
  local p = assert(io.popen(cmd .. " 2>&1"))
  local out = p:read("a")
  local ok = p:close()
  return ok, out
end

local function b64url_decode(s)
  return (assert(crypto.base64_decode(s)))
end

describe("gcp auth", function()
  local dir, pem
  setup(function()
    dir = support.tmpdir()
    assert(sh(("openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out '%s/key.pem'"):format(dir)))
    assert(sh(("openssl pkey -in '%s/key.pem' -pubout -out '%s/pub.pem'"):format(dir, dir)))
    pem = support.read_file(dir .. "/key.pem")
  end)
  teardown(function() support.rm_rf(dir) end)

  local function key_file(token_uri, extra)
    local key = { type = "service_account", project_id = "p", private_key_id = "kid-1", private_key = pem,
      client_email = "autopgo@p.iam.gserviceaccount.com", client_id = "1", token_uri = token_uri }
    for k, v in pairs(extra or {}) do key[k] = v end
    return support.write_file(dir .. "/sa.json", cjson.encode(key))
  end

  -- A token endpoint: checks the form and answers like Google's.
  local function token_server(expires_in)
    local seen = {}
    local srv = fixture.start(function(req, conn)
      local form = url.parse_query(req.body or "")
      seen[#seen + 1] = { path = req.path, form = form, headers = req.headers }
      if req.path == "/token" and form.grant_type then
        conn:respond(200, { { "Content-Type", "application/json" } }, cjson.encode({
          access_token = "ya29.token-" .. #seen, expires_in = expires_in or 3599, token_type = "Bearer" }))
      else
        conn:respond(400, { { "Content-Type", "application/json" } },
          cjson.encode({ error = "invalid_grant", error_description = "bad request" }))
      end
    end)
    return srv, seen
  end

  it("signs a service account JWT that openssl verifies", function()
    local key = cjson.decode(support.read_file(key_file("https://oauth2.googleapis.com/token")))
    local jwt = assert(auth.jwt(key, auth.SCOPE_RW, 1700000000))
    local h, c, s = jwt:match("^([^.]+)%.([^.]+)%.([^.]+)$")
    assert.same({ alg = "RS256", typ = "JWT", kid = "kid-1" }, cjson.decode(b64url_decode(h)))
    local claims = cjson.decode(b64url_decode(c))
    assert.equals("autopgo@p.iam.gserviceaccount.com", claims.iss)
    assert.equals(auth.SCOPE_RW, claims.scope)
    assert.equals("https://oauth2.googleapis.com/token", claims.aud)
    assert.equals(1700000000, claims.iat)
    assert.equals(1700003600, claims.exp)
    support.write_file(dir .. "/input", h .. "." .. c)
    support.write_file(dir .. "/sig", b64url_decode(s))
    local ok, out = sh(("openssl dgst -sha256 -verify '%s/pub.pem' -signature '%s/sig' '%s/input'")
      :format(dir, dir, dir))
    assert.is_true(ok, out)
    assert.matches("Verified OK", out, 1, true)
  end)

  it("exchanges the JWT at the key's token_uri and caches the token until near expiry", function()
    local srv, seen = token_server(3600)
    local now = 1700000000
    local source = auth.new({ getenv = env_of({ GOOGLE_APPLICATION_CREDENTIALS = key_file(srv.url .. "/token") }),
      now = function() return now end })
    assert.equals("ya29.token-1", assert(run(function() return source:token() end)))
    assert.equals(1, #seen)
    assert.equals("urn:ietf:params:oauth:grant-type:jwt-bearer", seen[1].form.grant_type)
    local claims = cjson.decode(b64url_decode(seen[1].form.assertion:match("^[^.]+%.([^.]+)")))
    assert.equals(srv.url .. "/token", claims.aud)
    now = now + 3600 - 301
    assert.equals("ya29.token-1", assert(run(function() return source:token() end)))
    now = now + 2
    assert.equals("ya29.token-2", assert(run(function() return source:token() end)))
    assert.equals(2, #seen)
    srv:close()
  end)

  it("uses an authorized user's refresh token", function()
    local srv, seen = token_server()
    local path = support.write_file(dir .. "/user.json", cjson.encode({ type = "authorized_user", client_id = "cid",
      client_secret = "cs", refresh_token = "rt", token_uri = srv.url .. "/token" }))
    local source = auth.new({ getenv = env_of({ GOOGLE_APPLICATION_CREDENTIALS = path }) })
    assert.equals("ya29.token-1", assert(run(function() return source:token() end)))
    assert.same({ grant_type = "refresh_token", client_id = "cid", client_secret = "cs", refresh_token = "rt" },
      seen[1].form)
    srv:close()
  end)

  it("finds gcloud's application default credentials file", function()
    local srv = token_server()
    local config = dir .. "/gcloud"
    os.execute("mkdir -p '" .. config .. "'")
    support.write_file(config .. "/application_default_credentials.json", cjson.encode({ type = "authorized_user",
      client_id = "cid", client_secret = "cs", refresh_token = "rt", token_uri = srv.url .. "/token" }))
    local source = auth.new({ getenv = env_of({ CLOUDSDK_CONFIG = config }) })
    assert.equals("ya29.token-1", assert(run(function() return source:token() end)))
    srv:close()
  end)

  it("asks the GCE metadata server, with Metadata-Flavor: Google", function()
    local seen = {}
    local srv = fixture.start(function(req, conn)
      seen[#seen + 1] = req
      if req.headers["metadata-flavor"] ~= "Google" then return conn:respond(403, {}, "missing header") end
      conn:respond(200, { { "Content-Type", "application/json" } },
        cjson.encode({ access_token = "ya29.from-metadata", expires_in = 3000, token_type = "Bearer" }))
    end)
    local source = auth.new({ getenv = env_of({ GCE_METADATA_HOST = "127.0.0.1:" .. srv.port }),
      home = dir .. "/nohome" })
    assert.equals("ya29.from-metadata", assert(run(function() return source:token() end)))
    assert.equals("/computeMetadata/v1/instance/service-accounts/default/token", seen[1].path)
    assert.equals(auth.SCOPE_RW, url.parse_query(seen[1].query or "").scopes)
    srv:close()
  end)

  it("reports a refused exchange, a bad key and no credentials at all", function()
    local srv = token_server()
    local source = auth.new({ getenv = env_of({ GOOGLE_APPLICATION_CREDENTIALS = key_file(srv.url .. "/wrong") }) })
    local tok, err, code = run(function() return source:token() end)
    assert.is_nil(tok)
    assert.equals("UNAUTHORIZED", code)
    assert.matches("invalid_grant", err, 1, true)
    srv:close()
    source = auth.new({ getenv = env_of({ GOOGLE_APPLICATION_CREDENTIALS = key_file("http://127.0.0.1:1/token",
      { private_key = "-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n" }) }) })
    tok, err, code = run(function() return source:token() end)
    assert.is_nil(tok)
    assert.equals("CRYPTO", code, err)
    support.write_file(dir .. "/ext.json", cjson.encode({ type = "external_account" }))
    source = auth.new({ getenv = env_of({ GOOGLE_APPLICATION_CREDENTIALS = dir .. "/ext.json" }) })
    tok, err, code = run(function() return source:token() end)
    assert.is_nil(tok)
    assert.equals("UNAUTHORIZED", code)
    assert.matches("external_account", err, 1, true)
    local closed = support.free_port()
    source = auth.new({ getenv = env_of({ GCE_METADATA_HOST = "127.0.0.1:" .. closed }), home = dir .. "/nohome" })
    tok, err, code = run(function() return source:token() end)
    assert.is_nil(tok)
    assert.equals("UNAUTHORIZED", code)
    assert.matches("no Google credentials found", err, 1, true)
  end)
end)
