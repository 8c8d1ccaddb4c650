/* The http handler's reading of the service's answer. */
#include <string.h>

#include "check.h"
#include "handlers/handlers.h"

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
    return check_done("test_webhook");
}
