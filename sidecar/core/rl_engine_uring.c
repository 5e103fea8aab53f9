/* rl_engine_uring: the io_uring engine. One ring per worker, created disabled, restricted to
 * the operations below, then enabled; multishot accept, multishot recv from a provided-buffer
 * ring, one send in flight per socket, connect linked to a timeout, one submit-and-wait and
 * one CQ advance per loop turn. */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <liburing.h>

#include "rl_engine_uring.h"
#include "rl_uring_compat.h"
#include "rl_core.h"
#include "rl_worker.h"

#define BGID 0

/* The low 3 bits of user_data (rl_sock is 8-byte aligned): 0 is a cancel's own completion. */
enum { OP_IGNORE = 0, OP_ACCEPT, OP_RECV, OP_SEND, OP_CONNECT, OP_ERR_WATCH, OP_WAKE, OP_LINK_TIMEOUT };

typedef struct ur_msg {
    struct msghdr hdr;
    struct iovec iov[RL_SEND_IOV_MAX];
} ur_msg;

typedef struct ur_state {
    struct io_uring ring;
    struct io_uring_buf_ring *br;
    size_t br_bytes;
    uint32_t br_mask;
    uint32_t br_added; /* buffers added since the last advance */
    rl_list released;  /* closed sockets whose last operation completed */
    rl_list starved;   /* sockets whose multishot recv ended on an empty buffer ring */
    struct __kernel_timespec *ts; /* connect timeouts, one per SQ slot, valid until submit */
    uint32_t nts, ts_next;
    struct ur_msg *msgs; /* gathered sends, one per SQ slot: the kernel copies them at submit */
    uint32_t msg_next;
    int *closing; /* fds closed after the next submit: an SQE queued for one still names it */
    uint32_t nclosing, closing_cap;
    unsigned cq_next; /* the CQ index after the completion being dispatched */
} ur_state;

static ur_state *st(rl_worker *w) { return w->eng_state; }

static inline uint64_t ud(void *p, unsigned op) { return (uint64_t)(uintptr_t)p | op; }

/* SQ full: flush it (no wait) so that the next entries are free. */
static void flush_sq(rl_worker *w)
{
    int n = io_uring_submit(&st(w)->ring);
    if (n > 0)
        w->totals.uring_submits += (uint64_t)n;
    w->totals.uring_enters++;
}

static struct io_uring_sqe *get_sqe(rl_worker *w)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&st(w)->ring);
    /* The kernel takes every SQE of a submit (SUBMIT_ALL) unless it cannot allocate (EAGAIN):
     * try again; a worker that cannot queue anything cannot go on. */
    for (int tries = 0; rl_unlikely(!sqe); tries++) {
        if (tries == 1000) {
            fprintf(stderr, "ringlane: io_uring submission queue stuck full (kernel out of memory)\n");
            abort();
        }
        flush_sq(w);
        sqe = io_uring_get_sqe(&st(w)->ring);
    }
    return sqe;
}

int rl_uring_ring_init(struct io_uring *ring, unsigned entries, char *err, size_t n)
{
    const rl_uring_allowlist *al = rl_uring_allowlist_get();
    unsigned flags[] = {
        IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_SUBMIT_ALL,
        IORING_SETUP_COOP_TASKRUN | IORING_SETUP_SUBMIT_ALL,
        0,
    };
    int rc = -EINVAL;
    for (size_t i = 0; i < RL_ARRAY_LEN(flags); i++) {
        struct io_uring_params p;
        memset(&p, 0, sizeof(p));
        p.flags = flags[i] | IORING_SETUP_R_DISABLED | IORING_SETUP_CQSIZE;
        p.cq_entries = entries * 4;
        rc = io_uring_queue_init_params(entries, ring, &p);
        if (rc != -EINVAL)
            break;
    }
    if (rc) {
        snprintf(err, n, "io_uring_setup: %s", strerror(-rc));
        return rc;
    }
    /* Restrict the ring to exactly what this engine submits, then enable it. */
    rc = rl_uring_register_restrictions(ring, (struct io_uring_restriction *)al->restrictions,
                                        al->nrestrictions);
    if (!rc)
        rc = rl_uring_enable_rings(ring);
    if (rc) {
        snprintf(err, n, "io_uring restrictions: %s", strerror(-rc));
        io_uring_queue_exit(ring);
        return rc;
    }
    io_uring_register_ring_fd(ring); /* optional: saves an fd lookup per enter */
    return 0;
}

static int setup_buf_ring(rl_worker *w, ur_state *u, char *err, size_t n)
{
    uint32_t nb = 1;
    while (nb < w->bufs.nrecv)
        nb <<= 1;
    if (nb != w->bufs.nrecv || nb > 32768) {
        snprintf(err, n, "receive buffer count must be a power of two <= 32768 (got %u)", w->bufs.nrecv);
        return -EINVAL;
    }
    u->br_bytes = nb * sizeof(struct io_uring_buf);
    u->br = mmap(NULL, u->br_bytes, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    if (u->br == MAP_FAILED) {
        snprintf(err, n, "buffer ring: out of memory");
        return -ENOMEM;
    }
    struct io_uring_buf_reg reg;
    memset(&reg, 0, sizeof(reg));
    reg.ring_addr = (unsigned long)u->br;
    reg.ring_entries = nb;
    reg.bgid = BGID;
    int rc = io_uring_register_buf_ring(&u->ring, &reg, 0);
    if (rc) {
        snprintf(err, n, "register buffer ring: %s", strerror(-rc));
        munmap(u->br, u->br_bytes);
        return rc;
    }
    io_uring_buf_ring_init(u->br);
    u->br_mask = io_uring_buf_ring_mask(nb);
    for (uint32_t i = 0; i < nb; i++)
        io_uring_buf_ring_add(u->br, rl_buf_data(&w->bufs, (uint16_t)i), w->bufs.size, (uint16_t)i, u->br_mask, (int)i);
    io_uring_buf_ring_advance(u->br, (int)nb);
    w->bufs.nrx_free = 0; /* the kernel owns them now */
    return 0;
}

static void arm_wake(rl_worker *w)
{
    struct io_uring_sqe *sqe = get_sqe(w);
    io_uring_prep_poll_multishot(sqe, w->wake_fd, POLLIN);
    io_uring_sqe_set_data64(sqe, ud(NULL, OP_WAKE));
}

static int ur_init(rl_worker *w, char *err, size_t n)
{
    ur_state *u = calloc(1, sizeof(*u));
    if (!u) {
        snprintf(err, n, "out of memory");
        return -ENOMEM;
    }
    rl_list_init(&u->released);
    rl_list_init(&u->starved);
    int rc = rl_uring_ring_init(&u->ring, w->core->opts.ring_entries, err, n);
    if (rc) {
        free(u);
        return rc;
    }
    rc = setup_buf_ring(w, u, err, n);
    if (rc) {
        io_uring_queue_exit(&u->ring);
        free(u);
        return rc;
    }
    u->nts = *u->ring.sq.kring_entries; /* the SQ size (setup rounds the option up) */
    u->ts = calloc(u->nts, sizeof(*u->ts));
    u->msgs = calloc(u->nts, sizeof(*u->msgs));
    if (!u->ts || !u->msgs) {
        snprintf(err, n, "out of memory");
        free(u->ts);
        free(u->msgs);
        munmap(u->br, u->br_bytes);
        io_uring_queue_exit(&u->ring);
        free(u);
        return -ENOMEM;
    }
    w->eng_state = u;
    arm_wake(w);
    return 0;
}

static void ur_fini(rl_worker *w)
{
    ur_state *u = st(w);
    io_uring_queue_exit(&u->ring); /* cancels everything in flight */
    munmap(u->br, u->br_bytes);
    free(u->ts);
    free(u->msgs);
    for (uint32_t i = 0; i < u->nclosing; i++)
        close(u->closing[i]);
    free(u->closing);
    free(u);
    w->eng_state = NULL;
}

static void arm_accept(rl_worker *w, rl_sock *ls)
{
    struct io_uring_sqe *sqe = get_sqe(w);
    io_uring_prep_multishot_accept(sqe, ls->fd, NULL, NULL, SOCK_CLOEXEC);
    io_uring_sqe_set_data64(sqe, ud(ls, OP_ACCEPT));
    ls->inflight++;
}

static int ur_listen_start(rl_worker *w, rl_sock *ls)
{
    arm_accept(w, ls);
    return 0;
}

static void cancel(rl_worker *w, rl_sock *s, unsigned op)
{
    struct io_uring_sqe *sqe = get_sqe(w);
    io_uring_prep_cancel64(sqe, ud(s, op), 0);
    io_uring_sqe_set_data64(sqe, OP_IGNORE);
}

static void maybe_release(rl_worker *w, rl_sock *s)
{
    if ((s->flags & RL_S_CLOSED) && s->inflight == 0 && !(s->flags & RL_S_PENDING)) {
        s->flags |= RL_S_PENDING;
        rl_list_push_back(&st(w)->released, &s->pending);
    }
}

/* Closing at once would let a socket() of this turn reuse the number, and an SQE queued for the
 * old socket (a send, the multishot accept) would then reach the new one at submit. */
static void close_after_submit(ur_state *u, int fd)
{
    if (u->nclosing == u->closing_cap) {
        uint32_t cap = u->closing_cap ? u->closing_cap * 2 : 64;
        int *c = realloc(u->closing, cap * sizeof(*c));
        if (!c) { /* out of memory: submit what is queued, then close */
            io_uring_submit(&u->ring);
            close(fd);
            return;
        }
        u->closing = c;
        u->closing_cap = cap;
    }
    u->closing[u->nclosing++] = fd;
}

static void ur_listen_stop(rl_worker *w, rl_sock *ls)
{
    ls->flags |= RL_S_CLOSED;
    if (ls->inflight)
        cancel(w, ls, OP_ACCEPT);
    close_after_submit(st(w), ls->fd);
    maybe_release(w, ls);
}

static int ur_attach(rl_worker *w, rl_sock *s)
{
    (void)w;
    (void)s;
    return 0;
}

static void arm_recv(rl_worker *w, rl_sock *s)
{
    struct io_uring_sqe *sqe = get_sqe(w);
    io_uring_prep_recv_multishot(sqe, s->fd, NULL, 0, 0);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = BGID;
    io_uring_sqe_set_data64(sqe, ud(s, OP_RECV));
    s->flags |= RL_S_RECV_ARMED;
    s->inflight++;
}

/* A reset on a socket nobody reads (paused for a peer that does not read, or past its FIN) would
 * wait for the next send to it, perhaps forever. A multishot poll for POLLERR watches it: one
 * shot would not do, io_uring adds POLLRDHUP to every mask, so after a FIN it fires at once; the
 * multishot reports each later change (a reset wakes with POLLERR; data wakes with POLLIN, not
 * in the mask). It stays armed when reading resumes (the recv reports an error then) and is
 * cancelled at close. */
static void arm_err_watch(rl_worker *w, rl_sock *s)
{
    if (s->flags & (RL_S_ERR_WATCH | RL_S_CLOSED | RL_S_CONNECTING))
        return;
    struct io_uring_sqe *sqe = get_sqe(w);
    io_uring_prep_poll_multishot(sqe, s->fd, POLLERR);
    io_uring_sqe_set_data64(sqe, ud(s, OP_ERR_WATCH));
    s->flags |= RL_S_ERR_WATCH;
    s->inflight++;
}

static void on_err_watch_cqe(rl_worker *w, rl_sock *s, struct io_uring_cqe *cqe)
{
    if (!(cqe->flags & IORING_CQE_F_MORE)) {
        s->inflight--;
        s->flags &= (uint16_t)~RL_S_ERR_WATCH;
    }
    if (s->flags & RL_S_CLOSED)
        return maybe_release(w, s);
    int unread = (s->flags & (RL_S_RECV_ON | RL_S_RD_DONE | RL_S_STARVED)) != RL_S_RECV_ON;
    if (cqe->res < 0 || !unread) /* cancelled, or read again: its recv reports an error */
        return;
    if (!(cqe->res & POLLERR)) { /* POLLRDHUP/POLLHUP: nothing to report */
        if (!(s->flags & RL_S_ERR_WATCH)) /* the kernel ended it (CQ overflow): still needed */
            arm_err_watch(w, s);
        return;
    }
    /* None: a send took it and reports it, or it waits behind unread data for the recv (the
     * watch is not re-armed: POLLERR stays up until then). */
    int err = rl_sock_unread_error(s);
    if (!err)
        return;
    s->flags |= RL_S_RD_DONE;
    s->ops->on_recv_end(w, s, err);
}

static void ur_recv_start(rl_worker *w, rl_sock *s)
{
    s->flags |= RL_S_RECV_ON;
    if (!(s->flags & (RL_S_RECV_ARMED | RL_S_RD_DONE | RL_S_CLOSED)))
        arm_recv(w, s);
}

static void ur_recv_stop(rl_worker *w, rl_sock *s)
{
    s->flags &= (uint16_t)~RL_S_RECV_ON;
    if ((s->flags & RL_S_RECV_ARMED) && !(s->flags & RL_S_CANCELING)) {
        s->flags |= RL_S_CANCELING;
        cancel(w, s, OP_RECV);
    } else if (!(s->flags & (RL_S_RECV_ARMED | RL_S_RD_DONE))) { /* never started, or starved */
        arm_err_watch(w, s);
    }
}

static void ur_send(rl_worker *w, rl_sock *s, const struct iovec *iov, unsigned n)
{
    ur_state *u = st(w);
    struct io_uring_sqe *sqe = get_sqe(w);
    if (n == 1) {
        io_uring_prep_send(sqe, s->fd, iov[0].iov_base, iov[0].iov_len, MSG_NOSIGNAL);
    } else {
        /* Valid until submit, like the timespecs: the slots outnumber the SQEs between submits. */
        ur_msg *m = &u->msgs[u->msg_next++ % u->nts];
        memcpy(m->iov, iov, n * sizeof(*iov));
        memset(&m->hdr, 0, sizeof(m->hdr));
        m->hdr.msg_iov = m->iov;
        m->hdr.msg_iovlen = n;
        io_uring_prep_sendmsg(sqe, s->fd, &m->hdr, MSG_NOSIGNAL);
    }
    if (s->flags & RL_S_POLL_FIRST)
        sqe->ioprio |= IORING_RECVSEND_POLL_FIRST;
    io_uring_sqe_set_data64(sqe, ud(s, OP_SEND));
    s->flags |= RL_S_SENDING;
    s->inflight++;
}

static void ur_connect(rl_worker *w, rl_sock *s, const struct sockaddr *sa, socklen_t len, uint32_t timeout_ms)
{
    ur_state *u = st(w);
    /* The connect and its link timeout go in one submit: a flush between them ends the chain
     * (the timeout fails alone and only the wheel's later deadline is left). */
    if (timeout_ms && io_uring_sq_space_left(&u->ring) < 2)
        flush_sq(w);
    struct io_uring_sqe *sqe = get_sqe(w);
    io_uring_prep_connect(sqe, s->fd, sa, len);
    io_uring_sqe_set_data64(sqe, ud(s, OP_CONNECT));
    s->flags |= RL_S_CONNECTING;
    s->inflight++;
    if (!timeout_ms || !u->ts)
        return;
    sqe->flags |= IOSQE_IO_LINK;
    /* The timespec is read at submit time: keep it in a slot that outlives this turn. */
    struct __kernel_timespec *ts = &u->ts[u->ts_next++ % u->nts];
    ts->tv_sec = timeout_ms / 1000;
    ts->tv_nsec = (long long)(timeout_ms % 1000) * 1000000;
    sqe = get_sqe(w);
    io_uring_prep_link_timeout(sqe, ts, 0);
    io_uring_sqe_set_data64(sqe, ud(s, OP_LINK_TIMEOUT));
    s->inflight++;
}

static void ur_close(rl_worker *w, rl_sock *s)
{
    s->flags |= RL_S_CLOSED;
    if (s->flags & RL_S_STARVED) { /* off the starved list, so that it can be released */
        rl_list_unlink(&s->pending);
        s->flags &= (uint16_t)~RL_S_STARVED;
    }
    if ((s->flags & RL_S_RECV_ARMED) && !(s->flags & RL_S_CANCELING)) {
        s->flags |= RL_S_CANCELING;
        cancel(w, s, OP_RECV);
    }
    /* A send waiting for room would hold the socket (and its buffers) open, a connect its file
     * and the connection object until it times out (which may be never): cancel them. */
    if (s->flags & RL_S_SENDING)
        cancel(w, s, OP_SEND);
    if (s->flags & RL_S_CONNECTING)
        cancel(w, s, OP_CONNECT);
    if (s->flags & RL_S_ERR_WATCH)
        cancel(w, s, OP_ERR_WATCH);
    close_after_submit(st(w), s->fd);
    s->fd = -1;
    maybe_release(w, s);
}

static void ur_buf_recycle(rl_worker *w, uint16_t bid)
{
    ur_state *u = st(w);
    io_uring_buf_ring_add(u->br, rl_buf_data(&w->bufs, bid), w->bufs.size, bid, u->br_mask, (int)u->br_added);
    u->br_added++;
}

static void on_recv_cqe(rl_worker *w, rl_sock *s, struct io_uring_cqe *cqe)
{
    int more = cqe->flags & IORING_CQE_F_MORE;
    if (cqe->res > 0 && (cqe->flags & IORING_CQE_F_BUFFER)) {
        uint16_t bid = (uint16_t)(cqe->flags >> IORING_CQE_BUFFER_SHIFT);
        bid = rl_worker_rx_take(w, bid, (uint32_t)cqe->res);
        if (s->flags & RL_S_CLOSED)
            rl_buf_unref(w, bid);
        else
            s->ops->on_recv(w, s, bid, (uint32_t)cqe->res);
    }
    if (more)
        return;
    s->inflight--;
    s->flags &= (uint16_t)~(RL_S_RECV_ARMED | RL_S_CANCELING);
    if (s->flags & RL_S_CLOSED)
        return maybe_release(w, s);
    if (cqe->res == -ENOBUFS) {
        w->totals.uring_buf_exhausted++;
        if (!(s->flags & RL_S_STARVED)) {
            s->flags |= RL_S_STARVED;
            rl_list_push_back(&st(w)->starved, &s->pending);
        }
        arm_err_watch(w, s); /* no recv until buffers come back, if ever: a reset is seen */
        return;
    }
    if (s->flags & RL_S_RD_DONE) /* the error watch reported the end already */
        return;
    if (cqe->res == 0 || (cqe->res < 0 && cqe->res != -ECANCELED)) {
        s->flags |= RL_S_RD_DONE;
        s->ops->on_recv_end(w, s, cqe->res);
        if (cqe->res == 0)
            arm_err_watch(w, s); /* past the FIN: a reset would go unseen */
        return;
    }
    if (s->flags & RL_S_RECV_ON) /* the multishot ended by itself (or a stale cancel): re-arm */
        arm_recv(w, s);
    else
        arm_err_watch(w, s);
}

static void on_send_cqe(rl_worker *w, rl_sock *s, int res)
{
    s->inflight--;
    s->flags &= (uint16_t)~(RL_S_SENDING | RL_S_POLL_FIRST);
    /* The kernel may give up waiting for room (seen on 6.18 once the peer half-closed, its
     * window full): no bytes taken, and the next send polls for room before it tries. */
    if (res == -EAGAIN) {
        s->flags |= RL_S_POLL_FIRST;
        res = 0;
    }
    if (s->flags & RL_S_CLOSED)
        return maybe_release(w, s);
    s->ops->on_sent(w, s, res);
}

static void on_connect_cqe(rl_worker *w, rl_sock *s, int res)
{
    s->inflight--;
    s->flags &= (uint16_t)~RL_S_CONNECTING;
    if (s->flags & RL_S_CLOSED)
        return maybe_release(w, s);
    s->ops->on_connected(w, s, res == -ECANCELED ? -ETIMEDOUT : res);
}

static void dispatch(rl_worker *w, struct io_uring_cqe *cqe)
{
    uint64_t data = io_uring_cqe_get_data64(cqe);
    unsigned op = (unsigned)(data & 7);
    rl_sock *s = (rl_sock *)(uintptr_t)(data & ~7ull);
    switch (op) {
    case OP_ACCEPT:
        if (cqe->res >= 0 && !(s->flags & RL_S_CLOSED))
            rl_worker_on_accept(w, rl_container_of(s, rl_listener, sock), cqe->res);
        else if (cqe->res >= 0)
            close(cqe->res);
        if (!(cqe->flags & IORING_CQE_F_MORE)) {
            s->inflight--;
            if (s->flags & RL_S_CLOSED)
                maybe_release(w, s);
            else if (cqe->res < 0 && cqe->res != -ECANCELED) /* EMFILE, ENOMEM...: pause */
                rl_worker_pause_accept(w, rl_container_of(s, rl_listener, sock));
            else
                arm_accept(w, s);
        }
        break;
    case OP_RECV:
        on_recv_cqe(w, s, cqe);
        break;
    case OP_SEND:
        on_send_cqe(w, s, cqe->res);
        break;
    case OP_CONNECT:
        on_connect_cqe(w, s, cqe->res);
        break;
    case OP_ERR_WATCH:
        on_err_watch_cqe(w, s, cqe);
        break;
    case OP_LINK_TIMEOUT:
        s->inflight--;
        maybe_release(w, s);
        break;
    case OP_WAKE: {
        uint64_t v;
        if (read(w->wake_fd, &v, sizeof(v)) < 0) {
            /* already drained */
        }
        if (!(cqe->flags & IORING_CQE_F_MORE))
            arm_wake(w);
        break;
    }
    default:
        break;
    }
}

static int ur_run_once(rl_worker *w, int timeout_ms)
{
    ur_state *u = st(w);
    if (u->br_added) {
        io_uring_buf_ring_advance(u->br, (int)u->br_added);
        u->br_added = 0;
        /* Buffers are back: sockets starved of them may receive again. */
        for (rl_list *n; (n = rl_list_pop_front(&u->starved));) {
            rl_sock *s = rl_container_of(n, rl_sock, pending);
            s->flags &= (uint16_t)~RL_S_STARVED;
            if ((s->flags & RL_S_RECV_ON) && !(s->flags & (RL_S_RECV_ARMED | RL_S_CLOSED | RL_S_RD_DONE)))
                arm_recv(w, s);
        }
    }
    struct io_uring_cqe *cqe;
    struct __kernel_timespec ts = {.tv_sec = timeout_ms / 1000, .tv_nsec = (long long)(timeout_ms % 1000) * 1000000};
    if (!rl_list_empty(&u->released) || u->nclosing) /* no waiting: a peer waits for our FIN */
        ts.tv_sec = ts.tv_nsec = 0, timeout_ms = 0;
    w->totals.uring_submits += io_uring_sq_ready(&u->ring);
    w->totals.uring_enters++;
    io_uring_submit_and_wait_timeout(&u->ring, &cqe, 1, timeout_ms >= 0 ? &ts : NULL, NULL);
    w->now_ms = rl_now_ms();
    for (uint32_t i = 0; i < u->nclosing; i++) /* submitted: the numbers are free to reuse */
        close(u->closing[i]);
    u->nclosing = 0;
    unsigned head, count = 0;
    io_uring_for_each_cqe(&u->ring, head, cqe) {
        u->cq_next = head + 1;
        dispatch(w, cqe);
        count++;
    }
    io_uring_cq_advance(&u->ring, count);
    u->cq_next = *u->ring.cq.khead;
    for (rl_list *n; (n = rl_list_pop_front(&u->released));) {
        rl_sock *s = rl_container_of(n, rl_sock, pending);
        s->flags &= (uint16_t)~RL_S_PENDING;
        s->ops->on_released(w, s);
    }
    return (int)count;
}

/* Off the data path: asked only before an upstream connection is handed to a waiting request. */
static int ur_rx_pending(rl_worker *w, const rl_sock *s)
{
    ur_state *u = st(w);
    uint64_t want = ud((void *)s, OP_RECV);
    unsigned tail = io_uring_smp_load_acquire(u->ring.cq.ktail);
    for (unsigned i = u->cq_next; i != tail; i++)
        if (u->ring.cq.cqes[io_uring_cqe_index(&u->ring, i, u->ring.cq.ring_mask)].user_data == want)
            return 1;
    return 0;
}

const rl_engine_ops rl_engine_uring = {
    .name = "io_uring",
    .init = ur_init,
    .fini = ur_fini,
    .listen_start = ur_listen_start,
    .listen_stop = ur_listen_stop,
    .attach = ur_attach,
    .recv_start = ur_recv_start,
    .recv_stop = ur_recv_stop,
    .send = ur_send,
    .connect = ur_connect,
    .close = ur_close,
    .buf_recycle = ur_buf_recycle,
    .run_once = ur_run_once,
    .rx_pending = ur_rx_pending,
};
