-- Runs busted inside the autopgo host, so specs can require autopgo.core and drive the loop.
-- usage: autopgo run tests/lua/busted.lua [busted options] [paths]   (see .busted for defaults)
package.path = "./?.lua;/usr/share/lua/5.4/?.lua;/usr/share/lua/5.4/?/init.lua;" .. package.path
package.cpath = package.cpath .. ";/usr/lib/x86_64-linux-gnu/lua/5.4/?.so"
require("busted.runner")({ standalone = false })
