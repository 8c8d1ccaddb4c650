/* The acl handler's fair queue of password checks (round-robin per source
 * address, the longest queue gives way when full) and its cache of
 * successful checks (HMAC keys, TTL, generations, eviction). */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "handlers/acl_cache.h"
#include "handlers/acl_fq.h"

struct item {
    struct acl_fq_item q;
    int src, seq;
    int fate; /* 0 not yet, 1 popped, 2 refused or pushed out, 3 removed */
};

static struct acl_fq q;
static struct acl_fq_addr addr[8];

static struct item *item_of(struct acl_fq_item *it) { return (struct item *)it; }

static void addrs_init(void)
{
    for (int i = 0; i < 8; i++) {
        char peer[32];
        snprintf(peer, sizeof(peer), "10.0.0.%d:1883", i + 1);
        addr[i] = acl_fq_addr_of(peer);
    }
}

/* Push; returns the refused item (or NULL) and marks it. */
static struct item *push(struct item *it, int src)
{
    it->src = src;
    struct acl_fq_item *out = acl_fq_push(&q, &addr[src], &it->q);
    if (out)
        item_of(out)->fate = 2;
    return out ? item_of(out) : NULL;
}

static int pop_src(void)
{
    struct acl_fq_item *it = acl_fq_pop(&q);
    if (!it)
        return -1;
    item_of(it)->fate = 1;
    return item_of(it)->src;
}

static void test_addresses(void)
{
    struct acl_fq_addr a = acl_fq_addr_of("127.0.0.1:5555"), b = acl_fq_addr_of("127.0.0.1:1");
    struct acl_fq_addr m = acl_fq_addr_of("[::ffff:127.0.0.1]:7"), c = acl_fq_addr_of("127.0.0.2:5555");
    CHECK(!memcmp(&a, &b, sizeof(a))); /* the port does not matter */
    CHECK(!memcmp(&a, &m, sizeof(a))); /* v4-mapped is the v4 address */
    CHECK(memcmp(&a, &c, sizeof(a)));
    struct acl_fq_addr v1 = acl_fq_addr_of("[2001:db8::1]:1"), v2 = acl_fq_addr_of("[2001:db8::ffff:2]:9");
    struct acl_fq_addr v3 = acl_fq_addr_of("[2001:db8:0:1::1]:1");
    CHECK(!memcmp(&v1, &v2, sizeof(v1))); /* one /64, one source */
    CHECK(memcmp(&v1, &v3, sizeof(v1)));
    struct acl_fq_addr z = {{0}}, u = acl_fq_addr_of("unix"), g = acl_fq_addr_of("garbage:1");
    CHECK(!memcmp(&u, &z, sizeof(z)));
    CHECK(!memcmp(&g, &z, sizeof(z)));
}

static void test_round_robin(void)
{
    static struct item it[8];
    memset(it, 0, sizeof(it));
    acl_fq_init(&q);
    CHECK(acl_fq_pop(&q) == NULL);
    int src[8] = {0, 0, 0, 0, 0, 1, 1, 2}; /* A has 5, B 2, C 1 */
    for (int i = 0; i < 8; i++)
        CHECK(push(&it[i], src[i]) == NULL);
    CHECK_EQ_INT(q.queued, 8);
    CHECK_EQ_INT(q.sources, 3);
    int want[8] = {0, 1, 2, 0, 1, 0, 0, 0}, got[8];
    for (int i = 0; i < 8; i++)
        got[i] = pop_src();
    for (int i = 0; i < 8; i++)
        CHECK_EQ_INT(got[i], want[i]);
    CHECK(acl_fq_pop(&q) == NULL);
    CHECK_EQ_INT(q.sources, 0);
    /* FIFO within a source */
    for (int i = 0; i < 3; i++)
        push(&it[i], 0), it[i].seq = i;
    for (int i = 0; i < 3; i++)
        CHECK_EQ_INT(item_of(acl_fq_pop(&q))->seq, i);
    /* a source that arrives mid-round is served after those already waiting */
    for (int i = 0; i < 4; i++)
        push(&it[i], i < 2 ? 0 : i - 1); /* A, A, B, C */
    CHECK_EQ_INT(pop_src(), 0);          /* A; B is next */
    push(&it[4], 3);                     /* D */
    int order[4] = {1, 2, 0, 3};
    for (int i = 0; i < 4; i++)
        CHECK_EQ_INT(pop_src(), order[i]);
    CHECK_EQ_INT(q.queued, 0);
}

/* A flood from one address fills the queue; another address still gets in
 * (the flood's newest check gives way), and the flood only refuses itself. */
static void test_full(void)
{
    static struct item flood[ACL_FQ_MAX + 10], legit[ACL_FQ_MAX];
    memset(flood, 0, sizeof(flood));
    memset(legit, 0, sizeof(legit));
    acl_fq_init(&q);
    for (unsigned i = 0; i < ACL_FQ_MAX; i++)
        CHECK(push(&flood[i], 0) == NULL);
    CHECK(push(&flood[ACL_FQ_MAX], 0) == &flood[ACL_FQ_MAX]); /* full: the flood refuses its own */
    CHECK(push(&legit[0], 1) == &flood[ACL_FQ_MAX - 1]);     /* the flood's newest gives way */
    CHECK_EQ_INT(q.queued, ACL_FQ_MAX);
    /* The second address grows, each time in place of the flood's newest,
     * until it holds half the queue: then it refuses its own. */
    unsigned n = 1;
    while (n < ACL_FQ_MAX && push(&legit[n], 1) != &legit[n])
        n++;
    CHECK_EQ_INT(n, ACL_FQ_MAX / 2);
    CHECK_EQ_INT(legit[n - 1].fate, 0);
    CHECK_EQ_INT(legit[n].fate, 2);
    CHECK_EQ_INT(flood[ACL_FQ_MAX / 2].fate, 2); /* the flood kept its oldest half */
    CHECK_EQ_INT(flood[ACL_FQ_MAX / 2 - 1].fate, 0);
    /* The legitimate address is served every other turn. */
    CHECK(pop_src() != pop_src());
    /* Nothing queued was lost: queued + popped + refused = pushed. */
    unsigned popped = 0, refused = 0;
    for (unsigned i = 0; i <= ACL_FQ_MAX; i++)
        popped += flood[i].fate == 1, refused += flood[i].fate == 2;
    for (unsigned i = 0; i <= n; i++)
        popped += legit[i].fate == 1, refused += legit[i].fate == 2;
    CHECK_EQ_INT(popped + refused + q.queued, ACL_FQ_MAX + 1 + n + 1);
    while (pop_src() >= 0) {
    }
    CHECK_EQ_INT(q.sources, 0);
}

static bool odd(const struct acl_fq_item *it, void *ctx)
{
    (void)ctx;
    return ((const struct item *)it)->seq % 2;
}

/* Random pushes, pops and removals against the counts; every item ends in
 * exactly one way, and the sources that trickle are all served. */
static void test_random(void)
{
    enum { N = 20000 };
    static struct item it[N];
    memset(it, 0, sizeof(it));
    acl_fq_init(&q);
    srand(7);
    int next = 0, served[8] = {0};
    for (int step = 0; step < 3 * N && next < N; step++) {
        int r = rand() % 100;
        if (r < 55) {
            /* source 0 floods, the others trickle */
            int src = rand() % 3 ? 0 : 1 + rand() % 7;
            it[next].seq = next;
            push(&it[next], src);
            next++;
        } else if (r < 99) {
            int s = pop_src();
            if (s >= 0)
                served[s]++;
        } else {
            struct list_node out = {0}, *x;
            uint32_t n = acl_fq_remove_if(&q, odd, NULL, &out);
            while ((x = list_pop_front(&out))) {
                item_of(container_of(x, struct acl_fq_item, node))->fate = 3;
                n--;
            }
            CHECK_EQ_INT(n, 0);
        }
        CHECK(q.queued <= ACL_FQ_MAX);
        CHECK(q.sources <= q.queued);
    }
    while (pop_src() >= 0) {
    }
    int lost = 0;
    for (int i = 0; i < next; i++)
        lost += it[i].fate == 0;
    CHECK_EQ_INT(lost, 0);
    CHECK_EQ_INT(q.queued, 0);
    CHECK_EQ_INT(q.sources, 0);
    for (int s = 1; s < 8; s++)
        CHECK(served[s] > 0);
}

/* Round-robin precisely: sources 0..3 with 50 checks each are served
 * 0,1,2,3,0,1,2,3,... */
static void test_turns(void)
{
    static struct item it[200];
    memset(it, 0, sizeof(it));
    acl_fq_init(&q);
    for (int i = 0; i < 200; i++)
        push(&it[i], i % 4);
    for (int i = 0; i < 200; i++)
        CHECK_EQ_INT(pop_src(), i % 4);
}

static struct acl_cache cache;

static struct acl_cache_key key(const char *secret, const char *user, const char *pw)
{
    uint8_t s[ACL_CACHE_SECRET] = {0};
    memcpy(s, secret, strlen(secret));
    struct acl_cache_key k;
    CHECK(acl_cache_key_of(s, (const uint8_t *)user, strlen(user), (const uint8_t *)pw, strlen(pw), &k));
    return k;
}

static void test_cache(void)
{
    struct acl_cache_key a = key("s1", "alice", "pw"), a2 = key("s1", "alice", "pw");
    CHECK(!memcmp(&a, &a2, sizeof(a)));
    struct acl_cache_key other_secret = key("s2", "alice", "pw"), split1 = key("s1", "ab", "c"),
                         split2 = key("s1", "a", "bc"), wrong = key("s1", "alice", "pW");
    CHECK(memcmp(&a, &other_secret, sizeof(a)));
    CHECK(memcmp(&split1, &split2, sizeof(a))); /* the username's length is in the MAC */
    acl_cache_clear(&cache);
    uint64_t now = 1000000;
    CHECK(!acl_cache_hit(&cache, &a, 1, now));
    acl_cache_put(&cache, &a, 1, now);
    CHECK(acl_cache_hit(&cache, &a, 1, now));
    CHECK(acl_cache_hit(&cache, &a, 1, now + ACL_CACHE_TTL_MS - 1));
    CHECK(!acl_cache_hit(&cache, &a, 1, now + ACL_CACHE_TTL_MS)); /* TTL */
    CHECK(!acl_cache_hit(&cache, &a, 2, now));                    /* another rule set (SIGHUP) */
    CHECK(!acl_cache_hit(&cache, &wrong, 1, now));                /* another password */
    acl_cache_put(&cache, &a, 1, now + 10);                       /* a new check renews it */
    CHECK(acl_cache_hit(&cache, &a, 1, now + ACL_CACHE_TTL_MS + 5));
    acl_cache_clear(&cache);
    CHECK(!acl_cache_hit(&cache, &a, 1, now));
    /* One set: ACL_CACHE_WAYS entries; the next one replaces the one closest
     * to expiring, and the same key never takes two ways. */
    struct acl_cache_key k[ACL_CACHE_WAYS + 1];
    for (unsigned i = 0; i <= ACL_CACHE_WAYS; i++) {
        memset(&k[i], 0, sizeof(k[i]));
        k[i].mac[31] = (uint8_t)(i + 1); /* same first bytes: same set */
    }
    for (unsigned i = 0; i < ACL_CACHE_WAYS; i++)
        acl_cache_put(&cache, &k[i], 1, now + i);
    acl_cache_put(&cache, &k[1], 1, now + 100);
    for (unsigned i = 0; i < ACL_CACHE_WAYS; i++)
        CHECK(acl_cache_hit(&cache, &k[i], 1, now + 100));
    acl_cache_put(&cache, &k[ACL_CACHE_WAYS], 1, now + 101);
    CHECK(!acl_cache_hit(&cache, &k[0], 1, now + 101)); /* the oldest went */
    for (unsigned i = 1; i <= ACL_CACHE_WAYS; i++)
        CHECK(acl_cache_hit(&cache, &k[i], 1, now + 101));
    /* entries of an old generation are free for the taking */
    struct acl_cache_key n = k[0];
    acl_cache_put(&cache, &n, 2, now + 102);
    CHECK(acl_cache_hit(&cache, &n, 2, now + 102));
    CHECK(!acl_cache_hit(&cache, &k[1], 2, now + 102));
}

int main(void)
{
    addrs_init();
    test_addresses();
    test_round_robin();
    test_full();
    test_turns();
    test_random();
    test_cache();
    return check_done("test_acl_fq");
}
