/*
 * The listener's client-id policy: whether a client may use the client id
 * it asked for, given the identity it proved (username, certificate CN).
 * What the policy means is config/client_id_policy.c's; here it is applied
 * to the credentials as finally given to the broker: after the handler
 * chain (which may rewrite the id or the username) and USE_CN_AS_USERNAME.
 */
#include "config/config.h"
#include "session/internal.h"

bool session_client_id_allowed(struct mgate_session *s)
{
    const struct client_id_policy *p = s->p->client_id_policy;
    if (!p || p->mode == CLIENT_ID_ANY)
        return true;
    /* mgate_session_cert computes the CN each call: only when asked for. */
    struct mgate_cert cert;
    const char *cn = "";
    if (p->mode == CLIENT_ID_PATTERN && client_id_pattern_uses_cn(p->pattern) && mgate_session_cert(s, &cert))
        cn = cert.cn;
    const char *why = "";
    if (client_id_check(p, s->client_id, s->username, cn, &why))
        return true;
    /* The line carries the client id and username (session fields); a
     * client can cause it again and again, so it goes through the budget. */
    session_log(s, LOGL_INFO, "CONNECT refused: client id not allowed by CLIENT_ID_POLICY=%s: %s",
                client_id_mode_name(p->mode), why);
    return false;
}
