/* The http handler's reading of the service's answer: the verdict
 * (webhook_parse_answer, its first contract), the modifiers
 * (wh_answer_parse) and Cache-Control's max-age. */
#include <string.h>

#include "check.h"
#include "handlers/handlers.h"
#include "handlers/webhook.h"
#include "net/fetch.h"

static int parse(const char *s, bool *found)
{
    return webhook_parse_answer((const uint8_t *)s, strlen(s), found);
}

static void expect(const char *body, int want, bool want_found)
{
    bool found = !want_found;
    int got = parse(body, &found);
    if (got != want || (want != 3 && found != want_found)) {
        check_failures++;
        fprintf(stderr, "answer %s: got %d (found %d), want %d (found %d)\n", body, got, found, want, want_found);
    }
    check_count++;
}

static void answer(struct wh_answer *a, enum wh_kind kind, const char *body)
{
    wh_answer_parse(a, kind, (const uint8_t *)body, strlen(body), false);
}

static bool same(mgate_bytes b, const char *s) { return b.len == strlen(s) && memcmp(b.p, s, b.len) == 0; }

/* An answer whose modifier is invalid: a deny naming it. */
static void invalid(enum wh_kind kind, const char *body, const char *field)
{
    struct wh_answer a;
    answer(&a, kind, body);
    bool ok = a.result == WH_DENY && a.bad && strcmp(a.bad, field) == 0;
    if (!ok)
        fprintf(stderr, "answer %s: got result %d, bad %s; want a deny naming %s\n", body, a.result,
                a.bad ? a.bad : "(none)", field);
    check_failures += !ok;
    check_count++;
    wh_answer_free(&a);
}

static void modifiers(void)
{
    struct wh_answer a;
    answer(&a, WH_CONNECT, "{\"result\":\"ok\",\"modifiers\":{\"client_id\":\"new-id\",\"username\":\"bob\","
                           "\"mount_point\":\"tenant/\",\"expire_at\":2000000000}}");
    CHECK_EQ_INT(a.result, WH_ALLOW);
    CHECK(a.has_client_id && same(a.client_id, "new-id") && a.has_username && same(a.username, "bob"));
    CHECK(a.has_mount_point && same(a.mount_point, "tenant/") && a.has_expire_at && a.expire_at == 2000000000u);
    wh_answer_free(&a);
    answer(&a, WH_CONNECT, "{\"result\":\"allow\",\"modifiers\":{\"mountpoint\":\"\"}}"); /* VerneMQ's spelling */
    CHECK(a.result == WH_ALLOW && a.has_mount_point && a.mount_point.len == 0);
    wh_answer_free(&a);

    answer(&a, WH_PUBLISH, "{\"result\":\"allow\",\"modifiers\":{\"topic\":\"a/b\",\"payload\":\"aGVsbG8=\","
                           "\"qos\":2,\"retain\":true,\"user_properties\":[[\"k\",\"v\"],[\"k\",\"w\"]]}}");
    CHECK_EQ_INT(a.result, WH_ALLOW);
    CHECK(a.has_topic && same(a.topic, "a/b") && a.has_payload && a.payload_len == 5 &&
          memcmp(a.payload, "hello", 5) == 0);
    CHECK(a.qos == 2 && a.retain == 1 && a.has_user_properties && a.user_count == 2);
    CHECK(a.user_count == 2 && same(a.user[1].name, "k") && same(a.user[1].value, "w"));
    wh_answer_free(&a);
    answer(&a, WH_PUBLISH, "{\"result\":\"allow\",\"modifiers\":{\"user_properties\":{\"a\":\"1\"}}}");
    CHECK(a.result == WH_ALLOW && a.user_count == 1 && same(a.user[0].name, "a") && same(a.user[0].value, "1"));
    wh_answer_free(&a);
    answer(&a, WH_PUBLISH, "{\"result\":\"allow\"}");
    CHECK(a.result == WH_ALLOW && !a.has_topic && !a.has_payload && a.qos == -1 && a.retain == -1);
    wh_answer_free(&a);
    /* a kept answer's payload is not applied again */
    const char *kept = "{\"result\":\"allow\",\"modifiers\":{\"payload\":\"aGVsbG8=\",\"qos\":1}}";
    wh_answer_parse(&a, WH_PUBLISH, (const uint8_t *)kept, strlen(kept), true);
    CHECK(a.result == WH_ALLOW && !a.has_payload && a.qos == 1);
    wh_answer_free(&a);

    answer(&a, WH_SUBSCRIBE, "{\"result\":\"ok\",\"topics\":[{\"topic\":\"x/+\",\"qos\":1}]}");
    CHECK(a.result == WH_ALLOW && a.has_filter && same(a.filter, "x/+") && a.filter_qos == 1 && !a.refuse);
    wh_answer_free(&a);
    answer(&a, WH_SUBSCRIBE, "{\"result\":\"ok\",\"topics\":[{\"topic\":\"x\",\"qos\":128}]}");
    CHECK(a.result == WH_ALLOW && a.refuse == 0x80);
    wh_answer_free(&a);
    answer(&a, WH_SUBSCRIBE, "{\"result\":\"ok\",\"modifiers\":{\"topics\":[{\"reason\":151}]}}");
    CHECK(a.result == WH_ALLOW && a.refuse == 0x97 && !a.has_filter);
    wh_answer_free(&a);
    /* modifiers of a deny are not read */
    answer(&a, WH_PUBLISH, "{\"result\":\"deny\",\"modifiers\":{\"qos\":7}}");
    CHECK(a.result == WH_DENY && !a.bad);
    wh_answer_free(&a);

    static const struct { enum wh_kind kind; const char *body, *field; } bad[] = {
        {WH_CONNECT, "{\"result\":\"allow\",\"modifiers\":{\"client_id\":5}}", "client_id"},
        {WH_CONNECT, "{\"result\":\"allow\",\"modifiers\":{\"expire_at\":-1}}", "expire_at"},
        {WH_CONNECT, "{\"result\":\"allow\",\"modifiers\":{\"expire_at\":1.5}}", "expire_at"},
        {WH_CONNECT, "{\"result\":\"allow\",\"modifiers\":{\"topic\":\"a\"}}", "topic"}, /* not a connect's */
        {WH_CONNECT, "{\"result\":\"allow\",\"modifiers\":[]}", "modifiers"},
        {WH_PUBLISH, "{\"result\":\"allow\",\"modifiers\":{\"qos\":3}}", "qos"},
        {WH_PUBLISH, "{\"result\":\"allow\",\"modifiers\":{\"qos\":\"1\"}}", "qos"},
        {WH_PUBLISH, "{\"result\":\"allow\",\"modifiers\":{\"retain\":1}}", "retain"},
        {WH_PUBLISH, "{\"result\":\"allow\",\"modifiers\":{\"topic\":\"a/+\"}}", "topic"},
        {WH_PUBLISH, "{\"result\":\"allow\",\"modifiers\":{\"topic\":\"\"}}", "topic"},
        {WH_PUBLISH, "{\"result\":\"allow\",\"modifiers\":{\"payload\":\"not base64!\"}}", "payload"},
        {WH_PUBLISH, "{\"result\":\"allow\",\"modifiers\":{\"user_properties\":[[\"k\"]]}}", "user_properties"},
        {WH_PUBLISH, "{\"result\":\"allow\",\"modifiers\":{\"user_properties\":{\"k\":1}}}", "user_properties"},
        {WH_PUBLISH, "{\"result\":\"allow\",\"modifiers\":{\"qso\":1}}", "qso"}, /* a key we do not know */
        {WH_SUBSCRIBE, "{\"result\":\"ok\",\"topics\":[]}", "topics"}, /* not the request's count */
        {WH_SUBSCRIBE, "{\"result\":\"ok\",\"topics\":[{\"topic\":\"a\"},{\"topic\":\"b\"}]}", "topics"},
        {WH_SUBSCRIBE, "{\"result\":\"ok\",\"topics\":[{\"topic\":\"a/#/b\"}]}", "topics[].topic"},
        {WH_SUBSCRIBE, "{\"result\":\"ok\",\"topics\":[{\"qos\":3}]}", "topics[].qos"},
        {WH_SUBSCRIBE, "{\"result\":\"ok\",\"topics\":[{\"reason\":1}]}", "topics[].reason"},
        {WH_SUBSCRIBE, "{\"result\":\"ok\",\"topics\":[{\"reason\":160}]}", "topics[].reason"}, /* 0xA0: no SUBACK code */
        {WH_SUBSCRIBE, "{\"result\":\"ok\",\"topics\":[{\"topic\":\"a\",\"x\":1}]}", "topics"},
        {WH_SUBSCRIBE, "{\"result\":\"ok\",\"modifiers\":{\"qos\":1}}", "qos"},
        {WH_SUBSCRIBE, "{\"result\":\"ok\",\"topics\":[{}],\"modifiers\":{\"topics\":[{}]}}", "topics"}, /* twice */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        invalid(bad[i].kind, bad[i].body, bad[i].field);
}

static void max_age(void)
{
    CHECK_EQ_INT(fetch_cache_control_max_age("max-age=30"), 30);
    CHECK_EQ_INT(fetch_cache_control_max_age("public, MAX-AGE=5 "), 5);
    CHECK_EQ_INT(fetch_cache_control_max_age("max-age=30, no-store"), 0);
    CHECK_EQ_INT(fetch_cache_control_max_age("no-cache"), 0);
    CHECK_EQ_INT(fetch_cache_control_max_age("private"), -1);
    CHECK_EQ_INT(fetch_cache_control_max_age("max-age=abc"), -1);
    CHECK_EQ_INT(fetch_cache_control_max_age("max-age=3x"), -1);
    CHECK_EQ_INT(fetch_cache_control_max_age("max-age=99999999"), 86400);
    CHECK_EQ_INT(fetch_cache_control_max_age("s-maxage=7"), -1);
}

int main(void)
{
    expect("{\"result\":\"allow\"}", 0, true);
    expect("{\"result\":\"deny\"}", 1, true);
    expect("{\"result\":\"ignore\"}", 2, true);
    expect(" \r\n{ \"result\" : \"deny\" } \n", 1, true);
    expect("", 0, false);                /* an empty 2xx allows */
    expect("   ", 0, false);
    expect("{}", 0, false);               /* no result: allow */
    expect("{\"ok\":true}", 0, false);
    expect("{\"a\":{\"result\":\"deny\"},\"result\":\"allow\"}", 0, true); /* only the top level counts */
    expect("{\"a\":[1,{\"b\":\"}\"},[]],\"result\":\"deny\",\"n\":-1.5e3,\"z\":null}", 1, true);
    expect("{\"note\":\"a \\\"quoted\\\" result\",\"result\":\"deny\"}", 1, true);
    expect("{\"result\":\"Allow\"}", 3, false); /* case matters: unknown is an error */
    expect("{\"result\":\"maybe\"}", 3, false);
    expect("{\"result\":true}", 3, false);
    expect("{\"result\":\"allow\"", 3, false); /* cut short */
    expect("{\"result\":\"allow\"} trailing", 3, false);
    expect("[\"allow\"]", 3, false);
    expect("allow", 3, false);
    expect("{\"result\" \"allow\"}", 3, false);
    expect("{\"a\":1,,\"result\":\"allow\"}", 3, false);
    expect("{\"a\":}", 3, false);
    expect("{\"a\":[1,2}", 3, false);
    expect("{\"a\":\"unterminated}", 3, false);
    expect("{,}", 3, false);
    expect("{\"a\":[1,2},\"result\":\"deny\"}", 3, false); /* brackets must pair */
    expect("{\"a\":{\"b\":1]}", 3, false);
    /* jansson's strictness: one "result" only, no U+0000, nothing after */
    expect("{\"result\":\"allow\",\"result\":\"deny\"}", 3, false);
    expect("{\"result\":\"allow\",\"x\":\"a\\u0000b\"}", 3, false);
    /* VerneMQ's words */
    expect("{\"result\":\"ok\"}", 0, true);
    expect("{\"result\":\"next\"}", 2, true);
    expect("{\"result\":{\"error\":\"not_allowed\"}}", 1, true);
    expect("{\"result\":{\"other\":1}}", 3, false);
    modifiers();
    max_age();
    return check_done("test_webhook");
}
