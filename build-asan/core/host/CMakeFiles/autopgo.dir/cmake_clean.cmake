file(REMOVE_RECURSE
  "../../autopgo"
  "../../autopgo.pdb"
  "CMakeFiles/autopgo.dir/embedded_lua.c.o"
  "CMakeFiles/autopgo.dir/embedded_lua.c.o.d"
  "CMakeFiles/autopgo.dir/main.c.o"
  "CMakeFiles/autopgo.dir/main.c.o.d"
  "CMakeFiles/autopgo.dir/preload.c.o"
  "CMakeFiles/autopgo.dir/preload.c.o.d"
  "embedded_lua.c"
)

# Per-language clean rules from dependency scanning.
foreach(lang C)
  include(CMakeFiles/autopgo.dir/cmake_clean_${lang}.cmake OPTIONAL)
endforeach()
