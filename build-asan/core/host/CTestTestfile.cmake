# CMake generated Testfile for 
# Source directory: /work/main/core/host
# Build directory: /work/main/build-asan/core/host
# 
# This file includes the relevant testing commands required for 
# testing this directory and lists subdirectories to be tested as well.
