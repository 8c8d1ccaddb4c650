/* The compiled-in handlers and how MGATE_HANDLER picks one. */
#ifndef MGATE_HANDLERS_H
#define MGATE_HANDLERS_H

#include "mgate.h"

extern const struct mgate_handler mgate_log_handler;
extern const struct mgate_handler mgate_noop_handler;

/* Find a handler by name among the built-ins and `extra` (NULL-terminated,
 * may be NULL).  Returns NULL when unknown. */
const struct mgate_handler *handler_find(const char *name, const struct mgate_handler *const *extra);
/* "log, noop, ..." for error messages. */
void handler_names(const struct mgate_handler *const *extra, char *buf, size_t len);

#endif
