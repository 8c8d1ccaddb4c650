/*
 * The tunnel's counters as one JSON log line ("tunnel stats"), every 60 s
 * and at exit (docs/TUNNEL.md).
 */
#include "core/log.h"
#include "tunnel/internal.h"

void tunnel_stats_log(const struct tunnel_stats *s, const char *msg)
{
    struct logline l;
    if (!log_begin(&l, LOGL_INFO, msg))
        return;
    log_uint(&l, "streams_open", s->streams_open);
    log_uint(&l, "streams_total", s->streams_total);
    log_uint(&l, "bytes_out", s->bytes_out);
    log_uint(&l, "bytes_in", s->bytes_in);
    log_uint(&l, "resends", s->resends);
    log_uint(&l, "resets", s->resets);
    log_uint(&l, "refused", s->refused);
    log_end(&l);
}
