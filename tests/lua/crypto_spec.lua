-- Specs for the crypto binding (core/lua/crypto.c): vectors, hashers, file digests on the
-- thread pool, UUIDs and RS256 signatures checked by the openssl command line.
local crypto = require("autopgo.core").crypto
local async = require "autopgo.async"
local support = require "tests.lua.support"

describe("crypto", function()
  it("computes digests and HMACs", function()
    assert.equals("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
      crypto.hex(crypto.digest("sha256", "abc")))
    assert.equals("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
      crypto.hex(crypto.hmac("sha256", "Jefe", "what do ya want for nothing?")))
    assert.has_error(function() crypto.digest("crc", "x") end)
  end)

  it("streams a hash", function()
    local h = crypto.hasher("md5")
    h:update("a"):update("bc")
    assert.equals(crypto.digest("md5", "abc"), h:digest())
    assert.has_error(function() h:update("more") end)
  end)

  it("round-trips base64 in both alphabets and rejects garbage", function()
    local all = {}
    for i = 0, 255 do all[#all + 1] = string.char(i) end
    local bytes = table.concat(all)
    assert.equals(bytes, crypto.base64_decode(crypto.base64_encode(bytes)))
    assert.equals(bytes, crypto.base64_decode(crypto.base64_encode(bytes, true)))
    local v, err, code = crypto.base64_decode("###")
    assert.is_nil(v)
    assert.equals("INVALID", code)
    assert.matches("invalid base64", err)
  end)

  it("makes version 4 UUIDs", function()
    local seen = {}
    for _ = 1, 100 do
      local u = crypto.uuid4()
      assert.matches("^%x%x%x%x%x%x%x%x%-%x%x%x%x%-4%x%x%x%-[89ab]%x%x%x%-%x%x%x%x%x%x%x%x%x%x%x%x$", u)
      assert.is_nil(seen[u])
      seen[u] = true
    end
    assert.equals(16, #crypto.random(16))
  end)

  it("compares secrets byte for byte with equal", function()
    local d = crypto.digest("sha256", "token")
    assert.is_true(crypto.equal(d, crypto.digest("sha256", "token")))
    assert.is_false(crypto.equal(d, crypto.digest("sha256", "tokeN")))
    assert.is_false(crypto.equal(d, d:sub(1, 31)))
    assert.is_false(crypto.equal(d:sub(1, 31) .. "\0", d))
    assert.is_true(crypto.equal("", ""))
    assert.has_error(function() crypto.equal(d, nil) end)
  end)

  it("hashes a file on the thread pool", function()
    local dir = support.tmpdir()
    local path = support.write_file(dir .. "/f", ("x"):rep(200000))
    local digest, size = support.run(function()
      return async.await(crypto.digest_file, "sha256", path)
    end)
    assert.equals(crypto.digest("sha256", ("x"):rep(200000)), digest)
    assert.equals(200000, size)
    local v, err, code = support.run(function()
      return async.await(crypto.digest_file, "sha256", dir .. "/missing")
    end)
    assert.is_nil(v)
    assert.equals("NOT_FOUND", code)
    assert.matches("missing", err)
    support.rm_rf(dir)
  end)

  it("signs with an RSA key so that openssl verifies the signature", function()
    local dir = support.tmpdir()
    assert.is_true(os.execute(("openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 "
      .. "-out %s/k.pem 2>/dev/null && "
      .. "openssl pkey -in %s/k.pem -pubout -out %s/pub.pem"):format(dir, dir, dir)))
    local pem = support.read_file(dir .. "/k.pem")
    local sig = assert(crypto.sign_sha256(pem, "header.payload"))
    assert.equals(256, #sig)
    support.write_file(dir .. "/sig", sig)
    support.write_file(dir .. "/data", "header.payload")
    assert.is_true(os.execute(("openssl dgst -sha256 -verify %s/pub.pem -signature %s/sig %s/data >/dev/null")
      :format(dir, dir, dir)))
    local bad, err = crypto.sign_sha256("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "x")
    assert.is_nil(bad)
    assert.matches("^CRYPTO: invalid PEM private key", err)
    support.rm_rf(dir)
  end)
end)
