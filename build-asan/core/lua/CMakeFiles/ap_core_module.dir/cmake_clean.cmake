file(REMOVE_RECURSE
  "../../lib/autopgo/core.pdb"
  "../../lib/autopgo/core.so"
  "CMakeFiles/ap_core_module.dir/binding.c.o"
  "CMakeFiles/ap_core_module.dir/binding.c.o.d"
  "CMakeFiles/ap_core_module.dir/core.c.o"
  "CMakeFiles/ap_core_module.dir/core.c.o.d"
  "CMakeFiles/ap_core_module.dir/log.c.o"
  "CMakeFiles/ap_core_module.dir/log.c.o.d"
)

# Per-language clean rules from dependency scanning.
foreach(lang C)
  include(CMakeFiles/ap_core_module.dir/cmake_clean_${lang}.cmake OPTIONAL)
endforeach()
