/* A connection whose owner pauses again right after each resume (the next
 * packet's verdict is pending too) must not read more while the input it
 * already holds waits for its redelivery: conn_resume_read defers that
 * redelivery, the loop runs the turn's I/O first, and a read there went
 * into the buffer, so the buffer grew by one read per verdict, without
 * bound (found by tests/fuzz/fuzz_session.c).  A real socket (a socketpair)
 * is kept full by the peer; the owner takes one 10-byte record per call. */
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "check.h"
#include "net/conn.h"

static struct loop *loop;
static struct conn *conn;
static int peer;
static uint32_t max_in;
static unsigned records, turns;
static struct loop_defer later;

static void resume_later(struct loop *l, struct loop_defer *d)
{
    (void)l, (void)d;
    conn_resume_read(conn); /* a late verdict's completion runs from a deferred call */
}

static size_t take_one(struct conn *c, const uint8_t *data, size_t len)
{
    (void)data;
    if (c->in.len > max_in)
        max_in = c->in.len;
    if (len < 10)
        return 0;
    records++;
    conn_pause_read(c); /* the next record waits for a verdict */
    loop_defer(loop, &later, resume_later);
    return 10;
}

static const struct conn_cbs cbs = {.on_data = take_one};

/* Keep the peer's side full, and stop after a bounded number of turns. */
static int top_up(void *ctx, int timeout_ms)
{
    (void)ctx, (void)timeout_ms;
    static uint8_t chunk[4096];
    while (write(peer, chunk, sizeof(chunk)) > 0)
        ;
    if (++turns == 200)
        loop_stop(loop);
    return 0;
}

int main(void)
{
    int sv[2];
    CHECK_EQ_INT(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
    int big = 1 << 20;
    setsockopt(sv[0], SOL_SOCKET, SO_RCVBUF, &big, sizeof(big));
    setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &big, sizeof(big));
    peer = sv[1];
    loop = loop_new();
    conn = conn_tcp_accept(loop, sv[0], &cbs, NULL);
    CHECK(conn != NULL);
    struct loop_hook hook = {.before_poll = top_up};
    loop_hook_add(loop, &hook);
    loop_run(loop);
    CHECK(records >= 100); /* the owner got one record a turn or so */
    /* What it holds is what one read brought (the loop's 64 KiB scratch),
     * not one more read per resume. */
    CHECK(max_in <= 64 * 1024);
    conn_close(conn);
    close(peer);
    loop_free(loop);
    return check_done("test_conn_resume");
}
