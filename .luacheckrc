-- luacheck settings: Lua 5.4, no globals anywhere; specs get busted's globals.
std = "lua54"
max_line_length = 120
codes = true
exclude_files = { "build/**", "build-*/**", ".deps/**" }
files["tests/**/*_spec.lua"] = { std = "+busted" }
files["tests/lua/busted.lua"] = { globals = { "package" } }
