
# Consider dependencies only in project.
set(CMAKE_DEPENDS_IN_PROJECT_ONLY OFF)

# The set of languages for which implicit dependencies are needed:
set(CMAKE_DEPENDS_LANGUAGES
  )

# The set of dependency files which are needed:
set(CMAKE_DEPENDS_DEPENDENCY_FILES
  "/work/main/build-asan/core/host/embedded_lua.c" "core/host/CMakeFiles/autopgo.dir/embedded_lua.c.o" "gcc" "core/host/CMakeFiles/autopgo.dir/embedded_lua.c.o.d"
  "/work/main/core/host/main.c" "core/host/CMakeFiles/autopgo.dir/main.c.o" "gcc" "core/host/CMakeFiles/autopgo.dir/main.c.o.d"
  "/work/main/core/host/preload.c" "core/host/CMakeFiles/autopgo.dir/preload.c.o" "gcc" "core/host/CMakeFiles/autopgo.dir/preload.c.o.d"
  )

# Targets to which this target links.
set(CMAKE_TARGET_LINKED_INFO_FILES
  "/work/main/build-asan/core/lua/CMakeFiles/ap_lua.dir/DependInfo.cmake"
  "/work/main/build-asan/core/common/CMakeFiles/ap_common.dir/DependInfo.cmake"
  )

# Fortran module output directory.
set(CMAKE_Fortran_TARGET_MODULE_DIR "")
