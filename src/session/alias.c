#include "session/alias.h"

#include <stdlib.h>
#include <string.h>

int alias_set(struct alias_map *m, uint16_t alias, const uint8_t *topic, uint32_t len)
{
    if (alias == 0)
        return -1;
    if (alias > m->cap) {
        struct alias_entry *e = realloc(m->e, (size_t)alias * sizeof(*e));
        if (!e)
            return -1;
        memset(e + m->cap, 0, (size_t)(alias - m->cap) * sizeof(*e));
        m->e = e;
        m->cap = alias;
    }
    struct alias_entry *slot = &m->e[alias - 1];
    if (slot->len == len && slot->topic && memcmp(slot->topic, topic, len) == 0)
        return 0;
    uint8_t *copy = malloc(len ? len : 1);
    if (!copy)
        return -1;
    memcpy(copy, topic, len);
    free(slot->topic);
    slot->topic = copy;
    slot->len = len;
    return 0;
}

bool alias_get(const struct alias_map *m, uint16_t alias, const uint8_t **topic, uint32_t *len)
{
    if (alias == 0 || alias > m->cap || !m->e[alias - 1].topic)
        return false;
    *topic = m->e[alias - 1].topic;
    *len = m->e[alias - 1].len;
    return true;
}

bool alias_is(const struct alias_map *m, uint16_t alias, const uint8_t *topic, uint32_t len)
{
    const uint8_t *t;
    uint32_t tl;
    return alias_get(m, alias, &t, &tl) && tl == len && memcmp(t, topic, len) == 0;
}

void alias_free(struct alias_map *m)
{
    for (uint16_t i = 0; i < m->cap; i++)
        free(m->e[i].topic);
    free(m->e);
    m->e = NULL;
    m->cap = 0;
}
