#include <stdio.h>
#include <string.h>

#include "handlers/acl.h"
#include "handlers/handlers.h"

static const struct mgate_handler *const builtins[] = {&mgate_log_handler,  &mgate_noop_handler,
                                                       &mgate_acl_handler,  &mgate_http_handler,
                                                       &mgate_rewrite_handler, &mgate_jwt_handler, NULL};

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

int handler_chain(const char *list, const struct mgate_handler *const *extra, const struct mgate_handler **out,
                  unsigned max, char *err, size_t errlen)
{
    unsigned n = 0;
    for (const char *p = list; *p;) {
        size_t len = strcspn(p, ",");
        char name[64];
        snprintf(name, sizeof(name), "%.*s", (int)len, p);
        const struct mgate_handler *h = handler_find(name, extra);
        if (!h || len >= sizeof(name)) {
            char names[256];
            handler_names(extra, names, sizeof(names));
            snprintf(err, errlen, "MGATE_HANDLER: unknown handler \"%s\" (known: %s)", name, names);
            return -1;
        }
        for (unsigned i = 0; i < n; i++)
            if (out[i] == h) {
                snprintf(err, errlen, "MGATE_HANDLER: \"%s\" is named twice", name);
                return -1;
            }
        if (n == max) {
            snprintf(err, errlen, "MGATE_HANDLER: more than %u handlers", max);
            return -1;
        }
        out[n++] = h;
        p += len;
        if (*p == ',')
            p++;
    }
    if (!n) {
        snprintf(err, errlen, "MGATE_HANDLER: no handler named");
        return -1;
    }
    return (int)n;
}

static bool acl_started, rewrite_started, jwt_started;

/* A built-in with state of its own: started when the chain names it; its
 * settings refused when it does not (`set` names one that is set), since
 * rules or keys that nothing applies would be a silent hole. */
struct builtin_start {
    const char *name, *does;
    int (*start)(const struct mgate_config *cfg, char *err, size_t errlen);
    bool *started;
};

static int start_one(const struct builtin_start *b, bool named, const char *set, const struct mgate_config *cfg,
                     char *err, size_t errlen)
{
    if (!named && set) {
        snprintf(err, errlen, "%s is set, but MGATE_HANDLER (\"%s\") does not name %s, so nothing would %s", set,
                 cfg->handler, b->name, b->does);
        return -1;
    }
    if (!named)
        return 0;
    if (b->start(cfg, err, errlen) < 0)
        return -1;
    *b->started = true;
    return 0;
}

static int start_rewrite(bool named, const struct mgate_config *cfg, char *err, size_t errlen)
{
    static const struct builtin_start b = {"rewrite", "apply it", rewrite_start, &rewrite_started};
    return start_one(&b, named, *cfg->rewrite_file ? "MGATE_REWRITE_FILE" : NULL, cfg, err, errlen);
}

static int start_jwt(bool named, const struct mgate_config *cfg, char *err, size_t errlen)
{
    static const struct builtin_start b = {"jwt", "check tokens with it", jwt_start, &jwt_started};
    return start_one(&b, named, jwt_setting_in_use(cfg), cfg, err, errlen);
}

int handlers_start(const struct mgate_handler *const *chain, unsigned n, const struct mgate_config *cfg,
                   char *err, size_t errlen)
{
    bool acl = false, http = false, rewrite = false, jwt = false;
    for (unsigned i = 0; i < n; i++) {
        acl |= chain[i] == &mgate_acl_handler;
        http |= chain[i] == &mgate_http_handler;
        rewrite |= chain[i] == &mgate_rewrite_handler;
        jwt |= chain[i] == &mgate_jwt_handler;
    }
    if (start_rewrite(rewrite, cfg, err, errlen) < 0 || start_jwt(jwt, cfg, err, errlen) < 0)
        return -1;
    if (http && webhook_start(cfg, err, errlen) < 0)
        return -1;
    if (!http && *cfg->webhook_url) {
        snprintf(err, errlen, "MGATE_WEBHOOK_URL is set, but MGATE_HANDLER (\"%s\") does not name http, so nothing would "
                              "call it", cfg->handler);
        return -1;
    }
    if (!acl) {
        /* Rules that nothing enforces would be a silent hole. */
        const char *set = *cfg->acl_password_file ? "MGATE_ACL_PASSWORD_FILE" : *cfg->acl_file ? "MGATE_ACL_FILE" : NULL;
        if (set) {
            snprintf(err, errlen, "%s is set, but MGATE_HANDLER (\"%s\") does not name acl, so nothing would enforce it",
                     set, cfg->handler);
            return -1;
        }
        return 0;
    }
    if (acl_start(cfg, err, errlen) < 0)
        return -1;
    acl_started = true;
    return 0;
}

void handlers_reload(void)
{
    if (acl_started)
        acl_reload();
    if (rewrite_started)
        rewrite_reload();
    if (jwt_started)
        jwt_reload();
}

void handlers_stop(void)
{
    if (acl_started)
        acl_stop();
    if (rewrite_started)
        rewrite_stop();
    if (jwt_started)
        jwt_stop();
    acl_started = rewrite_started = jwt_started = false;
}
