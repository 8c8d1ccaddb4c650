/* Event loop timers, deferred calls and slots, the intrusive list, buffers,
 * topic alias maps. */
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "check.h"
#include "core/base64.h"
#include "core/buf.h"
#include "core/list.h"
#include "core/log.h"
#include "core/loop.h"
#include "session/alias.h"

static int order[16], norder;

static void note_timer(struct loop *l, struct loop_timer *t)
{
    (void)l;
    order[norder++] = (int)(t->when % 1000);
}

static void stop_loop(struct loop *l, struct loop_timer *t)
{
    (void)t;
    loop_stop(l);
}

static void test_timers(void)
{
    struct loop *l = loop_new();
    struct loop_timer t[6] = {0}, stopper = {0};
    uint32_t delays[6] = {30, 10, 50, 20, 40, 60};
    uint64_t base = loop_now(l);
    for (int i = 0; i < 6; i++)
        loop_timer_start(l, &t[i], delays[i], note_timer);
    loop_timer_stop(l, &t[4]); /* 40 never fires */
    CHECK(!loop_timer_armed(&t[4]));
    loop_timer_start(l, &t[5], 5, note_timer); /* re-arming moves it first */
    loop_timer_start(l, &stopper, 80, stop_loop);
    norder = 0;
    CHECK_EQ_INT(loop_run(l), 0);
    CHECK_EQ_INT(norder, 5);
    int want[5] = {5, 10, 20, 30, 50};
    for (int i = 0; i < 5 && i < norder; i++)
        CHECK_EQ_INT(order[i], (int)((base + (uint64_t)want[i]) % 1000));
    /* a stopped loop runs again */
    loop_timer_start(l, &t[0], 5, note_timer);
    loop_timer_start(l, &stopper, 20, stop_loop);
    CHECK_EQ_INT(loop_run(l), 0);
    CHECK_EQ_INT(norder, 6);
    loop_free(l);
}

/* Many timers, armed, stopped and re-armed in a scrambled order: each one
 * still armed fires once, in the order of its time (the pairing heap). */
#define HEAP_TIMERS 3000
static uint64_t last_fired;
static int fired, fired_out_of_order;

static void note_heap_timer(struct loop *l, struct loop_timer *t)
{
    (void)l;
    fired_out_of_order += t->when < last_fired;
    last_fired = t->when;
    fired++;
}

static void test_timer_heap(void)
{
    struct loop *l = loop_new();
    static struct loop_timer t[HEAP_TIMERS];
    struct loop_timer stopper = {0};
    uint32_t x = 12345;
    int armed = 0;
    for (int i = 0; i < HEAP_TIMERS; i++) {
        x = x * 1103515245u + 12345u;
        loop_timer_start(l, &t[i], (x >> 16) % 200, note_heap_timer);
    }
    for (int i = 0; i < HEAP_TIMERS; i++) {
        x = x * 1103515245u + 12345u;
        struct loop_timer *u = &t[(x >> 8) % HEAP_TIMERS];
        if (i % 3 == 0)
            loop_timer_stop(l, u);
        else if (i % 3 == 1)
            loop_timer_start(l, u, (x >> 16) % 200, note_heap_timer);
    }
    for (int i = 0; i < HEAP_TIMERS; i++)
        armed += loop_timer_armed(&t[i]);
    CHECK(armed > HEAP_TIMERS / 2 && armed < HEAP_TIMERS);
    loop_timer_start(l, &stopper, 300, stop_loop);
    CHECK_EQ_INT(loop_run(l), 0);
    CHECK_EQ_INT(fired, armed);
    CHECK_EQ_INT(fired_out_of_order, 0);
    for (int i = 0; i < HEAP_TIMERS; i++)
        CHECK(!loop_timer_armed(&t[i]));
    loop_free(l);
}

static int deferred_runs;
static void requeue(struct loop *l, struct loop_defer *d)
{
    /* Requeueing from a deferred call must wait for the next turn. */
    if (++deferred_runs < 3)
        loop_defer(l, d, requeue);
    else
        loop_stop(l);
}

static void test_defer(void)
{
    struct loop *l = loop_new();
    struct loop_defer d = {0}, cancelled = {0};
    loop_defer(l, &d, requeue);
    loop_defer(l, &d, requeue); /* queued once only */
    loop_defer(l, &cancelled, requeue);
    loop_defer_cancel(l, &cancelled);
    CHECK_EQ_INT(loop_run(l), 0);
    CHECK_EQ_INT(deferred_runs, 3);
    loop_free(l);
}

/* A deferred call cancels, then requeues, a call waiting in the same pass:
 * the cancelled one does not run in this pass, and the calls behind it do. */
static struct loop_defer pass_a, pass_b, pass_c;
static int pass_b_runs, pass_c_runs;
static void pass_b_cb(struct loop *l, struct loop_defer *d)
{
    (void)l, (void)d;
    pass_b_runs++;
}
static void pass_c_cb(struct loop *l, struct loop_defer *d)
{
    (void)d;
    pass_c_runs++;
    loop_stop(l);
}
static void pass_a_cb(struct loop *l, struct loop_defer *d)
{
    (void)d;
    loop_defer_cancel(l, &pass_b);
    loop_defer(l, &pass_b, pass_b_cb);
}

static void stop_cb(struct loop *l, struct loop_timer *t)
{
    (void)t;
    loop_stop(l);
}

static void test_defer_cancel_in_pass(void)
{
    struct loop *l = loop_new();
    struct loop_timer guard = {0};
    loop_timer_start(l, &guard, 1000, stop_cb); /* a lost call C must fail, not hang */
    loop_defer(l, &pass_a, pass_a_cb);
    loop_defer(l, &pass_b, pass_b_cb);
    loop_defer(l, &pass_c, pass_c_cb);
    CHECK_EQ_INT(loop_run(l), 0);
    CHECK_EQ_INT(pass_c_runs, 1);
    CHECK_EQ_INT(pass_b_runs, 0); /* cancelled in this pass, requeued for the next */
    CHECK(pass_b.queued);
    loop_timer_stop(l, &guard);
    loop_free(l);
}

static int readable_calls;
static void on_readable(struct loop *l, struct loop_io *io, uint32_t ev)
{
    char c;
    CHECK(ev & EPOLLIN);
    CHECK_EQ_INT(read(io->fd, &c, 1), 1);
    readable_calls++;
    loop_stop(l);
}

static void test_io(void)
{
    struct loop *l = loop_new();
    int p[2];
    CHECK_EQ_INT(pipe(p), 0);
    struct loop_io io;
    CHECK_EQ_INT(loop_io_add(l, &io, p[0], EPOLLIN, on_readable), 0);
    CHECK_EQ_INT(write(p[1], "x", 1), 1);
    loop_run(l);
    CHECK_EQ_INT(readable_calls, 1);
    loop_io_del(l, &io);
    close(p[0]);
    close(p[1]);
    loop_free(l);
}

static void test_buf(void)
{
    struct buf b = {0};
    CHECK_EQ_INT(buf_append(&b, "hello", 5), 0);
    CHECK_EQ_INT(b.len, 5);
    buf_consume(&b, 2);
    CHECK(memcmp(buf_head(&b), "llo", 3) == 0);
    char big[3000];
    memset(big, 'z', sizeof(big));
    CHECK_EQ_INT(buf_append(&b, big, sizeof(big)), 0); /* grows, keeps order */
    CHECK(memcmp(buf_head(&b), "lloz", 4) == 0);
    CHECK_EQ_INT(b.len, 3003);
    buf_consume(&b, 3003); /* empty gives the memory back */
    CHECK(b.data == NULL);
    CHECK_EQ_INT(b.cap, 0);
}

static void test_alias(void)
{
    struct alias_map m = {0};
    const uint8_t *t;
    uint32_t len;
    CHECK(!alias_get(&m, 1, &t, &len));
    CHECK_EQ_INT(alias_set(&m, 0, (const uint8_t *)"x", 1), -1); /* 0 is not an alias */
    CHECK_EQ_INT(alias_set(&m, 3, (const uint8_t *)"a/b", 3), 0);
    CHECK(alias_get(&m, 3, &t, &len) && len == 3 && memcmp(t, "a/b", 3) == 0);
    CHECK(!alias_get(&m, 2, &t, &len));
    CHECK(alias_is(&m, 3, (const uint8_t *)"a/b", 3));
    CHECK_EQ_INT(alias_set(&m, 3, (const uint8_t *)"c", 1), 0); /* rebinding */
    CHECK(!alias_is(&m, 3, (const uint8_t *)"a/b", 3));
    CHECK(alias_is(&m, 3, (const uint8_t *)"c", 1));
    alias_free(&m);
    CHECK(m.e == NULL);
}

static void test_base64(void)
{
    uint8_t out[16];
    CHECK_EQ_INT(base64_decode("dXNlcjpwYXNz", 12, out, sizeof(out)), 9); /* user:pass */
    CHECK(!memcmp(out, "user:pass", 9));
    CHECK_EQ_INT(base64_decode("YQ==", 4, out, sizeof(out)), 1);
    CHECK_EQ_INT(out[0], 'a');
    CHECK_EQ_INT(base64_decode("YQ", 2, out, sizeof(out)), 1); /* padding optional */
    CHECK_EQ_INT(base64_decode("+/8=", 4, out, sizeof(out)), 2);
    CHECK_EQ_INT(out[0], 0xfb);
    CHECK_EQ_INT(out[1], 0xff);
    CHECK_EQ_INT(base64_decode("", 0, out, sizeof(out)), 0);
    CHECK_EQ_INT(base64_decode("Y", 1, out, sizeof(out)), -1);      /* a lone sextet */
    CHECK_EQ_INT(base64_decode("YW*j", 4, out, sizeof(out)), -1);   /* not the alphabet */
    CHECK_EQ_INT(base64_decode("dXNlcjpwYXNz", 12, out, 8), -1);    /* does not fit */
}

/* The log budget: `burst` lines a second, the rest counted and handed to
 * the next line let through, in a later second. */
static void test_log_limit(void)
{
    struct log_limit ll = {0};
    uint32_t left = 99;
    uint64_t t = 5000;
    for (int i = 0; i < 3; i++) {
        CHECK(log_limit_take(&ll, t + (uint64_t)i, 3, &left));
        CHECK_EQ_INT((int)left, 0);
    }
    for (int i = 0; i < 10; i++)
        CHECK(!log_limit_take(&ll, t + 500, 3, &left));
    CHECK(log_limit_take(&ll, t + 1000, 3, &left)); /* the next second */
    CHECK_EQ_INT((int)left, 10);
    CHECK(log_limit_take(&ll, t + 1001, 3, &left));
    CHECK_EQ_INT((int)left, 0); /* reported once */
    CHECK(log_limit_take(&ll, t + 1002, 3, &left));
    CHECK(!log_limit_take(&ll, t + 1999, 3, &left));
    CHECK(log_limit_take(&ll, t + 9000, 3, &left)); /* seconds later: still reported */
    CHECK_EQ_INT((int)left, 1);
    CHECK(!log_limit_take(&ll, t + 9000, 0, &left)); /* a zero budget lets nothing through */
}

/* ---- loop slots ------------------------------------------------------- */

static const char key_low, key_mid, key_high; /* only their addresses matter */
static char destroyed[LOOP_SLOTS + 2];
static int ndestroyed;

static void note_destroy(struct loop *l, void *value)
{
    (void)l;
    destroyed[ndestroyed++] = *(const char *)value;
}

/* A slot that uses an earlier one finds it still there when it goes, and
 * its own key no longer answers. */
static void destroy_mid(struct loop *l, void *value)
{
    CHECK(loop_slot_get(l, &key_low) != NULL);
    CHECK(loop_slot_get(l, &key_mid) == NULL);
    note_destroy(l, value);
}

static void test_slots(void)
{
    struct loop *l = loop_new();
    static char low = 'L', mid = 'M', high = 'H';
    CHECK(loop_slot_get(l, &key_low) == NULL);
    CHECK_EQ_INT(loop_slot_count(l), 0);
    CHECK_EQ_INT(loop_slot_set(l, &key_low, &low, note_destroy), 0);
    CHECK_EQ_INT(loop_slot_set(l, &key_mid, &mid, destroy_mid), 0);
    CHECK_EQ_INT(loop_slot_set(l, &key_high, &high, note_destroy), 0);
    CHECK(loop_slot_get(l, &key_low) == &low);
    CHECK(loop_slot_get(l, &key_mid) == &mid);
    CHECK(loop_slot_get(l, &key_high) == &high);
    CHECK_EQ_INT(loop_slot_count(l), 3);

    ndestroyed = 0;
    loop_slots_free(l); /* newest first */
    CHECK_EQ_INT(ndestroyed, 3);
    CHECK(!memcmp(destroyed, "HML", 3));
    CHECK_EQ_INT(loop_slot_count(l), 0);
    CHECK(loop_slot_get(l, &key_low) == NULL);

    /* A bounded array: the one too many is refused, and the rest are
     * freed by loop_free itself. */
    static char keys[LOOP_SLOTS + 1], vals[LOOP_SLOTS + 1];
    for (int i = 0; i < LOOP_SLOTS; i++) {
        vals[i] = (char)('a' + i);
        CHECK_EQ_INT(loop_slot_set(l, &keys[i], &vals[i], note_destroy), 0);
    }
    CHECK_EQ_INT(loop_slot_set(l, &keys[LOOP_SLOTS], &vals[LOOP_SLOTS], note_destroy), -1);
    CHECK(loop_slot_get(l, &keys[LOOP_SLOTS]) == NULL);
    ndestroyed = 0;
    loop_free(l);
    CHECK_EQ_INT(ndestroyed, LOOP_SLOTS);
    for (int i = 0; i < LOOP_SLOTS && i < ndestroyed; i++)
        CHECK_EQ_INT(destroyed[i], 'a' + LOOP_SLOTS - 1 - i);
}

/* A destructor that answers what its layer can no longer do: the answer is
 * a deferred call, which sets off another (a session's end, then its
 * connections' frees).  loop_free runs them all before the loop goes. */
static struct loop_defer answer, aftermath;
static int answered, after;
static void on_aftermath(struct loop *l, struct loop_defer *d) { (void)l, (void)d; after++; }
static void on_answer(struct loop *l, struct loop_defer *d)
{
    (void)d;
    answered++;
    loop_defer(l, &aftermath, on_aftermath);
}
static void destroy_answering(struct loop *l, void *value)
{
    (void)value;
    loop_defer(l, &answer, on_answer);
}

static void test_slot_answers_run(void)
{
    static const char key;
    struct loop *l = loop_new();
    CHECK_EQ_INT(loop_slot_set(l, &key, (void *)&key, destroy_answering), 0);
    loop_free(l);
    CHECK_EQ_INT(answered, 1);
    CHECK_EQ_INT(after, 1);
}

/* ---- the intrusive list -------------------------------------------- */

struct thing {
    int v;
    struct list_node node;
};

static int values(struct list_node *head, int *out, int max)
{
    int n = 0;
    struct list_node *pos, *tmp;
    list_for_each_safe(pos, tmp, head) {
        if (n < max)
            out[n] = container_of(pos, struct thing, node)->v;
        n++;
    }
    return n;
}

static void test_list(void)
{
    struct list_node head = {0}; /* zeroed: empty, no list_init needed */
    struct thing t[5] = {{.v = 0}, {.v = 1}, {.v = 2}, {.v = 3}, {.v = 4}};
    int got[8];
    CHECK(list_empty(&head));
    CHECK(list_first(&head) == NULL && list_last(&head) == NULL && list_pop_front(&head) == NULL);
    CHECK_EQ_INT(values(&head, got, 8), 0);
    CHECK(!list_linked(&t[0].node));

    list_push_back(&head, &t[1].node);
    list_push_back(&head, &t[2].node);
    list_push_front(&head, &t[0].node);
    list_push_back(&head, &t[3].node);
    CHECK(!list_empty(&head));
    CHECK(list_linked(&t[2].node));
    CHECK_EQ_INT(values(&head, got, 8), 4);
    for (int i = 0; i < 4; i++)
        CHECK_EQ_INT(got[i], i);
    CHECK(list_entry(list_first(&head), struct thing, node) == &t[0]);
    CHECK(list_entry(list_last(&head), struct thing, node) == &t[3]);

    /* Removing the one being visited is allowed. */
    struct list_node *pos, *tmp;
    list_for_each_safe(pos, tmp, &head) {
        struct thing *x = container_of(pos, struct thing, node);
        if (x->v % 2)
            list_remove(pos);
    }
    CHECK(!list_linked(&t[1].node) && !list_linked(&t[3].node)); /* zeroed again: may be pushed anew */
    CHECK_EQ_INT(values(&head, got, 8), 2);
    CHECK_EQ_INT(got[0], 0);
    CHECK_EQ_INT(got[1], 2);

    list_push_back(&head, &t[1].node); /* off a list, so it may join again */
    CHECK(list_pop_front(&head) == &t[0].node);
    CHECK(!list_linked(&t[0].node));
    CHECK(list_pop_front(&head) == &t[2].node);
    CHECK(list_pop_front(&head) == &t[1].node);
    CHECK(list_empty(&head));
    CHECK(list_pop_front(&head) == NULL);

    /* An initialised head is as empty as a zeroed one. */
    struct list_node init;
    list_init(&init);
    CHECK(list_empty(&init));
    list_push_front(&init, &t[4].node);
    CHECK(list_first(&init) == &t[4].node && list_last(&init) == &t[4].node);
    list_remove(&t[4].node);
    CHECK(list_empty(&init));
}

int main(void)
{
    test_log_limit();
    test_base64();
    test_timers();
    test_timer_heap();
    test_defer();
    test_defer_cancel_in_pass();
    test_slots();
    test_slot_answers_run();
    test_list();
    test_io();
    test_buf();
    test_alias();
    return check_done("test_core");
}
