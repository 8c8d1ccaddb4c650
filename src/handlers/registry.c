#include <stdio.h>
#include <string.h>

#include "handlers/handlers.h"

static const struct mgate_handler *const builtins[] = {&mgate_log_handler, &mgate_noop_handler, NULL};

const struct mgate_handler *handler_find(const char *name, const struct mgate_handler *const *extra)
{
    for (int i = 0; extra && extra[i]; i++)
        if (strcmp(extra[i]->name, name) == 0)
            return extra[i];
    for (int i = 0; builtins[i]; i++)
        if (strcmp(builtins[i]->name, name) == 0)
            return builtins[i];
    return NULL;
}

void handler_names(const struct mgate_handler *const *extra, char *buf, size_t len)
{
    size_t used = 0;
    buf[0] = 0;
    const struct mgate_handler *const *lists[2] = {builtins, extra};
    for (int l = 0; l < 2; l++)
        for (int i = 0; lists[l] && lists[l][i] && used < len; i++)
            used += (size_t)snprintf(buf + used, len - used, "%s%s", used ? ", " : "", lists[l][i]->name);
}
