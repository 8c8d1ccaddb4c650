/*
 * v5 topic aliases, per direction.  alias_in is what the sender's aliases
 * mean (so the handler always sees the real topic); alias_out is what the
 * receiver has been told (so a rewritten topic never reaches it under an
 * alias that still maps to the old one).  Allocated on first use.
 */
#ifndef MGATE_ALIAS_H
#define MGATE_ALIAS_H

#include <stdbool.h>
#include <stdint.h>

struct alias_entry {
    uint8_t *topic;
    uint32_t len;
};

struct alias_map {
    struct alias_entry *e; /* index alias - 1 */
    uint16_t cap;
};

int alias_set(struct alias_map *m, uint16_t alias, const uint8_t *topic, uint32_t len);
/* Returns false when the alias was never set. */
bool alias_get(const struct alias_map *m, uint16_t alias, const uint8_t **topic, uint32_t *len);
bool alias_is(const struct alias_map *m, uint16_t alias, const uint8_t *topic, uint32_t len);
void alias_free(struct alias_map *m);

#endif
