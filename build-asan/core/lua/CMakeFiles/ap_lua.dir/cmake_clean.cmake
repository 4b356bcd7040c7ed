file(REMOVE_RECURSE
  "CMakeFiles/ap_lua.dir/binding.c.o"
  "CMakeFiles/ap_lua.dir/binding.c.o.d"
  "CMakeFiles/ap_lua.dir/core.c.o"
  "CMakeFiles/ap_lua.dir/core.c.o.d"
  "CMakeFiles/ap_lua.dir/log.c.o"
  "CMakeFiles/ap_lua.dir/log.c.o.d"
  "libap_lua.a"
  "libap_lua.pdb"
)

# Per-language clean rules from dependency scanning.
foreach(lang C)
  include(CMakeFiles/ap_lua.dir/cmake_clean_${lang}.cmake OPTIONAL)
endforeach()
