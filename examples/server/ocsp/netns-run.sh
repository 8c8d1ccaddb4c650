#!/bin/sh
# Run a command in a new network namespace whose only interface is lo (up):
# whatever listens there, on any address, is reachable from that namespace
# only.  Everything that must talk to it (the responder, mosquitto, mgate, the
# clients) goes under the same command, e.g.
#
#   examples/server/ocsp/netns-run.sh sh -c '
#     examples/server/ocsp/responder.sh ssl/certs & sleep 1
#     openssl ocsp -issuer ssl/certs/ca.crt -cert ssl/certs/client.crt \
#       -url http://127.0.0.1:8080/ocsp -CAfile ssl/certs/ca.crt
#     kill $!'
#
# As root it uses `unshare -n`; as another user `unshare -rn` (a user namespace
# where that user is root: mosquitto then cannot switch to user mosquitto).
# The processes keep the host's files, PIDs and users; the namespace goes away
# when the last of them exits.
set -eu
[ $# -ge 1 ] || { echo "usage: $0 COMMAND [ARG...]" >&2; exit 2; }
if [ "$(id -u)" -eq 0 ]; then flags=-n; else flags=-rn; fi
exec unshare $flags -- sh -c 'ip link set lo up && exec "$@"' netns-run "$@"
