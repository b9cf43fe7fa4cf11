# Cross build for aarch64 (the NEON kernels); executables run under qemu-aarch64.
#   cmake -S . -B /tmp/b_arm -DCMAKE_TOOLCHAIN_FILE=.ci/aarch64.cmake -DTAPIR_BUILD_EXAMPLES=OFF -DTAPIR_BUILD_BENCH=OFF
#   cmake --build /tmp/b_arm --target test_simd -j2 && ctest --test-dir /tmp/b_arm -R simd
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)
set(CMAKE_CROSSCOMPILING_EMULATOR "qemu-aarch64;-L;/usr/aarch64-linux-gnu")

set(CMAKE_FIND_ROOT_PATH /usr/aarch64-linux-gnu)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)

# doctest is header-only and architecture-neutral. Expose just that folder through a symlink in
# the build tree: putting the host's /usr/include on the cross include path would pull in x86 headers.
if(EXISTS /usr/include/doctest/doctest.h AND CMAKE_BINARY_DIR)
  set(_tapir_cross_include "${CMAKE_BINARY_DIR}/cross-include")
  if(NOT EXISTS "${_tapir_cross_include}/doctest/doctest.h")
    file(MAKE_DIRECTORY "${_tapir_cross_include}")
    file(CREATE_LINK /usr/include/doctest "${_tapir_cross_include}/doctest" SYMBOLIC)
  endif()
  set(DOCTEST_INCLUDE_DIR "${_tapir_cross_include}" CACHE PATH "doctest headers for the aarch64 cross build")
endif()

# Emulation is ~10x slower: the SIMD tests sample their sweeps (TAPIR_TEST_FULL=1 restores them).
set(CMAKE_CXX_FLAGS_INIT "-DTAPIR_TEST_EMULATED=1")
