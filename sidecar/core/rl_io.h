/* rl_io: the contract between the proxy state machines and the two engines.
 * The state machines say "recv/send/connect/close this socket"; an engine (rl_engine_uring.c
 * or rl_engine_epoll.c) performs it and calls back through rl_sock_ops with the completion.
 * Every callback runs on the worker thread, never re-entrantly from inside a request. */
#ifndef RL_IO_H
#define RL_IO_H

#include <stddef.h>
#include <stdint.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "rl_util.h"

#define RL_SEND_IOV_MAX 8 /* queued slices one send may carry */
#define RL_ACCEPT_BACKOFF_MS 100 /* accept paused this long after EMFILE, ENFILE, ENOMEM... */

typedef struct rl_worker rl_worker;
typedef struct rl_sock rl_sock;

typedef struct rl_sock_ops {
    void (*on_recv)(rl_worker *w, rl_sock *s, uint16_t bid, uint32_t len); /* owns one buffer ref */
    void (*on_recv_end)(rl_worker *w, rl_sock *s, int err);                /* 0 = peer EOF */
    /* The socket took res bytes of the send (maybe fewer than offered: send the rest again;
     * 0: none yet, it is writable again), or res = -errno. */
    void (*on_sent)(rl_worker *w, rl_sock *s, int res);
    void (*on_connected)(rl_worker *w, rl_sock *s, int err);
    void (*on_released)(rl_worker *w, rl_sock *s); /* closed and no operation left in flight */
} rl_sock_ops;

enum {
    RL_S_RECV_ON = 1u << 0,   /* the state machine wants data */
    RL_S_RECV_ARMED = 1u << 1, /* io_uring: multishot recv in flight */
    RL_S_SENDING = 1u << 2,
    RL_S_CONNECTING = 1u << 3,
    RL_S_CLOSED = 1u << 4,
    RL_S_READABLE = 1u << 5,  /* epoll: edge seen, not drained */
    RL_S_WRITABLE = 1u << 6,  /* epoll */
    RL_S_RD_DONE = 1u << 7,   /* EOF or error delivered */
    RL_S_PENDING = 1u << 8,   /* epoll: on the completion list */
    RL_S_CANCELING = 1u << 9, /* io_uring: cancel of the recv submitted */
    RL_S_HUP_SEEN = 1u << 10, /* epoll: the peer's FIN (or an error) was reported: read to the end */
    RL_S_STARVED = 1u << 11,  /* waits for receive buffers on the engine's starved list (the pending node) */
    RL_S_POLL_FIRST = 1u << 12, /* io_uring: a send found no room: the next one waits for room first */
    RL_S_ERR_WATCH = 1u << 13,  /* io_uring: a poll for an error (reset) on a socket not being read */
    /* A reset while reads are paused waits behind the data that came before it (the recv reports
     * both, in order, once reading resumes): an HTTP response that arrived whole is not lost to
     * the reset after it. Without it (requests, the relay, tunnels) a reset is reported at once. */
    RL_S_DATA_FIRST = 1u << 14,
    RL_S_ERR_SEEN = 1u << 15, /* epoll: EPOLLERR came; reported once the socket is not read */
};

struct rl_sock {
    int fd;
    uint16_t flags;
    uint16_t inflight; /* io_uring operations not yet completed */
    const rl_sock_ops *ops;
    void *owner;
    int pend_sent;  /* epoll: a send result waiting on the completion list (res + 1 if >= 0) */
    int pend_conn;  /* epoll: a connect result waiting on the completion list (1 + errno) */
    rl_list pending;          /* epoll: completion list node */
};

/* For the engines: the error (-errno) a socket nobody reads has to report now, or 0 (none, or
 * one that waits behind unread data, see RL_S_DATA_FIRST). Reading it clears it. */
static inline int rl_sock_unread_error(const rl_sock *s)
{
    int n = 0, err = 0;
    socklen_t len = sizeof(err);
    if ((s->flags & (RL_S_DATA_FIRST | RL_S_RD_DONE)) == RL_S_DATA_FIRST && ioctl(s->fd, FIONREAD, &n) == 0 && n > 0)
        return 0;
    if (getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &len) || !err)
        return 0;
    return -err;
}

/* One engine: a table of operations over a worker. */
typedef struct rl_engine_ops {
    const char *name;
    int (*init)(rl_worker *w, char *err, size_t errlen);
    void (*fini)(rl_worker *w);
    int (*listen_start)(rl_worker *w, rl_sock *ls); /* arm (multishot) accept */
    void (*listen_stop)(rl_worker *w, rl_sock *ls);
    int (*attach)(rl_worker *w, rl_sock *s); /* a new connected or connecting fd */
    void (*recv_start)(rl_worker *w, rl_sock *s);
    void (*recv_stop)(rl_worker *w, rl_sock *s);
    /* Gathered send of iov[0..n) (n <= RL_SEND_IOV_MAX); iov is read during the call only. */
    void (*send)(rl_worker *w, rl_sock *s, const struct iovec *iov, unsigned n);
    void (*connect)(rl_worker *w, rl_sock *s, const struct sockaddr *sa, socklen_t len, uint32_t timeout_ms);
    void (*close)(rl_worker *w, rl_sock *s);
    void (*buf_recycle)(rl_worker *w, uint16_t bid); /* a receive buffer is free again */
    int (*run_once)(rl_worker *w, int timeout_ms);   /* submit, wait, dispatch completions */
    /* Whether the peer's bytes (or FIN, or error) for s wait among completions reaped and not yet
     * dispatched, where a peek at the socket no longer sees them (io_uring: the multishot recv took
     * them); NULL when the engine never holds any (epoll reads them itself, when asked). */
    int (*rx_pending)(rl_worker *w, const rl_sock *s);
} rl_engine_ops;

extern const rl_engine_ops rl_engine_uring;
extern const rl_engine_ops rl_engine_epoll;

#endif
