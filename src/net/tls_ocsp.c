/*
 * OCSP (RFC 6960): the request for one certificate, and the checks on the
 * answer before it is believed and cached: the signature (by the issuer or a
 * responder it delegated to, chaining to our trust store), the nonce when
 * the responder echoes it, the certificate id, and thisUpdate/nextUpdate.
 */
#include <openssl/err.h>
#include <openssl/ocsp.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "net/tls_int.h"

/* Clock skew we tolerate between us and the responder (seconds). */
#define OCSP_SKEW 300
/* An answer without nextUpdate older than this is refused: it could be a
 * replayed "good" from before a revocation. */
#define OCSP_MAX_AGE 3600

OCSP_CERTID *ocsp_cert_id(X509 *cert, X509 *issuer, uint8_t key[REV_KEY_LEN])
{
    OCSP_CERTID *id = OCSP_cert_to_id(EVP_sha1(), cert, issuer);
    unsigned char *der = NULL;
    int len = id ? i2d_OCSP_CERTID(id, &der) : -1;
    if (len <= 0) {
        OCSP_CERTID_free(id);
        return NULL;
    }
    rev_key(der, (size_t)len, key);
    OPENSSL_free(der);
    return id;
}

OCSP_REQUEST *ocsp_request(OCSP_CERTID *id, unsigned char **der, int *len)
{
    OCSP_REQUEST *req = OCSP_REQUEST_new();
    OCSP_CERTID *dup = OCSP_CERTID_dup(id);
    if (!req || !dup || !OCSP_request_add0_id(req, dup)) {
        OCSP_CERTID_free(dup);
        OCSP_REQUEST_free(req);
        return NULL;
    }
    *der = NULL;
    if (!OCSP_request_add1_nonce(req, NULL, -1) || (*len = i2d_OCSP_REQUEST(req, der)) <= 0) {
        OCSP_REQUEST_free(req);
        return NULL;
    }
    return req;
}

static enum rev_status status_of(int st)
{
    return st == V_OCSP_CERTSTATUS_GOOD ? REV_GOOD : st == V_OCSP_CERTSTATUS_REVOKED ? REV_REVOKED : REV_UNKNOWN;
}

/* The basic response, with its signature and nonce checked; NULL with why. */
static OCSP_BASICRESP *verified_basic(const uint8_t *p, size_t len, OCSP_REQUEST *req, X509 *issuer,
                                      X509_STORE *store, char *why, size_t wlen)
{
    const unsigned char *q = p;
    OCSP_RESPONSE *resp = d2i_OCSP_RESPONSE(NULL, &q, (long)len);
    if (!resp) {
        snprintf(why, wlen, "not an OCSP response");
        return NULL;
    }
    int rs = OCSP_response_status(resp);
    OCSP_BASICRESP *bs = rs == OCSP_RESPONSE_STATUS_SUCCESSFUL ? OCSP_response_get1_basic(resp) : NULL;
    OCSP_RESPONSE_free(resp);
    if (!bs) {
        snprintf(why, wlen, "OCSP responder answered %s", OCSP_response_status_str(rs));
        return NULL;
    }
    STACK_OF(X509) *extra = sk_X509_new_null();
    if (extra)
        sk_X509_push(extra, issuer);
    int ok = OCSP_basic_verify(bs, extra, store, 0);
    sk_X509_free(extra);
    if (ok <= 0) {
        snprintf(why, wlen, "OCSP response signature does not verify");
    } else if (OCSP_check_nonce(req, bs) == 0) {
        /* -1 (the responder sent no nonce) is allowed: pre-signed answers have none */
        snprintf(why, wlen, "OCSP response nonce does not match the request");
        ok = 0;
    }
    if (ok <= 0) {
        OCSP_BASICRESP_free(bs);
        return NULL;
    }
    return bs;
}

void ocsp_parse_response(const uint8_t *p, size_t len, OCSP_REQUEST *req, OCSP_CERTID *id, X509 *issuer,
                         X509_STORE *store, struct rev_entry *e)
{
    e->status = REV_UNAVAILABLE;
    e->expires = 0;
    OCSP_BASICRESP *bs = verified_basic(p, len, req, issuer, store, e->why, sizeof(e->why));
    if (!bs) {
        ERR_clear_error();
        return;
    }
    int st, reason;
    ASN1_GENERALIZEDTIME *rev, *thisupd, *nextupd;
    if (!OCSP_resp_find_status(bs, id, &st, &reason, &rev, &thisupd, &nextupd)) {
        snprintf(e->why, sizeof(e->why), "OCSP response is not about this certificate");
    } else if (!OCSP_check_validity(thisupd, nextupd, OCSP_SKEW, nextupd ? -1 : OCSP_MAX_AGE)) {
        snprintf(e->why, sizeof(e->why), "OCSP response is outside its validity period");
    } else {
        e->status = (uint8_t)status_of(st);
        e->why[0] = 0;
        struct tm tm;
        if (nextupd && ASN1_TIME_to_tm(nextupd, &tm))
            e->expires = timegm(&tm);
    }
    OCSP_BASICRESP_free(bs);
    ERR_clear_error();
}

char *ocsp_url_of(X509 *cert)
{
    STACK_OF(OPENSSL_STRING) *urls = X509_get1_ocsp(cert);
    char *url = NULL;
    for (int i = 0; !url && i < sk_OPENSSL_STRING_num(urls); i++) {
        const char *u = sk_OPENSSL_STRING_value(urls, i);
        if (!strncmp(u, "http://", 7) || !strncmp(u, "https://", 8))
            url = strdup(u);
    }
    X509_email_free(urls);
    return url;
}
