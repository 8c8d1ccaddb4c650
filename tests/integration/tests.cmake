# Integration tests: each tests/integration/test_<name>.py drives the real
# binaries (mgate, mgate-example) with a real mosquitto and real clients, and
# is one ctest test, integration.<name>.  See integration/README.md.
#
#   ctest --test-dir build -L integration --output-on-failure

# name, then its timeout in seconds
set(MGATE_INTEGRATION_TESTS
  pubsub      90
  refusals    90
  bad_input   120
  lifecycle   90
  topic_alias 60
  emfile      60
  tls         60
  revocation  90
  tls_clients 60
  tls_reload  60
  tls_upstream 60
  ws          90
  proxy       60
  admin       60
  limits      60
  packaging   60
  acl         120
  webhook     90
  webhook_modifiers 90
  ws_js       90
  ws_browser  60
  http        120
  http_tls    60
  coap        90
  coap_dtls   150
  coap_bridge 240
  http_ws     60
  http_bridge 90
  will        60
  exhaustion  120
  log_flood   60
  acl_flood   120
  client_id   60
  mount       120
  properties  90
  enhanced_auth 60
  rewrite     90
  jwt         120
  tunnel      300
)

# Tests whose checks compare timings or memory (a cache hit against a full
# password check, RSS under a flood, a log budget per second): ctest -j runs
# them alone (RUN_SERIAL).  The others mostly wait on their peers (a tenth of
# a core or less), so tests/run.sh runs two at a time.
set(MGATE_SERIAL_TESTS acl exhaustion log_flood acl_flood limits)

while(MGATE_INTEGRATION_TESTS)
  list(POP_FRONT MGATE_INTEGRATION_TESTS name timeout)
  set(script ${CMAKE_CURRENT_SOURCE_DIR}/integration/test_${name}.py)
  if(NOT EXISTS ${script})
    continue()
  endif()
  add_test(NAME integration.${name} COMMAND /usr/bin/python3 ${script})
  set_tests_properties(integration.${name} PROPERTIES
    ENVIRONMENT "MGATE_BIN=$<TARGET_FILE:mgate>;MGATE_EXAMPLE_BIN=$<TARGET_FILE:custom_handler_example>;PYTHONDONTWRITEBYTECODE=1"
    LABELS integration
    TIMEOUT ${timeout})
  if(name IN_LIST MGATE_SERIAL_TESTS)
    set_tests_properties(integration.${name} PROPERTIES RUN_SERIAL TRUE)
  endif()
endwhile()
