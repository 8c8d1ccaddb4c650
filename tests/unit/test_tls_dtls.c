/* DTLS contexts (net/tls_dtls.c): what PSK_FILE accepts, and the error a
 * bad one gets (the key and the line), through tls_ctx_new as the CoAP
 * DTLS listener calls it.  The handshakes themselves run in
 * tests/integration/test_coap_dtls.py. */
#include <stdlib.h>
#include <unistd.h>

#include "check.h"
#include "net/tls.h"

static char path[] = "/tmp/mgate-test-psk-XXXXXX";

/* tls_ctx_new on a DTLS listener with PSK_FILE holding text: NULL when it
 * failed, with its message in err. */
static struct tls_ctx *load(const char *text, char *err, size_t errlen)
{
    check_write_file(path, text);
    struct tls_settings t = {.name = "coap_with_dtls", .dtls = true, .psk_file = path};
    err[0] = '\0';
    return tls_ctx_new(&t, err, errlen);
}

static void expect_ok(int line, const char *text)
{
    char err[512];
    struct tls_ctx *ctx = load(text, err, sizeof(err));
    if (!ctx)
        fprintf(stderr, "%s:%d: wanted the file taken, got \"%s\"\n", __FILE__, line, err);
    CHECK(ctx != NULL);
    tls_ctx_free(ctx);
}

static void expect_bad(int line, const char *text, const char *needle)
{
    char err[512];
    struct tls_ctx *ctx = load(text, err, sizeof(err));
    bool ok = !ctx && strstr(err, "PSK_FILE") && strstr(err, needle);
    if (!ok)
        fprintf(stderr, "%s:%d: wanted an error with PSK_FILE and \"%s\", got \"%s\"\n", __FILE__, line, needle,
                err);
    CHECK(ok);
    tls_ctx_free(ctx);
}

static char *repeat(char c, size_t n, const char *prefix, const char *suffix)
{
    size_t pl = strlen(prefix), sl = strlen(suffix);
    char *s = malloc(pl + n + sl + 1);
    memcpy(s, prefix, pl);
    memset(s + pl, c, n);
    memcpy(s + pl + n, suffix, sl + 1);
    return s;
}

static void test_psk_file(void)
{
    expect_ok(__LINE__, "dev1:00112233\n");
    expect_ok(__LINE__, "# devices\n\n  dev1:0a0B0c  \r\ndev2:ff\n# end\n"); /* comments, blanks, CRLF, case */
    expect_ok(__LINE__, "site:a:dev1:00\n"); /* the key is after the last ':' */
    expect_ok(__LINE__, "dev1:00"); /* no final newline */

    char *id256 = repeat('i', 256, "", ":00\n"), *id257 = repeat('i', 257, "", ":00\n");
    char *key512 = repeat('a', 1024, "dev1:", "\n"), *key513 = repeat('a', 1026, "dev1:", "\n");
    expect_ok(__LINE__, id256);
    expect_bad(__LINE__, id257, "line 1: the identity is longer than 256 bytes");
    expect_ok(__LINE__, key512);
    expect_bad(__LINE__, key513, "line 1: the key must be 1 to 512 bytes");
    free(id256), free(id257), free(key512), free(key513);

    expect_bad(__LINE__, "dev1:00\nno colon here\n", "line 2: expected identity:hexkey");
    expect_bad(__LINE__, ":00\n", "line 1: expected identity:hexkey");
    expect_bad(__LINE__, "# c\ndev1:\n", "line 2: the key must be");
    expect_bad(__LINE__, "dev1:abc\n", "line 1: the key must be");
    expect_bad(__LINE__, "dev1:0g\n", "line 1: the key is not hex");
    expect_bad(__LINE__, "dev1:00\ndev2:01\ndev1:02\n", "identity \"dev1\" appears twice");
    expect_bad(__LINE__, "# only a comment\n\n", "no identity:hexkey line");
    expect_bad(__LINE__, "", "no identity:hexkey line");

    char err[512];
    struct tls_settings t = {.name = "coap_with_dtls", .dtls = true, .psk_file = "/nonexistent/psk.txt"};
    CHECK(tls_ctx_new(&t, err, sizeof(err)) == NULL);
    CHECK(strstr(err, "PSK_FILE \"/nonexistent/psk.txt\": No such file") != NULL);

    /* DTLS has no 1.3 */
    check_write_file(path, "dev1:00\n");
    t = (struct tls_settings){.name = "coap_with_dtls", .dtls = true, .psk_file = path, .min_version = 0x0304};
    CHECK(tls_ctx_new(&t, err, sizeof(err)) == NULL);
    CHECK(strstr(err, "TLS_MIN_VERSION") != NULL);
}

int main(void)
{
    int fd = mkstemp(path);
    if (fd < 0) {
        perror("mkstemp");
        return 1;
    }
    close(fd);
    test_psk_file();
    unlink(path);
    return check_done("test_tls_dtls");
}
