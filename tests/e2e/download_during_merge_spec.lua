-- End-to-end: downloads of the merged profile while the embedded worker keeps replacing it. Every
-- download must succeed, and every body must be a whole profile whose sha256 is its ETag (issue
-- 18, item 1: about 1 in 1,200 used to fail or come back cut short).
local support = require "tests.lua.support"
local profiles = require "tests.lua.profiles"
local serverproc = require "tests.e2e.serverproc"
local async = require "autopgo.async"
local http = require "autopgo.http"
local core = require "autopgo.core"

local run = support.run

describe("downloads during merges (embedded server)", function()
  local dir
  before_each(function() dir = support.tmpdir() end)
  after_each(function()
    run(serverproc.cleanup)
    support.rm_rf(dir)
  end)

  it("never fail, and each one is one whole version under its own digest", function()
    run(function()
      local s = serverproc.start(dir)
      local url = s.url .. "/api/profile/app"
      local upload = profiles.file(profiles.usable[1])
      local function post()
        local r = assert(http.request { method = "POST", url = url, body = upload })
        assert.equals(201, r.status, r.body)
      end
      post()
      for _ = 1, 400 do
        local r = assert(http.request { url = url })
        if r.status == 200 then break end
        async.sleep(25)
      end

      local uploading, uploads = true, 0
      local downloads, failures, etags, distinct = 0, {}, {}, 0
      local function downloader()
        while uploading do
          local r, err = http.request { url = url }
          downloads = downloads + 1
          if not r then
            failures[#failures + 1] = "transfer failed: " .. tostring(err)
          elseif r.status ~= 200 then
            failures[#failures + 1] = ("status %d: %s"):format(r.status, r.body)
          else
            local digest = '"sha256:' .. core.crypto.hex(core.crypto.digest("sha256", r.body)) .. '"'
            if digest ~= r.headers.etag then
              failures[#failures + 1] = ("body of %d bytes with digest %s under ETag %s"):format(#r.body, digest,
                tostring(r.headers.etag))
            else
              local info, verr = async.await(core.pprof.validate_async, r.body, {})
              if not info then failures[#failures + 1] = "body does not parse: " .. tostring(verr) end
            end
            if not etags[r.headers.etag] then
              etags[r.headers.etag] = true
              distinct = distinct + 1
            end
          end
        end
      end
      local fns = {}
      for i = 1, 6 do fns[i] = downloader end
      fns[#fns + 1] = function()
        for _ = 1, 60 do
          post()
          uploads = uploads + 1
          async.sleep(30)
        end
        -- let the last merges land under the downloaders too
        async.sleep(500)
        uploading = false
      end
      async.all(fns)
      assert.same({}, failures)
      assert.equals(60, uploads)
      assert.is_true(distinct >= 10, ("only %d versions were seen in %d downloads: merges did not run during them")
        :format(distinct, downloads))
      assert.is_true(downloads >= 200, ("only %d downloads"):format(downloads))
      assert.equals(0, serverproc.stop(s))
    end, 600000)
  end)
end)
