/*
 * Fuzzing the configuration files as mgate reads them: config_load with an
 * INI file (config/ini.c over inih) and a .env file (config/dotenv.c), so
 * that every value the files set goes through the value parsers (ports,
 * durations, sizes, bools, lists, enum words, client id patterns...).
 *
 * Input: the first byte says which files exist (bit 0: the INI file, bit 1:
 * the .env file; both when neither bit is set, so the corpus stays useful);
 * the rest is the INI text up to the first NUL and the .env text after it
 * (no NUL: all of it is the one file given, or the INI file).
 *
 * Checked: an error always comes with a one-line message and leaves a
 * config that can be freed again; a success has every string set and the
 * ranges config.h documents; both readers used alone give names that
 * config_vars_get finds again with the last value written; and the single
 * value parsers agree with each other on the first line of the input.
 * Any disagreement aborts.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "fuzz_memfile.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fail(const char *why, const char *detail)
{
    fprintf(stderr, "fuzz_config: %s%s%s\n", why, detail ? ": " : "", detail ? detail : "");
    abort();
}

static const char *no_env(void *ctx, const char *name)
{
    (void)ctx;
    (void)name;
    return NULL; /* the environment stays out: the files are what is fuzzed */
}

static void check_message(const char *err)
{
    if (!err[0])
        fail("an error without a message", NULL);
    for (const char *p = err; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            fail("a message that is not one line", err);
}

static void check_listener(const struct listener_config *lc)
{
    const char *const strings[] = {lc->host, lc->path_prefix, lc->target_host, lc->target_path, lc->cert_file,
                                   lc->key_file, lc->server_ca_file, lc->client_ca_file, lc->ocsp_responder_url,
                                   lc->tls_ciphers, lc->tls_ciphersuites, lc->target_ca_file,
                                   lc->target_server_name, lc->allowed_origins, lc->bypass_paths,
                                   lc->mount_point};
    for (size_t i = 0; i < sizeof(strings) / sizeof(strings[0]); i++)
        if (!strings[i])
            fail("a listener string left NULL", lc->name);
    if (lc->enabled && !lc->port)
        fail("a listener enabled without a port", lc->name);
    if (lc->tls_min_version != CONFIG_TLS1_2 && lc->tls_min_version != CONFIG_TLS1_3)
        fail("a TLS version that is neither 1.2 nor 1.3", lc->name);
    if (lc->cert_verification_methods & ~(CERT_VERIFY_OCSP | CERT_VERIFY_CRL))
        fail("an unknown certificate verification method", lc->name);
    if (lc->revocation_timeout_ms < 100 || lc->revocation_timeout_ms > 60000)
        fail("REVOCATION_TIMEOUT outside 100 ms - 60 s", lc->name);
    if (lc->client_id.mode == CLIENT_ID_PATTERN &&
        (!lc->client_id.pattern || config_check_client_id_pattern(lc->client_id.pattern)))
        fail("a client id pattern its own check refuses", lc->name);
    if (lc->client_id.mode == CLIENT_ID_PREFIX && (!lc->client_id.separators || !*lc->client_id.separators))
        fail("the prefix policy without separators", lc->name);
}

static void check_config(const struct mgate_config *cfg)
{
    for (int i = 0; i < LISTENER_COUNT; i++)
        check_listener(&cfg->listeners[i]);
    const char *const strings[] = {cfg->handler, cfg->admin_host, cfg->config_file, cfg->acl_password_file,
                                   cfg->acl_file, cfg->rewrite_file, cfg->webhook_url, cfg->webhook_on_error,
                                   cfg->jwt_algorithms, cfg->jwt_token_from, cfg->jwt_username_claim,
                                   cfg->jwt_username, cfg->jwt_acl_claim};
    for (size_t i = 0; i < sizeof(strings) / sizeof(strings[0]); i++)
        if (!strings[i])
            fail("a global string left NULL", NULL);
    if (cfg->workers < 1 || cfg->workers > 256)
        fail("MGATE_WORKERS outside 1-256", NULL);
    if (cfg->log_level > LOG_OFF)
        fail("a log level out of range", NULL);
    if (config_check_handler_list(cfg->handler) < 0)
        fail("a handler list its own check refuses", cfg->handler);
    if (cfg->jwt_leeway_ms > 3600000)
        fail("MGATE_JWT_LEEWAY above 1 h", NULL);
}

/* Each reader alone: every variable it keeps is found again by its name. */
static void check_reader(int (*read)(const char *, struct config_vars *, char *, size_t), const char *path)
{
    struct config_vars vs = {0};
    char err[512] = "";
    if (read(path, &vs, err, sizeof(err)) < 0) {
        check_message(err);
    } else {
        for (size_t i = 0; i < vs.n; i++) {
            const struct config_var *v = &vs.v[i];
            if (!v->name || !v->value || config_vars_get(&vs, v->name) != v)
                fail("a variable not found again by its name", v->name);
            if (!v->line)
                fail("a variable without a line", v->name);
        }
    }
    config_vars_free(&vs);
}

/* The single-value parsers on one string: a plain number is seconds as a
 * duration and bytes as a size. */
static void check_values(const char *s)
{
    uint32_t u, d, z;
    bool b;
    unsigned t;
    int nu = config_parse_uint(s, &u), nd = config_parse_duration_ms(s, &d), nz = config_parse_size(s, &z);
    if (nu == 0 && nz != 0)
        fail("a number that is not a size", s);
    if (nu == 0 && z != u)
        fail("a number that is another size", s);
    if (nu == 0 && u <= UINT32_MAX / 1000 && (nd != 0 || d != u * 1000))
        fail("a number that is not as many seconds", s);
    (void)config_parse_bool(s, &b);
    (void)config_parse_tls_version(s, &t);
    (void)config_parse_cert_methods(s, &t);
    (void)config_check_handler_list(s);
    (void)config_check_client_id_pattern(s);
    (void)config_check_client_id_separators(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct memfile ini, dotenv;
    if (size < 1 || size > 16384)
        return 0;
    unsigned which = data[0] & 3 ? data[0] & 3 : 3;
    const uint8_t *text = data + 1, *nul = memchr(text, 0, size - 1);
    size_t ini_len = nul ? (size_t)(nul - text) : size - 1;
    const uint8_t *env_text = nul ? nul + 1 : which == 2 ? text : text + ini_len;
    size_t env_len = (size_t)(data + size - env_text);
    if (which == 2 && !nul)
        ini_len = 0;
    memfile_put(&ini, "mgate.ini", text, ini_len);
    memfile_put(&dotenv, ".env", env_text, env_len);

    struct config_source src = {
        .env = no_env,
        .ini_path = which & 1 ? ini.path : NULL,
        .dotenv_path = which & 2 ? dotenv.path : NULL,
    };
    struct mgate_config cfg;
    char err[512];
    if (config_load(&cfg, &src, err, sizeof(err)) < 0) {
        check_message(err);
    } else {
        if (err[0])
            fail("a success with a message", err);
        check_config(&cfg);
    }
    config_free(&cfg);
    config_free(&cfg); /* freed config is zeroed: freeable again */

    check_reader(config_read_ini, ini.path);
    check_reader(config_read_dotenv, dotenv.path);
    char line[256];
    const uint8_t *eol = memchr(text, '\n', ini_len);
    size_t n = eol ? (size_t)(eol - text) : ini_len;
    n = n < sizeof(line) - 1 ? n : sizeof(line) - 1;
    memcpy(line, text, n);
    line[n] = '\0';
    check_values(line);
    return 0;
}
