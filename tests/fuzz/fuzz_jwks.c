/*
 * Fuzzing a JWKS document (handlers/jwt_keys.c), which comes from the
 * identity provider's URL: arbitrary bytes parsed as a key set.  An error
 * must leave the key set as it was (empty) and say why; a success holds
 * at most JWT_MAX_KEYS keys (none: a valid, emptied set), each with a key
 * and no secret.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "handlers/jwt.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fail(const char *why)
{
    fprintf(stderr, "fuzz_jwks: %s\n", why);
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct jwt_keyset ks = {0};
    unsigned skipped = 0;
    char err[256] = "";
    if (jwt_jwks_parse(data, size, &ks, &skipped, err, sizeof(err)) < 0) {
        if (ks.n || ks.v || !err[0])
            fail("an error that changed the key set or said nothing");
        return 0;
    }
    if (ks.n > JWT_MAX_KEYS)
        fail("a key set with too many keys");
    if (ks.n == 0 && ks.v)
        fail("an empty key set that holds memory");
    for (unsigned i = 0; i < ks.n; i++)
        if (!ks.v[i].pkey || ks.v[i].secret || ks.v[i].kty == JWT_KTY_OCT)
            fail("a published key set gave a secret");
    jwt_keyset_free(&ks);
    return 0;
}
