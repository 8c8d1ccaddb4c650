#include "app/admission.h"

#include <netinet/in.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define SLOTS 4096 /* sources remembered; more than that at once evicts the quietest */
#define PROBE 8

struct source {
    uint8_t addr[16];
    uint64_t last; /* ms; 0: a free slot */
    double tokens;
};

struct admission {
    pthread_mutex_t lock;
    uint32_t rate;
    struct source slots[SLOTS];
};

struct admission *admission_new(uint32_t per_second)
{
    struct admission *a = calloc(1, sizeof(*a));
    if (a) {
        pthread_mutex_init(&a->lock, NULL);
        a->rate = per_second;
    }
    return a;
}

void admission_free(struct admission *a)
{
    if (a) {
        pthread_mutex_destroy(&a->lock);
        free(a);
    }
}

/* IPv4 as IPv4-mapped IPv6, so one key type; the port is not part of it. */
static void key_of(const struct sockaddr *sa, uint8_t key[16])
{
    memset(key, 0, 16);
    if (sa->sa_family == AF_INET6) {
        memcpy(key, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
    } else if (sa->sa_family == AF_INET) {
        key[10] = key[11] = 0xff;
        memcpy(key + 12, &((const struct sockaddr_in *)sa)->sin_addr, 4);
    }
}

static uint32_t hash(const uint8_t key[16])
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (int i = 0; i < 16; i++)
        h = (h ^ key[i]) * 16777619u;
    return h;
}

/* The source's slot, or else a free or the quietest one among its probes. */
static struct source *find(struct admission *a, const uint8_t key[16], uint64_t now)
{
    uint32_t h = hash(key);
    struct source *victim = NULL;
    for (int i = 0; i < PROBE; i++) {
        struct source *s = &a->slots[(h + (uint32_t)i) % SLOTS];
        if (s->last && !memcmp(s->addr, key, 16))
            return s;
        if (!victim || !s->last || (victim->last && s->last < victim->last))
            victim = s;
    }
    /* a new source; if all its probes are busy (more than SLOTS sources
     * within STALE_MS), the quietest of them starts over */
    memcpy(victim->addr, key, 16);
    victim->last = now;
    victim->tokens = a->rate;
    return victim;
}

bool admission_rate_ok(struct admission *a, const struct sockaddr *peer, uint64_t now_ms)
{
    uint8_t key[16];
    key_of(peer, key);
    pthread_mutex_lock(&a->lock);
    struct source *s = find(a, key, now_ms);
    if (now_ms > s->last) /* workers' loop clocks may be a turn apart */
        s->tokens += (double)(now_ms - s->last) * a->rate / 1000.0;
    if (s->tokens > a->rate)
        s->tokens = a->rate; /* bursts of up to one second's worth */
    if (now_ms > s->last)
        s->last = now_ms;
    bool ok = s->tokens >= 1;
    if (ok)
        s->tokens -= 1;
    pthread_mutex_unlock(&a->lock);
    return ok;
}
