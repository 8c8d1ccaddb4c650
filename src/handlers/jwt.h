/*
 * The `jwt` handler's parts (internal; the unit tests, the fuzzers and the
 * bench use them).  A token is checked locally: no round trip per CONNECT.
 *
 *   jwt_keys.c   key sets: a JWKS document, PEM public keys, an HMAC secret
 *   jwt_token.c  a compact JWS: parsed (strictly), its signature verified
 *   jwt_claims.c exp/nbf/iat, iss, aud, string claims, the acl claim
 *   jwt_jwks.c   the JWKS URL fetched on the loop, refreshed, shared
 *   jwt.c        the handler (vtable, configuration, metrics, logs)
 *
 * Algorithm confusion is impossible by construction: every algorithm names
 * the one key type it verifies with (RS and PS: RSA; ES256: EC P-256;
 * ES384: EC P-384; EdDSA: Ed25519; HS: a secret), and a secret only ever
 * comes from MGATE_JWT_SECRET_FILE, never from a JWKS or a PEM file, so a
 * public key can never be used as an HMAC secret.  "none" is no algorithm.
 * Signatures are checked with OpenSSL 3 (docs/ARCHITECTURE.md says why not
 * a JWT library).
 */
#ifndef MGATE_HANDLERS_JWT_H
#define MGATE_HANDLERS_JWT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "handlers/acl.h"

#define JWT_MAX_TOKEN 8192  /* a longer token is refused as malformed */
#define JWT_MAX_KEYS 64     /* a key set with more usable keys is refused */
#define JWT_KID_MAX 255     /* a longer kid is refused (token) or skipped (JWKS) */
#define JWT_SIG_MAX 1024    /* RSA 8192 */
#define JWT_MIN_RSA_BITS 2048
#define JWT_MIN_SECRET 32   /* bytes: RFC 7518 3.2 wants at least the hash's size (HS384 48, HS512 64) */
#define JWT_MAX_TRIES 4     /* signature checks per token at most: a token without a kid is no
                               lever to make mgate try every key of a large set */

enum jwt_alg {
    JWT_ALG_INVALID = 0, /* "none", unknown, or absent */
    JWT_RS256, JWT_RS384, JWT_RS512,
    JWT_PS256, JWT_PS384, JWT_PS512,
    JWT_ES256, JWT_ES384,
    JWT_EDDSA,
    JWT_HS256, JWT_HS384, JWT_HS512,
    JWT_ALG_COUNT
};
#define JWT_ALG_BIT(a) (1u << (a))

/* "RS256" -> JWT_RS256 (exact, case-sensitive), JWT_ALG_INVALID otherwise. */
enum jwt_alg jwt_alg_from_name(const char *name, size_t len);
const char *jwt_alg_name(enum jwt_alg a);
/* MGATE_JWT_ALGORITHMS ("RS256,ES256"; "" means every one) into a mask of
 * JWT_ALG_BIT; -1 with the unknown name in err. */
int jwt_algs_parse(const char *list, uint32_t *mask, char *err, size_t errlen);

/* ---- keys (jwt_keys.c) ---- */

enum jwt_kty { JWT_KTY_NONE = 0, JWT_KTY_RSA, JWT_KTY_EC, JWT_KTY_OKP, JWT_KTY_OCT };

struct jwt_key {
    char kid[JWT_KID_MAX + 1];
    bool has_kid;
    enum jwt_kty kty;
    int curve;          /* EC: NID_X9_62_prime256v1 or NID_secp384r1; OKP: NID_ED25519 */
    enum jwt_alg alg;   /* the JWK's "alg" pins the algorithm; JWT_ALG_INVALID: any of its type */
    EVP_PKEY *pkey;     /* RSA, EC, OKP */
    uint8_t *secret;    /* OCT: cleansed when freed, never logged */
    size_t secret_len;
};

struct jwt_keyset {
    struct jwt_key *v;
    unsigned n;
};

/*
 * A JWKS document ({"keys": [...]}, RFC 7517) appended to ks.  Keys mgate
 * cannot or must not use are skipped and counted in *skipped: "use" other
 * than "sig", a kty/crv/alg it does not know, an RSA modulus under
 * JWT_MIN_RSA_BITS or over RSA 8192, an "oct" key (a published key set
 * never holds a secret), a kid over JWT_KID_MAX; and so are keys that are
 * malformed (bad base64url, a point not on the curve), a second key with a
 * kid already taken (the first is kept), and those past JWT_MAX_KEYS: one
 * bad key must not keep a rotation out, and a document with no usable key
 * at all is a valid answer (an identity provider revoking every key).
 * Returns 0 (err then holds the first malformed key's reason, or ""), or -1
 * with the reason in err when the document is not JSON or not that shape
 * (ks unchanged).  Parsed strictly, as the webhook's answers are.
 */
int jwt_jwks_parse(const uint8_t *json, size_t len, struct jwt_keyset *ks, unsigned *skipped, char *err,
                   size_t errlen);
/* Every public key of a PEM file ("PUBLIC KEY" or "CERTIFICATE" blocks;
 * RSA, EC P-256/P-384, Ed25519), appended to ks without a kid; -1 with the
 * file and the reason in err (none found, a private key, an unusable one). */
int jwt_pem_load(const char *path, struct jwt_keyset *ks, char *err, size_t errlen);
/* The HMAC secret (the whole file; one trailing newline dropped) appended as
 * an oct key without a kid; -1 under JWT_MIN_SECRET bytes, or unreadable. */
int jwt_secret_load(const char *path, struct jwt_keyset *ks, char *err, size_t errlen);
/* Whether k verifies alg: its type (and curve) is the alg's, and its own
 * "alg", if any, is alg. */
bool jwt_key_fits(const struct jwt_key *k, enum jwt_alg a);
/* Frees every key (secrets cleansed) and empties ks. */
void jwt_keyset_free(struct jwt_keyset *ks);

/* ---- tokens (jwt_token.c) ---- */

enum jwt_result {
    JWT_OK = 0,
    JWT_MALFORMED,      /* not three base64url parts, bad JSON, no alg, too long */
    JWT_BAD_ALG,        /* "none", unknown, not allowed, "crit" we do not know */
    JWT_UNKNOWN_KID,    /* no key with the token's kid / no key for its alg */
    JWT_BAD_SIGNATURE,
    JWT_EXPIRED,
    JWT_NOT_YET_VALID,  /* nbf in the future */
    JWT_ISSUED_IN_FUTURE,
    JWT_NO_EXPIRY,      /* exp absent while required */
    JWT_WRONG_ISSUER,
    JWT_WRONG_AUDIENCE,
    JWT_BAD_CLAIM,      /* a claim of the wrong type or shape (exp not a number, a bad acl claim) */
    JWT_IDENTITY,       /* the username / client id claim is absent or does not match */
    JWT_NO_TOKEN,       /* the client sent none */
    JWT_RESULT_COUNT
};
/* "expired", "bad_signature"...: a log field and a metric label. */
const char *jwt_result_name(enum jwt_result r);

struct jwt_token {
    enum jwt_alg alg;
    char kid[JWT_KID_MAX + 1];
    bool has_kid;
    const uint8_t *signed_part; /* "header.payload": points into the caller's token */
    size_t signed_len;
    uint8_t sig[JWT_SIG_MAX];   /* decoded */
    size_t sig_len;
    json_t *claims;             /* the payload, an object; owned */
};

/* Split and decode a compact JWS (base64url without padding, strictly: no
 * '=', no other characters); the header and payload must be JSON objects
 * (strict: no duplicate keys, no NUL, nothing after).  The header's "alg"
 * is resolved; a "crit" header is refused (JWT_BAD_ALG).  On anything but
 * JWT_OK, t holds nothing to free. */
enum jwt_result jwt_parse(const uint8_t *token, size_t len, struct jwt_token *t);
/* The signature against ks: the key with the token's kid, or, when the
 * token names none, each key of the alg's type (a key's own "alg" must
 * agree; keys without a kid, from PEM files and the secret, fit any kid),
 * at most JWT_MAX_TRIES of them.  `allowed` is a JWT_ALG_BIT mask.  JWT_BAD_ALG when alg is not
 * allowed; JWT_UNKNOWN_KID when no key fits; JWT_BAD_SIGNATURE. */
enum jwt_result jwt_verify(const struct jwt_token *t, const struct jwt_keyset *ks, uint32_t allowed);
void jwt_token_free(struct jwt_token *t);

/* ---- claims (jwt_claims.c) ---- */

struct jwt_policy {
    const char *issuer;   /* NULL or "": not checked; else "iss" must equal it */
    const char *audience; /* NULL or "": not checked; else "aud" (a string or an array) must hold it */
    uint32_t leeway_s;    /* allowed clock skew for exp, nbf, iat */
    bool require_exp;
};
/* exp, nbf, iat (numbers; fractions allowed), iss and aud at `now` (seconds
 * since the epoch).  *exp: the token's exp, 0 when it has none. */
enum jwt_result jwt_check_claims(const struct jwt_token *t, const struct jwt_policy *p, uint64_t now,
                                 uint64_t *exp);
/* A top-level string claim, or NULL (absent, not a string, or holding NUL). */
const char *jwt_claim_string(const struct jwt_token *t, const char *name, size_t *len);
/* The permissions claim `name`, in EMQX's shape {"pub": [...], "sub": [...],
 * "all": [...]} (each optional, a list of topic filters with %u and %c as
 * whole levels), into rs as pattern rules (pub ACL_WRITE, sub ACL_READ, all
 * ACL_READWRITE) for acl_rules_allow.  *present false (rs empty) when the
 * claim is absent; JWT_BAD_CLAIM when it is not that shape, a filter is
 * invalid, or an unknown key appears (rs freed then). */
enum jwt_result jwt_acl_claim(const struct jwt_token *t, const char *name, struct acl_rules *rs, bool *present);

#endif
