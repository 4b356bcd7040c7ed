-- Specs for lua/autopgo/url.lua: HTTP and gocloud.dev-style URLs, escaping, queries.
local url = require "autopgo.url"

describe("url.parse", function()
  it("parses an HTTP URL", function()
    local u = assert(url.parse("http://user:p%40ss@127.0.0.1:8080/api/profile/x?a=1&b=two+words#frag"))
    assert.equals("http", u.scheme)
    assert.equals("user", u.user)
    assert.equals("p@ss", u.password)
    assert.equals("127.0.0.1", u.host)
    assert.equals(8080, u.port)
    assert.equals("/api/profile/x", u.path)
    assert.same({ a = "1", b = "two words" }, u.query)
  end)

  it("parses gocloud.dev blob and bus URLs", function()
    local s3 = assert(url.parse(
      "s3://my-bucket?region=us-east-1&endpoint=http%3A%2F%2F127.0.0.1%3A7480&use_path_style=true"))
    assert.equals("s3", s3.scheme)
    assert.equals("my-bucket", s3.host)
    assert.equals("http://127.0.0.1:7480", s3.query.endpoint)
    local f = assert(url.parse("file:///var/lib/autopgo"))
    assert.equals("", f.host)
    assert.equals("/var/lib/autopgo", f.path)
    local ps = assert(url.parse("gcppubsub://projects/p1/subscriptions/s1"))
    assert.equals("projects", ps.host)
    assert.equals("/p1/subscriptions/s1", ps.path)
    local sns = assert(url.parse("awssns:///arn:aws:sns:us-east-1:123456789012:topic?region=us-east-1"))
    assert.equals("", sns.host)
    assert.equals("/arn:aws:sns:us-east-1:123456789012:topic", sns.path)
    local v6 = assert(url.parse("http://[::1]:9000/x"))
    assert.equals("::1", v6.host)
    assert.equals(9000, v6.port)
  end)

  it("rejects things that are not URLs", function()
    for _, s in ipairs { "", "localhost:8080", "/just/a/path", "://x" } do
      local u, err, code = url.parse(s)
      assert.is_nil(u)
      assert.equals("INVALID", code)
      assert.matches("INVALID", err)
    end
  end)

  it("escapes and encodes queries stably", function()
    assert.equals("a%20b%2Fc", url.escape("a b/c"))
    assert.equals("a%20b/c", url.escape("a b/c", "/"))
    assert.equals("a=1&b=x%2By&c=%C3%A9", url.encode_query { c = "é", a = 1, b = "x+y" })
    assert.equals("é", url.unescape("%C3%A9"))
  end)
end)

describe("blob and bus dispatch", function()
  local blob = require "autopgo.blob"
  local bus = require "autopgo.bus"

  it("names unsupported schemes", function()
    local s, err, code = blob.open("ftp://x")
    assert.is_nil(s)
    assert.equals("INVALID", code)
    assert.matches("unsupported blob store scheme \"ftp\"", err)
    local w, err2 = bus.writer("smtp://x")
    assert.is_nil(w)
    assert.matches("unsupported event bus scheme \"smtp\"", err2)
  end)
end)
