-- luarocks build of the autopgo Lua library and its C core (autopgo.core), for plain lua5.4:
--   luarocks --lua-version 5.4 make rocks/autopgo-scm-1.rockspec
-- luv, lua-cjson, lua-yaml (lyaml, for kubeconfigs) and the C libraries come from Debian packages
-- (scripts/deps.sh build).
rockspec_format = "3.0"
package = "autopgo"
version = "scm-1"
source = {
  url = "git+file:///autopgo", -- `luarocks make` builds the checkout it is run from
}
description = {
  summary = "Profile-guided optimisation pipeline for Go services: a Lua library with a C core",
  detailed = [[
    Scrapes CPU profiles from Go programs, stores them, merges them into one profile per
    application and serves it to `go build -pgo`. This rock installs the Lua library
    (require "autopgo") and the C core (require "autopgo.core").
  ]],
  license = "MIT",
}
dependencies = {
  "lua >= 5.4, < 5.5",
}
build = {
  type = "cmake",
  variables = {
    CMAKE_BUILD_TYPE = "Release",
    AP_BUILD_HOST = "OFF",
    BUILD_TESTING = "OFF",
    AP_INSTALL_LUADIR = "$(LUADIR)",
    AP_INSTALL_LIBDIR = "$(LIBDIR)",
  },
}
