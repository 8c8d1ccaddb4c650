/*
 * Password verification for mosquitto's hashes, with OpenSSL 3:
 *   $6$: SHA-512 over the password followed by the salt;
 *   $7$: PBKDF2-HMAC-SHA512 with the entry's salt and iteration count,
 *        64 bytes of output.
 * The comparison takes the same time wherever the first differing byte is.
 */
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "handlers/acl.h"

bool acl_password_verify(const struct acl_password *pw, const uint8_t *password, size_t len)
{
    uint8_t out[ACL_HASH_LEN];
    bool ok = false;
    static const uint8_t empty[1];
    if (!password)
        password = empty;
    if (pw->kind == ACL_HASH_PBKDF2_SHA512) {
        ok = len <= INT32_MAX &&
             PKCS5_PBKDF2_HMAC((const char *)password, (int)len, pw->salt, pw->salt_len, (int)pw->iterations,
                               EVP_sha512(), sizeof(out), out) == 1;
    } else if (pw->kind == ACL_HASH_SHA512) {
        EVP_MD_CTX *ctx = EVP_MD_CTX_new();
        unsigned n = 0;
        ok = ctx && EVP_DigestInit_ex(ctx, EVP_sha512(), NULL) == 1 && EVP_DigestUpdate(ctx, password, len) == 1 &&
             EVP_DigestUpdate(ctx, pw->salt, pw->salt_len) == 1 && EVP_DigestFinal_ex(ctx, out, &n) == 1 &&
             n == sizeof(out);
        EVP_MD_CTX_free(ctx);
    }
    ok = ok && CRYPTO_memcmp(out, pw->hash, sizeof(out)) == 0;
    OPENSSL_cleanse(out, sizeof(out));
    return ok;
}
