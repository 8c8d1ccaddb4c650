/* The jwt handler's own pure logic: the process-wide floor between two
 * JWKS fetches (one winner per interval, whatever the threads), how long a
 * fetched set stays fresh, and when a CONNECT waiting for a fetch stops. */
#include <pthread.h>
#include <stdatomic.h>

#include "check.h"
#include "handlers/jwt_handler.h"

static void test_floor(void)
{
    _Atomic uint64_t next = 0;
    CHECK(jwks_floor_take(&next, 1000, 10000));  /* the first fetch */
    CHECK_EQ_INT(atomic_load(&next), 11000);
    CHECK(!jwks_floor_take(&next, 1001, 10000)); /* a made-up kid a moment later */
    CHECK(!jwks_floor_take(&next, 10999, 10000));
    CHECK(jwks_floor_take(&next, 11000, 10000)); /* the interval has passed */
    CHECK(!jwks_floor_take(&next, 11000, 10000));
    CHECK_EQ_INT(atomic_load(&next), 21000);
}

#define THREADS 8
#define ROUNDS 2000

static _Atomic uint64_t shared_next;
static _Atomic unsigned wins;
static _Atomic unsigned go;

/* Every thread tries at the same times: exactly one wins each. */
static void *racer(void *arg)
{
    (void)arg;
    while (!atomic_load(&go))
        ;
    for (uint64_t t = 1; t <= ROUNDS; t++)
        if (jwks_floor_take(&shared_next, t * 100, 100))
            atomic_fetch_add(&wins, 1);
    return NULL;
}

static void test_floor_race(void)
{
    pthread_t th[THREADS];
    for (int i = 0; i < THREADS; i++)
        CHECK(pthread_create(&th[i], NULL, racer, NULL) == 0);
    atomic_store(&go, 1);
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    /* A thread late for a time may still win it if nobody took it: never
     * more than one win per interval. */
    CHECK(atomic_load(&wins) <= ROUNDS);
    CHECK(atomic_load(&wins) >= 1);
}

static void test_ttl(void)
{
    CHECK_EQ_INT(jwks_ttl_ms(-1, 300000, 10000), 300000); /* no max-age: MGATE_JWT_JWKS_REFRESH */
    CHECK_EQ_INT(jwks_ttl_ms(60, 300000, 10000), 60000);  /* a max-age wins */
    CHECK_EQ_INT(jwks_ttl_ms(3600, 300000, 10000), 3600000);
    CHECK_EQ_INT(jwks_ttl_ms(0, 300000, 10000), 10000);   /* no-store: the floor */
    CHECK_EQ_INT(jwks_ttl_ms(2, 300000, 10000), 10000);
    CHECK_EQ_INT(jwks_ttl_ms(86400 * 7, 300000, 10000), 86400000); /* at most a day */
}

static void test_wait(void)
{
    CHECK(!jwks_wait_over(5, 5, true, 100, 200)); /* still in flight, same set */
    CHECK(jwks_wait_over(5, 6, true, 100, 200));  /* a new set */
    CHECK(jwks_wait_over(5, 5, false, 100, 200)); /* the fetch ended, nothing new */
    CHECK(jwks_wait_over(5, 5, true, 200, 200));  /* JWKS_TIMEOUT */
}

int main(void)
{
    test_floor();
    test_floor_race();
    test_ttl();
    test_wait();
    return check_done("test_jwt_handler");
}
