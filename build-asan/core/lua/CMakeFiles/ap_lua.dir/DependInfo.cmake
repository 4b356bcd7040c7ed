
# Consider dependencies only in project.
set(CMAKE_DEPENDS_IN_PROJECT_ONLY OFF)

# The set of languages for which implicit dependencies are needed:
set(CMAKE_DEPENDS_LANGUAGES
  )

# The set of dependency files which are needed:
set(CMAKE_DEPENDS_DEPENDENCY_FILES
  "/work/main/core/lua/binding.c" "core/lua/CMakeFiles/ap_lua.dir/binding.c.o" "gcc" "core/lua/CMakeFiles/ap_lua.dir/binding.c.o.d"
  "/work/main/core/lua/core.c" "core/lua/CMakeFiles/ap_lua.dir/core.c.o" "gcc" "core/lua/CMakeFiles/ap_lua.dir/core.c.o.d"
  "/work/main/core/lua/log.c" "core/lua/CMakeFiles/ap_lua.dir/log.c.o" "gcc" "core/lua/CMakeFiles/ap_lua.dir/log.c.o.d"
  )

# Targets to which this target links.
set(CMAKE_TARGET_LINKED_INFO_FILES
  "/work/main/build-asan/core/common/CMakeFiles/ap_common.dir/DependInfo.cmake"
  )

# Fortran module output directory.
set(CMAKE_Fortran_TARGET_MODULE_DIR "")
