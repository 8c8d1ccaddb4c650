/*
 * The jwt handler's claims (jwt.h): the registered time claims, iss and
 * aud against the configured policy, string claims for identities, and the
 * EMQX-shaped acl claim turned into rules for acl_rules_allow (the one
 * matching implementation, acl_match.c).
 */
#include <math.h>
#include <string.h>

#include "handlers/jwt.h"
#include "mqtt/mqtt.h"

#define JWT_TIME_MAX 9007199254740992.0 /* 2^53: beyond, a double no longer holds every second */
#define JWT_ACL_MAX_FILTERS 256

/* A time claim: *present and its value, or false when it is not a
 * non-negative finite number up to 2^53. */
static bool time_claim(const json_t *claims, const char *name, bool *present, double *value)
{
    const json_t *v = json_object_get(claims, name);
    *present = v != NULL;
    *value = 0;
    if (!v)
        return true;
    if (!json_is_number(v))
        return false;
    *value = json_is_integer(v) ? (double)json_integer_value(v) : json_real_value(v);
    return isfinite(*value) && *value >= 0 && *value <= JWT_TIME_MAX;
}

/* exp, nbf and iat, each within leeway of now. */
static enum jwt_result check_times(const json_t *claims, const struct jwt_policy *p, uint64_t now, uint64_t *exp)
{
    bool has_exp, has_nbf, has_iat;
    double e, nbf, iat, t = (double)now, leeway = p->leeway_s;
    if (!time_claim(claims, "exp", &has_exp, &e) || !time_claim(claims, "nbf", &has_nbf, &nbf) ||
        !time_claim(claims, "iat", &has_iat, &iat))
        return JWT_BAD_CLAIM;
    *exp = has_exp ? (uint64_t)e : 0;
    if (!has_exp && p->require_exp)
        return JWT_NO_EXPIRY;
    if (has_exp && t >= e + leeway)
        return JWT_EXPIRED;
    if (has_nbf && t + leeway < nbf)
        return JWT_NOT_YET_VALID;
    if (has_iat && iat > t + leeway)
        return JWT_ISSUED_IN_FUTURE;
    return JWT_OK;
}

static bool string_is(const json_t *v, const char *want)
{
    return json_is_string(v) && json_string_length(v) == strlen(want) && strcmp(json_string_value(v), want) == 0;
}

/* "aud": a string, or an array of strings one of which is audience. */
static enum jwt_result check_audience(const json_t *aud, const char *audience)
{
    if (json_is_string(aud))
        return string_is(aud, audience) ? JWT_OK : JWT_WRONG_AUDIENCE;
    if (!aud)
        return JWT_WRONG_AUDIENCE;
    if (!json_is_array(aud))
        return JWT_BAD_CLAIM;
    bool found = false;
    for (size_t i = 0; i < json_array_size(aud); i++) {
        const json_t *v = json_array_get(aud, i);
        if (!json_is_string(v))
            return JWT_BAD_CLAIM;
        found |= string_is(v, audience);
    }
    return found ? JWT_OK : JWT_WRONG_AUDIENCE;
}

enum jwt_result jwt_check_claims(const struct jwt_token *t, const struct jwt_policy *p, uint64_t now,
                                 uint64_t *exp)
{
    enum jwt_result r = check_times(t->claims, p, now, exp);
    if (r != JWT_OK)
        return r;
    if (p->issuer && *p->issuer) {
        const json_t *iss = json_object_get(t->claims, "iss");
        if (iss && !json_is_string(iss))
            return JWT_BAD_CLAIM;
        if (!string_is(iss, p->issuer))
            return JWT_WRONG_ISSUER;
    }
    if (p->audience && *p->audience)
        return check_audience(json_object_get(t->claims, "aud"), p->audience);
    return JWT_OK;
}

const char *jwt_claim_string(const struct jwt_token *t, const char *name, size_t *len)
{
    const json_t *v = json_object_get(t->claims, name);
    if (!json_is_string(v) || memchr(json_string_value(v), '\0', json_string_length(v)))
        return NULL;
    *len = json_string_length(v);
    return json_string_value(v);
}

/* ---- the acl claim -------------------------------------------------------- */

/* "pub", "sub" or "all" as the access it grants; ACL_DENY for another key. */
static uint8_t access_of(const char *key)
{
    return strcmp(key, "pub") == 0 ? ACL_WRITE : strcmp(key, "sub") == 0 ? ACL_READ
                                             : strcmp(key, "all") == 0 ? ACL_READWRITE
                                                                       : ACL_DENY;
}

/* One list's filters into rs; false when one is not a usable filter. */
static bool add_filters(const json_t *list, uint8_t access, struct acl_rules *rs)
{
    if (!json_is_array(list))
        return false;
    for (size_t i = 0; i < json_array_size(list); i++) {
        const json_t *v = json_array_get(list, i);
        const char *f = json_string_value(v);
        size_t n = json_string_length(v);
        if (!f || rs->n >= JWT_ACL_MAX_FILTERS || n > 0xFFFF || memchr(f, '\0', n))
            return false;
        if (!mqtt_topic_filter_valid((const uint8_t *)f, n) || !acl_substitution_ok(f))
            return false;
        if (acl_rules_add(rs, f, access, true) < 0)
            return false;
    }
    return true;
}

enum jwt_result jwt_acl_claim(const struct jwt_token *t, const char *name, struct acl_rules *rs, bool *present)
{
    *rs = (struct acl_rules){0};
    const json_t *claim = json_object_get(t->claims, name);
    *present = claim != NULL;
    if (!claim)
        return JWT_OK;
    if (!json_is_object(claim))
        return JWT_BAD_CLAIM;
    const char *key;
    json_t *list;
    json_object_foreach((json_t *)claim, key, list) {
        uint8_t access = access_of(key);
        if (access == ACL_DENY || !add_filters(list, access, rs)) {
            acl_rules_free(rs);
            *rs = (struct acl_rules){0};
            return JWT_BAD_CLAIM;
        }
    }
    return JWT_OK;
}
