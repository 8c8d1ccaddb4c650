/*
 * The log line both ways: mgate's hand-written JSON (core/log.c) against
 * jansson building and dumping the same object, 10^6 "session closed"
 * lines each, written to stderr (send it to /dev/null).  Why core/log.c
 * keeps its own writer (docs/ARCHITECTURE.md, "Libraries").
 *
 *   gcc -O2 -Isrc -Iinclude bench/log_json.c build/libmgate_core.a -ljansson -o /tmp/log_json
 *   /tmp/log_json 2>/dev/null
 */
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "core/log.h"

#define LINES 1000000

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void hand_written(unsigned long long i)
{
    struct logline l;
    log_begin(&l, 1, "session closed");
    log_uint(&l, "session", i);
    log_str(&l, "listener", "mqtt_without_tls");
    log_str(&l, "peer", "127.0.0.1:53124");
    log_bytes(&l, "client_id", (const uint8_t *)"sensor-\"42\"", 11);
    log_bytes(&l, "username", (const uint8_t *)"alice", 5);
    log_end(&l);
}

static void with_jansson(unsigned long long i)
{
    struct timeval tv;
    struct tm tm;
    char ts[96], buf[2048];
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    snprintf(ts, sizeof(ts), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
             tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(tv.tv_usec / 1000));
    json_t *o = json_object();
    json_object_set_new(o, "ts", json_string(ts));
    json_object_set_new(o, "level", json_string("info"));
    json_object_set_new(o, "msg", json_string("session closed"));
    json_object_set_new(o, "session", json_integer((json_int_t)i));
    json_object_set_new(o, "listener", json_string("mqtt_without_tls"));
    json_object_set_new(o, "peer", json_string("127.0.0.1:53124"));
    json_object_set_new(o, "client_id", json_stringn("sensor-\"42\"", 11));
    json_object_set_new(o, "username", json_stringn("alice", 5));
    size_t n = json_dumpb(o, buf, sizeof(buf) - 1, JSON_COMPACT);
    buf[n++] = '\n';
    ssize_t rc = write(STDERR_FILENO, buf, n);
    (void)rc;
    json_decref(o);
}

int main(void)
{
    for (int round = 0; round < 3; round++) {
        double t0 = now();
        for (unsigned long long i = 0; i < LINES; i++)
            hand_written(i);
        double t1 = now();
        for (unsigned long long i = 0; i < LINES; i++)
            with_jansson(i);
        double t2 = now();
        printf("round %d: hand-written %.0f ns/line, jansson %.0f ns/line (%.2fx)\n", round + 1,
               (t1 - t0) * 1e9 / LINES, (t2 - t1) * 1e9 / LINES, (t2 - t1) / (t1 - t0));
    }
    return 0;
}
