/* rl_engine_epoll: the fallback engine. Edge-triggered epoll, non-blocking sockets, and a
 * per-worker list of completions so callbacks never run inside the call that caused them. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "rl_worker.h"

#define MAX_EVENTS 256
#define READS_PER_TURN 16
#define TAG_LISTENER 1u

typedef struct ep_state {
    int epfd;
    rl_list pending;
    rl_list starved; /* sockets with data to read and no free receive buffer */
    struct epoll_event evs[MAX_EVENTS];
} ep_state;

static ep_state *st(rl_worker *w) { return w->eng_state; }

static void push_pending(rl_worker *w, rl_sock *s)
{
    if (s->flags & RL_S_PENDING)
        return;
    if (s->flags & RL_S_STARVED) { /* the same list node: off the starved list first (do_reads puts it back) */
        rl_list_unlink(&s->pending);
        s->flags &= (uint16_t)~RL_S_STARVED;
    }
    s->flags |= RL_S_PENDING;
    rl_list_push_back(&st(w)->pending, &s->pending);
}

static int ep_init(rl_worker *w, char *err, size_t n)
{
    ep_state *e = calloc(1, sizeof(*e));
    if (!e) {
        snprintf(err, n, "out of memory");
        return -ENOMEM;
    }
    rl_list_init(&e->pending);
    rl_list_init(&e->starved);
    e->epfd = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    if (e->epfd < 0 || epoll_ctl(e->epfd, EPOLL_CTL_ADD, w->wake_fd, &ev)) {
        int rc = -errno;
        snprintf(err, n, "epoll set-up failed: %s", strerror(errno));
        if (e->epfd >= 0)
            close(e->epfd);
        free(e);
        return rc;
    }
    w->eng_state = e;
    return 0;
}

static void ep_fini(rl_worker *w)
{
    close(st(w)->epfd);
    free(st(w));
    w->eng_state = NULL;
}

static int ep_listen_start(rl_worker *w, rl_sock *ls)
{
    struct epoll_event ev = {.events = EPOLLIN | EPOLLEXCLUSIVE,
                             .data.ptr = (void *)((uintptr_t)ls | TAG_LISTENER)};
    return epoll_ctl(st(w)->epfd, EPOLL_CTL_ADD, ls->fd, &ev) ? -errno : 0;
}

static void ep_listen_stop(rl_worker *w, rl_sock *ls)
{
    epoll_ctl(st(w)->epfd, EPOLL_CTL_DEL, ls->fd, NULL);
    close(ls->fd);
    ls->flags |= RL_S_CLOSED;
    push_pending(w, ls);
}

static int ep_attach(rl_worker *w, rl_sock *s)
{
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.ptr = s};
    return epoll_ctl(st(w)->epfd, EPOLL_CTL_ADD, s->fd, &ev) ? -errno : 0;
}

static void ep_recv_start(rl_worker *w, rl_sock *s)
{
    s->flags |= RL_S_RECV_ON;
    if ((s->flags & RL_S_READABLE) && !(s->flags & RL_S_RD_DONE))
        push_pending(w, s);
}

static void ep_recv_stop(rl_worker *w, rl_sock *s)
{
    (void)w;
    s->flags &= (uint16_t)~RL_S_RECV_ON;
}

/* Sends now; the result waits on the completion list (callbacks never run inside the call
 * that caused them). A full socket buffer leaves the send waiting for EPOLLOUT, which then
 * completes it with 0 bytes: the state machine sends again, from where its queue stands. */
static void ep_send(rl_worker *w, rl_sock *s, const struct iovec *iov, unsigned n)
{
    s->flags |= RL_S_SENDING;
    for (;;) {
        struct msghdr m = {.msg_iov = (struct iovec *)iov, .msg_iovlen = n};
        ssize_t r = n == 1 ? send(s->fd, iov[0].iov_base, iov[0].iov_len, MSG_NOSIGNAL | MSG_DONTWAIT)
                           : sendmsg(s->fd, &m, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && errno == EAGAIN) {
            s->flags &= (uint16_t)~RL_S_WRITABLE;
            return;
        }
        s->pend_sent = r >= 0 ? (int)r + 1 : -errno;
        push_pending(w, s);
        return;
    }
}

static void ep_connect(rl_worker *w, rl_sock *s, const struct sockaddr *sa, socklen_t len, uint32_t timeout_ms)
{
    (void)timeout_ms; /* the state machine's timer covers it */
    if (connect(s->fd, sa, len) == 0) {
        s->pend_conn = 1;
        push_pending(w, s);
    } else if (errno == EINPROGRESS) {
        s->flags |= RL_S_CONNECTING;
    } else {
        s->pend_conn = 1 + errno;
        push_pending(w, s);
    }
}

static void ep_close(rl_worker *w, rl_sock *s)
{
    s->flags |= RL_S_CLOSED;
    if (s->flags & RL_S_STARVED) { /* off the starved list, to be released */
        rl_list_unlink(&s->pending);
        s->flags &= (uint16_t)~RL_S_STARVED;
    }
    close(s->fd); /* also leaves the epoll set */
    s->fd = -1;
    push_pending(w, s);
}

static void ep_buf_recycle(rl_worker *w, uint16_t bid)
{
    w->bufs.rx_free[w->bufs.nrx_free++] = bid;
    /* A buffer is back: sockets starved of one read again next turn. */
    for (rl_list *n; (n = rl_list_pop_front(&st(w)->starved));) {
        rl_sock *s = rl_container_of(n, rl_sock, pending);
        s->flags &= (uint16_t)~RL_S_STARVED;
        push_pending(w, s);
    }
}

/* A pending error on a socket that will not be read soon, reported as the end of its reads. */
static void report_unread_error(rl_worker *w, rl_sock *s)
{
    int err = rl_sock_unread_error(s);
    /* Kept only while it may wait behind unread data; else reported now, or taken already
     * by a recv or a send. */
    if (err || (s->flags & (RL_S_DATA_FIRST | RL_S_RD_DONE)) != RL_S_DATA_FIRST)
        s->flags &= (uint16_t)~RL_S_ERR_SEEN;
    if (err) {
        s->flags |= RL_S_RD_DONE;
        s->ops->on_recv_end(w, s, err);
    }
}

static void do_reads(rl_worker *w, rl_sock *s)
{
    for (int i = 0; i < READS_PER_TURN; i++) {
        if ((s->flags & (RL_S_RECV_ON | RL_S_READABLE | RL_S_CLOSED | RL_S_RD_DONE)) !=
            (RL_S_RECV_ON | RL_S_READABLE))
            return;
        if (!w->bufs.nrx_free) {
            /* Waits for a buffer (ep_buf_recycle), not on the pending list: that would spin. */
            w->totals.uring_buf_exhausted++;
            if (!(s->flags & (RL_S_STARVED | RL_S_PENDING))) {
                s->flags |= RL_S_STARVED;
                rl_list_push_back(&st(w)->starved, &s->pending);
            }
            return;
        }
        uint16_t bid = w->bufs.rx_free[--w->bufs.nrx_free];
        ssize_t n = recv(s->fd, rl_buf_data(&w->bufs, bid), w->bufs.size, MSG_DONTWAIT);
        if (n > 0) {
            /* A short read emptied the socket: the next data raises a new edge, so the read
             * that would only say EAGAIN is skipped (a syscall per receive, as nginx does).
             * Not after a FIN was reported: no edge follows it, the EOF must be read now. */
            if ((uint32_t)n < w->bufs.size && !(s->flags & RL_S_HUP_SEEN))
                s->flags &= (uint16_t)~RL_S_READABLE;
            s->ops->on_recv(w, s, rl_worker_rx_take(w, bid, (uint32_t)n), (uint32_t)n);
            continue;
        }
        w->bufs.rx_free[w->bufs.nrx_free++] = bid;
        if (n < 0 && errno == EAGAIN) {
            s->flags &= (uint16_t)~RL_S_READABLE;
            return;
        }
        if (n < 0 && errno == EINTR)
            continue;
        s->flags |= RL_S_RD_DONE;
        s->ops->on_recv_end(w, s, n == 0 ? 0 : -errno);
        return;
    }
    push_pending(w, s); /* fairness: more next turn */
}

/* Reads, then: a reset on a socket that is not being read (paused for a peer that does not
 * read, out of buffers, or past its FIN: a recv says EOF before the error) would wait for the
 * next send to it, perhaps forever (edge-triggered: its event does not come twice). Reported
 * now, after the EOF if there was one, as the io_uring engine's watch does. */
static void reads_then_errors(rl_worker *w, rl_sock *s)
{
    do_reads(w, s);
    if ((s->flags & (RL_S_ERR_SEEN | RL_S_CLOSED)) == RL_S_ERR_SEEN &&
        (s->flags & (RL_S_RECV_ON | RL_S_STARVED | RL_S_RD_DONE)) != RL_S_RECV_ON)
        report_unread_error(w, s);
}

static void finish_connect(rl_worker *w, rl_sock *s)
{
    int soerr = 0;
    socklen_t l = sizeof(soerr);
    if (getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &soerr, &l))
        soerr = errno;
    s->flags &= (uint16_t)~RL_S_CONNECTING;
    s->ops->on_connected(w, s, -soerr);
}

/* A send's result, kept for after the call that made it (ep_send). */
static void deliver_sent(rl_worker *w, rl_sock *s)
{
    int res = s->pend_sent > 0 ? s->pend_sent - 1 : s->pend_sent;
    s->pend_sent = 0;
    s->flags &= (uint16_t)~RL_S_SENDING;
    s->ops->on_sent(w, s, res);
}

static void on_sock_event(rl_worker *w, rl_sock *s, uint32_t ev)
{
    if (s->flags & RL_S_CLOSED)
        return;
    if (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
        s->flags |= RL_S_READABLE;
    if (ev & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))
        s->flags |= RL_S_HUP_SEEN;
    if (ev & EPOLLERR)
        s->flags |= RL_S_ERR_SEEN;
    if (ev & (EPOLLOUT | EPOLLHUP | EPOLLERR))
        s->flags |= RL_S_WRITABLE;
    if ((s->flags & RL_S_CONNECTING) && (s->flags & RL_S_WRITABLE)) {
        finish_connect(w, s);
        if (s->flags & RL_S_CLOSED)
            return;
    }
    if ((s->flags & RL_S_SENDING) && (s->flags & RL_S_WRITABLE) && !s->pend_sent) {
        s->flags &= (uint16_t)~RL_S_SENDING; /* room again: the state machine sends the rest */
        s->ops->on_sent(w, s, 0);
        if (s->flags & RL_S_CLOSED)
            return;
    }
    /* A send made earlier in this turn is done before the reply it caused is read (a response
     * read first would find its request still queued, and the connection not reusable). */
    if (s->pend_sent) {
        deliver_sent(w, s);
        if (s->flags & RL_S_CLOSED)
            return;
    }
    reads_then_errors(w, s);
}

static void on_listener_event(rl_worker *w, rl_sock *ls)
{
    if (ls->flags & RL_S_CLOSED)
        return;
    rl_listener *l = rl_container_of(ls, rl_listener, sock);
    for (;;) {
        int fd = accept4(ls->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK) {
                /* EMFILE, ENFILE, ENOMEM...: the connection stays queued and the listener would
                 * report it again at once, forever. Stop watching it for a while. */
                epoll_ctl(st(w)->epfd, EPOLL_CTL_DEL, ls->fd, NULL);
                rl_worker_pause_accept(w, l);
            }
            return;
        }
        rl_worker_on_accept(w, l, fd);
    }
}

static void run_pending(rl_worker *w)
{
    ep_state *e = st(w);
    rl_list batch;
    rl_list_init(&batch);
    /* Take the current list so sockets re-queued by callbacks wait for the next turn. */
    if (rl_list_empty(&e->pending))
        return;
    batch.next = e->pending.next;
    batch.prev = e->pending.prev;
    batch.next->prev = &batch;
    batch.prev->next = &batch;
    rl_list_init(&e->pending);
    for (rl_list *n; (n = rl_list_pop_front(&batch));) {
        rl_sock *s = rl_container_of(n, rl_sock, pending);
        s->flags &= (uint16_t)~RL_S_PENDING;
        if (s->flags & RL_S_CLOSED) {
            s->ops->on_released(w, s);
            continue;
        }
        if (s->pend_conn) {
            int err = s->pend_conn - 1;
            s->pend_conn = 0;
            s->ops->on_connected(w, s, -err);
            if (s->flags & RL_S_CLOSED)
                continue;
        }
        if (s->pend_sent) {
            deliver_sent(w, s);
            if (s->flags & RL_S_CLOSED)
                continue;
        }
        reads_then_errors(w, s);
    }
}

static int ep_run_once(rl_worker *w, int timeout_ms)
{
    ep_state *e = st(w);
    if (!rl_list_empty(&e->pending))
        timeout_ms = 0;
    int n = epoll_wait(e->epfd, e->evs, MAX_EVENTS, timeout_ms);
    w->totals.epoll_waits++;
    w->now_ms = rl_now_ms();
    for (int i = 0; i < n; i++) {
        uintptr_t p = (uintptr_t)e->evs[i].data.ptr;
        if (!p) {
            uint64_t v;
            if (read(w->wake_fd, &v, sizeof(v)) < 0) {
                /* EAGAIN: another wake-up already consumed it */
            }
        } else if (p & TAG_LISTENER) {
            on_listener_event(w, (rl_sock *)(p & ~(uintptr_t)TAG_LISTENER));
        } else {
            on_sock_event(w, (rl_sock *)p, e->evs[i].events);
        }
    }
    /* Sockets closed during this batch are released only here, after the last event that
     * could name them. */
    run_pending(w);
    return n;
}

const rl_engine_ops rl_engine_epoll = {
    .name = "epoll",
    .init = ep_init,
    .fini = ep_fini,
    .listen_start = ep_listen_start,
    .listen_stop = ep_listen_stop,
    .attach = ep_attach,
    .recv_start = ep_recv_start,
    .recv_stop = ep_recv_stop,
    .send = ep_send,
    .connect = ep_connect,
    .close = ep_close,
    .buf_recycle = ep_buf_recycle,
    .run_once = ep_run_once,
};
