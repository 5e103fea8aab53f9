/* rl_http_up: upstream connections and the per-worker keep-alive pool of each cluster. A
 * connection serves one client request at a time; afterwards it goes back to its pool
 * (most recently used first) or is closed. Idle pooled connections keep a recv armed so a
 * close by the upstream is noticed at once. */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "rl_balance.h"
#include "rl_http.h"

static const rl_sock_ops up_ops;
static void up_drain(rl_worker *w, rl_conn_base *b);
static void up_destroy(rl_worker *w, rl_conn_base *b);

void rl_http_up_unbind(rl_worker *w, rl_http_up *u)
{
    u->client = NULL;
    if (u->lb)
        rl_lb_end(w, u->cluster_slot, &u->addr, u->addrlen, u->lb);
    u->lb = 0;
}

/* Out of the pool and its counts (closing, or freed at worker exit). */
static void up_forget(rl_worker *w, rl_http_up *u)
{
    u->closed = 1;
    u->pool->nopen--; /* counted against max_conns until now, not until the engine lets go */
    rl_timer_cancel(&w->wheel, &u->timer);
    rl_list_unlink(&u->pool_node); /* idle or busy */
    if (u->state == U_IDLE) {
        u->pool->nidle--;
        w->totals.upstream_conns_idle--;
    }
    rl_http_up_unbind(w, u);
}

static void up_close(rl_worker *w, rl_http_up *u)
{
    if (u->closed)
        return;
    up_forget(w, u);
    rl_outq_clear(w, &u->out);
    w->eng->close(w, &u->sock);
}

static void on_released(rl_worker *w, rl_sock *s)
{
    rl_http_up *u = s->owner;
    w->totals.upstream_conns_active--;
    rl_conn_untrack(w, &u->base, 0);
    rl_outq_release(w, &u->out);
    rl_resp_head_free(&u->rh);
    free(u->headbuf);
    free(u);
}

static void on_connect_timeout(rl_worker *w, rl_timer *t)
{
    rl_http_up *u = rl_container_of(t, rl_http_up, timer);
    rl_http_client *c = u->client;
    up_close(w, u);
    if (c)
        rl_http_on_up_connected(w, c, -ETIMEDOUT);
}

static void on_idle_timeout(rl_worker *w, rl_timer *t)
{
    up_close(w, rl_container_of(t, rl_http_up, timer));
}

static const rl_cluster *cluster_in_slot(const rl_cfg *cfg, uint32_t slot)
{
    for (uint32_t i = 0; i < cfg->nclusters; i++)
        if (cfg->clusters[i].slot == slot)
            return &cfg->clusters[i];
    return NULL;
}

static int names_endpoint(const rl_cluster *cl, const rl_http_up *u)
{
    for (uint32_t i = 0; cl && i < cl->neps; i++)
        if (rl_addr_equal(&cl->eps[i].addr, cl->eps[i].addrlen, &u->addr, u->addrlen))
            return 1;
    return 0;
}

void rl_http_up_detach(rl_worker *w, rl_http_up *u, int reuse)
{
    rl_http_up_unbind(w, u);
    if (!reuse || u->closed || u->out.count || w->draining || u->state != U_BUSY || u->stale)
        return up_close(w, u);
    u->state = U_IDLE;
    rl_outq_shrink(&u->out);
    rl_list_unlink(&u->pool_node);
    /* Most recently used first: it is the one most likely still open upstream. */
    u->pool_node.next = u->pool->idle.next;
    u->pool_node.prev = &u->pool->idle;
    u->pool->idle.next->prev = &u->pool_node;
    u->pool->idle.next = &u->pool_node;
    u->pool->nidle++;
    w->totals.upstream_conns_idle++;
    rl_timer_set(&w->wheel, &u->timer, w->now_ms + u->idle_ms, on_idle_timeout);
    w->eng->recv_start(w, &u->sock); /* notice an upstream close while idle */
}

void rl_http_pools_prune(rl_worker *w, const rl_cfg *cfg)
{
    for (uint32_t slot = 0; slot < RL_MAX_SLOTS; slot++) {
        rl_pool *pool = w->pools[slot];
        if (!pool)
            continue;
        const rl_cluster *cl = cluster_in_slot(cfg, slot);
        for (rl_list *n = pool->idle.next, *next; n != &pool->idle; n = next) {
            next = n->next;
            rl_http_up *u = rl_container_of(n, rl_http_up, pool_node);
            if (!names_endpoint(cl, u))
                up_close(w, u);
        }
        /* Busy ones finish their exchange, then close: pooled, one would serve the address
         * again once a new pod is given it, even if a later config names it again. */
        for (rl_list *n = pool->busy.next; n != &pool->busy; n = n->next) {
            rl_http_up *u = rl_container_of(n, rl_http_up, pool_node);
            u->stale |= (uint8_t)!names_endpoint(cl, u);
        }
    }
}

void rl_http_pool_make_room(rl_worker *w, rl_pool *pool, uint32_t max_conns)
{
    if (pool->nopen >= max_conns && pool->nidle) /* the least recently used goes */
        up_close(w, rl_container_of(pool->idle.prev, rl_http_up, pool_node));
}

rl_http_up *rl_http_up_get(rl_worker *w, rl_http_client *c, const rl_cluster *cl, const rl_endpoint *ep,
                           int fresh, int *status)
{
    rl_pool *pool = rl_worker_pool(w, cl->slot);
    const llhttp_settings_t *settings = rl_http_response_settings(w);
    if (!pool || !settings) {
        *status = 503;
        return NULL;
    }
    for (rl_list *n = fresh ? &pool->idle : pool->idle.next; n != &pool->idle; n = n->next) {
        rl_http_up *u = rl_container_of(n, rl_http_up, pool_node);
        if (!rl_addr_equal(&u->addr, u->addrlen, &ep->addr, ep->addrlen))
            continue;
        rl_list_unlink(&u->pool_node);
        rl_list_push_back(&pool->busy, &u->pool_node);
        pool->nidle--;
        w->totals.upstream_conns_idle--;
        rl_timer_cancel(&w->wheel, &u->timer);
        u->state = U_BUSY;
        u->client = c;
        u->idle_ms = cl->idle_timeout_ms;
        u->rewrite = u->retry_status = u->heard = u->in_head = u->head_pause = 0;
        u->between = 1;
        u->reused = 1;
        llhttp_init(&u->parser, HTTP_RESPONSE, settings);
        u->parser.data = u;
        u->lb = (uint8_t)rl_lb_begin(w, cl, &u->addr, u->addrlen);
        return u;
    }
    /* At the limit, an idle connection to another endpoint (perhaps one a reload removed)
     * makes room. Only busy connections make a 503. */
    rl_http_pool_make_room(w, pool, cl->max_conns);
    if (pool->nopen >= cl->max_conns) {
        *status = 503;
        return NULL;
    }
    rl_http_up *u = calloc(1, sizeof(*u));
    if (u) {
        u->base.drain = up_drain;
        u->base.destroy = up_destroy;
    }
    int fd = u ? socket(ep->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0) : -1;
    if (fd < 0) {
        free(u);
        *status = 503;
        return NULL;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    u->sock.fd = fd;
    u->sock.ops = &up_ops;
    u->sock.flags = RL_S_DATA_FIRST; /* a response, until a tunnel */
    u->sock.owner = u;
    u->pool = pool;
    u->client = c;
    u->addr = ep->addr;
    u->addrlen = ep->addrlen;
    u->cluster_slot = cl->slot;
    /* cl may be an older config's (the client's): one the worker's newest does not name the
     * endpoint of is not pooled after this exchange. */
    u->stale = (uint8_t)!names_endpoint(cluster_in_slot(w->cfg, cl->slot), u);
    u->idle_ms = cl->idle_timeout_ms;
    u->state = U_CONNECTING;
    u->between = 1;
    rl_list_init(&u->pool_node);
    rl_list_push_back(&pool->busy, &u->pool_node);
    llhttp_init(&u->parser, HTTP_RESPONSE, settings);
    u->parser.data = u;
    pool->nopen++;
    w->totals.upstream_conns_active++;
    rl_conn_track(w, &u->base, 0);
    rl_worker_cstats(w, cl->slot)->connections_opened++;
    u->lb = (uint8_t)rl_lb_begin(w, cl, &u->addr, u->addrlen);
    if (w->eng->attach(w, &u->sock)) {
        up_close(w, u);
        *status = 503;
        return NULL;
    }
    w->eng->connect(w, &u->sock, (const struct sockaddr *)&u->addr, u->addrlen, cl->connect_timeout_ms);
    /* The engine-independent deadline (io_uring also links a timeout to the connect). */
    rl_timer_set(&w->wheel, &u->timer, w->now_ms + cl->connect_timeout_ms + RL_TICK_MS, on_connect_timeout);
    return u;
}

rl_outq *rl_http_up_outq(rl_http_up *u) { return &u->out; }

void rl_http_up_set_method(rl_http_up *u, int method) { u->method = (uint8_t)method; }

void rl_http_up_send(rl_worker *w, rl_http_up *u)
{
    if (u->state == U_BUSY)
        rl_outq_kick(w, &u->sock, &u->out);
}

static void shut_wr(rl_worker *w, rl_http_up *u);

static void on_reset_wait(rl_worker *w, rl_timer *t);

static void reset_check(rl_worker *w, rl_http_up *u)
{
    if (rl_conn_reset_waits(w, &u->out, u->sock.fd, &u->reset_owed, &u->reset_moved))
        return rl_timer_set(&w->wheel, &u->timer, w->now_ms + RL_TICK_MS, on_reset_wait);
    rl_conn_abort_on_close(u->sock.fd);
    up_close(w, u);
}

static void on_reset_wait(rl_worker *w, rl_timer *t) { reset_check(w, rl_container_of(t, rl_http_up, timer)); }

void rl_http_up_reset_when_delivered(rl_worker *w, rl_http_up *u)
{
    rl_http_up_unbind(w, u);
    u->resetting = 1;
    u->shut_pending = 0; /* never a FIN: the stream was cut */
    u->reset_owed = UINT64_MAX;
    w->eng->recv_stop(w, &u->sock); /* what it sends has nowhere to go */
    rl_http_up_send(w, u);
    reset_check(w, u);
}

void rl_http_up_shutdown_when_sent(rl_worker *w, rl_http_up *u)
{
    u->shut_pending = 1; /* on_sent sends the FIN once the queue is out */
    if (!rl_unsent(&u->out, &u->sock))
        shut_wr(w, u);
}

void rl_http_up_resume(rl_worker *w, rl_http_up *u)
{
    if (!(u->sock.flags & RL_S_RECV_ON) && !u->closed && !u->eof)
        w->eng->recv_start(w, &u->sock);
}

void rl_http_up_pause(rl_worker *w, rl_http_up *u) { w->eng->recv_stop(w, &u->sock); }

static void on_connected(rl_worker *w, rl_sock *s, int err)
{
    rl_http_up *u = s->owner;
    rl_http_client *c = u->client;
    if (err) {
        up_close(w, u);
        if (c)
            rl_http_on_up_connected(w, c, err);
        return;
    }
    rl_timer_cancel(&w->wheel, &u->timer);
    u->state = U_BUSY;
    w->eng->recv_start(w, s);
    rl_outq_kick(w, s, &u->out);
    if (c)
        rl_http_on_up_connected(w, c, 0);
}

static void on_recv(rl_worker *w, rl_sock *s, uint16_t bid, uint32_t len)
{
    rl_http_up *u = s->owner;
    if (u->client) {
        u->heard = 1;
        return rl_http_on_up_data(w, u->client, u, bid, len);
    }
    rl_buf_unref(w, bid);
    if (u->resetting) /* its client is gone: nowhere to go */
        return;
    /* Bytes from an idle upstream are a protocol error: drop the connection. */
    up_close(w, u);
}

static void on_recv_end(rl_worker *w, rl_sock *s, int err)
{
    rl_http_up *u = s->owner;
    rl_http_client *c = u->client;
    if (u->resetting) { /* its own FIN or reset: what is owed will not be read */
        rl_conn_abort_on_close(u->sock.fd);
        return up_close(w, u);
    }
    if (c && !err && !u->eof && rl_http_on_up_eof(w, c, u)) {
        u->eof = 1;
        return;
    }
    if (c)
        rl_http_on_up_end(w, c, u, err);
    up_close(w, u);
}

/* Both ends of a tunnel sent FIN and everything is out: it is over. */
static void shut_wr(rl_worker *w, rl_http_up *u)
{
    shutdown(u->sock.fd, SHUT_WR);
    if (u->eof && u->client) {
        rl_http_on_up_end(w, u->client, u, 0);
        up_close(w, u);
    }
}

static void on_sent(rl_worker *w, rl_sock *s, int res)
{
    rl_http_up *u = s->owner;
    rl_http_client *c = u->client;
    if (res < 0) {
        if (c)
            rl_http_on_up_end(w, c, u, res);
        return up_close(w, u);
    }
    rl_outq_sent(w, &u->out, (uint32_t)res);
    rl_outq_kick(w, s, &u->out);
    if (u->shut_pending && !rl_unsent(&u->out, s))
        return shut_wr(w, u);
    if (c)
        rl_http_on_up_sent(w, c, u, (uint32_t)res);
}

static void up_drain(rl_worker *w, rl_conn_base *b)
{
    rl_http_up *u = rl_container_of(b, rl_http_up, base);
    if (u->state == U_IDLE)
        up_close(w, u);
}

static void up_destroy(rl_worker *w, rl_conn_base *b)
{
    rl_http_up *u = rl_container_of(b, rl_http_up, base);
    if (!u->closed) { /* as up_close, without the engine (it is gone) */
        if (u->state == U_BUSY) /* cut mid-exchange at the drain deadline: a FIN would look complete */
            rl_conn_abort_on_close(u->sock.fd);
        up_forget(w, u);
        close(u->sock.fd);
    }
    w->totals.upstream_conns_active--;
    rl_conn_untrack(w, &u->base, 0);
    rl_outq_free(&u->out);
    rl_resp_head_free(&u->rh);
    free(u->headbuf);
    free(u);
}

static const rl_sock_ops up_ops = {
    .on_recv = on_recv,
    .on_recv_end = on_recv_end,
    .on_sent = on_sent,
    .on_connected = on_connected,
    .on_released = on_released,
};
