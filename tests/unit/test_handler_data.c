/* mgate_session_handler_data: two handlers of one chain keep a pointer
 * each in the same session without seeing each other's; replacing one
 * frees the old; the session frees what is left, whether the CONNECT was
 * allowed (after the disconnect hook) or refused (no hook runs then). */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "rec_conn.h"
#include "session/internal.h"

static struct rec client, broker;
static int freed[3], disconnects;
static bool refuse;
static const struct mgate_handler first, second;

static struct conn *rec_dial(struct loop *l, const struct session_params *p, const struct conn_cbs *cbs, void *owner)
{
    (void)p;
    return rec_open(l, &broker, cbs, owner);
}

static void count_free(void *data) { freed[*(int *)data]++; }

static int tag[3] = {0, 1, 2};

static enum mgate_verdict first_connect(mgate_session *s, struct mgate_connect_req *req)
{
    (void)req;
    CHECK_EQ_INT(mgate_session_set_handler_data(s, &first, &tag[0], count_free), 0);
    CHECK_EQ_INT(mgate_session_set_handler_data(s, &first, &tag[2], count_free), 0); /* frees tag 0 */
    CHECK_EQ_INT(freed[0], 1);
    mgate_session_set_data(s, &tag[1]); /* the shared slot is a third one */
    return MGATE_IGNORE;
}

static enum mgate_verdict second_connect(mgate_session *s, struct mgate_connect_req *req)
{
    (void)req;
    CHECK(mgate_session_handler_data(s, &second) == NULL);
    CHECK_EQ_INT(mgate_session_set_handler_data(s, &second, &tag[1], count_free), 0);
    CHECK(mgate_session_handler_data(s, &first) == &tag[2]);
    CHECK(mgate_session_handler_data(s, &second) == &tag[1]);
    CHECK(mgate_session_data(s) == &tag[1]);
    return refuse ? MGATE_DENY : MGATE_ALLOW;
}

static void second_disconnect(mgate_session *s)
{
    disconnects++;
    CHECK(mgate_session_handler_data(s, &second) == &tag[1]); /* still there for the hook */
}

static const struct mgate_handler first = {.name = "first", .auth_connect = first_connect};
static const struct mgate_handler second = {.name = "second", .auth_connect = second_connect,
                                            .disconnect = second_disconnect};
static const struct mgate_handler *const chain[] = {&first, &second};

static const uint8_t connect_v4[] = {0x10, 13, 0, 4, 'M', 'Q', 'T', 'T', 4, 0x02, 0, 60, 0, 1, 'c'};
static const uint8_t connack_v4[] = {0x20, 2, 0, 0};

static int when_idle(void *ctx, int timeout_ms)
{
    static int phase;
    struct session_list *list = ((void **)ctx)[1];
    if (timeout_ms == 0)
        return 0;
    if (list->count && phase++ < 3)
        session_list_close_all(list);
    else
        loop_stop(((void **)ctx)[0]);
    return 0;
}

static void run(bool deny)
{
    memset(&client, 0, sizeof(client));
    memset(&broker, 0, sizeof(broker));
    memset(freed, 0, sizeof(freed));
    disconnects = 0;
    refuse = deny;
    struct loop *loop = loop_new();
    struct session_list list = {0};
    struct session_params params = {.listener = "test", .connect_timeout_ms = 5000, .output_high_water = 65536,
                                    .max_packet_size = 1 << 20, .handlers = chain, .handler_count = 2,
                                    .dial = rec_dial};
    static const struct sockaddr_in peer = {.sin_family = AF_INET};
    rec_open(loop, &client, NULL, NULL);
    struct mgate_session *s = session_start(loop, client.c, (const struct sockaddr *)&peer, &params, &list);
    conn_deliver(client.c, connect_v4, sizeof connect_v4);
    if (!deny) {
        conn_deliver(broker.c, connack_v4, sizeof connack_v4);
        CHECK_EQ_INT(s->state, SESSION_OPEN);
    }
    void *ctx[2] = {loop, &list};
    struct loop_hook hook = {.ctx = ctx, .before_poll = when_idle};
    loop_hook_add(loop, &hook);
    loop_run(loop);
    CHECK_EQ_INT(list.count, 0);
    CHECK_EQ_INT(freed[1], 1);
    CHECK_EQ_INT(freed[2], 1);
    CHECK_EQ_INT(freed[0], 1); /* only the replaced one: the shared slot has no free_fn */
    CHECK_EQ_INT(disconnects, deny ? 0 : 1);
    loop_free(loop);
    free(list.spare);
}

int main(void)
{
    run(false);
    run(true);
    return check_done("test_handler_data");
}
