/*
 * The jwt handler's key sets (jwt.h): a JWKS document's public keys, PEM
 * public keys and certificates, and the one HMAC secret, each turned into
 * a struct jwt_key that jwt_token.c verifies with.  Nothing here logs key
 * material; an error names where the problem is, never the bytes.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/obj_mac.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "core/base64.h"
#include "handlers/jwt.h"

#define JWT_SECRET_FILE_MAX 65536 /* a secret file is a few dozen bytes; a bigger one is a mistake */

/* What one JWK turned out to be: a key, a key to skip, or an error. */
enum jwk_outcome { JWK_USE, JWK_SKIP, JWK_ERROR };

static void key_free(struct jwt_key *k)
{
    EVP_PKEY_free(k->pkey);
    if (k->secret)
        OPENSSL_clear_free(k->secret, k->secret_len);
    *k = (struct jwt_key){0};
}

void jwt_keyset_free(struct jwt_keyset *ks)
{
    for (unsigned i = 0; i < ks->n; i++)
        key_free(&ks->v[i]);
    free(ks->v);
    *ks = (struct jwt_keyset){0};
}

/* k appended to ks (which then owns what k held); -1 when out of memory. */
static int keyset_push(struct jwt_keyset *ks, const struct jwt_key *k)
{
    struct jwt_key *v = realloc(ks->v, (ks->n + 1) * sizeof(*v));
    if (!v)
        return -1;
    ks->v = v;
    ks->v[ks->n++] = *k;
    return 0;
}

/* ---- EVP_PKEY from raw parameters ---------------------------------------- */

static EVP_PKEY *pkey_from_params(const char *type, OSSL_PARAM_BLD *bld)
{
    OSSL_PARAM *params = OSSL_PARAM_BLD_to_param(bld);
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, type, NULL);
    EVP_PKEY *pkey = NULL;
    if (params && ctx && EVP_PKEY_fromdata_init(ctx) == 1 &&
        EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) != 1)
        pkey = NULL;
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);
    return pkey;
}

/* Whether pkey's public key is valid (for EC: the point is on its curve). */
static bool public_key_ok(EVP_PKEY *pkey)
{
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);
    bool ok = ctx && EVP_PKEY_public_check(ctx) == 1;
    EVP_PKEY_CTX_free(ctx);
    return ok;
}

static EVP_PKEY *rsa_from_bytes(const uint8_t *n, size_t nlen, const uint8_t *e, size_t elen)
{
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    BIGNUM *bn = BN_bin2bn(n, (int)nlen, NULL), *be = BN_bin2bn(e, (int)elen, NULL);
    EVP_PKEY *pkey = NULL;
    if (bld && bn && be && OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn) &&
        OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, be))
        pkey = pkey_from_params("RSA", bld);
    BN_free(bn);
    BN_free(be);
    OSSL_PARAM_BLD_free(bld);
    return pkey;
}

/* group: "prime256v1" or "secp384r1"; point: 0x04 || x || y. */
static EVP_PKEY *ec_from_point(const char *group, const uint8_t *point, size_t len)
{
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    EVP_PKEY *pkey = NULL;
    if (bld && OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, group, 0) &&
        OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, point, len))
        pkey = pkey_from_params("EC", bld);
    OSSL_PARAM_BLD_free(bld);
    if (pkey && !public_key_ok(pkey)) {
        EVP_PKEY_free(pkey);
        pkey = NULL;
    }
    return pkey;
}

static EVP_PKEY *ed25519_from_bytes(const uint8_t *x, size_t len)
{
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    EVP_PKEY *pkey = NULL;
    if (bld && OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, x, len))
        pkey = pkey_from_params("ED25519", bld);
    OSSL_PARAM_BLD_free(bld);
    return pkey;
}

/* ---- one JWK -------------------------------------------------------------- */

/* Reading one JWK: where errors go. */
struct jwk_ctx {
    const json_t *o;
    unsigned index;
    char *err;
    size_t errlen;
};

static enum jwk_outcome jwk_fail(const struct jwk_ctx *c, const char *what)
{
    snprintf(c->err, c->errlen, "keys[%u]: %s", c->index, what);
    return JWK_ERROR;
}

/* Member `name`, a base64url string, decoded into out: its length, or -1
 * (absent, not a string, not base64url, longer than max). */
static int jwk_bytes(const struct jwk_ctx *c, const char *name, uint8_t *out, size_t max)
{
    const json_t *v = json_object_get(c->o, name);
    if (!json_is_string(v))
        return -1;
    return base64url_decode(json_string_value(v), json_string_length(v), out, max);
}

/* An optional string member: true and *s (NULL when absent), or false when
 * it is there but not a string. */
static bool jwk_string(const struct jwk_ctx *c, const char *name, const char **s)
{
    const json_t *v = json_object_get(c->o, name);
    *s = json_string_value(v);
    return !v || *s;
}

static enum jwk_outcome jwk_rsa(const struct jwk_ctx *c, struct jwt_key *k)
{
    uint8_t n[JWT_SIG_MAX + 1], e[16];
    int nlen = jwk_bytes(c, "n", n, sizeof(n)), elen = jwk_bytes(c, "e", e, sizeof(e));
    if (nlen <= 0 || elen <= 0)
        return jwk_fail(c, "RSA \"n\" or \"e\" missing or not base64url (or too long)");
    if (nlen > JWT_SIG_MAX)
        return JWK_SKIP; /* a signature bigger than we take: over RSA 8192 */
    if (!(k->pkey = rsa_from_bytes(n, (size_t)nlen, e, (size_t)elen)))
        return jwk_fail(c, "RSA key not usable");
    if (EVP_PKEY_get_bits(k->pkey) < JWT_MIN_RSA_BITS)
        return JWK_SKIP;
    k->kty = JWT_KTY_RSA;
    return JWK_USE;
}

static enum jwk_outcome jwk_ec(const struct jwk_ctx *c, struct jwt_key *k, const char *crv)
{
    bool p256 = strcmp(crv, "P-256") == 0;
    if (!p256 && strcmp(crv, "P-384") != 0)
        return JWK_SKIP;
    size_t size = p256 ? 32 : 48;
    uint8_t point[1 + 2 * 48] = {0x04};
    if (jwk_bytes(c, "x", point + 1, size) != (int)size || jwk_bytes(c, "y", point + 1 + size, size) != (int)size)
        return jwk_fail(c, "EC \"x\" or \"y\" missing, not base64url or not the curve's size");
    if (!(k->pkey = ec_from_point(p256 ? "prime256v1" : "secp384r1", point, 1 + 2 * size)))
        return jwk_fail(c, "EC point not on the curve");
    k->kty = JWT_KTY_EC;
    k->curve = p256 ? NID_X9_62_prime256v1 : NID_secp384r1;
    return JWK_USE;
}

static enum jwk_outcome jwk_okp(const struct jwk_ctx *c, struct jwt_key *k, const char *crv)
{
    if (strcmp(crv, "Ed25519") != 0)
        return JWK_SKIP; /* Ed448, X25519 (not for signatures) */
    uint8_t x[32];
    if (jwk_bytes(c, "x", x, sizeof(x)) != (int)sizeof(x))
        return jwk_fail(c, "OKP \"x\" missing, not base64url or not 32 bytes");
    if (!(k->pkey = ed25519_from_bytes(x, sizeof(x))))
        return jwk_fail(c, "Ed25519 key not usable");
    k->kty = JWT_KTY_OKP;
    k->curve = NID_ED25519;
    return JWK_USE;
}

/* Whether alg verifies with a key of type kty and curve (jwt.h: one key
 * type per algorithm). */
static bool alg_fits(enum jwt_alg a, enum jwt_kty kty, int curve)
{
    switch (a) {
    case JWT_RS256: case JWT_RS384: case JWT_RS512:
    case JWT_PS256: case JWT_PS384: case JWT_PS512:
        return kty == JWT_KTY_RSA;
    case JWT_ES256:
        return kty == JWT_KTY_EC && curve == NID_X9_62_prime256v1;
    case JWT_ES384:
        return kty == JWT_KTY_EC && curve == NID_secp384r1;
    case JWT_EDDSA:
        return kty == JWT_KTY_OKP && curve == NID_ED25519;
    case JWT_HS256: case JWT_HS384: case JWT_HS512:
        return kty == JWT_KTY_OCT;
    default:
        return false;
    }
}

/* RFC 7518 3.2: an HMAC key at least as long as the hash. */
static size_t hmac_min_key(enum jwt_alg a) { return a == JWT_HS512 ? 64 : a == JWT_HS384 ? 48 : 32; }

bool jwt_key_fits(const struct jwt_key *k, enum jwt_alg a)
{
    if (k->kty == JWT_KTY_OCT && k->secret_len < hmac_min_key(a))
        return false;
    return alg_fits(a, k->kty, k->curve) && (k->alg == JWT_ALG_INVALID || k->alg == a);
}

/* The members every JWK may have: use, alg, kid.  Decides skips that do
 * not depend on the key material. */
static enum jwk_outcome jwk_common(const struct jwk_ctx *c, struct jwt_key *k)
{
    const char *use, *alg, *kid;
    if (!jwk_string(c, "use", &use) || !jwk_string(c, "alg", &alg) || !jwk_string(c, "kid", &kid))
        return jwk_fail(c, "\"use\", \"alg\" or \"kid\" not a string");
    if (use && strcmp(use, "sig") != 0)
        return JWK_SKIP;
    if (alg && (k->alg = jwt_alg_from_name(alg, strlen(alg))) == JWT_ALG_INVALID)
        return JWK_SKIP;
    if (kid && strlen(kid) > JWT_KID_MAX)
        return JWK_SKIP;
    if (kid) {
        memcpy(k->kid, kid, strlen(kid) + 1);
        k->has_kid = true;
    }
    return JWK_USE;
}

static enum jwk_outcome jwk_parse(const struct jwk_ctx *c, struct jwt_key *k)
{
    const char *kty, *crv;
    if (!json_is_object(c->o))
        return jwk_fail(c, "not an object");
    if (!jwk_string(c, "kty", &kty) || !kty || !jwk_string(c, "crv", &crv))
        return jwk_fail(c, "\"kty\" missing, or \"kty\" or \"crv\" not a string");
    enum jwk_outcome r = jwk_common(c, k);
    if (r != JWK_USE)
        return r;
    if (strcmp(kty, "RSA") == 0)
        r = jwk_rsa(c, k);
    else if (strcmp(kty, "EC") == 0 && crv)
        r = jwk_ec(c, k, crv);
    else if (strcmp(kty, "OKP") == 0 && crv)
        r = jwk_okp(c, k, crv);
    else if (strcmp(kty, "EC") == 0 || strcmp(kty, "OKP") == 0)
        return jwk_fail(c, "\"crv\" missing");
    else
        return JWK_SKIP; /* "oct" (never published) or a type we do not know */
    if (r == JWK_USE && k->alg != JWT_ALG_INVALID && !alg_fits(k->alg, k->kty, k->curve))
        return JWK_SKIP; /* an "alg" of another key type: not for us to guess */
    return r;
}

/* ---- a JWKS document --------------------------------------------------- */

static bool kid_taken(const struct jwt_keyset *a, const struct jwt_keyset *b, const struct jwt_key *k)
{
    const struct jwt_keyset *sets[] = {a, b};
    for (int s = 0; s < 2 && k->has_kid; s++)
        for (unsigned i = 0; i < sets[s]->n; i++)
            if (sets[s]->v[i].has_kid && strcmp(sets[s]->v[i].kid, k->kid) == 0)
                return true;
    return false;
}

/* Each JWK of keys into out.  A key that is malformed, a second one with
 * a kid already taken and those past JWT_MAX_KEYS are skipped like keys of
 * a kind mgate does not use, the first such fault kept in err: one bad key
 * must not keep a rotated set (or an emptied one, a revocation) out.
 * -1 only when out of memory. */
static int jwks_keys(const json_t *keys, const struct jwt_keyset *ks, struct jwt_keyset *out, unsigned *skipped,
                     char *err, size_t errlen)
{
    for (size_t i = 0; i < json_array_size(keys); i++) {
        char why[200];
        struct jwk_ctx c = {.o = json_array_get(keys, i), .index = (unsigned)i, .err = why, .errlen = sizeof(why)};
        struct jwt_key k = {0};
        enum jwk_outcome r = jwk_parse(&c, &k);
        if (r == JWK_USE && kid_taken(ks, out, &k))
            r = jwk_fail(&c, "a second key with this \"kid\" (the first is kept)");
        if (r == JWK_USE && ks->n + out->n >= JWT_MAX_KEYS)
            r = jwk_fail(&c, "past " "64" " usable keys");
        if (r == JWK_USE && keyset_push(out, &k) < 0) {
            key_free(&k);
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        if (r == JWK_USE)
            continue;
        key_free(&k);
        if (r == JWK_ERROR && !*err)
            snprintf(err, errlen, "%s", why);
        ++*skipped;
    }
    return 0;
}

_Static_assert(JWT_MAX_KEYS == 64, "the error message above says 64");

int jwt_jwks_parse(const uint8_t *json, size_t len, struct jwt_keyset *ks, unsigned *skipped, char *err,
                   size_t errlen)
{
    json_error_t jerr;
    json_t *root = json_loadb((const char *)json, len, JSON_REJECT_DUPLICATES /* and, without JSON_ALLOW_NUL, no U+0000 */, &jerr);
    const json_t *keys = json_object_get(root, "keys");
    struct jwt_keyset got = {0};
    unsigned skips = 0;
    int rc = -1;
    *err = '\0';
    if (!root)
        snprintf(err, errlen, "not JSON: %s (line %d)", jerr.text, jerr.line);
    else if (!json_is_object(root) || !json_is_array(keys))
        snprintf(err, errlen, "not a JWKS: no \"keys\" array");
    else
        rc = jwks_keys(keys, ks, &got, &skips, err, errlen);
    json_decref(root);
    for (unsigned i = 0; rc == 0 && i < got.n; i++)
        if (keyset_push(ks, &got.v[i]) < 0) {
            snprintf(err, errlen, "out of memory");
            while (i--) /* ks as it was: those pushed are still got's */
                ks->n--;
            rc = -1;
        }
    if (rc == 0) {
        free(got.v); /* its keys are ks's now */
        *skipped = skips;
    } else {
        jwt_keyset_free(&got);
    }
    return rc;
}

/* ---- PEM files and the secret ------------------------------------------- */

/* A key from a PEM block (or a certificate) into k; false with err if
 * mgate cannot use it. */
static bool key_from_pkey(EVP_PKEY *pkey, struct jwt_key *k, const char **why)
{
    char group[32];
    k->pkey = pkey;
    switch (EVP_PKEY_get_base_id(pkey)) {
    case EVP_PKEY_RSA:
        k->kty = JWT_KTY_RSA;
        *why = "an RSA key under 2048 bits";
        return EVP_PKEY_get_bits(pkey) >= JWT_MIN_RSA_BITS && EVP_PKEY_get_size(pkey) <= JWT_SIG_MAX;
    case EVP_PKEY_EC:
        k->kty = JWT_KTY_EC;
        *why = "an EC key on a curve other than P-256 or P-384";
        if (!EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group), NULL))
            return false;
        k->curve = strcmp(group, "prime256v1") == 0 ? NID_X9_62_prime256v1
                   : strcmp(group, "secp384r1") == 0 ? NID_secp384r1
                                                     : NID_undef;
        return k->curve != NID_undef;
    case EVP_PKEY_ED25519:
        k->kty = JWT_KTY_OKP;
        k->curve = NID_ED25519;
        return true;
    default:
        *why = "a key type other than RSA, EC or Ed25519";
        return false;
    }
}

/* One PEM block's public key: "PUBLIC KEY" or "CERTIFICATE"; NULL for any
 * other block, with *why set when the block is refused outright. */
static EVP_PKEY *pem_block_key(const char *name, const uint8_t *data, long len, const char **why)
{
    const unsigned char *p = data;
    *why = NULL;
    if (strstr(name, "PRIVATE KEY")) {
        *why = "holds a private key: give the public key only (openssl pkey -pubout)";
        return NULL;
    }
    if (strcmp(name, "PUBLIC KEY") == 0)
        return d2i_PUBKEY(NULL, &p, len);
    if (strcmp(name, "CERTIFICATE") != 0)
        return NULL; /* parameters, CRLs...: not keys */
    X509 *x = d2i_X509(NULL, &p, len);
    EVP_PKEY *pkey = x ? X509_get_pubkey(x) : NULL;
    X509_free(x);
    return pkey;
}

/* Every block of bio into got; -1 with *why. */
static int pem_blocks(BIO *bio, struct jwt_keyset *got, const char **why)
{
    char *name = NULL, *header = NULL;
    uint8_t *data = NULL;
    long len;
    int rc = 0;
    while (rc == 0 && PEM_read_bio(bio, &name, &header, &data, &len) == 1) {
        EVP_PKEY *pkey = pem_block_key(name, data, len, why);
        struct jwt_key k = {0};
        if (*why)
            rc = -1;
        else if (pkey && (!key_from_pkey(pkey, &k, why) || keyset_push(got, &k) < 0))
            rc = -1;
        if (rc < 0)
            key_free(&k);
        if (rc < 0 && !*why)
            *why = "out of memory";
        OPENSSL_free(name);
        OPENSSL_free(header);
        OPENSSL_clear_free(data, (size_t)len);
    }
    if (rc == 0 && !got->n) {
        *why = "no PUBLIC KEY or CERTIFICATE block";
        rc = -1;
    }
    return rc;
}

int jwt_pem_load(const char *path, struct jwt_keyset *ks, char *err, size_t errlen)
{
    BIO *bio = BIO_new_file(path, "r");
    struct jwt_keyset got = {0};
    const char *why = "cannot be read";
    int rc = bio ? pem_blocks(bio, &got, &why) : -1;
    BIO_free(bio);
    ERR_clear_error(); /* PEM_read_bio's "no start line" at the end of the file */
    if (rc == 0 && ks->n + got.n > JWT_MAX_KEYS) {
        why = "too many keys";
        rc = -1;
    }
    for (unsigned i = 0; rc == 0 && i < got.n; i++)
        if (keyset_push(ks, &got.v[i]) < 0) {
            ks->n -= i;
            why = "out of memory";
            rc = -1;
        }
    if (rc == 0) {
        free(got.v);
        return 0;
    }
    snprintf(err, errlen, "%s: %s", path, why);
    jwt_keyset_free(&got);
    return -1;
}

/* The whole of path (at most JWT_SECRET_FILE_MAX bytes) into a new buffer. */
static uint8_t *read_secret(const char *path, size_t *len, const char **why)
{
    FILE *f = fopen(path, "rb");
    uint8_t *buf = f ? malloc(JWT_SECRET_FILE_MAX + 1) : NULL;
    *why = f ? "out of memory" : "cannot be read";
    *len = buf ? fread(buf, 1, JWT_SECRET_FILE_MAX + 1, f) : 0;
    if (buf && (ferror(f) || *len > JWT_SECRET_FILE_MAX)) {
        *why = ferror(f) ? "cannot be read" : "too big for a secret";
        OPENSSL_clear_free(buf, JWT_SECRET_FILE_MAX + 1);
        buf = NULL;
    }
    if (f)
        fclose(f);
    return buf;
}

int jwt_secret_load(const char *path, struct jwt_keyset *ks, char *err, size_t errlen)
{
    const char *why;
    size_t len;
    uint8_t *buf = read_secret(path, &len, &why);
    size_t nl = buf && len && buf[len - 1] == '\n' ? (len > 1 && buf[len - 2] == '\r' ? 2 : 1) : 0;
    len -= nl; /* one line ending, as an editor leaves it: not part of the secret */
    struct jwt_key k = {.kty = JWT_KTY_OCT, .secret = buf, .secret_len = len};
    if (buf && len < JWT_MIN_SECRET)
        why = "shorter than 32 bytes";
    else if (buf && ks->n >= JWT_MAX_KEYS)
        why = "too many keys";
    else if (buf && keyset_push(ks, &k) == 0)
        return 0;
    if (buf)
        OPENSSL_clear_free(buf, JWT_SECRET_FILE_MAX + 1); /* all read_secret took */
    snprintf(err, errlen, "%s: %s", path, why);
    return -1;
}
