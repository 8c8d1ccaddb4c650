#!/usr/bin/env bash
# Install what building, running and testing mgate needs on Debian 12, and
# nothing when it is all there already.  Used by tests/run.sh and
# examples/demo.sh; the Dockerfile installs the same list.
set -euo pipefail

PACKAGES=(
  build-essential cmake pkg-config clang libclang-rt-14-dev    # build, sanitizers, fuzzer
  libssl-dev libinih-dev libcurl4-openssl-dev                  # run-time libraries
  libwebsockets-dev libwebsockets-evlib-uv libuv1-dev node-llhttp
  mosquitto mosquitto-clients python3 python3-paho-mqtt        # test peers
  haproxy valgrind                                             # bench/run.sh --smoke
  openssl iproute2                                             # PKI, OCSP responder, s_client
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "deps: installing ${missing[*]}"
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
