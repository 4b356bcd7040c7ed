-- Specs of lua/autopgo/rest.lua: how a failed exchange is reported (one house code in front).
local support = require "tests.lua.support"
local rest = require "autopgo.rest"

describe("rest.call", function()
  it("reports a refused connection with exactly one code in front", function()
    support.run(function()
      local res, err, code = rest.call({ deadline = 1, name = "s3://bkt" }, function()
        return { method = "GET", url = "http://127.0.0.1:1/bkt", timeout = 1 }
      end, function() return "INVALID: unexpected", "INVALID" end)
      assert.is_nil(res)
      assert.equals("UNAVAILABLE", code)
      assert.matches("^UNAVAILABLE: ", err)
      assert.is_nil(err:match("^[A-Z_]+: [A-Z_]+: "), err)
      assert.matches("127.0.0.1:1/bkt", err, 1, true)
      assert.matches("(s3://bkt)", err, 1, true)
    end)
  end)

  it("puts the code it returns in front of a message that carries another one", function()
    support.run(function()
      local http = require "autopgo.http"
      local real = http.request
      http.request = function() return nil, "TIMEOUT: GET http://x/: Timeout was reached", "TIMEOUT" end
      local res, err, code = rest.call({ deadline = 0.2, name = "svc" }, function()
        return { method = "GET", url = "http://x/" }
      end, function() return "INVALID: unexpected", "INVALID" end)
      http.request = real
      assert.is_nil(res)
      assert.equals("UNAVAILABLE", code)
      assert.matches("^UNAVAILABLE: GET http://x/: Timeout was reached %(svc%)", err)
    end)
  end)
end)
