-- Specs for lua/autopgo/azure/{sharedkey,sas,connection_string}.lua: Microsoft's documented
-- canonicalization examples, signatures cross-checked with the openssl command line (an
-- independent HMAC implementation), SAS tokens and connection string forms. The same code is run
-- against Azurite, which verifies Shared Key and SAS, in tests/lua/blob/azblob_spec.lua.
local sharedkey = require "autopgo.azure.sharedkey"
local sas = require "autopgo.azure.sas"
local connection_string = require "autopgo.azure.connection_string"
local url = require "autopgo.url"
local support = require "tests.lua.support"

local KEY = connection_string.DEV_KEY

-- HMAC-SHA256 by openssl, base64: the oracle for signatures.
local function openssl_hmac(key_b64, text)
  local dir = support.tmpdir()
  support.write_file(dir .. "/sts", text)
  local p = assert(io.popen(("K=$(printf %%s '%s' | base64 -d | od -An -tx1 | tr -d ' \\n'); "
    .. "openssl dgst -sha256 -mac HMAC -macopt hexkey:$K -binary '%s/sts' | base64 -w0"):format(key_b64, dir)))
  local out = p:read("a")
  p:close()
  support.rm_rf(dir)
  return out
end

describe("azure shared key", function()
  it("canonicalizes resources like Microsoft's examples", function()
    assert.equals("/myaccount/mycontainer\ncomp:metadata\nrestype:container",
      sharedkey.canonical_resource("myaccount", "/mycontainer", { restype = "container", comp = "metadata" }))
    assert.equals("/myaccount/container\ncomp:list\ninclude:metadata,snapshots,uncommittedblobs\nrestype:container",
      sharedkey.canonical_resource("myaccount", "/container", { { "restype", "container" }, { "comp", "list" },
        { "include", "snapshots" }, { "include", "metadata" }, { "include", "uncommittedblobs" } }))
    assert.equals("/myaccount/myaccount/mycontainer\ncomp:metadata\nrestype:container\ntimeout:20",
      sharedkey.canonical_resource("myaccount", "/myaccount/mycontainer",
        { { "restype", "container" }, { "comp", "metadata" }, { "timeout", "20" } }))
    assert.equals("/acct/", sharedkey.canonical_resource("acct", "", nil))
  end)

  it("builds the string to sign of the documented example and signs it like openssl", function()
    local req = { method = "PUT", path = "/myaccount/mycontainer", query = { restype = "container", comp = "metadata",
      timeout = "20" }, headers = { ["x-ms-date"] = "Sun, 11 Oct 2009 21:49:13 GMT", ["x-ms-version"] = "2009-09-19",
      ["x-ms-meta-m1"] = "  v1   spaced ", ["Content-Length"] = "0", Date = "ignored when x-ms-date is set" } }
    local sts = assert(sharedkey.sign(req, "myaccount", KEY))
    assert.equals("PUT\n\n\n\n\n\n\n\n\n\n\n\n" .. "x-ms-date:Sun, 11 Oct 2009 21:49:13 GMT\nx-ms-meta-m1:v1 spaced\n"
      .. "x-ms-version:2009-09-19\n/myaccount/myaccount/mycontainer\ncomp:metadata\nrestype:container\ntimeout:20", sts)
    assert.equals("SharedKey myaccount:" .. openssl_hmac(KEY, sts), req.headers.authorization)
  end)

  it("puts the standard headers in their fixed places", function()
    local sts = sharedkey.string_to_sign({ method = "put", path = "/c/b", headers = { ["Content-Type"] = "text/plain",
      ["content-length"] = "11", ["If-Match"] = '"0x8D"', ["If-None-Match"] = "*", Range = "bytes=0-9",
      ["Content-MD5"] = "md5", ["x-ms-blob-type"] = "BlockBlob" } }, "a")
    assert.equals('PUT\n\n\n11\nmd5\ntext/plain\n\n\n"0x8D"\n*\n\nbytes=0-9\nx-ms-blob-type:BlockBlob\n/a/c/b', sts)
  end)

  it("rejects a key that is not base64", function()
    local sts, err, code = sharedkey.sign({ method = "GET", path = "/", headers = {} }, "a", "not base64!")
    assert.is_nil(sts)
    assert.equals("INVALID", code)
    assert.matches("not base64", err, 1, true)
  end)
end)

describe("azure sas", function()
  it("generates an account SAS whose signature openssl agrees with", function()
    local token = assert(sas.account_sas("devstoreaccount1", KEY, { permissions = "rwdlac", services = "b",
      resource_types = "sco", expiry = 1893456000, protocol = "https,http" }))
    local q = url.parse_query(token)
    assert.equals(sas.VERSION, q.sv)
    assert.equals("2030-01-01T00:00:00Z", q.se)
    local sts = "devstoreaccount1\nrwdlac\nb\nsco\n\n2030-01-01T00:00:00Z\n\nhttps,http\n" .. sas.VERSION .. "\n\n"
    assert.equals(sts, sas.account_string_to_sign("devstoreaccount1", { permissions = "rwdlac", services = "b",
      resource_types = "sco", expiry = "2030-01-01T00:00:00Z", protocol = "https,http", version = sas.VERSION }))
    assert.equals(openssl_hmac(KEY, sts), q.sig)
    -- versions before 2020-12-06 have no encryption scope line
    assert.equals("a\nr\nb\no\n\nE\n\n\n2019-12-12\n", sas.account_string_to_sign("a", { permissions = "r",
      services = "b", resource_types = "o", expiry = "E", version = "2019-12-12" }))
  end)

  it("normalizes pasted tokens", function()
    assert.equals("sv=1&sig=x", sas.normalize("?sv=1&sig=x"))
    assert.equals("sv=1&sig=x", sas.normalize(" sv=1&sig=x\n"))
    assert.equals("sv=1", sas.normalize("https://a.blob.core.windows.net/c?sv=1"))
    assert.is_nil(sas.normalize(""))
    assert.equals("http://h/c?restype=container&sv=1", sas.append("http://h/c?restype=container", "sv=1"))
    assert.equals("http://h/c?sv=1", sas.append("http://h/c", "sv=1"))
  end)
end)

describe("azure connection strings", function()
  it("parses the account-key form with the default and a custom endpoint suffix", function()
    local c = assert(connection_string.parse(
      "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=a2V5PT0=;EndpointSuffix=core.chinacloudapi.cn"))
    assert.same({ account = "acct", key = "a2V5PT0=", protocol = "https",
      blob_endpoint = "https://acct.blob.core.chinacloudapi.cn" }, c)
    c = assert(connection_string.parse("AccountName=acct;AccountKey=k=="))
    assert.equals("https://acct.blob.core.windows.net", c.blob_endpoint)
  end)

  it("parses Azurite's form and UseDevelopmentStorage", function()
    local c = assert(connection_string.parse("DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey="
      .. KEY .. ";BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1/;QueueEndpoint=http://127.0.0.1:10001/x;"))
    assert.equals("http://127.0.0.1:10000/devstoreaccount1", c.blob_endpoint)
    assert.equals(KEY, c.key)
    c = assert(connection_string.parse("UseDevelopmentStorage=true"))
    assert.same({ account = "devstoreaccount1", key = KEY, protocol = "http",
      blob_endpoint = "http://127.0.0.1:10000/devstoreaccount1" }, c)
  end)

  it("parses the SAS form and finds the account in the endpoint", function()
    local c = assert(connection_string.parse("BlobEndpoint=https://acct.blob.core.windows.net/;"
      .. "SharedAccessSignature=?sv=2021-08-06&sig=abc%3D"))
    assert.equals("acct", c.account)
    assert.equals("sv=2021-08-06&sig=abc%3D", c.sas)
    assert.is_nil(c.key)
    c = assert(connection_string.parse("BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;SharedAccessSignature=s"))
    assert.equals("devstoreaccount1", c.account)
  end)

  it("rejects what is not a connection string", function()
    for _, bad in ipairs { "", "   ", "garbage", "AccountKey=k", "Foo=bar" } do
      local c, err, code = connection_string.parse(bad)
      assert.is_nil(c, bad)
      assert.equals("INVALID", code)
      assert.matches("^INVALID: Azure connection string", err)
    end
  end)
end)
