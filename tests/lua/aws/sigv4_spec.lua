-- Specs for lua/autopgo/aws/sigv4.lua against AWS's published vectors: the SigV4 test suite
-- (get-vanilla, get-vanilla-query-order-key-case, post-x-www-form-urlencoded, and get-utf8 /
-- get-space of the 2011 suite for double-encoded paths), the signing-key derivation example, and
-- the S3 developer guide's GET, PUT, list and presigned-URL examples.
local sigv4 = require "autopgo.aws.sigv4"
local crypto = require("autopgo.core").crypto

local SUITE = { access_key_id = "AKIDEXAMPLE", secret_access_key = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY" }
local S3DOC = { access_key_id = "AKIAIOSFODNN7EXAMPLE", secret_access_key = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY" }
local SUITE_OPTS = { region = "us-east-1", service = "service", amz_date = "20150830T123600Z" }
local S3_OPTS = { region = "us-east-1", service = "s3", amz_date = "20130524T000000Z" }

describe("sigv4", function()
  it("derives the signing key of the documentation example", function()
    local k = sigv4.signing_key(SUITE.secret_access_key, "20150830", "us-east-1", "iam")
    assert.equals("c4afb1cc5771d871763a393e44b703571b55cc28424d1a5e86da6ed3c154a4b9", crypto.hex(k))
  end)

  it("signs get-vanilla at every stage", function()
    local req = { method = "GET", path = "/", headers = { Host = "example.amazonaws.com" } }
    local info = sigv4.sign(req, SUITE, SUITE_OPTS)
    assert.equals(table.concat({ "GET", "/", "", "host:example.amazonaws.com", "x-amz-date:20150830T123600Z",
      "", "host;x-amz-date", sigv4.EMPTY_SHA256 }, "\n"), info.canonical_request)
    assert.equals(table.concat({ "AWS4-HMAC-SHA256", "20150830T123600Z", "20150830/us-east-1/service/aws4_request",
      "bb579772317eb040ac9ed261061d46c1f17a8133879d6129b6e1c25292927e63" }, "\n"), info.string_to_sign)
    assert.equals("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "
      .. "SignedHeaders=host;x-amz-date, "
      .. "Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31", req.headers.authorization)
    assert.equals("20150830T123600Z", req.headers["x-amz-date"])
  end)

  it("sorts the query (get-vanilla-query-order-key-case)", function()
    local req = { method = "GET", path = "/", query = "Param2=value2&Param1=value1",
      headers = { Host = "example.amazonaws.com" } }
    local info = sigv4.sign(req, SUITE, SUITE_OPTS)
    assert.matches("\nParam1=value1&Param2=value2\n", info.canonical_request, 1, true)
    assert.equals("b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500", info.signature)
  end)

  it("signs a form POST with its payload hash (post-x-www-form-urlencoded)", function()
    local req = { method = "POST", path = "/", payload_hash = sigv4.sha256_hex("Param1=value1"),
      headers = { ["Content-Type"] = "application/x-www-form-urlencoded", Host = "example.amazonaws.com" } }
    local info = sigv4.sign(req, SUITE, SUITE_OPTS)
    assert.equals("content-type;host;x-amz-date", info.signed_headers)
    assert.equals("ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a", info.signature)
  end)

  it("double-encodes paths for services other than S3 (get-utf8, get-space)", function()
    for _, v in ipairs {
      { "/%E1%88%B4", "/%25E1%2588%25B4", "57b1eb3df3b16a8479c0097b66c0b261cfd65b829419a3f2c3d05319722490b8" },
      { "/%20/foo", "/%2520/foo", "2be9e587d1ee1f0fd02128724b86b4358ba3630d39f493b6e06610a19a50779e" },
    } do
      local creq = sigv4.canonical_request({ method = "GET", path = v[1],
        headers = { Date = "Mon, 09 Sep 2011 23:36:00 GMT", Host = "host.foo.com" } }, true)
      assert.equals(table.concat({ "GET", v[2], "", "date:Mon, 09 Sep 2011 23:36:00 GMT", "host:host.foo.com", "",
        "date;host", sigv4.EMPTY_SHA256 }, "\n"), creq)
      assert.equals(v[3], (sigv4.signature(SUITE.secret_access_key, "20110909T233600Z", "us-east-1", "host", creq)))
    end
  end)

  it("signs the S3 GET Object example with x-amz-content-sha256", function()
    local req = { method = "GET", path = "/test.txt",
      headers = { host = "examplebucket.s3.amazonaws.com", range = "bytes=0-9" } }
    local info = sigv4.sign(req, S3DOC, S3_OPTS)
    assert.equals(table.concat({ "GET", "/test.txt", "", "host:examplebucket.s3.amazonaws.com", "range:bytes=0-9",
      "x-amz-content-sha256:" .. sigv4.EMPTY_SHA256, "x-amz-date:20130524T000000Z", "",
      "host;range;x-amz-content-sha256;x-amz-date", sigv4.EMPTY_SHA256 }, "\n"), info.canonical_request)
    assert.equals("7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972",
      info.string_to_sign:match("([^\n]+)$"))
    assert.equals("f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41", info.signature)
    assert.equals(sigv4.EMPTY_SHA256, req.headers["x-amz-content-sha256"])
  end)

  it("signs the S3 PUT Object example, keeping the encoded path as is", function()
    local body = "Welcome to Amazon S3."
    local hash = sigv4.sha256_hex(body)
    assert.equals("44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072", hash)
    local req = { method = "PUT", path = "/test%24file.text", payload_hash = hash, headers = {
      Date = "Fri, 24 May 2013 00:00:00 GMT", Host = "examplebucket.s3.amazonaws.com",
      ["x-amz-storage-class"] = "REDUCED_REDUNDANCY", ["Content-Length"] = tostring(#body) } }
    local info = sigv4.sign(req, S3DOC, S3_OPTS)
    assert.equals("date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class", info.signed_headers)
    assert.equals("98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd", info.signature)
  end)

  it("signs the S3 GET Bucket (list) example with a query", function()
    local req = { method = "GET", path = "/", query = { { "max-keys", "2" }, { "prefix", "J" } },
      headers = { host = "examplebucket.s3.amazonaws.com" } }
    local info = sigv4.sign(req, S3DOC, S3_OPTS)
    assert.equals("34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7", info.signature)
  end)

  it("presigns the S3 example URL", function()
    local q, sig = sigv4.presign({ method = "GET", path = "/test.txt",
      headers = { host = "examplebucket.s3.amazonaws.com" } }, S3DOC,
      { region = "us-east-1", service = "s3", amz_date = "20130524T000000Z", expires = 86400 })
    assert.equals("aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404", sig)
    assert.equals("X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1"
      .. "%2Fs3%2Faws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host"
      .. "&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404", q)
  end)

  it("signs a streaming upload chunk by chunk (the S3 guide's aws-chunked example)", function()
    local req = { method = "PUT", path = "/examplebucket/chunkObject.txt", payload_hash = sigv4.STREAMING,
      headers = { Host = "s3.amazonaws.com", ["x-amz-storage-class"] = "REDUCED_REDUNDANCY" } }
    local encoded = sigv4.streaming_headers(req.headers, 66560, 65536)
    assert.equals(66824, encoded)
    local info = sigv4.sign(req, S3DOC, S3_OPTS)
    assert.equals("content-encoding;content-length;host;x-amz-content-sha256;x-amz-date;"
      .. "x-amz-decoded-content-length;x-amz-storage-class", info.signed_headers)
    assert.equals("4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9", info.signature)
    local encode = sigv4.chunk_encoder(S3DOC, info, S3_OPTS)
    local c1, c2, c3 = encode(("a"):rep(65536)), encode(("a"):rep(1024)), encode("")
    assert.equals("10000;chunk-signature=ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648\r\n",
      c1:sub(1, 88))
    assert.equals("400;chunk-signature=0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497\r\n",
      c2:sub(1, 86))
    assert.equals("0;chunk-signature=b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9\r\n\r\n", c3)
    assert.equals(encoded, #c1 + #c2 + #c3)
  end)

  it("adds and signs a session token, and merges repeated header values", function()
    local req = { method = "GET", path = "/", headers = { Host = "example.amazonaws.com",
      ["My-Header1"] = { "  a   b  c  ", "second" } } }
    local info = sigv4.sign(req, { access_key_id = "AK", secret_access_key = "SK", session_token = "TOKEN" },
      SUITE_OPTS)
    assert.equals("host;my-header1;x-amz-date;x-amz-security-token", info.signed_headers)
    assert.matches("\nmy-header1:a b c,second\n", info.canonical_request, 1, true)
    assert.equals("TOKEN", req.headers["x-amz-security-token"])
  end)

  it("encodes with upper-case hex and keeps only unreserved characters", function()
    assert.equals("a%2Fb%20c~d.e_f-g%2B%C3%A9", sigv4.uri_encode("a/b c~d.e_f-g+\u{e9}"))
    assert.equals("/a%20b/c", sigv4.uri_encode("/a b/c", true))
    assert.equals("a=1&a=2&b=%2F", sigv4.canonical_query({ { "b", "/" }, { "a", "2" }, { "a", "1" } }))
    assert.equals("uploads=", sigv4.canonical_query({ { "uploads", "" } }))
  end)
end)
