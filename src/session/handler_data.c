/*
 * Handlers' per-session pointers: a short list (one entry per handler that
 * keeps something, usually none or one), so a session pays one pointer for
 * it, and each handler of a chain has a slot of its own.  The shared
 * mgate_session_data is the slot of the NULL handler.
 */
#include <stdlib.h>

#include "session/internal.h"

struct handler_data {
    const struct mgate_handler *h;
    void *data;
    void (*free_fn)(void *data);
    struct handler_data *next;
};

static struct handler_data **slot_of(const mgate_session *s, const struct mgate_handler *h)
{
    struct handler_data **pp = (struct handler_data **)&s->hdata;
    while (*pp && (*pp)->h != h)
        pp = &(*pp)->next;
    return pp;
}

void *mgate_session_handler_data(const mgate_session *s, const struct mgate_handler *h)
{
    struct handler_data *d = *slot_of(s, h);
    return d ? d->data : NULL;
}

int mgate_session_set_handler_data(mgate_session *s, const struct mgate_handler *h, void *data,
                                   void (*free_fn)(void *data))
{
    struct handler_data **pp = slot_of(s, h), *d = *pp;
    if (!d && !data)
        return 0;
    if (!d) {
        if (!(d = calloc(1, sizeof(*d))))
            return -1;
        d->h = h;
        *pp = d;
    } else if (d->free_fn && d->data != data) {
        d->free_fn(d->data);
    }
    d->data = data;
    d->free_fn = free_fn;
    if (!data) {
        *pp = d->next;
        free(d);
    }
    return 0;
}

void *mgate_session_data(const mgate_session *s) { return mgate_session_handler_data(s, NULL); }

void mgate_session_set_data(mgate_session *s, void *data)
{
    /* No memory for the slot: there is no way to say so through this
     * older call, and the handler would find NULL, as before it set one. */
    if (mgate_session_set_handler_data(s, NULL, data, NULL) < 0)
        session_log(s, LOGL_WARN, "out of memory keeping a handler's session data");
}

void session_handler_data_free(mgate_session *s)
{
    while (s->hdata) {
        struct handler_data *d = s->hdata;
        s->hdata = d->next;
        if (d->free_fn)
            d->free_fn(d->data);
        free(d);
    }
}
