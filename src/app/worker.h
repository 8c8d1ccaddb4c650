/*
 * A worker is one thread with one loop, its own SO_REUSEPORT listening
 * sockets and every session those accepted.  Workers share nothing on the
 * data path; the control thread talks to them through an eventfd.
 */
#ifndef MGATE_WORKER_H
#define MGATE_WORKER_H

#include <pthread.h>

#include "config/config.h"
#include "net/listener.h"
#include "net/proxy_accept.h"
#include "session/session.h"

struct front_ops;
struct worker_listener {
    struct listener ls;
    struct session_params params;
    enum listener_id id;
    const struct front_ops *front; /* front_of(id): what takes its sockets */
    void *server; /* a datagram front end's state (front->serve); ls is then unused */
    uint64_t next_refusal_log; /* loop ms: admission refusals are logged once a second */
    struct log_limit log_budget; /* lines its sessions' clients cause (session_log_begin) */
    struct log_limit close_log_budget; /* "session closed" of those that never got in */
};

/* Broker addresses resolved again by the control thread (SIGHUP). */
struct worker_targets {
    struct sockaddr_storage addr[LISTENER_COUNT];
    socklen_t len[LISTENER_COUNT];
};

struct worker {
    unsigned index;
    pthread_t thread;
    bool started;
    bool finished; /* its loop has returned (read by the control thread) */
    struct loop *loop;
    struct loop_io ctl; /* eventfd: the control thread asks us to drain */
    struct loop_timer grace;
    uint32_t grace_ms;
    struct session_list sessions;
    struct proxy_list proxied; /* accepted sockets still waiting for their PROXY header */
    struct worker_listener listeners[LISTENER_COUNT];
    unsigned nlisteners;
    pthread_mutex_t lock; /* guards `targets`, the only thing written from outside */
    struct worker_targets targets;
};

enum worker_cmd { WORKER_DRAIN = 1, WORKER_RETARGET = 2 };

int worker_init(struct worker *w, unsigned index, uint32_t grace_ms);
/* Take over a bound socket with the session parameters for it. */
int worker_add_listener(struct worker *w, int fd, enum listener_id id,
                        const struct session_params *params);
/* Give new broker addresses; the worker applies them to new sessions. */
void worker_retarget(struct worker *w, const struct worker_targets *t);
int worker_start(struct worker *w);
void worker_send(struct worker *w, enum worker_cmd cmd);
/* Wait for a started worker, then free it (also one that never started). */
void worker_join(struct worker *w);

#endif
