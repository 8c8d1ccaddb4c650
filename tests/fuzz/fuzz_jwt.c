/*
 * Fuzzing a client's token (handlers/jwt_token.c, jwt_claims.c): arbitrary
 * bytes parsed as a compact JWS, verified against a fixed key set (an
 * Ed25519 public key and an HMAC secret, from fixed bytes so every run is
 * the same), then its claims and acl claim read as the handler would.  A
 * token that parses must hold claims; the acl rules must be whole filters.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "handlers/jwt.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fail(const char *why)
{
    fprintf(stderr, "fuzz_jwt: %s\n", why);
    abort();
}

/* RFC 8037's example Ed25519 public key, and a 32-byte secret. */
static const char jwks[] = "{\"keys\":[{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"kid\":\"ed\","
                           "\"x\":\"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo\"}]}";
static const uint8_t secret[32] = "fuzz-secret-fuzz-secret-fuzz-sec";

/* Built on the first input and kept for the process's life (libFuzzer
 * calls us in one process; leak checking ignores what stays reachable). */
static const struct jwt_keyset *keys(void)
{
    static struct jwt_keyset ks;
    static bool built;
    if (built)
        return &ks;
    char err[200];
    unsigned skipped;
    if (jwt_jwks_parse((const uint8_t *)jwks, strlen(jwks), &ks, &skipped, err, sizeof(err)) < 0)
        fail(err);
    struct jwt_key *v = realloc(ks.v, (ks.n + 1) * sizeof(*v));
    uint8_t *s = malloc(sizeof(secret));
    if (!v || !s)
        fail("out of memory");
    memcpy(s, secret, sizeof(secret));
    v[ks.n++] = (struct jwt_key){.kty = JWT_KTY_OCT, .secret = s, .secret_len = sizeof(secret)};
    ks.v = v;
    built = true;
    return &ks;
}

static void read_claims(const struct jwt_token *t)
{
    struct jwt_policy p = {.issuer = "https://idp", .audience = "mgate", .leeway_s = 30, .require_exp = true};
    uint64_t exp;
    jwt_check_claims(t, &p, 1700000000u, &exp);
    size_t len = 0;
    const char *sub = jwt_claim_string(t, "sub", &len);
    if (sub && memchr(sub, '\0', len))
        fail("a string claim holding NUL");
    struct acl_rules rs;
    bool present;
    if (jwt_acl_claim(t, "acl", &rs, &present) == JWT_OK) {
        for (uint32_t i = 0; i < rs.n; i++)
            if (!acl_substitution_ok(rs.v[i].topic) || strlen(rs.v[i].topic) != rs.v[i].len)
                fail("an acl rule that is not a whole filter");
        struct acl_who who = {.user = (const uint8_t *)"+", .user_len = 1};
        acl_rules_allow(&rs, &who, ACL_READ, (const uint8_t *)"a/b", 3);
        acl_rules_free(&rs);
    } else if (rs.n || rs.v) {
        fail("a refused acl claim left rules behind");
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const struct jwt_keyset *ks = keys();
    struct jwt_token t;
    enum jwt_result r = jwt_parse(data, size, &t);
    if (r != JWT_OK) {
        if (t.claims)
            fail("a refused token kept its claims");
        return 0;
    }
    if (!json_is_object(t.claims) || t.signed_len >= size || t.sig_len > sizeof(t.sig))
        fail("a parsed token that is not whole");
    uint32_t every = (JWT_ALG_BIT(JWT_ALG_COUNT) - 1) & ~JWT_ALG_BIT(JWT_ALG_INVALID);
    jwt_verify(&t, ks, every);
    read_claims(&t);
    jwt_token_free(&t);
    return 0;
}
