file(REMOVE_RECURSE
  "CMakeFiles/ap_common.dir/log.c.o"
  "CMakeFiles/ap_common.dir/log.c.o.d"
  "libap_common.a"
  "libap_common.pdb"
)

# Per-language clean rules from dependency scanning.
foreach(lang C)
  include(CMakeFiles/ap_common.dir/cmake_clean_${lang}.cmake OPTIONAL)
endforeach()
