-- Keeps the build honest: CMake source lists, binding registrations, embedded Lua files, the
-- rockspec and the files on disk must agree, so nothing drifts silently.
local support = require "tests.lua.support"

local root = support.root

local function lines(cmd)
  local out = {}
  local p = assert(io.popen(cmd))
  for l in p:lines() do out[#out + 1] = l end
  p:close()
  return out
end

local function tracked(pattern)
  return lines(("cd %q && git ls-files --cached --others --exclude-standard -- %s"):format(root, pattern))
end

describe("layout", function()
  it("has the top level the project promises", function()
    for _, p in ipairs { "CMakeLists.txt", "core", "lua/autopgo", "lua/roles", "lua/discovery",
      "config.example.lua", "rocks", "tests", "README.md", "CONTRIBUTING.md", "Makefile", "scripts", "bench",
      ".ci/run", ".clang-format", ".luacheckrc", ".busted" } do
      assert.is_truthy(io.open(root .. "/" .. p), p .. " is missing")
    end
    -- and nothing else: the top level is exactly what the user asked for
    local allowed = { ["CMakeLists.txt"] = true, core = true, lua = true, ["config.example.lua"] = true,
      rocks = true, tests = true, ["README.md"] = true, ["CONTRIBUTING.md"] = true, Makefile = true, scripts = true,
      bench = true, [".ci"] = true, [".clang-format"] = true, [".luacheckrc"] = true, [".busted"] = true,
      [".gitignore"] = true, deploy = true }
    for _, f in ipairs(tracked(".")) do
      local top = f:match("^[^/]+")
      assert.is_true(allowed[top] == true, top .. " is not part of the promised top level")
    end
  end)

  it("lists every C file of core/ in its directory's CMakeLists.txt, and nothing else", function()
    local by_dir = {}
    for _, f in ipairs(tracked("'core/*.c'")) do
      local dir, name = f:match("^(.*)/([^/]+)$")
      by_dir[dir] = by_dir[dir] or {}
      by_dir[dir][name] = true
    end
    for dir, files in pairs(by_dir) do
      local cm = support.read_file(root .. "/" .. dir .. "/CMakeLists.txt")
      assert.is_string(cm, dir .. "/CMakeLists.txt is missing")
      local listed = {}
      for name in cm:gmatch("([%w_%-]+%.c)%f[^%w_]") do listed[name] = true end
      for name in pairs(files) do
        assert.is_true(listed[name] == true, dir .. "/" .. name .. " is not in " .. dir .. "/CMakeLists.txt")
      end
      for name in pairs(listed) do
        -- generated files live in the build tree: ${CMAKE_CURRENT_BINARY_DIR}/name.c
        if cm:find("BINARY_DIR}/" .. name, 1, true) then files[name] = true end
        assert.is_true(files[name] == true, dir .. "/CMakeLists.txt lists " .. name .. " which is not on disk")
      end
    end
  end)

  it("registers every binding opener in core/lua/modules.h and declares it in binding.h", function()
    local modules = support.read_file(root .. "/core/lua/modules.h")
    local binding = support.read_file(root .. "/core/lua/binding.h")
    local defined = {}
    for _, f in ipairs(tracked("'core/lua/*.c'")) do
      local src = support.read_file(root .. "/" .. f)
      for name in src:gmatch("\nint (ap_open_[%w_]+)%(lua_State %*L%)") do defined[name] = f end
    end
    assert.is_not_nil(next(defined), "no openers found")
    for name, f in pairs(defined) do
      assert.is_truthy(modules:find(name .. "}", 1, true), name .. " (" .. f .. ") is not in modules.h")
      assert.is_truthy(binding:find("int " .. name .. "(lua_State *L);", 1, true), name .. " is not declared")
    end
    for name in modules:gmatch("(ap_open_[%w_]+)}") do
      assert.is_not_nil(defined[name], "modules.h registers " .. name .. " which no binding defines")
    end
  end)

  it("embeds exactly the Lua files under lua/ in the host binary", function()
    local host = require "autopgo.host"
    local embedded = {}
    for _, f in ipairs(host.files()) do embedded[f] = true end
    local on_disk = {}
    for _, f in ipairs(tracked("'lua/*.lua'")) do on_disk[f:sub(5)] = true end
    for f in pairs(on_disk) do assert.is_true(embedded[f] == true, f .. " is not embedded (rebuild?)") end
    for f in pairs(embedded) do assert.is_true(on_disk[f] == true, f .. " is embedded but not on disk") end
  end)

  it("has a rockspec that builds with CMake and installs what the library needs", function()
    local files = tracked("'rocks/*.rockspec'")
    assert.same({ "rocks/autopgo-scm-1.rockspec" }, files)
    local env = {}
    assert(loadfile(root .. "/" .. files[1], "t", env))()
    assert.equals("autopgo", env.package)
    assert.equals("scm-1", env.version)
    assert.equals("cmake", env.build.type)
    assert.equals("OFF", env.build.variables.AP_BUILD_HOST)
    local cm = support.read_file(root .. "/CMakeLists.txt")
    for _, var in pairs { "AP_INSTALL_LUADIR", "AP_INSTALL_LIBDIR" } do
      assert.is_string(env.build.variables[var], var)
      assert.is_truthy(cm:find(var, 1, true), "CMakeLists.txt does not use " .. var)
    end
    assert.is_truthy(cm:find("install(DIRECTORY lua/autopgo", 1, true))
  end)

  it("makes failures with autopgo.fail: no literal failure tuple under lua/", function()
    local offending = {}
    for _, f in ipairs(tracked("'lua/*.lua'")) do
      if f ~= "lua/autopgo/fail.lua" then
        local n = 0
        for line in (support.read_file(root .. "/" .. f) or ""):gmatch("[^\n]*") do
          local code = line:gsub("%-%-.*$", "") -- comments may show the shape
          -- return nil, "CODE: ..."  /  nil, ("CODE: ..."):format(...), "CODE"
          if code:find("nil,%s*%(?[\"'][A-Z][A-Z_]*: ") then n = n + 1 end
        end
        if n > 0 then offending[#offending + 1] = ("%s (%d)"):format(f, n) end
      end
    end
    assert.same({}, offending)
  end)

  it("never calls the autopgo.fail module as if it were a function", function()
    local offending = {}
    for _, f in ipairs(tracked("'lua/*.lua'")) do
      local src = support.read_file(root .. "/" .. f) or ""
      if src:find('local fail = require "autopgo.fail"', 1, true) then
        local n = 0
        for line in src:gmatch("[^\n]*") do
          local code = line:gsub("%-%-.*$", "")
          if code:find("[^%w_.:]fail%(") or code:find("^fail%(") then n = n + 1 end
        end
        if n > 0 then offending[#offending + 1] = ("%s (%d)"):format(f, n) end
      end
    end
    assert.same({}, offending)
  end)

  it("opens every file with a comment saying what it is for", function()
    local missing = {}
    local kinds = "'core/*.c' 'core/*.h' 'lua/*.lua' 'tests/*.lua' 'scripts/*.sh' '*CMakeLists.txt'"
    for _, f in ipairs(tracked(kinds)) do
      local head = (support.read_file(root .. "/" .. f) or ""):gsub("^#![^\n]*\n", "")
      if not (head:match("^%-%-") or head:match("^/%*") or head:match("^#")) then missing[#missing + 1] = f end
    end
    assert.same({}, missing)
  end)
end)
