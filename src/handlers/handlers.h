/* The compiled-in handlers, and how MGATE_HANDLER picks a chain of them. */
#ifndef MGATE_HANDLERS_H
#define MGATE_HANDLERS_H

#include "config/config.h"
#include "mgate.h"

extern const struct mgate_handler mgate_log_handler;
extern const struct mgate_handler mgate_noop_handler;
extern const struct mgate_handler mgate_acl_handler;
extern const struct mgate_handler mgate_http_handler;
extern const struct mgate_handler mgate_rewrite_handler;
extern const struct mgate_handler mgate_jwt_handler;

/* Find a handler by name among `extra` (NULL-terminated, may be NULL; they
 * win over built-ins of the same name) and the built-ins.  NULL when unknown. */
const struct mgate_handler *handler_find(const char *name, const struct mgate_handler *const *extra);
/* "log, noop, ..." for error messages. */
void handler_names(const struct mgate_handler *const *extra, char *buf, size_t len);

/* MGATE_HANDLER ("acl,log", already checked for shape by config) into out[]
 * (at most max).  Returns how many, or -1 with a message naming
 * MGATE_HANDLER (unknown name, a name twice, too many). */
int handler_chain(const char *list, const struct mgate_handler *const *extra,
                  const struct mgate_handler **out, unsigned max, char *err, size_t errlen);

/*
 * Built-in handlers with state of their own (acl), on the control thread:
 * handlers_start loads what the chain's built-ins need before any worker
 * runs (-1 with a message naming the variable, and the file and line), and
 * refuses their settings when the chain does not use them; handlers_reload
 * (SIGHUP) replaces their state only when everything loads, logging why not;
 * handlers_stop frees it after the workers are gone.
 */
int handlers_start(const struct mgate_handler *const *chain, unsigned n, const struct mgate_config *cfg,
                   char *err, size_t errlen);
void handlers_reload(void);
void handlers_stop(void);

/* The `http` handler (webhook.c): start checks MGATE_WEBHOOK_*; a worker's
 * loop going away cancels its requests (its loop slot's destructor). */
int webhook_start(const struct mgate_config *cfg, char *err, size_t errlen);
/* The service's 2xx answer (tests): 0 allow, 1 deny, 2 ignore, 3 not an
 * object we understand; *found tells whether it had a "result". */
int webhook_parse_answer(const uint8_t *body, size_t len, bool *found);

/* The `rewrite` handler (rewrite.c), on the control thread like acl's:
 * start loads MGATE_REWRITE_FILE (-1 with a message naming it, the file
 * and the line), reload swaps in a new rule set only when the file loads
 * (else logs why), stop frees them after the workers are gone. */
int rewrite_start(const struct mgate_config *cfg, char *err, size_t errlen);
void rewrite_reload(void);
void rewrite_stop(void);

/* The `jwt` handler (jwt.c), on the control thread like acl's: start checks
 * MGATE_JWT_* and loads the key files (-1 with a message naming the
 * variable; a JWKS URL is never fetched here), reload (SIGHUP) swaps in new
 * file keys only when every file loads, stop frees them after the workers
 * are gone.  jwt_setting_in_use names a MGATE_JWT_* setting that is set
 * (refused when the chain has no jwt), or NULL. */
int jwt_start(const struct mgate_config *cfg, char *err, size_t errlen);
void jwt_reload(void);
void jwt_stop(void);
const char *jwt_setting_in_use(const struct mgate_config *cfg);
/* Keys in the current set (the mgate_jwt_keys gauge), -1 when jwt is not running. */
int jwt_keys_gauge(void);

#endif
