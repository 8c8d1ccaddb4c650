/*
 * The jwt handler's tokens (jwt.h): a compact JWS split and decoded
 * strictly, and its signature checked against a key set with OpenSSL 3.
 * Tokens and secrets are never logged or printed from here.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/rsa.h>

#include "core/base64.h"
#include "handlers/jwt.h"

/* Each algorithm's name and digest (NULL: EdDSA hashes by itself). */
static const struct {
    const char *name;
    const char *md;
} algs[JWT_ALG_COUNT] = {
    [JWT_RS256] = {"RS256", "SHA256"}, [JWT_RS384] = {"RS384", "SHA384"}, [JWT_RS512] = {"RS512", "SHA512"},
    [JWT_PS256] = {"PS256", "SHA256"}, [JWT_PS384] = {"PS384", "SHA384"}, [JWT_PS512] = {"PS512", "SHA512"},
    [JWT_ES256] = {"ES256", "SHA256"}, [JWT_ES384] = {"ES384", "SHA384"}, [JWT_EDDSA] = {"EdDSA", NULL},
    [JWT_HS256] = {"HS256", "SHA256"}, [JWT_HS384] = {"HS384", "SHA384"}, [JWT_HS512] = {"HS512", "SHA512"},
};

enum jwt_alg jwt_alg_from_name(const char *name, size_t len)
{
    for (int a = JWT_ALG_INVALID + 1; a < JWT_ALG_COUNT; a++)
        if (strlen(algs[a].name) == len && memcmp(algs[a].name, name, len) == 0)
            return (enum jwt_alg)a;
    return JWT_ALG_INVALID;
}

const char *jwt_alg_name(enum jwt_alg a)
{
    return a > JWT_ALG_INVALID && a < JWT_ALG_COUNT ? algs[a].name : "none";
}

int jwt_algs_parse(const char *list, uint32_t *mask, char *err, size_t errlen)
{
    uint32_t m = 0;
    for (const char *p = list; *p;) {
        p += strspn(p, " \t");
        size_t n = strcspn(p, ", \t");
        enum jwt_alg a = jwt_alg_from_name(p, n);
        if (a == JWT_ALG_INVALID) {
            snprintf(err, errlen, "unknown algorithm \"%.*s\"", (int)(n < 32 ? n : 32), p);
            return -1;
        }
        m |= JWT_ALG_BIT(a);
        p += n;
        p += strspn(p, " \t");
        if (*p == ',' && !*++p) {
            snprintf(err, errlen, "unknown algorithm \"\" (a trailing comma)");
            return -1;
        }
    }
    /* "" (or only blanks): every algorithm */
    *mask = m ? m : (JWT_ALG_BIT(JWT_ALG_COUNT) - 1) & ~JWT_ALG_BIT(JWT_ALG_INVALID);
    return 0;
}

const char *jwt_result_name(enum jwt_result r)
{
    static const char *const names[JWT_RESULT_COUNT] = {
        [JWT_OK] = "ok",
        [JWT_MALFORMED] = "malformed",
        [JWT_BAD_ALG] = "bad_alg",
        [JWT_UNKNOWN_KID] = "unknown_kid",
        [JWT_BAD_SIGNATURE] = "bad_signature",
        [JWT_EXPIRED] = "expired",
        [JWT_NOT_YET_VALID] = "not_yet_valid",
        [JWT_ISSUED_IN_FUTURE] = "issued_in_future",
        [JWT_NO_EXPIRY] = "no_expiry",
        [JWT_WRONG_ISSUER] = "wrong_issuer",
        [JWT_WRONG_AUDIENCE] = "wrong_audience",
        [JWT_BAD_CLAIM] = "bad_claim",
        [JWT_IDENTITY] = "identity",
        [JWT_NO_TOKEN] = "no_token",
    };
    return r >= 0 && r < JWT_RESULT_COUNT ? names[r] : "unknown";
}

/* ---- parsing ---------------------------------------------------------------- */

/* One base64url part holding a JSON object, or NULL. */
static json_t *decode_object(const uint8_t *s, size_t n)
{
    uint8_t *buf = malloc(n / 4 * 3 + 3);
    int len = buf ? base64url_decode((const char *)s, n, buf, n / 4 * 3 + 3) : -1;
    json_t *o = NULL;
    if (len >= 0) {
        json_error_t err;
        o = json_loadb((const char *)buf, (size_t)len, JSON_REJECT_DUPLICATES /* and, without JSON_ALLOW_NUL, no U+0000 */, &err);
    }
    free(buf);
    if (o && !json_is_object(o)) {
        json_decref(o);
        o = NULL;
    }
    return o;
}

/* The header's alg, kid and crit into t. */
static enum jwt_result read_header(const json_t *h, struct jwt_token *t)
{
    const json_t *alg = json_object_get(h, "alg"), *kid = json_object_get(h, "kid");
    if (!json_is_string(alg) || (kid && !json_is_string(kid)))
        return JWT_MALFORMED;
    if (kid && json_string_length(kid) > JWT_KID_MAX)
        return JWT_MALFORMED;
    if (json_object_get(h, "crit"))
        return JWT_BAD_ALG; /* no extension is understood here (RFC 7515 4.1.11) */
    t->alg = jwt_alg_from_name(json_string_value(alg), json_string_length(alg));
    if (t->alg == JWT_ALG_INVALID)
        return JWT_BAD_ALG;
    if (kid) {
        memcpy(t->kid, json_string_value(kid), json_string_length(kid) + 1);
        t->has_kid = true;
    }
    return JWT_OK;
}

enum jwt_result jwt_parse(const uint8_t *token, size_t len, struct jwt_token *t)
{
    *t = (struct jwt_token){0};
    const uint8_t *dot1 = len <= JWT_MAX_TOKEN ? memchr(token, '.', len) : NULL;
    const uint8_t *end = token + len, *dot2 = dot1 ? memchr(dot1 + 1, '.', (size_t)(end - dot1 - 1)) : NULL;
    if (!dot2 || memchr(dot2 + 1, '.', (size_t)(end - dot2 - 1)))
        return JWT_MALFORMED;
    json_t *header = decode_object(token, (size_t)(dot1 - token));
    enum jwt_result r = header ? read_header(header, t) : JWT_MALFORMED;
    json_decref(header);
    int sig_len = -1;
    if (r == JWT_OK && !(t->claims = decode_object(dot1 + 1, (size_t)(dot2 - dot1 - 1))))
        r = JWT_MALFORMED;
    if (r == JWT_OK)
        sig_len = base64url_decode((const char *)dot2 + 1, (size_t)(end - dot2 - 1), t->sig, sizeof(t->sig));
    if (r == JWT_OK && sig_len < 0)
        r = JWT_MALFORMED;
    if (r != JWT_OK) {
        jwt_token_free(t);
        return r;
    }
    t->sig_len = (size_t)sig_len;
    t->signed_part = token;
    t->signed_len = (size_t)(dot2 - token);
    return JWT_OK;
}

void jwt_token_free(struct jwt_token *t)
{
    json_decref(t->claims);
    *t = (struct jwt_token){0};
}

/* ---- verifying --------------------------------------------------------------- */

/* ES256/ES384's raw r || s (RFC 7518 3.4) as the DER OpenSSL takes, in a
 * new buffer; NULL when it is not exactly twice the coordinate size. */
static uint8_t *ecdsa_der(const struct jwt_token *t, size_t coord, size_t *der_len)
{
    if (t->sig_len != 2 * coord)
        return NULL;
    ECDSA_SIG *es = ECDSA_SIG_new();
    BIGNUM *r = BN_bin2bn(t->sig, (int)coord, NULL), *s = BN_bin2bn(t->sig + coord, (int)coord, NULL);
    uint8_t *der = NULL;
    if (es && r && s && ECDSA_SIG_set0(es, r, s) == 1) {
        r = s = NULL; /* es owns them */
        int n = i2d_ECDSA_SIG(es, &der);
        *der_len = n > 0 ? (size_t)n : 0;
    }
    BN_free(r);
    BN_free(s);
    ECDSA_SIG_free(es);
    return der;
}

/* RSASSA-PSS as RFC 7518 3.5 fixes it: MGF1 with the same hash, a salt as long as the hash. */
static bool set_pss(EVP_PKEY_CTX *pctx, const char *md)
{
    return EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) == 1 &&
           EVP_PKEY_CTX_set_rsa_mgf1_md_name(pctx, md, NULL) == 1 &&
           EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) == 1;
}

static bool verify_pkey(const struct jwt_token *t, EVP_PKEY *pkey)
{
    const char *md = algs[t->alg].md;
    const uint8_t *sig = t->sig;
    size_t sig_len = t->sig_len;
    uint8_t *der = NULL;
    if (t->alg == JWT_ES256 || t->alg == JWT_ES384) {
        if (!(der = ecdsa_der(t, t->alg == JWT_ES256 ? 32 : 48, &sig_len)))
            return false;
        sig = der;
    }
    EVP_MD_CTX *mctx = EVP_MD_CTX_new();
    EVP_PKEY_CTX *pctx = NULL;
    bool pss = t->alg >= JWT_PS256 && t->alg <= JWT_PS512;
    bool ok = mctx && EVP_DigestVerifyInit_ex(mctx, &pctx, md, NULL, NULL, pkey, NULL) == 1 &&
              (!pss || set_pss(pctx, md)) &&
              EVP_DigestVerify(mctx, sig, sig_len, t->signed_part, t->signed_len) == 1;
    EVP_MD_CTX_free(mctx);
    OPENSSL_free(der);
    return ok;
}

static bool verify_hmac(const struct jwt_token *t, const struct jwt_key *k)
{
    uint8_t mac[EVP_MAX_MD_SIZE];
    size_t mac_len = 0;
    if (!EVP_Q_mac(NULL, "HMAC", NULL, algs[t->alg].md, NULL, k->secret, k->secret_len, t->signed_part,
                   t->signed_len, mac, sizeof(mac), &mac_len))
        return false;
    return mac_len == t->sig_len && CRYPTO_memcmp(mac, t->sig, mac_len) == 0;
}

/* Whether k may be tried for t: it fits the alg, and when the token names a
 * kid, the key has that kid or none (a PEM key or the secret, which cannot
 * disagree). */
/* Pass 0: the key the token's kid names (or, without a kid, every key
 * that fits); pass 1: keys without a kid (PEM, the secret) for a token
 * that names one.  The named key is tried first, so keys without a kid
 * cannot use up the tries before it. */
static bool key_candidate(const struct jwt_token *t, const struct jwt_key *k, int pass)
{
    if (!jwt_key_fits(k, t->alg))
        return false;
    if (pass == 0)
        return !t->has_kid || (k->has_kid && strcmp(k->kid, t->kid) == 0);
    return t->has_kid && !k->has_kid;
}

enum jwt_result jwt_verify(const struct jwt_token *t, const struct jwt_keyset *ks, uint32_t allowed)
{
    if (t->alg <= JWT_ALG_INVALID || t->alg >= JWT_ALG_COUNT || !(allowed & JWT_ALG_BIT(t->alg)))
        return JWT_BAD_ALG;
    bool named = false;
    unsigned tries = 0;
    for (int pass = 0; pass < 2; pass++)
        for (unsigned i = 0; i < ks->n && tries < JWT_MAX_TRIES; i++) {
            const struct jwt_key *k = &ks->v[i];
            if (!key_candidate(t, k, pass))
                continue;
            tries++;
            named |= t->has_kid && k->has_kid;
            if (k->kty == JWT_KTY_OCT ? verify_hmac(t, k) : verify_pkey(t, k->pkey))
                return JWT_OK;
        }
    ERR_clear_error(); /* a failed check's reasons: this thread's queue would only grow */
    /* A kid that no key carries stays unknown even when keys without a kid
     * (PEM, the secret) were tried and failed: that is what makes the
     * handler fetch the key set again (a rotation), not "bad signature". */
    if (t->has_kid && !named)
        return JWT_UNKNOWN_KID;
    return tries ? JWT_BAD_SIGNATURE : JWT_UNKNOWN_KID;
}
