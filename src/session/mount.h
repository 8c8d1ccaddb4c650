/*
 * Mount points (MGATE_<LISTENER>_MOUNT_POINT, mgate_session_set_mount_point):
 * the pure part, without sessions or sockets.  A mount point is a prefix put
 * before every topic and filter a client sends to the broker and taken off
 * every topic the broker delivers to it; a topic that does not carry it is
 * never delivered.
 */
#ifndef MGATE_SESSION_MOUNT_H
#define MGATE_SESSION_MOUNT_H

#include <stdbool.h>
#include <stdint.h>

#include "mgate.h"

/* The longest mount point: leaves room for topics in MQTT's 65535. */
#define MOUNT_MAX_LEN 1024u

struct mount {
    uint32_t len;
    uint8_t p[]; /* len bytes, not NUL-terminated */
};

/* The template as configured ("tenants/%u/"): NULL when it can be used,
 * else why not (for the configuration error). */
const char *mount_template_error(const char *tmpl);

enum mount_expand_rc {
    MOUNT_OK = 0,
    MOUNT_BAD_USERNAME,  /* %u and the username is empty or has + # / U+0000 */
    MOUNT_BAD_CLIENT_ID, /* %c and the client id is empty or has + # / U+0000 */
    MOUNT_BAD_RESULT,    /* it would start with '$' or be longer than MOUNT_MAX_LEN */
    MOUNT_NO_MEMORY,
};
/* The template with %u and %c replaced; *out is malloc'd (NULL for an empty
 * result).  Never gives a prefix another identity could reach: each
 * variable's value is one whole topic level (mount_template_error asks
 * that the template end in '/'), so no two identities share a prefix. */
enum mount_expand_rc mount_expand(const char *tmpl, mgate_bytes username, mgate_bytes client_id,
                                  struct mount **out);

/* A prefix a handler gives (mgate_session_set_mount_point): no wildcard,
 * no U+0000, well-formed UTF-8, at most MOUNT_MAX_LEN bytes. */
bool mount_prefix_valid(mgate_bytes prefix);
/* A copy of prefix (malloc'd; NULL when out of memory or empty). */
struct mount *mount_new(mgate_bytes prefix);

/* Whether a topic or filter still fits MQTT's two-byte length once mounted. */
static inline bool mount_fits(const struct mount *m, mgate_bytes t) { return (size_t)m->len + t.len <= 0xFFFFu; }

/* Client -> broker.  Both write m->len + x.len bytes to out (the caller
 * checks that fits MQTT's 65535).  A filter "$share/GROUP/F" becomes
 * "$share/GROUP/<m>F": the group stays a group of the broker, the filter is
 * the tenant's. */
void mount_put_topic(const struct mount *m, mgate_bytes topic, uint8_t *out);
void mount_put_filter(const struct mount *m, mgate_bytes filter, uint8_t *out);

/* The same in memory of its own (malloc'd, *out pointing into it), for the
 * bridges' MQTT client; NULL when out of memory or over 65535 bytes. */
uint8_t *mount_dup(const struct mount *m, mgate_bytes x, bool filter, mgate_bytes *out);

/* Broker -> client: the topic without the mount point, or false when it
 * does not start with it (or is nothing but it). */
bool mount_strip(const struct mount *m, mgate_bytes topic, mgate_bytes *out);

#endif
