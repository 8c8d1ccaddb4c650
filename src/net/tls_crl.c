/*
 * CRLs and certificates from files and downloads, and the questions the
 * verify callback asks of them.  RFC 5280 says a distribution point serves
 * DER; operators often put PEM there anyway, so both are read.
 */
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "net/tls_int.h"

X509_CRL *crl_parse(const uint8_t *p, size_t len)
{
    const unsigned char *q = p;
    X509_CRL *crl = d2i_X509_CRL(NULL, &q, (long)len);
    if (!crl) {
        BIO *b = BIO_new_mem_buf(p, (int)len);
        crl = b ? PEM_read_bio_X509_CRL(b, NULL, NULL, NULL) : NULL;
        BIO_free(b);
    }
    ERR_clear_error();
    return crl;
}

static uint8_t *read_file(const char *path, size_t *len, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "\"%s\": cannot open", path);
        return NULL;
    }
    size_t cap = 1 << 16, n = 0;
    uint8_t *buf = malloc(cap);
    while (buf) {
        n += fread(buf + n, 1, cap - n, f);
        if (n < cap || cap >= (64u << 20))
            break;
        uint8_t *nb = realloc(buf, cap * 2);
        if (!nb) {
            free(buf);
            buf = NULL;
            break;
        }
        buf = nb;
        cap *= 2;
    }
    fclose(f);
    if (!buf)
        snprintf(err, errlen, "\"%s\": out of memory", path);
    *len = n;
    return buf;
}

X509_CRL *crl_load(const char *path, char *err, size_t errlen)
{
    size_t len;
    uint8_t *p = read_file(path, &len, err, errlen);
    if (!p)
        return NULL;
    X509_CRL *crl = crl_parse(p, len);
    free(p);
    if (!crl)
        snprintf(err, errlen, "\"%s\": not a CRL (DER or PEM)", path);
    return crl;
}

X509 *cert_load(const char *path, char *err, size_t errlen)
{
    BIO *b = BIO_new_file(path, "r");
    X509 *x = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
    if (!x && b) {
        (void)BIO_reset(b);
        x = d2i_X509_bio(b, NULL);
    }
    BIO_free(b);
    ERR_clear_error();
    if (!x)
        snprintf(err, errlen, "\"%s\": %s", path, b ? "not a certificate (PEM or DER)" : "cannot open");
    return x;
}

int crl_check_issuer(X509_CRL *crl, X509 *issuer, char *why, size_t len)
{
    if (X509_NAME_cmp(X509_CRL_get_issuer(crl), X509_get_subject_name(issuer))) {
        snprintf(why, len, "CRL issuer is not the certificate's issuer");
        return -1;
    }
    EVP_PKEY *k = X509_get0_pubkey(issuer);
    if (!k || X509_CRL_verify(crl, k) != 1) {
        ERR_clear_error();
        snprintf(why, len, "CRL signature does not verify");
        return -1;
    }
    return 0;
}

bool crl_signed_by_one_of(X509_CRL *crl, const char *ca_file)
{
    BIO *b = BIO_new_file(ca_file, "r");
    bool ok = false;
    X509 *x;
    char why[64];
    while (b && !ok && (x = PEM_read_bio_X509(b, NULL, NULL, NULL))) {
        ok = crl_check_issuer(crl, x, why, sizeof(why)) == 0;
        X509_free(x);
    }
    BIO_free(b);
    ERR_clear_error();
    return ok;
}

bool crl_older(X509_CRL *crl, X509_CRL *than)
{
    ASN1_INTEGER *a = X509_CRL_get_ext_d2i(crl, NID_crl_number, NULL, NULL);
    ASN1_INTEGER *b = X509_CRL_get_ext_d2i(than, NID_crl_number, NULL, NULL);
    bool older = a && b ? ASN1_INTEGER_cmp(a, b) < 0
                        : ASN1_TIME_compare(X509_CRL_get0_lastUpdate(crl), X509_CRL_get0_lastUpdate(than)) < 0;
    ASN1_INTEGER_free(a);
    ASN1_INTEGER_free(b);
    return older;
}

bool crl_expired(X509_CRL *crl, time_t now)
{
    const ASN1_TIME *next = X509_CRL_get0_nextUpdate(crl);
    return next && X509_cmp_time(next, &now) < 0;
}

bool crl_revokes(X509_CRL *crl, X509 *cert)
{
    X509_REVOKED *r = NULL;
    return X509_CRL_get0_by_cert(crl, &r, cert) == 1;
}

/* The first http(s) URI of a GENERAL_NAMES, malloc'd. */
static char *first_http_uri(GENERAL_NAMES *names)
{
    for (int i = 0; names && i < sk_GENERAL_NAME_num(names); i++) {
        GENERAL_NAME *g = sk_GENERAL_NAME_value(names, i);
        if (g->type != GEN_URI)
            continue;
        const char *u = (const char *)ASN1_STRING_get0_data(g->d.uniformResourceIdentifier);
        if (!strncmp(u, "http://", 7) || !strncmp(u, "https://", 8))
            return strdup(u);
    }
    return NULL;
}

char *crl_url_of(X509 *cert)
{
    STACK_OF(DIST_POINT) *dps = X509_get_ext_d2i(cert, NID_crl_distribution_points, NULL, NULL);
    char *url = NULL;
    for (int i = 0; !url && i < sk_DIST_POINT_num(dps); i++) {
        DIST_POINT *dp = sk_DIST_POINT_value(dps, i);
        if (dp->distpoint && dp->distpoint->type == 0)
            url = first_http_uri(dp->distpoint->name.fullname);
    }
    sk_DIST_POINT_pop_free(dps, DIST_POINT_free);
    return url;
}

/* The subject's one CN as UTF-8, or "" when there is none, more than one,
 * one with a NUL inside, or one too long for buf: a name that could be read
 * two ways is no name (it may become a username). */
void cert_cn(X509 *cert, char *buf, size_t len)
{
    buf[0] = 0;
    X509_NAME *name = X509_get_subject_name(cert);
    int i = X509_NAME_get_index_by_NID(name, NID_commonName, -1);
    if (i < 0 || X509_NAME_get_index_by_NID(name, NID_commonName, i) >= 0)
        return;
    unsigned char *utf8 = NULL;
    int n = ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, i)));
    if (n > 0 && (size_t)n < len && !memchr(utf8, 0, (size_t)n)) {
        memcpy(buf, utf8, (size_t)n);
        buf[n] = 0;
    }
    OPENSSL_free(utf8);
}

void cert_serial(X509 *cert, char *buf, size_t len)
{
    BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert), NULL);
    char *hex = bn ? BN_bn2hex(bn) : NULL;
    snprintf(buf, len, "%s", hex ? hex : "");
    OPENSSL_free(hex);
    BN_free(bn);
}
