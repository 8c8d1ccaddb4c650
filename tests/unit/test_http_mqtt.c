/* The HTTP bridge's request options (front/http_mqtt.c): qos and retain from
 * the query or the MQTT-QoS / MQTT-Retain headers, refused when they are
 * broken, repeated or disagree; the client id from ?clientid= or generated
 * once per connection.  docs/HTTP.md, "The bridge to an MQTT broker". */
#include <string.h>

#include "check.h"
#include "front/http_mqtt.h"

static struct http_hdr hdrs[4];
static struct http_head head;

static void headers(const char *a, const char *av, const char *b, const char *bv)
{
    head = (struct http_head){.method = "POST", .target = "/", .hdrs = hdrs};
    const char *n[2] = {a, b}, *v[2] = {av, bv};
    for (int i = 0; i < 2; i++)
        if (n[i])
            hdrs[head.nhdrs++] = (struct http_hdr){n[i], v[i], (uint32_t)strlen(n[i]), (uint32_t)strlen(v[i])};
}

/* The status http_mqtt_options gives for query q (NULL: none). */
static int options(const char *q, uint8_t *qos, bool *retain)
{
    const char *why = NULL;
    int st = http_mqtt_options(q, q ? strlen(q) : 0, &head, qos, retain, &why);
    CHECK(!st || why);
    return st;
}

static void test_options(void)
{
    uint8_t qos = 9;
    bool retain = true;
    headers(NULL, NULL, NULL, NULL);
    CHECK_EQ_INT(options(NULL, &qos, &retain), 0);
    CHECK_EQ_INT(qos, 0);
    CHECK(!retain);
    CHECK_EQ_INT(options("qos=1&retain=true", &qos, &retain), 0);
    CHECK_EQ_INT(qos, 1);
    CHECK(retain);
    CHECK_EQ_INT(options("QoS=2&Retain=%74rue", &qos, &retain), 0); /* the names in any case, values decoded */
    CHECK_EQ_INT(qos, 2);
    CHECK(retain);
    CHECK_EQ_INT(options("retain=0", &qos, &retain), 0);
    CHECK(!retain);
    CHECK_EQ_INT(options("qos=3", &qos, &retain), 400);
    CHECK_EQ_INT(options("qos=", &qos, &retain), 400);
    CHECK_EQ_INT(options("qos=01", &qos, &retain), 400);
    CHECK_EQ_INT(options("qos=1&qos=1", &qos, &retain), 400);
    CHECK_EQ_INT(options("retain=yes", &qos, &retain), 400);
    CHECK_EQ_INT(options("qos=%zz", &qos, &retain), 400);

    headers("MQTT-QoS", "2", "mqtt-retain", "TRUE");
    CHECK_EQ_INT(options(NULL, &qos, &retain), 0);
    CHECK_EQ_INT(qos, 2);
    CHECK(retain);
    CHECK_EQ_INT(options("qos=2", &qos, &retain), 0); /* both, the same */
    CHECK_EQ_INT(options("qos=1", &qos, &retain), 400); /* both, not the same */
    headers("MQTT-QoS", "1", "MQTT-QoS", "1");
    CHECK_EQ_INT(options(NULL, &qos, &retain), 400);
}

static void test_client_id(void)
{
    char mem[64], gen[28] = "";
    const char *why = NULL;
    mgate_bytes id;
    const char *q = "qos=1&clientid=dev%2F1";
    CHECK_EQ_INT(http_mqtt_client_id(q, strlen(q), mem, gen, &id, &why), 0);
    CHECK(id.len == 5 && !memcmp(id.p, "dev/1", 5));
    CHECK_EQ_STR(gen, ""); /* nothing generated when the client names itself */
    CHECK_EQ_INT(http_mqtt_client_id(NULL, 0, mem, gen, &id, &why), 0);
    CHECK_EQ_INT(id.len, 27);
    CHECK(!memcmp(id.p, "mgate-http-", 11) && strspn((const char *)id.p + 11, "0123456789abcdef") == 16);
    char first[28];
    memcpy(first, gen, sizeof(first));
    CHECK_EQ_INT(http_mqtt_client_id("qos=1", 5, mem, gen, &id, &why), 0);
    CHECK_EQ_STR(gen, first); /* one per connection */
    char other[28] = "";
    CHECK_EQ_INT(http_mqtt_client_id(NULL, 0, mem, other, &id, &why), 0);
    CHECK(strcmp(other, first) != 0); /* another connection, another id */
    q = "clientid=a&clientid=b";
    CHECK_EQ_INT(http_mqtt_client_id(q, strlen(q), mem, gen, &id, &why), 400);
    CHECK(why != NULL);
}

int main(void)
{
    test_options();
    test_client_id();
    return check_done("test_http_mqtt");
}
