# Fault, soak and packaging tests (issue 20): each tests/faults/test_<name>.py
# (or .sh) drives the real binary against a real mosquitto while something
# goes wrong on purpose, and is one ctest test, faults.<name>.  Their quick
# forms run in CI; a build configured with -DMGATE_LONG=ON runs the long forms
# (MGATE_LONG=1 in their environment, hours allowed: tests/long.sh).  A test
# that cannot run on this machine (no podman, no network namespaces) exits
# 77 and is reported as skipped, with the reason in its output.
#
#   ctest --test-dir build -L faults --output-on-failure
#
# name, timeout in seconds, and the build it runs in: "plain" (figures that
# mean something: RSS, throughput, loss counts), "asan" (a test that needs the
# sanitizers, or a build with failure injection), "both".
set(MGATE_FAULT_TESTS
  restart     420 plain
  network     420 plain
  vanish      240 plain
  stall       240 plain
  failmalloc  600 asan
  soak        420 plain
  container   900 plain
)

option(MGATE_LONG "Fault and soak tests in their long forms (tests/long.sh)" OFF)
set(mgate_fault_env "")
if(MGATE_LONG)
  set(mgate_fault_env ";MGATE_LONG=1")
endif()
if(MGATE_SANITIZE)
  set(mgate_fault_build asan)
else()
  set(mgate_fault_build plain)
endif()
while(MGATE_FAULT_TESTS)
  list(POP_FRONT MGATE_FAULT_TESTS name timeout build)
  if(NOT build STREQUAL "both" AND NOT build STREQUAL mgate_fault_build)
    continue()
  endif()
  if(EXISTS ${CMAKE_CURRENT_SOURCE_DIR}/faults/test_${name}.py)
    set(cmd /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/faults/test_${name}.py)
  elseif(EXISTS ${CMAKE_CURRENT_SOURCE_DIR}/faults/test_${name}.sh)
    set(cmd bash ${CMAKE_CURRENT_SOURCE_DIR}/faults/test_${name}.sh)
  else()
    continue()
  endif()
  if(MGATE_LONG)
    set(timeout 10800)
  endif()
  add_test(NAME faults.${name} COMMAND ${cmd})
  set_tests_properties(faults.${name} PROPERTIES
    ENVIRONMENT "MGATE_BIN=$<TARGET_FILE:mgate>;MGATE_EXAMPLE_BIN=$<TARGET_FILE:custom_handler_example>;MGATE_SOURCE_DIR=${PROJECT_SOURCE_DIR};PYTHONDONTWRITEBYTECODE=1${mgate_fault_env}"
    LABELS faults
    SKIP_RETURN_CODE 77
    TIMEOUT ${timeout})
  # Alone under ctest -j: those that measure memory (stall, soak, and
  # failmalloc's hundred mgates under ASan) or load both cores (the image
  # build, with a drain timed to the grace period).  The others check counts,
  # not timings: vanish waits for the kernel to give a silent peer up (25 s
  # to spare), restart counts lost messages, network counts them over links
  # 50 ms slow.
  if(name MATCHES "^(stall|soak|failmalloc|container)$")
    set_tests_properties(faults.${name} PROPERTIES RUN_SERIAL TRUE)
  endif()
endwhile()
