# The stateful session fuzzer (fuzz_session.c): the session, the verdict
# engine, the connections and the codec driven in-process.  What it links
# is compiled here with the fuzzer's instrumentation and sanitizers, as a
# static library of src/ without the app, the front ends and the handlers
# (only what the session reaches is linked).  core/loop.c and net/conn.c
# are left out: fuzz_session.c includes them, to turn the loop by hand and
# to reach a virtual connection's event handler.
file(GLOB FUZZ_SESSION_SRC CONFIGURE_DEPENDS
     ${PROJECT_SOURCE_DIR}/src/core/*.c ${PROJECT_SOURCE_DIR}/src/mqtt/*.c ${PROJECT_SOURCE_DIR}/src/net/*.c
     ${PROJECT_SOURCE_DIR}/src/config/*.c ${PROJECT_SOURCE_DIR}/src/session/*.c)
list(REMOVE_ITEM FUZZ_SESSION_SRC ${PROJECT_SOURCE_DIR}/src/core/loop.c ${PROJECT_SOURCE_DIR}/src/net/conn.c)
add_library(fuzz_session_core STATIC ${FUZZ_SESSION_SRC})
target_include_directories(fuzz_session_core PUBLIC ${PROJECT_SOURCE_DIR}/include ${PROJECT_SOURCE_DIR}/src)
target_compile_definitions(fuzz_session_core PUBLIC MGATE_ASSERTS) # ASSERT()s are checked while fuzzing
target_compile_options(fuzz_session_core PUBLIC -g -O1 -fno-omit-frame-pointer
                       -fsanitize=fuzzer-no-link,${FUZZ_SANITIZERS} -fno-sanitize-recover=all)
target_link_libraries(fuzz_session_core PUBLIC PkgConfig::INIH PkgConfig::CURL PkgConfig::JANSSON OpenSSL::SSL
                      OpenSSL::Crypto Threads::Threads)

add_executable(fuzz_session fuzz_session.c)
target_link_libraries(fuzz_session PRIVATE fuzz_session_core)
target_link_options(fuzz_session PRIVATE -fsanitize=fuzzer,${FUZZ_SANITIZERS})

# fuzz_session_fast: the same harness without ASan and UBSan (coverage
# instrumentation and the ASSERT()s only), about three times the executions
# per second, for long campaigns of the logic invariants (I1-I4); memory
# errors and leaks are fuzz_session's to find.  Built only on demand.
add_library(fuzz_session_core_fast STATIC EXCLUDE_FROM_ALL ${FUZZ_SESSION_SRC})
target_include_directories(fuzz_session_core_fast PUBLIC ${PROJECT_SOURCE_DIR}/include ${PROJECT_SOURCE_DIR}/src)
target_compile_definitions(fuzz_session_core_fast PUBLIC MGATE_ASSERTS)
target_compile_options(fuzz_session_core_fast PUBLIC -g -O2 -fsanitize=fuzzer-no-link)
target_link_libraries(fuzz_session_core_fast PUBLIC PkgConfig::INIH PkgConfig::CURL PkgConfig::JANSSON OpenSSL::SSL
                      OpenSSL::Crypto Threads::Threads)
add_executable(fuzz_session_fast EXCLUDE_FROM_ALL fuzz_session.c)
target_link_libraries(fuzz_session_fast PRIVATE fuzz_session_core_fast)
target_link_options(fuzz_session_fast PRIVATE -fsanitize=fuzzer)

# MGATE_FUZZ_SESSION_SELFTEST=N: the same harness breaking the session on
# purpose (fuzz_session.c says how), to show that each invariant fires.
# Built only on demand (tests/fuzz/session_selftest.sh builds and runs them all).
foreach(n 1 2 3 4 5 6)
  add_executable(fuzz_session_selftest_${n} EXCLUDE_FROM_ALL fuzz_session.c)
  target_compile_definitions(fuzz_session_selftest_${n} PRIVATE MGATE_FUZZ_SESSION_SELFTEST=${n})
  target_link_libraries(fuzz_session_selftest_${n} PRIVATE fuzz_session_core)
  target_link_options(fuzz_session_selftest_${n} PRIVATE -fsanitize=fuzzer,${FUZZ_SANITIZERS})
endforeach()

# Run it: build-fuzz/tests/fuzz/fuzz_session -max_len=4096 -dict=tests/fuzz/session.dict SCRATCH
#         tests/fuzz/corpus_session   (a scratch directory first, so that new inputs stay out of the seeds)
if(MGATE_TESTS)
  add_test(NAME fuzz.session_seeds COMMAND fuzz_session -runs=0 ${CMAKE_CURRENT_SOURCE_DIR}/corpus_session)
  # Each invariant fires on a session broken on purpose (builds the six
  # selftest harnesses first: about a minute).
  add_test(NAME fuzz.session_selftest COMMAND sh ${CMAKE_CURRENT_SOURCE_DIR}/session_selftest.sh ${CMAKE_BINARY_DIR})
  set_tests_properties(fuzz.session_selftest PROPERTIES TIMEOUT 600)
endif()
