/*
 * Typo help for the binary: MGATE_* variables that nothing reads.  They are
 * not errors (the environment is shared with other programs and scripts),
 * but a warning saves a search when MGATE_MQTT_WITHOUT_TLS_POTR is ignored.
 */
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "config/config.h"

struct name_list {
    char *out;
    size_t size, len, count;
    bool full; /* a name did not fit: keep the list a prefix of the truth */
};

static void list_add(struct name_list *l, const char *name, size_t n)
{
    l->count++;
    size_t sep = l->len ? 1 : 0;
    if (l->full || l->len + sep + n >= l->size) {
        l->full = true;
        return;
    }
    if (sep)
        l->out[l->len++] = ',';
    memcpy(l->out + l->len, name, n);
    l->len += n;
    l->out[l->len] = '\0';
}

static void check_name(struct name_list *l, const char *name, size_t n)
{
    char buf[192];
    if (n >= sizeof(buf) || strncmp(name, "MGATE_", 6) != 0)
        return;
    memcpy(buf, name, n);
    buf[n] = '\0';
    if (!config_known_var(buf))
        list_add(l, buf, n);
}

/* Whether envp[0..end) sets name: each unknown name is listed once. */
static bool in_env(char *const *envp, size_t end, const char *name, size_t n)
{
    for (size_t i = 0; envp && i < end && envp[i]; i++)
        if (strncmp(envp[i], name, n) == 0 && envp[i][n] == '=')
            return true;
    return false;
}

size_t config_unknown_vars(char *const *envp, const char *dotenv_path, char *out, size_t outlen)
{
    struct name_list l = {.out = out, .size = outlen};
    if (outlen)
        out[0] = '\0';
    for (size_t i = 0; envp && envp[i]; i++) {
        size_t n = strcspn(envp[i], "=");
        if (!in_env(envp, i, envp[i], n))
            check_name(&l, envp[i], n);
    }
    struct config_vars vs = {0};
    char err[8]; /* a bad .env is config_load's to report */
    if (dotenv_path)
        config_read_dotenv(dotenv_path, &vs, err, sizeof(err));
    for (size_t i = 0; i < vs.n; i++) {
        size_t n = strlen(vs.v[i].name);
        if (!in_env(envp, SIZE_MAX, vs.v[i].name, n))
            check_name(&l, vs.v[i].name, n);
    }
    config_vars_free(&vs);
    return l.count;
}
