#!/usr/bin/env bash
# Start mosquitto in the foreground with the example configuration.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
exec mosquitto -c "$here/server.conf" "$@"
