/*
 * A small list of variables read from one file.  A configuration has a few
 * dozen entries at most, so a linear search is the simplest thing that is
 * fast enough.
 */
#include <stdlib.h>
#include <string.h>

#include "config/config.h"

static void var_clear(struct config_var *v)
{
    free(v->name);
    free(v->value);
    free(v->section);
    free(v->key);
    memset(v, 0, sizeof(*v));
}

/* Copies every string so the caller may pass buffers it reuses. */
static int var_copy(struct config_var *dst, const struct config_var *src)
{
    dst->name = strdup(src->name);
    dst->value = strdup(src->value);
    dst->section = strdup(src->section ? src->section : "");
    dst->key = strdup(src->key ? src->key : src->name);
    dst->line = src->line;
    if (dst->name && dst->value && dst->section && dst->key)
        return 0;
    var_clear(dst);
    return -1;
}

static struct config_var *vars_find(const struct config_vars *vs, const char *name)
{
    for (size_t i = 0; i < vs->n; i++)
        if (strcmp(vs->v[i].name, name) == 0)
            return &vs->v[i];
    return NULL;
}

int config_vars_set(struct config_vars *vs, const struct config_var *var)
{
    struct config_var copy;
    if (var_copy(&copy, var) < 0)
        return -1;
    struct config_var *old = vars_find(vs, var->name);
    if (old) {
        var_clear(old);
        *old = copy;
        return 0;
    }
    if (vs->n == vs->cap) {
        size_t cap = vs->cap ? vs->cap * 2 : 16;
        struct config_var *v = realloc(vs->v, cap * sizeof(*v));
        if (!v) {
            var_clear(&copy);
            return -1;
        }
        vs->v = v;
        vs->cap = cap;
    }
    vs->v[vs->n++] = copy;
    return 0;
}

const struct config_var *config_vars_get(const struct config_vars *vs, const char *name)
{
    return vars_find(vs, name);
}

void config_vars_free(struct config_vars *vs)
{
    for (size_t i = 0; i < vs->n; i++)
        var_clear(&vs->v[i]);
    free(vs->v);
    free(vs->file);
    memset(vs, 0, sizeof(*vs));
}
