/* The revocation answer cache and the CRL helpers: what is kept, for how
 * long, what is dropped when full; CRLs read as DER and PEM, expiry and
 * revocation lookups, against a CRL and certificates made here. */
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <stdlib.h>

#include "check.h"
#include "net/tls_int.h"

static struct rev_entry entry(const char *name, enum rev_status st, time_t expires)
{
    struct rev_entry e = {.status = (uint8_t)st, .expires = expires};
    rev_key(name, strlen(name), e.key);
    return e;
}

static bool get(struct rev_cache *c, const char *name, struct rev_entry *out)
{
    uint8_t key[REV_KEY_LEN];
    rev_key(name, strlen(name), key);
    return rev_cache_get(c, key, out);
}

static void test_cache(void)
{
    struct rev_cache c;
    CHECK_EQ_INT(rev_cache_init(&c, 3), 0);
    time_t now = time(NULL);
    struct rev_entry e = entry("a", REV_GOOD, now + 100), out;
    rev_cache_put(&c, &e);
    CHECK(get(&c, "a", &out));
    CHECK_EQ_INT(out.status, REV_GOOD);
    CHECK(!get(&c, "b", &out));
    e = entry("a", REV_REVOKED, now + 100); /* replaced, not added */
    rev_cache_put(&c, &e);
    CHECK(get(&c, "a", &out));
    CHECK_EQ_INT(out.status, REV_REVOKED);
    CHECK_EQ_INT(c.n, 1);
    e = entry("old", REV_GOOD, now - 1); /* expired: never served */
    rev_cache_put(&c, &e);
    CHECK(!get(&c, "old", &out));
    e = entry("soon", REV_GOOD, now + 10);
    rev_cache_put(&c, &e);
    CHECK_EQ_INT(c.n, 3);
    e = entry("new", REV_GOOD, now + 200); /* full: the expired one goes first */
    rev_cache_put(&c, &e);
    CHECK(get(&c, "new", &out) && get(&c, "soon", &out) && get(&c, "a", &out));
    e = entry("newer", REV_GOOD, now + 300); /* full, none expired: the first to expire goes */
    rev_cache_put(&c, &e);
    CHECK(!get(&c, "soon", &out));
    CHECK(get(&c, "newer", &out) && get(&c, "a", &out) && get(&c, "new", &out));
    CHECK_EQ_INT(c.n, 3);
    CHECK(c.hits >= 6 && c.misses >= 3);
    rev_cache_free(&c);
}

/* A self-signed CA, a certificate it issued, and a CRL revoking serial 7. */
static EVP_PKEY *key(void) { return EVP_EC_gen("P-256"); }

static X509 *cert(EVP_PKEY *k, EVP_PKEY *signer, X509 *issuer, long serial, const char *cn)
{
    X509 *x = X509_new();
    ASN1_INTEGER_set(X509_get_serialNumber(x), serial);
    X509_gmtime_adj(X509_getm_notBefore(x), -60);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_set_pubkey(x, k);
    X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    X509_set_issuer_name(x, X509_get_subject_name(issuer ? issuer : x));
    X509_sign(x, signer, EVP_sha256());
    return x;
}

static X509_CRL *crl(X509 *ca, EVP_PKEY *cakey, long revoked, long next_secs)
{
    X509_CRL *c = X509_CRL_new();
    X509_CRL_set_version(c, 1);
    X509_CRL_set_issuer_name(c, X509_get_subject_name(ca));
    ASN1_TIME *t = X509_gmtime_adj(NULL, -60);
    X509_CRL_set1_lastUpdate(c, t);
    X509_gmtime_adj(t, next_secs);
    X509_CRL_set1_nextUpdate(c, t);
    ASN1_TIME_free(t);
    X509_REVOKED *r = X509_REVOKED_new();
    ASN1_INTEGER *sn = ASN1_INTEGER_new();
    ASN1_INTEGER_set(sn, revoked);
    X509_REVOKED_set_serialNumber(r, sn);
    ASN1_INTEGER_free(sn);
    ASN1_TIME *rt = X509_gmtime_adj(NULL, -30);
    X509_REVOKED_set_revocationDate(r, rt);
    ASN1_TIME_free(rt);
    X509_CRL_add0_revoked(c, r);
    X509_CRL_sort(c);
    X509_CRL_sign(c, cakey, EVP_sha256());
    return c;
}

static void test_crl(void)
{
    EVP_PKEY *cak = key(), *k = key(), *otherk = key();
    X509 *ca = cert(cak, cak, NULL, 1, "test CA");
    X509 *other = cert(otherk, otherk, NULL, 2, "other CA");
    X509 *good = cert(k, cak, ca, 6, "good"), *bad = cert(k, cak, ca, 7, "bad");
    X509_CRL *c = crl(ca, cak, 7, 3600);

    unsigned char *der = NULL;
    int len = i2d_X509_CRL(c, &der);
    X509_CRL *from_der = crl_parse(der, (size_t)len);
    CHECK(from_der != NULL);
    BIO *b = BIO_new(BIO_s_mem());
    PEM_write_bio_X509_CRL(b, c);
    char *pem;
    long pemlen = BIO_get_mem_data(b, &pem);
    X509_CRL *from_pem = crl_parse((const uint8_t *)pem, (size_t)pemlen);
    CHECK(from_pem != NULL);
    CHECK(crl_parse((const uint8_t *)"garbage", 7) == NULL);

    char why[200] = "";
    CHECK_EQ_INT(crl_check_issuer(from_pem, ca, why, sizeof(why)), 0);
    CHECK_EQ_INT(crl_check_issuer(from_der, other, why, sizeof(why)), -1);
    CHECK(strstr(why, "issuer") != NULL);
    CHECK(crl_revokes(from_der, bad));
    CHECK(!crl_revokes(from_der, good));
    CHECK(!crl_expired(from_der, time(NULL)));
    CHECK(crl_expired(from_der, time(NULL) + 7200));

    X509_CRL *later = crl(ca, cak, 7, 7200);
    X509_CRL_set1_lastUpdate(later, X509_CRL_get0_nextUpdate(c)); /* issued after c */
    X509_CRL_sign(later, cak, EVP_sha256());
    CHECK(crl_older(c, later));
    CHECK(!crl_older(later, c));
    X509_CRL_free(later);

    char buf[96];
    cert_serial(bad, buf, sizeof(buf));
    CHECK(!strcmp(buf, "07"));
    cert_cn(good, buf, sizeof(buf));
    CHECK(!strcmp(buf, "good"));

    OPENSSL_free(der);
    BIO_free(b);
    X509_CRL_free(from_der);
    X509_CRL_free(from_pem);
    X509_CRL_free(c);
    X509_free(ca);
    X509_free(other);
    X509_free(good);
    X509_free(bad);
    EVP_PKEY_free(cak);
    EVP_PKEY_free(k);
    EVP_PKEY_free(otherk);
}

int main(void)
{
    test_cache();
    test_crl();
    return check_done("test_tls_cache");
}
