/*
 * The HTTP front end (MGATE_HTTP_WITHOUT_TLS_, _WITH_TLS_, _WITH_MTLS_):
 * devices POST readings; each request is shown to the handler as
 * auth_connect (its credentials) and auth_publish (topic: the path below
 * PATH_PREFIX, payload: the body), then forwarded to the target with
 * libcurl on the loop, and the target's answer streams back.  HTTP/1.1 with
 * keep-alive and pipelining, chunked bodies and Expect: 100-continue; every
 * wait is bounded (408, 413, 431, 504).  A WebSocket upgrade is authorised
 * (auth_connect, auth_subscribe on the path) and relayed by http_ws.c.
 * docs/HTTP.md says it all.
 */
#ifndef MGATE_HTTP_H
#define MGATE_HTTP_H

#include <regex.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "config/config.h"
#include "core/loop.h"
#include "session/session.h"

/* What a listener's HTTP connections share, made once at start
 * (session_params.front_settings of an HTTP listener). */
struct http_settings {
    const char *path_prefix;     /* PATH_PREFIX: requests outside it are 404 */
    const char *allowed_origins; /* ALLOWED_ORIGINS: "a,b" Origin values allowed; "": any */
    const char *target_path;     /* TARGET_PATH: the topics' root on the target */
    char base_url[320];  /* "http://host:port" */
    char authority[288]; /* "host:port" as in the URL, for CONNECT_TO */
    bool https;
    bool mqtt;           /* TARGET_PROTOCOL mqtt, mqtts: the bridge (front/http_mqtt.h) */
    regex_t *bypass;     /* BYPASS_PATHS */
    unsigned nbypass;
    uint32_t max_header, max_body;
    uint32_t request_timeout_ms, idle_timeout_ms, target_timeout_ms;
    const char *ca_file, *cert_file, *key_file; /* https targets; NULL: none / the system's */
    bool no_verify;
};

/* The listeners' front end is front_http (front/front.h): its prepare
 * makes these settings, its accept takes a socket (TLS on it when p->tls). */

#endif
