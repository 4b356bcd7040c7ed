-- Specs for lua/autopgo/commands/status.lua: how the server's account of an app's uploads (merged
-- profile, staged and rejected uploads with their reasons) is printed for a person.
local status = require "autopgo.commands.status"

describe("autopgo status", function()
  local t = "2024-10-28T00:30:35Z"
  local local_time = os.date("%Y-%m-%d %H:%M:%S %Z", 1730075435)

  it("prints the merged profile, the staged uploads as a table and each rejected one with why", function()
    local text = status.format {
      app = "my-app",
      merged = { size = 3 * 1024 * 1024, lastModified = t },
      staged = {
        { key = "my-app/staging/1730075435000000001", size = 512, lastModified = t },
        { key = "my-app/staging/1730075435000000002", size = 10240, lastModified = "2024-10-28T00:30:35.5Z" },
      },
      rejected = {
        { key = "my-app/rejected/1730075435000000000", reason = "POLICY: no thanks\nsecond line", lastModified = t },
      },
    }
    assert.equals("my-app: merged profile of 3.0 MiB, last updated " .. local_time .. "\n"
      .. "\n2 uploads waiting to be merged:\n"
      .. "  KEY                                 SIZE      UPLOADED\n"
      .. "  my-app/staging/1730075435000000001  512 B     " .. local_time .. "\n"
      .. "  my-app/staging/1730075435000000002  10.0 KiB  " .. local_time .. "\n"
      .. "\n1 rejected upload:\n"
      .. "  my-app/rejected/1730075435000000000  (rejected " .. local_time .. ")\n"
      .. "    POLICY: no thanks\n    second line\n", text)
  end)

  it("says so when there is nothing merged, staged or rejected", function()
    assert.equals("app: no merged profile yet\n\nno uploads waiting to be merged\n\nno rejected uploads\n",
      status.format { app = "app", staged = {}, rejected = {} })
  end)
end)
