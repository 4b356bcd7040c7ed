-- Specs for lua/autopgo/client.lua's error handling: the server's {"message","code"} documents
-- become "message (code)" with a house code, anything else keeps the status and some text.
local client = require "autopgo.client"

describe("autopgo.client errors", function()
  it("keeps the server's message and code", function()
    local v, err, code, status = client.response_error { status = 400,
      body = '{"message":"invalid app name","code":400}\n' }
    assert.is_nil(v)
    assert.equals("INVALID: invalid app name (400)", err)
    assert.equals("INVALID", code)
    assert.equals(400, status)
    assert.equals("invalid app name (400)", client.message(err, status))
  end)

  it("maps statuses to house codes", function()
    for status, want in pairs { [404] = "NOT_FOUND", [413] = "TOO_LARGE", [401] = "UNAUTHORIZED", [403] = "FORBIDDEN",
      [412] = "PRECONDITION_FAILED", [500] = "SERVER", [503] = "SERVER", [418] = "HTTP" } do
      local _, _, code = client.response_error { status = status, body = "" }
      assert.equals(want, code, status)
      assert.is_string(require("autopgo.fail").codes[code], code .. " is not in fail.codes")
    end
    -- and the JSON API's form of it (kube, consul, nomad) keeps that code and the status
    local _, err, code, status = require("autopgo.json_api").status_error("GET", "http://h/x?token=s",
      { status = 418, body = "" })
    assert.equals("HTTP: GET http://h/x: the server answered 418", err)
    assert.equals("HTTP", code)
    assert.equals(418, status)
  end)

  it("describes an answer that is not the API's error document", function()
    local _, err = client.response_error { status = 502, body = "<html>\n  Bad   gateway\n</html>\n" }
    assert.equals("SERVER: the server answered 502: <html> Bad gateway </html>", err)
    _, err = client.response_error { status = 404, body = "" }
    assert.equals("NOT_FOUND: the server answered 404", err)
  end)

  it("leaves transport errors whole", function()
    assert.equals("UNAVAILABLE: GET http://x/: refused", client.message("UNAVAILABLE: GET http://x/: refused", nil))
  end)

  it("escapes app names in URLs", function()
    local api = client.new("http://h:1/")
    assert.equals("http://h:1/api/profile", api:profile_url())
    assert.equals("http://h:1/api/profile/a%2Fb%20c", api:profile_url("a/b c"))
  end)
end)
