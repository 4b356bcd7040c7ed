# CMake generated Testfile for 
# Source directory: /work/main/core/lua
# Build directory: /work/main/build-asan/core/lua
# 
# This file includes the relevant testing commands required for 
# testing this directory and lists subdirectories to be tested as well.
