/* rl_relay: the L4 TCP relay state machine. Bytes received on one side are queued for the
 * other without copying; a full queue pauses reading (backpressure); EOF on one side becomes
 * shutdown(SHUT_WR) on the other once its queue is flushed, so half-closed streams finish
 * with every byte delivered; a reset becomes a reset on the other once what came before it
 * was delivered; a relay with no byte moving either way for limits.tunnelIdleTimeout is closed. */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "rl_balance.h"
#include "rl_conn.h"
#include "rl_http.h"

#define PAUSE_AT 4 /* queued slices on the sending side before the reader pauses */

typedef struct relay_side {
    rl_sock sock;
    rl_outq out;     /* bytes waiting to be sent to this side */
    uint8_t eof;     /* this side sent FIN */
    uint8_t wr_shut; /* we sent FIN to this side */
    uint8_t reset;   /* this side reset or failed a send */
    uint8_t released;
} relay_side;

typedef struct rl_relay {
    rl_conn_base base;
    relay_side side[2]; /* 0: client, 1: upstream */
    rl_cfg_hold *hold;
    rl_pool *pool; /* the cluster's, while side 1 counts against its maxConnections */
    const rl_rule *rule; /* in the held config, as ep and avoid: valid while the relay lives */
    uint32_t listener_slot, cluster_slot;
    const rl_endpoint *ep, *avoid;
    rl_timer timer; /* the connect timeout, then the idle timeout or the wait before passing a reset on */
    uint64_t reset_moved;  /* when the bytes still owed to the live side last went down */
    uint64_t reset_owed;
    uint32_t moved, moved_seen; /* receives plus sends done; the count when the idle timer was armed */
    uint8_t connected, closing, attempts;
    uint8_t reconnecting; /* the failed upstream socket is being released, then another connects */
    uint8_t failed; /* a side reset: the other gets what is queued for it, then a reset */
    uint8_t lb; /* what rl_lb_begin counted: a session is one exchange for least-request */
} rl_relay;

static const rl_sock_ops relay_ops;

static rl_relay *of(rl_sock *s) { return s->owner; }
static int idx(rl_relay *r, rl_sock *s) { return s == &r->side[1].sock; }

/* Side 1 no longer counts: against the cluster's maxConnections, as an open upstream
 * connection, nor for least-request. */
static void uncount(rl_worker *w, rl_relay *r)
{
    if (r->pool) {
        r->pool->nopen--;
        w->totals.upstream_conns_active--;
    }
    r->pool = NULL;
    if (r->lb)
        rl_lb_end(w, r->cluster_slot, &r->ep->addr, r->ep->addrlen, r->lb);
    r->lb = 0;
}

static void relay_close(rl_worker *w, rl_relay *r)
{
    if (r->closing)
        return;
    r->closing = 1;
    uncount(w, r);
    rl_timer_cancel(&w->wheel, &r->timer);
    for (int i = 0; i < 2; i++) {
        rl_outq_clear(w, &r->side[i].out);
        if (r->side[i].sock.fd >= 0)
            w->eng->close(w, &r->side[i].sock);
        else if (!(i == 1 && r->reconnecting)) /* that one reports its release */
            r->side[i].released = 1;
    }
    rl_listener_stats *ls = rl_worker_lstats(w, r->listener_slot);
    ls->conns_closed++;
}

static void relay_abort(rl_worker *w, rl_relay *r)
{
    for (int i = 0; i < 2; i++)
        if (r->side[i].sock.fd >= 0)
            rl_conn_abort_on_close(r->side[i].sock.fd);
    relay_close(w, r);
}

static int flushed(const relay_side *d) { return !rl_unsent(&d->out, &d->sock); }

static void reset_when_delivered(rl_worker *w, rl_relay *r);
static void on_reset_wait(rl_worker *w, rl_timer *t) { reset_when_delivered(w, rl_container_of(t, rl_relay, timer)); }

/* Reset the live side once everything owed to it was delivered (a close with linger 0 discards
 * what the kernel has not sent), or once its peer took nothing for RL_RESET_STALL_MS (its own EOF
 * or reset goes unseen: the relay no longer reads it). */
static void reset_when_delivered(rl_worker *w, rl_relay *r)
{
    const relay_side *live = &r->side[r->side[0].reset];
    if (rl_conn_reset_waits(w, &live->out, live->sock.fd, &r->reset_owed, &r->reset_moved))
        return rl_timer_set(&w->wheel, &r->timer, w->now_ms + RL_TICK_MS, on_reset_wait);
    relay_abort(w, r);
}

/* Side `dead` reset (or failed a send): nothing reaches it any more. The other side gets what
 * `dead` sent before, then a reset, as with a direct connection, whose receiver reads the data
 * that arrived before the reset. A FIN would make a stream cut short look complete. */
static void side_failed(rl_worker *w, rl_relay *r, int dead)
{
    relay_side *live = &r->side[!dead];
    if (r->side[dead].reset) /* its recv and its send both report it */
        return;
    if (r->failed)
        return relay_abort(w, r);
    r->failed = 1;
    r->side[dead].reset = 1;
    r->reset_owed = UINT64_MAX;
    rl_outq_clear(w, &r->side[dead].out);
    if (live->sock.flags & RL_S_RECV_ON)
        w->eng->recv_stop(w, &live->sock); /* its bytes have nowhere to go */
    reset_when_delivered(w, r);
}

static void relay_free(rl_worker *w, rl_relay *r)
{
    rl_outq_release(w, &r->side[0].out);
    rl_outq_release(w, &r->side[1].out);
    rl_conn_untrack(w, &r->base, 1);
    rl_worker_release_cfg(w, r->hold);
    free(r);
}

static void on_retry(rl_worker *w, rl_timer *t);

static void on_released(rl_worker *w, rl_sock *s)
{
    rl_relay *r = of(s);
    if (r->reconnecting && s == &r->side[1].sock) {
        r->reconnecting = 0;
        if (!r->closing) { /* the next attempt, after the rule's backoff */
            uint32_t backoff = r->rule->retry_backoff_ms;
            return rl_timer_set(&w->wheel, &r->timer, w->now_ms + backoff, on_retry);
        }
    }
    r->side[idx(r, s)].released = 1;
    if (r->side[0].released && r->side[1].released)
        relay_free(w, r);
}

/* Both directions finished and flushed: the relay is done. */
static void check_done(rl_worker *w, rl_relay *r)
{
    for (int i = 0; i < 2; i++)
        if (!r->side[i].eof || !flushed(&r->side[i]))
            return;
    relay_close(w, r);
}

static void maybe_shutdown(rl_worker *w, rl_relay *r, int to)
{
    relay_side *d = &r->side[to];
    if (r->side[!to].eof && flushed(d) && !d->wr_shut) {
        d->wr_shut = 1;
        shutdown(d->sock.fd, SHUT_WR);
    }
    check_done(w, r);
}

static void on_recv(rl_worker *w, rl_sock *s, uint16_t bid, uint32_t len)
{
    rl_relay *r = of(s);
    int from = idx(r, s), to = !from;
    relay_side *d = &r->side[to];
    if (r->failed) { /* bound for the side that reset */
        rl_buf_unref(w, bid);
        return;
    }
    if (from == 0)
        rl_worker_lstats(w, r->listener_slot)->rx_bytes += len;
    r->moved++;
    if (rl_outq_push(w, &d->out, bid, 0, len)) {
        rl_buf_unref(w, bid); /* out of memory */
        return relay_close(w, r);
    }
    rl_outq_kick(w, &d->sock, &d->out);
    if (d->out.count >= PAUSE_AT)
        w->eng->recv_stop(w, s);
}

static void on_recv_end(rl_worker *w, rl_sock *s, int err)
{
    rl_relay *r = of(s);
    int from = idx(r, s);
    if (err)
        return side_failed(w, r, from);
    r->side[from].eof = 1;
    if (r->failed)
        return;
    maybe_shutdown(w, r, !from);
}

static void on_sent(rl_worker *w, rl_sock *s, int res)
{
    rl_relay *r = of(s);
    int to = idx(r, s), from = !to;
    if (res < 0)
        return side_failed(w, r, to);
    rl_outq_sent(w, &r->side[to].out, (uint32_t)res);
    if (to == 0) /* sent to the client: what its socket took, as HTTP counts it */
        rl_worker_lstats(w, r->listener_slot)->tx_bytes += (uint32_t)res;
    r->moved += res > 0;
    rl_outq_kick(w, s, &r->side[to].out);
    rl_outq_shrink(&r->side[to].out); /* a long-lived session idle after a burst */
    if (r->failed) {
        if (!r->side[to].reset && flushed(&r->side[to]))
            reset_when_delivered(w, r);
        return;
    }
    relay_side *src = &r->side[from];
    if (r->side[to].out.count < PAUSE_AT / 2 && !src->eof && !(src->sock.flags & RL_S_RECV_ON))
        w->eng->recv_start(w, &src->sock);
    maybe_shutdown(w, r, to);
}

/* The connect failed: another attempt when the rule allows (nothing reached the upstream, so
 * any session may go again), else the client is closed. */
static void connect_failed(rl_worker *w, rl_relay *r)
{
    rl_timer_cancel(&w->wheel, &r->timer);
    rl_worker_cstats(w, r->cluster_slot)->connect_errors++;
    if (!r->rule || r->attempts > r->rule->retry_attempts || !(r->rule->retry_flags & RL_RETRY_CONNECT_FAILURE))
        return relay_close(w, r);
    uncount(w, r);
    r->avoid = r->ep;
    r->reconnecting = 1;
    w->eng->close(w, &r->side[1].sock); /* on_released goes on */
}

static void arm_idle(rl_worker *w, rl_relay *r);

/* Nothing moved either way for a whole idle timeout: closed; reset where bytes are still owed
 * (a side that stopped reading must not take a cut stream for a complete one). */
static void on_idle(rl_worker *w, rl_timer *t)
{
    rl_relay *r = rl_container_of(t, rl_relay, timer);
    if (r->moved != r->moved_seen)
        return arm_idle(w, r);
    for (int i = 0; i < 2; i++)
        if (!flushed(&r->side[i]))
            return relay_abort(w, r);
    relay_close(w, r);
}

static void arm_idle(rl_worker *w, rl_relay *r)
{
    uint32_t ms = r->hold->cfg->tunnel_idle_timeout_ms;
    r->moved_seen = r->moved;
    if (ms)
        rl_timer_set(&w->wheel, &r->timer, w->now_ms + ms, on_idle);
}

static void on_connected(rl_worker *w, rl_sock *s, int err)
{
    rl_relay *r = of(s);
    rl_timer_cancel(&w->wheel, &r->timer);
    if (err)
        return connect_failed(w, r);
    r->connected = 1;
    arm_idle(w, r);
    w->eng->recv_start(w, &r->side[0].sock);
    w->eng->recv_start(w, &r->side[1].sock);
}

static void on_connect_timeout(rl_worker *w, rl_timer *t)
{
    connect_failed(w, rl_container_of(t, rl_relay, timer));
}

static void relay_drain(rl_worker *w, rl_conn_base *c)
{
    /* A byte stream has no request boundary to stop at: it runs until the drain deadline. */
    (void)w;
    (void)c;
}

static void relay_destroy(rl_worker *w, rl_conn_base *c)
{
    rl_relay *r = rl_container_of(c, rl_relay, base);
    rl_timer_cancel(&w->wheel, &r->timer); /* the wheel outlives it (an upstream's cancel walks it) */
    uncount(w, r);
    if (!r->closing) /* cut at the drain deadline: counted, and reset (a FIN would look complete) */
        rl_worker_lstats(w, r->listener_slot)->conns_closed++;
    for (int i = 0; i < 2; i++)
        if (r->side[i].sock.fd >= 0 && !(r->side[i].sock.flags & RL_S_CLOSED)) {
            rl_conn_abort_on_close(r->side[i].sock.fd);
            close(r->side[i].sock.fd);
        }
    rl_conn_untrack(w, &r->base, 1);
    rl_outq_free(&r->side[0].out);
    rl_outq_free(&r->side[1].out);
    free(r);
}

static const rl_sock_ops relay_ops = {
    .on_recv = on_recv,
    .on_recv_end = on_recv_end,
    .on_sent = on_sent,
    .on_connected = on_connected,
    .on_released = on_released,
};

/* Side 1 connects to an endpoint of the rule's backends (another than the one that failed, if
 * there is one). 0, or -1 when there is none or the socket fails (counted as a connect error). */
static int start_connect(rl_worker *w, rl_relay *r)
{
    const rl_cfg *cfg = r->hold->cfg;
    int ci = r->rule ? rl_pick_backend(w, r->rule) : -1;
    const rl_cluster *cl = ci >= 0 ? &cfg->clusters[ci] : NULL;
    const rl_endpoint *ep = cl ? rl_pick_endpoint(w, cl, r->avoid) : NULL;
    rl_pool *pool = cl ? rl_worker_pool(w, cl->slot) : NULL;
    relay_side *up = &r->side[1];
    r->attempts++;
    memset(&up->sock, 0, sizeof(up->sock));
    up->sock.ops = &relay_ops;
    up->sock.owner = r;
    up->sock.fd = -1;
    if (cl)
        r->cluster_slot = cl->slot;
    if (pool)
        rl_http_pool_make_room(w, pool, cl->max_conns);
    if (cl && (!pool || pool->nopen >= cl->max_conns)) { /* busy at maxConnections: refused */
        rl_worker_cstats(w, cl->slot)->connect_errors++; /* the one counter that shows it */
        return -1;
    }
    up->sock.fd = ep ? socket(ep->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0) : -1;
    if (up->sock.fd < 0 || w->eng->attach(w, &up->sock)) {
        if (cl)
            rl_worker_cstats(w, cl->slot)->connect_errors++;
        return -1; /* relay_close closes the fd */
    }
    r->pool = pool;
    pool->nopen++;
    w->totals.upstream_conns_active++;
    rl_cluster_stats *cs = rl_worker_cstats(w, cl->slot);
    cs->requests++;
    cs->connections_opened++;
    r->ep = ep;
    r->lb = (uint8_t)rl_lb_begin(w, cl, &ep->addr, ep->addrlen);
    int one = 1;
    setsockopt(up->sock.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)); /* the client's has it from the listener */
    w->eng->connect(w, &up->sock, (const struct sockaddr *)&ep->addr, ep->addrlen, cl->connect_timeout_ms);
    /* The engine-independent backstop (io_uring also links its own timeout). */
    rl_timer_set(&w->wheel, &r->timer, w->now_ms + cl->connect_timeout_ms + RL_TICK_MS, on_connect_timeout);
    return 0;
}

static void on_retry(rl_worker *w, rl_timer *t)
{
    rl_relay *r = rl_container_of(t, rl_relay, timer);
    if (start_connect(w, r))
        relay_close(w, r);
}

void rl_relay_accept(rl_worker *w, const rl_listener_cfg *lc, int fd)
{
    rl_relay *r = calloc(1, sizeof(*r));
    if (!r) {
        close(fd);
        return;
    }
    r->base.drain = relay_drain;
    r->base.destroy = relay_destroy;
    r->listener_slot = lc->slot;
    r->hold = rl_worker_hold_cfg(w);
    rl_conn_track(w, &r->base, 1);
    for (int i = 0; i < 2; i++) {
        r->side[i].sock.ops = &relay_ops;
        r->side[i].sock.owner = r;
        r->side[i].sock.fd = -1;
    }
    r->side[0].sock.fd = fd;
    r->rule = lc->nrules ? &r->hold->cfg->rules[lc->rules[0]] : NULL;
    if (w->eng->attach(w, &r->side[0].sock) || start_connect(w, r))
        return relay_close(w, r);
    /* Not read until the upstream is connected (there is nowhere to put its bytes), but a
     * reset meanwhile (a long connect, backoffs between attempts) must end the session. */
    if (!r->closing && !r->connected)
        w->eng->recv_stop(w, &r->side[0].sock);
}
