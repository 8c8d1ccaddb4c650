/*
 * mgate-jwt-bench: what the jwt handler costs per CONNECT on one core.
 * For RS256, ES256, EdDSA and HS256 it signs one token with a key made
 * here, then runs jwt_parse + jwt_verify + jwt_check_claims on it for
 * about a second and prints verifications per second.
 *
 *   build/mgate-jwt-bench [seconds per algorithm, default 1]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/ec.h>
#include <openssl/pem.h>

#include "bench/clock.h"
#include "handlers/jwt.h"

#define BENCH_SECRET "bench-secret-bench-secret-bench-secret"

/* base64url without padding, from OpenSSL's base64, in place in out. */
static size_t to_b64url(const uint8_t *p, size_t n, char *out)
{
    int len = EVP_EncodeBlock((unsigned char *)out, p, (int)n);
    while (len > 0 && out[len - 1] == '=')
        len--;
    for (int i = 0; i < len; i++)
        out[i] = out[i] == '+' ? '-' : out[i] == '/' ? '_' : out[i];
    out[len] = '\0';
    return (size_t)len;
}

/* ES256's DER signature as JWS's r || s, in place; its new length. */
static size_t der_to_raw(uint8_t *sig, size_t len)
{
    const uint8_t *p = sig;
    ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &p, (long)len);
    if (!es)
        return 0;
    BN_bn2binpad(ECDSA_SIG_get0_r(es), sig, 32);
    BN_bn2binpad(ECDSA_SIG_get0_s(es), sig + 32, 32);
    ECDSA_SIG_free(es);
    return 64;
}

/* "header.payload" signed with alg by k (HS256: the bench secret); the
 * signature's base64url appended after a dot. */
static void sign_into(char *tok, enum jwt_alg alg, EVP_PKEY *k)
{
    uint8_t sig[1024];
    size_t n = sizeof(sig), len = strlen(tok);
    if (alg == JWT_HS256) {
        EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, BENCH_SECRET, strlen(BENCH_SECRET), (uint8_t *)tok, len,
                  sig, n, &n);
    } else {
        EVP_MD_CTX *m = EVP_MD_CTX_new();
        if (EVP_DigestSignInit_ex(m, NULL, alg == JWT_EDDSA ? NULL : "SHA256", NULL, NULL, k, NULL) != 1 ||
            EVP_DigestSign(m, sig, &n, (uint8_t *)tok, len) != 1)
            n = 0;
        EVP_MD_CTX_free(m);
        if (alg == JWT_ES256)
            n = der_to_raw(sig, n);
    }
    tok[len] = '.';
    to_b64url(sig, n, tok + len + 1);
}

/* A token for alg with claims a real one would carry. */
static void make_token(char *tok, enum jwt_alg alg, EVP_PKEY *k)
{
    char json[256];
    size_t n = (size_t)snprintf(json, sizeof(json), "{\"alg\":\"%s\",\"typ\":\"JWT\"}", jwt_alg_name(alg));
    size_t len = to_b64url((uint8_t *)json, n, tok);
    tok[len++] = '.';
    n = (size_t)snprintf(json, sizeof(json),
                         "{\"sub\":\"device-42\",\"iss\":\"https://idp.example\",\"aud\":\"mgate\",\"exp\":%ld,"
                         "\"iat\":%ld,\"acl\":{\"pub\":[\"up/%%u/#\"],\"sub\":[\"down/%%u/+\"]}}",
                         (long)time(NULL) + 3600, (long)time(NULL));
    to_b64url((uint8_t *)json, n, tok + len);
    sign_into(tok, alg, k);
}

/* Verifications per second of tok against ks, for about `seconds`. */
static double run(const char *tok, const struct jwt_keyset *ks, double seconds)
{
    struct jwt_policy p = {.issuer = "https://idp.example", .audience = "mgate", .leeway_s = 30, .require_exp = true};
    uint64_t start = now_ns(), end = start + (uint64_t)(seconds * NS), n = 0, t = start, exp;
    size_t len = strlen(tok);
    while (t < end) {
        for (int i = 0; i < 16; i++, n++) {
            struct jwt_token jt;
            if (jwt_parse((const uint8_t *)tok, len, &jt) != JWT_OK || jwt_verify(&jt, ks, ~0u) != JWT_OK ||
                jwt_check_claims(&jt, &p, (uint64_t)time(NULL), &exp) != JWT_OK) {
                fprintf(stderr, "a good token was refused\n");
                exit(1);
            }
            jwt_token_free(&jt);
        }
        t = now_ns();
    }
    return (double)n * NS / (double)(t - start);
}

/* k's public key into ks, through a PEM file as an operator gives it. */
static void add_pem(struct jwt_keyset *ks, EVP_PKEY *k, const char *dir)
{
    char path[256], err[300];
    snprintf(path, sizeof(path), "%s/key.pem", dir);
    FILE *f = fopen(path, "w");
    if (!f || !PEM_write_PUBKEY(f, k) || fclose(f) != 0 || jwt_pem_load(path, ks, err, sizeof(err)) < 0) {
        fprintf(stderr, "key: %s\n", err);
        exit(1);
    }
    unlink(path);
}

static void add_secret(struct jwt_keyset *ks, const char *dir)
{
    char path[256], err[300];
    snprintf(path, sizeof(path), "%s/secret", dir);
    FILE *f = fopen(path, "w");
    if (!f || fputs(BENCH_SECRET, f) < 0 || fclose(f) != 0 || jwt_secret_load(path, ks, err, sizeof(err)) < 0) {
        fprintf(stderr, "secret: %s\n", err);
        exit(1);
    }
    unlink(path);
}

int main(int argc, char **argv)
{
    double seconds = argc > 1 ? atof(argv[1]) : 1.0;
    char dir[] = "/tmp/mgate-jwt-bench.XXXXXX";
    if (seconds <= 0 || !mkdtemp(dir))
        return 2;
    const enum jwt_alg algs[] = {JWT_RS256, JWT_ES256, JWT_EDDSA, JWT_HS256};
    EVP_PKEY *keys[] = {EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048),
                        EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256"), EVP_PKEY_Q_keygen(NULL, NULL, "ED25519"), NULL};
    struct jwt_keyset ks = {0};
    for (int i = 0; i < 3; i++)
        add_pem(&ks, keys[i], dir);
    add_secret(&ks, dir);
    rmdir(dir);
    printf("jwt_parse + jwt_verify + jwt_check_claims, one core, %.1f s each\n", seconds);
    for (int i = 0; i < 4; i++) {
        char tok[2048];
        make_token(tok, algs[i], keys[i]);
        printf("%-6s %10.0f verifications/s\n", jwt_alg_name(algs[i]), run(tok, &ks, seconds));
        EVP_PKEY_free(keys[i]);
    }
    jwt_keyset_free(&ks);
    return 0;
}
