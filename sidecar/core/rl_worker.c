/* rl_worker: the worker thread: pinning, config switches, listeners, drain (see rl_worker.h). */
#include "rl_worker.h"

#include <errno.h>
#include <limits.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "rl_conn.h"
#include "rl_core.h"
#include "rl_http.h"

#define ALLOC_SLOT(table, type)                                                        \
    type *p = w->table[slot];                                                          \
    if (rl_likely(p != NULL))                                                          \
        return p;                                                                      \
    p = calloc(1, sizeof(*p));                                                         \
    __atomic_store_n(&w->table[slot], p, __ATOMIC_RELEASE);                            \
    return p

rl_listener_stats *rl_worker_lstats(rl_worker *w, uint32_t slot) { ALLOC_SLOT(lstats, rl_listener_stats); }
rl_rule_stats *rl_worker_rstats(rl_worker *w, uint32_t slot) { ALLOC_SLOT(rstats, rl_rule_stats); }
rl_cluster_stats *rl_worker_cstats(rl_worker *w, uint32_t slot) { ALLOC_SLOT(cstats, rl_cluster_stats); }

rl_pool *rl_worker_pool(rl_worker *w, uint32_t slot)
{
    rl_pool *p = w->pools[slot];
    if (rl_likely(p != NULL))
        return p;
    p = calloc(1, sizeof(*p));
    if (p) {
        rl_list_init(&p->idle);
        rl_list_init(&p->busy);
    }
    w->pools[slot] = p;
    return p;
}

uint32_t rl_worker_rand(rl_worker *w)
{
    uint32_t x = w->rng;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return w->rng = x;
}

void rl_buf_unref(rl_worker *w, uint16_t bid)
{
    if (--w->bufs.refs[bid])
        return;
    if (rl_buf_is_rx(&w->bufs, bid)) {
        w->bufs.rx_held--;
        w->eng->buf_recycle(w, bid);
    } else if (rl_buf_is_spill(&w->bufs, bid)) {
        rl_buf_spill_put(&w->bufs, bid);
    } else {
        w->bufs.tx_free[w->bufs.ntx_free++] = bid;
    }
}

uint16_t rl_worker_rx_take(rl_worker *w, uint16_t bid, uint32_t len)
{
    w->bufs.refs[bid] = 1;
    w->bufs.rx_held++;
    if (rl_likely(!rl_buf_rx_scarce(&w->bufs)))
        return bid;
    int copy = rl_buf_spill_get(&w->bufs); /* not the slab's transmit buffers: heads need those */
    if (copy < 0)
        return bid; /* the heap has none either: reading pauses as the queues fill */
    memcpy(rl_buf_data(&w->bufs, (uint16_t)copy), rl_buf_data(&w->bufs, bid), len);
    rl_buf_unref(w, bid); /* back to the pool at once */
    w->totals.rx_copied++;
    return (uint16_t)copy;
}

rl_cfg_hold *rl_worker_hold_cfg(rl_worker *w)
{
    w->cur_hold->conns++;
    return w->cur_hold;
}

/* Holds are appended as configs are adopted, so the first is the oldest. */
static void publish_oldest(rl_worker *w)
{
    if (!rl_list_empty(&w->holds))
        __atomic_store_n(&w->totals.oldest_seq, rl_container_of(w->holds.next, rl_cfg_hold, node)->cfg->seq,
                         __ATOMIC_RELEASE);
}

static void drop_hold(rl_worker *w, rl_cfg_hold *h)
{
    rl_list_unlink(&h->node);
    rl_core_cfg_unhold(h->cfg);
    if (h == w->cur_hold)
        w->cur_hold = NULL;
    free(h);
    publish_oldest(w);
}

void rl_worker_release_cfg(rl_worker *w, rl_cfg_hold *h)
{
    if (--h->conns == 0 && h != w->cur_hold)
        drop_hold(w, h);
}

static rl_listener *find_listener(rl_worker *w, int fd)
{
    for (rl_list *n = w->listeners.next; n != &w->listeners; n = n->next) {
        rl_listener *l = rl_container_of(n, rl_listener, node);
        if (l->sock.fd == fd)
            return l;
    }
    return NULL;
}

static void close_listener(rl_worker *w, rl_listener *l)
{
    rl_list_unlink(&l->node);
    rl_timer_cancel(&w->wheel, &l->backoff);
    w->eng->listen_stop(w, &l->sock); /* the engine frees l once nothing refers to it */
}

static void on_listener_released(rl_worker *w, rl_sock *s)
{
    (void)w;
    free(rl_container_of(s, rl_listener, sock));
}

static const rl_sock_ops listener_ops = {.on_released = on_listener_released};

/* Adopt the newest config: open/keep/close listeners, hold the config for new connections. */
static void switch_cfg(rl_worker *w, rl_cfg *cfg)
{
    rl_cfg_hold *h = calloc(1, sizeof(*h));
    if (!h)
        return; /* retried on the next loop turn */
    h->cfg = cfg;
    rl_list_push_back(&w->holds, &h->node);
    rl_cfg_hold *old = w->cur_hold;
    w->cur_hold = h;
    w->cfg = cfg;
    if (old && old->conns == 0)
        drop_hold(w, old);

    /* Mark every listener stale, then claim the ones the new config still has. */
    for (rl_list *n = w->listeners.next; n != &w->listeners; n = n->next)
        rl_container_of(n, rl_listener, node)->cfg_index = UINT32_MAX;
    for (uint32_t i = 0; i < cfg->nlisteners; i++) {
        int fd = cfg->listeners[i].group->fds[w->index];
        rl_listener *l = find_listener(w, fd);
        if (!l && w->accepting) {
            l = calloc(1, sizeof(*l));
            if (!l)
                continue;
            l->sock.fd = fd;
            l->sock.ops = &listener_ops;
            l->sock.owner = l;
            rl_list_push_back(&w->listeners, &l->node);
            if (w->eng->listen_start(w, &l->sock)) {
                rl_list_unlink(&l->node);
                free(l);
                continue;
            }
        }
        if (l)
            l->cfg_index = i;
    }
    for (rl_list *n = w->listeners.next, *next; n != &w->listeners; n = next) {
        next = n->next;
        rl_listener *l = rl_container_of(n, rl_listener, node);
        if (l->cfg_index == UINT32_MAX)
            close_listener(w, l);
    }
    rl_http_pools_prune(w, cfg);
    __atomic_store_n(&w->totals.config_generation, cfg->generation, __ATOMIC_RELEASE);
    publish_oldest(w);
}

static void resume_accept(rl_worker *w, rl_timer *t)
{
    rl_listener *l = rl_container_of(t, rl_listener, backoff);
    if (!(l->sock.flags & RL_S_CLOSED) && w->eng->listen_start(w, &l->sock))
        rl_worker_pause_accept(w, l);
}

void rl_worker_pause_accept(rl_worker *w, rl_listener *l)
{
    rl_timer_set(&w->wheel, &l->backoff, w->now_ms + RL_ACCEPT_BACKOFF_MS, resume_accept);
}

void rl_worker_on_accept(rl_worker *w, rl_listener *l, int fd)
{
    if (fd < 0)
        return; /* EMFILE and friends: the multishot accept is re-armed by the engine */
    if (!w->accepting || l->cfg_index == UINT32_MAX) {
        close(fd);
        return;
    }
    const rl_listener_cfg *lc = &w->cfg->listeners[l->cfg_index];
    rl_listener_stats *ls = rl_worker_lstats(w, lc->slot);
    if (ls)
        ls->conns_opened++;
    if (lc->proto == RL_PROTO_TCP)
        rl_relay_accept(w, lc, fd);
    else
        rl_http_accept(w, lc, fd);
}

/* Every published config is visited in order, so each is released exactly once and the
 * listeners of a skipped one are still opened and closed by this worker. */
static rl_cfg *next_cfg(rl_worker *w)
{
    if (w->cfg)
        return atomic_load_explicit(&w->cfg->newer, memory_order_acquire);
    return atomic_load_explicit(&w->core->first, memory_order_acquire);
}

static void start_drain(rl_worker *w, uint32_t timeout_ms)
{
    w->draining = 1;
    w->totals.draining = 1;
    w->accepting = 0;
    w->drain_deadline_ms = rl_now_ms() + timeout_ms;
    while (!rl_list_empty(&w->listeners))
        close_listener(w, rl_container_of(w->listeners.next, rl_listener, node));
    for (rl_list *n = w->conns.next, *next; n != &w->conns; n = next) {
        next = n->next;
        rl_conn_base *c = rl_container_of(n, rl_conn_base, node);
        c->drain(w, c);
    }
    for (rl_list *n = w->upconns.next, *next; n != &w->upconns; n = next) {
        next = n->next;
        rl_conn_base *c = rl_container_of(n, rl_conn_base, node);
        c->drain(w, c); /* idle pooled connections close now */
    }
}

static void destroy_all(rl_worker *w, rl_list *list)
{
    while (!rl_list_empty(list)) {
        rl_conn_base *c = rl_container_of(list->next, rl_conn_base, node);
        c->destroy(w, c); /* untracks it */
    }
}

static int pin(rl_worker *w, char *err, size_t n)
{
    if (w->cpu < 0)
        return 0;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(w->cpu, &set);
    int rc = pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
    if (rc)
        snprintf(err, n, "worker %d: cannot pin to CPU %d: %s", w->index, w->cpu, strerror(rc));
    return rc;
}

void *rl_worker_main(void *arg)
{
    rl_worker *w = arg;
    rl_core *core = w->core;
    char err[256] = "";
    char name[16];
    snprintf(name, sizeof(name), "rl-worker-%d", w->index);
    pthread_setname_np(pthread_self(), name);
    rl_list_init(&w->holds);
    rl_list_init(&w->listeners);
    rl_list_init(&w->conns);
    rl_list_init(&w->upconns);
    w->now_ms = rl_now_ms();
    rl_wheel_init(&w->wheel, w->now_ms);
    w->accepting = 1;
    int rc = pin(w, err, sizeof(err));
    if (!rc && rl_bufs_init(&w->bufs, core->opts.buf_size, core->opts.nrecv_bufs, core->opts.ntx_bufs,
                                 core->opts.nspill_bufs)) {
        rc = -ENOMEM;
        snprintf(err, sizeof(err), "worker %d: cannot allocate buffers", w->index);
    }
    if (!rc)
        rc = w->eng->init(w, err, sizeof(err));
    rl_core_worker_started(core, rc, err);
    if (rc) {
        rl_bufs_fini(&w->bufs);
        atomic_store(&w->exited, 1);
        return NULL;
    }
    for (;;) {
        int d = atomic_load(&core->draining);
        if (d == 2)
            break;
        if (!w->draining)
            for (rl_cfg *next; (next = next_cfg(w));)
                switch_cfg(w, next);
        if (d == 1 && !w->draining)
            start_drain(w, atomic_load(&core->drain_timeout_ms));
        w->now_ms = rl_now_ms();
        if (w->draining && (w->nconns == 0 || w->now_ms >= w->drain_deadline_ms))
            break;
        rl_wheel_expire(&w->wheel, w, w->now_ms);
        int timeout = rl_wheel_next_ms(&w->wheel, w->now_ms);
        if (w->draining) {
            /* Clamped: the deadline may be 1193h away, and a negative wait is an endless one. */
            uint64_t ahead = w->drain_deadline_ms - w->now_ms;
            int left = ahead > INT_MAX ? INT_MAX : (int)ahead;
            timeout = timeout < 0 || left < timeout ? left : timeout;
        }
        w->eng->run_once(w, timeout);
        w->totals.loop_turns++;
    }
    /* Exit: the engine goes first so no completion can reach a freed connection. */
    w->eng->fini(w);
    destroy_all(w, &w->conns);
    destroy_all(w, &w->upconns);
    /* Configs published after the last one adopted: take their sockets, release them. */
    for (rl_cfg *next; (next = next_cfg(w));) {
        for (uint32_t i = 0; i < next->nlisteners; i++) {
            int fd = next->listeners[i].group->fds[w->index];
            rl_listener *l = find_listener(w, fd) ? NULL : calloc(1, sizeof(*l));
            if (l) {
                l->sock.fd = fd;
                rl_list_push_back(&w->listeners, &l->node);
            }
        }
        rl_list_push_back(&w->holds, &((rl_cfg_hold *)calloc(1, sizeof(rl_cfg_hold)))->node);
        rl_container_of(w->holds.prev, rl_cfg_hold, node)->cfg = next;
        w->cfg = next;
    }
    while (!rl_list_empty(&w->listeners)) {
        rl_listener *l = rl_container_of(w->listeners.next, rl_listener, node);
        rl_list_unlink(&l->node);
        close(l->sock.fd);
        free(l);
    }
    while (!rl_list_empty(&w->holds))
        drop_hold(w, rl_container_of(w->holds.next, rl_cfg_hold, node));
    rl_bufs_fini(&w->bufs);
    rl_load_free(&w->loads);
    free(w->http_scratch);
    free(w->http_req_settings);
    free(w->http_resp_settings);
    atomic_store(&w->exited, 1);
    return NULL;
}
