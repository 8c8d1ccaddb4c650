/*
 * `mgate tunnel`: TCP carried over an MQTT broker (docs/TUNNEL.md).
 */
#ifndef MGATE_TUNNEL_H
#define MGATE_TUNNEL_H

/* The mode's command line without "mgate" (argv[0] is "tunnel"); returns
 * the exit status: 0 after a clean end, 1 when it cannot start, 2 for a bad
 * command line or configuration. */
int tunnel_main(int argc, char **argv);

#endif
