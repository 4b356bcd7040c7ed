-- Specs of lua/autopgo/json.lua: output byte for byte like Go's encoding/json, and decoding errors.
local json = require "autopgo.json"

describe("json", function()
  it("writes object fields in the given order, compactly", function()
    assert.equals('{"key":"app/staging/1730075435311"}',
      json.encode(json.object("key", "app/staging/1730075435311")))
    assert.equals('{"message":"invalid app name","code":400}',
      json.encode(json.object("message", "invalid app name", "code", 400)))
    assert.equals('{"b":1,"a":[1,2.5,"x",true,null]}',
      json.encode(json.object("b", 1, "a", { 1, 2.5, "x", true, json.null })))
  end)

  it("writes empty lists as [] when marked, nil as null, and omits json.omit fields", function()
    assert.equals('{"profiles":[]}', json.encode(json.object("profiles", json.array())))
    assert.equals('{"dependencies":null}', json.encode(json.object("dependencies", nil)))
    assert.equals('{"name":"x"}', json.encode(json.object("name", "x", "message", json.omit)))
    assert.equals("{}", json.encode({}))
  end)

  it("sorts the keys of plain maps as Go does for map[string]T", function()
    assert.equals('{"a":1,"b":{"c":2,"d":3}}', json.encode({ b = { d = 3, c = 2 }, a = 1 }))
  end)

  it("escapes like Go: quotes, backslashes, control characters, <>&, U+2028/9, bad UTF-8", function()
    assert.equals([["a\"b\\c\n\t\u0001\u003cx\u003e\u0026 \u2028\ufffd/é"]],
      json.encode('a"b\\c\n\t\1<x>& \226\128\168\255/é'))
  end)

  it("writes numbers like Go", function()
    assert.equals("[1,-2,0.1,1e+21,1e-7,3.5]", json.encode({ 1, -2, 0.1, 1e21, 1e-7, 3.5 }))
    assert.has_error(function() json.encode(0 / 0) end)
  end)

  it("adds the trailing newline of json.Encoder for HTTP bodies", function()
    assert.equals("{}\n", json.encode_line(json.object()))
  end)

  it("decodes, and reports bad JSON with the INVALID code", function()
    assert.same({ a = { 1, 2 } }, json.decode('{"a":[1,2]}'))
    local v, err, code = json.decode("{nope")
    assert.is_nil(v)
    assert.equals("INVALID", code)
    assert.matches("^INVALID: ", err)
  end)
end)
