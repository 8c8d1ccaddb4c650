#!/usr/bin/env bash
# Install what building, running and testing mgate needs on Debian 12, and
# nothing when it is all there already.  Used by tests/run.sh and
# examples/demo.sh; the Dockerfile's build stage installs the build part of it
# (test_packaging checks that it stays a subset).  Then the MQTT.js
# clients of the WebSocket tests (tests/js, from its package-lock.json) when
# tests/js/node_modules is missing or was installed from another lockfile.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

PACKAGES=(
  build-essential cmake pkg-config clang libclang-rt-14-dev    # build, sanitizers, fuzzer
  libssl-dev libinih-dev libcurl4-openssl-dev libjansson-dev   # run-time libraries
  node-llhttp
  mosquitto mosquitto-clients python3 python3-paho-mqtt python3-yaml  # test peers; YAML: test_packaging
  nodejs npm chromium                                          # MQTT.js and a browser (tests/js)
  haproxy valgrind                                             # bench/run.sh --smoke
  openssl iproute2                                             # PKI, OCSP responder, s_client
  libcoap3-bin                                                 # CoAP client and server (test_coap)
)

# A Node.js that did not come from Debian's nodejs (NodeSource's package
# ships npm itself, and conflicts with Debian's npm) counts when its commands
# are on PATH.
have() {
  case $1 in
    nodejs) command -v node >/dev/null && return 0 ;;
    npm) command -v npm >/dev/null && return 0 ;;
  esac
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"
}

missing=()
for p in "${PACKAGES[@]}"; do
  have "$p" || missing+=("$p")
done
if [ ${#missing[@]} -ne 0 ]; then
  echo "deps: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# npm ci when node_modules does not hold what this package-lock.json says:
# the lockfile's hash is kept beside the modules it installed.
js=$here/js
stamp=$js/node_modules/.mgate-lock.sha256
want=$(sha256sum "$js/package-lock.json" | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "deps: npm ci in tests/js"
  (cd "$js" && npm ci --no-audit --no-fund --loglevel=error)
  echo "$want" > "$stamp"
fi
