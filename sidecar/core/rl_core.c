/* rl_core: workers, listener groups, config publication, drain (see rl_core.h). */
#include "rl_core.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "rl_steer.h"
#include "rl_worker.h"

static void wake_all(rl_core *c)
{
    uint64_t one = 1;
    for (int i = 0; i < c->nworkers; i++)
        if (write(c->workers[i]->wake_fd, &one, sizeof(one)) < 0) {
            /* the counter is saturated or the worker is gone: it is awake anyway */
        }
}

void rl_core_worker_started(rl_core *core, int err, const char *msg)
{
    pthread_mutex_lock(&core->start_mu);
    core->started++;
    if (err && !core->start_err) {
        core->start_err = err;
        snprintf(core->start_msg, sizeof(core->start_msg), "%s", msg);
    }
    pthread_cond_broadcast(&core->start_cv);
    pthread_mutex_unlock(&core->start_mu);
}

static void set_defaults(rl_core_opts *o)
{
    if (!o->buf_size)
        o->buf_size = 16384;
    if (!o->nrecv_bufs)
        o->nrecv_bufs = 1024;
    if (!o->ntx_bufs)
        o->ntx_bufs = 512;
    if (!o->ring_entries)
        o->ring_entries = 1024;
}

static void free_workers(rl_core *c)
{
    for (int i = 0; i < c->nworkers; i++) {
        rl_worker *w = c->workers[i];
        if (!w)
            continue;
        if (w->wake_fd >= 0)
            close(w->wake_fd);
        for (int s = 0; s < RL_MAX_SLOTS; s++) {
            free(w->lstats[s]);
            free(w->rstats[s]);
            free(w->cstats[s]);
            free(w->pools[s]);
        }
        free(w);
    }
    free(c->workers);
    c->workers = NULL;
}

rl_core *rl_core_new(const rl_core_opts *opts, char *err, size_t errlen)
{
    rl_core *c = calloc(1, sizeof(*c));
    if (!c) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    c->opts = *opts;
    set_defaults(&c->opts);
    if (c->opts.nworkers < 1 || c->opts.nworkers > RL_MAX_WORKERS ||
        (c->opts.engine != RL_ENGINE_IO_URING && c->opts.engine != RL_ENGINE_EPOLL)) {
        snprintf(err, errlen, "invalid core options (workers %d, engine %d)", c->opts.nworkers, c->opts.engine);
        free(c);
        return NULL;
    }
    pthread_mutex_init(&c->start_mu, NULL);
    pthread_cond_init(&c->start_cv, NULL);
    c->workers = calloc((size_t)c->opts.nworkers, sizeof(*c->workers));
    c->nworkers = c->opts.nworkers;
    for (int i = 0; c->workers && i < c->nworkers; i++) {
        rl_worker *w = calloc(1, sizeof(*w));
        if (!w)
            break;
        c->workers[i] = w;
        w->core = c;
        w->index = i;
        w->cpu = c->opts.cpus[i];
        w->eng = c->opts.engine == RL_ENGINE_IO_URING ? &rl_engine_uring : &rl_engine_epoll;
        w->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        /* Seeded from the clock: sidecars started together must not all pick the same endpoints. */
        uint64_t t = rl_now_ns();
        w->rng = ((uint32_t)t ^ (uint32_t)(t >> 32) ^ 0x9e3779b9u * (uint32_t)(i + 1)) | 1;
    }
    int spawned = 0;
    for (int i = 0; c->workers && i < c->nworkers; i++) {
        if (!c->workers[i] || c->workers[i]->wake_fd < 0 ||
            pthread_create(&c->workers[i]->thread, NULL, rl_worker_main, c->workers[i]))
            break;
        spawned++;
    }
    /* Wait for every spawned worker to report its engine start-up. */
    pthread_mutex_lock(&c->start_mu);
    while (c->started < spawned)
        pthread_cond_wait(&c->start_cv, &c->start_mu);
    pthread_mutex_unlock(&c->start_mu);
    if (spawned < c->nworkers || c->start_err) {
        snprintf(err, errlen, "%s", spawned < c->nworkers ? "cannot start worker threads" : c->start_msg);
        atomic_store(&c->draining, 2);
        wake_all(c);
        for (int i = 0; i < spawned; i++)
            pthread_join(c->workers[i]->thread, NULL);
        free_workers(c);
        free(c);
        return NULL;
    }
    return c;
}

static rl_listen_group *find_group(rl_listen_group *g, const rl_listener_cfg *l)
{
    for (; g; g = g->next)
        if (rl_addr_equal(&g->addr, g->addrlen, &l->addr, l->addrlen))
            return g;
    return NULL;
}

static void format_addr(const struct sockaddr_storage *ss, char *out, size_t n)
{
    char ip[64] = "?";
    int port = 0;
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *a = (const void *)ss;
        inet_ntop(AF_INET, &a->sin_addr, ip, sizeof(ip));
        port = ntohs(a->sin_port);
        snprintf(out, n, "%s:%d", ip, port);
    } else {
        const struct sockaddr_in6 *a = (const void *)ss;
        inet_ntop(AF_INET6, &a->sin6_addr, ip, sizeof(ip));
        port = ntohs(a->sin6_port);
        snprintf(out, n, "[%s]:%d", ip, port);
    }
}

static void unref_group(rl_listen_group *g)
{
    if (atomic_fetch_sub(&g->refs, 1) == 1) {
        free(g->fds);
        free(g);
    }
}

void rl_core_cfg_unhold(rl_cfg *cfg)
{
    if (atomic_fetch_sub(&cfg->holders, 1) != 1)
        return;
    for (uint32_t i = 0; i < cfg->nlisteners; i++)
        if (cfg->listeners[i].group)
            unref_group(cfg->listeners[i].group);
    rl_cfg_free(cfg);
}

/* Whether a recent config stopped listening on l's address (forgotten once asked). */
static int take_removed(rl_core *c, const rl_listener_cfg *l)
{
    for (int i = 0; i < c->nremoved; i++)
        if (rl_addr_equal(&c->removed[i].addr, c->removed[i].addrlen, &l->addr, l->addrlen)) {
            c->removed[i] = c->removed[--c->nremoved];
            return 1;
        }
    return 0;
}

static uint16_t addr_port(const struct sockaddr_storage *ss)
{
    /* sin_port and sin6_port sit at the same offset */
    return ((const struct sockaddr_in *)(const void *)ss)->sin_port;
}

/* Whether a recent config stopped listening on l's port at another address. */
static int removed_on_port(const rl_core *c, const rl_listener_cfg *l)
{
    for (int i = 0; i < c->nremoved; i++)
        if (addr_port(&c->removed[i].addr) == addr_port(&l->addr))
            return 1;
    return 0;
}

/* Whether another listener of the latest config or of cfg has l's port on another address (a
 * wildcard one overlaps): then the probe of rl_steer_wait_unbound could only time out. */
static int port_shared(const rl_core *c, const rl_cfg *cfg, const rl_listener_cfg *l)
{
    for (const rl_listen_group *g = c->groups; g; g = g->next)
        if (addr_port(&g->addr) == addr_port(&l->addr) && !rl_addr_equal(&g->addr, g->addrlen, &l->addr, l->addrlen))
            return 1;
    for (uint32_t i = 0; i < cfg->nlisteners; i++) {
        const rl_listener_cfg *o = &cfg->listeners[i];
        if (addr_port(&o->addr) == addr_port(&l->addr) && !rl_addr_equal(&o->addr, o->addrlen, &l->addr, l->addrlen))
            return 1;
    }
    return 0;
}

/* Remembers the addresses of the latest config's groups that groups (the next config's) drop. */
static void note_removed(rl_core *c, rl_listen_group *groups)
{
    for (rl_listen_group *o = c->groups; o; o = o->next) {
        int kept = 0;
        for (rl_listen_group *g = groups; g && !kept; g = g->next)
            kept = rl_addr_equal(&o->addr, o->addrlen, &g->addr, g->addrlen);
        if (kept)
            continue;
        int n = (int)RL_ARRAY_LEN(c->removed);
        if (c->nremoved == n) /* the oldest goes: its sockets are long closed */
            memmove(&c->removed[0], &c->removed[1], (size_t)(n - 1) * sizeof(c->removed[0]));
        else
            c->nremoved++;
        c->removed[c->nremoved - 1].addr = o->addr;
        c->removed[c->nremoved - 1].addrlen = o->addrlen;
    }
}

int rl_core_apply(rl_core *c, rl_cfg *cfg, char *err, size_t errlen)
{
    rl_listen_group *groups = NULL;
    int cpus[RL_MAX_WORKERS];
    for (int i = 0; i < c->nworkers; i++)
        cpus[i] = c->workers[i]->cpu;
    if (atomic_load(&c->draining)) {
        snprintf(err, errlen, "draining: new config refused");
        rl_cfg_free(cfg);
        return -1;
    }
    /* Reuse the socket group of every address the live config already listens on. */
    for (uint32_t i = 0; i < cfg->nlisteners; i++) {
        rl_listener_cfg *l = &cfg->listeners[i];
        rl_listen_group *g = find_group(groups, l);
        if (g) {
            char a[80];
            format_addr(&l->addr, a, sizeof(a));
            snprintf(err, errlen, "listener address %s used twice", a);
            goto fail;
        }
        g = find_group(c->groups, l);
        rl_listen_group *ng = calloc(1, sizeof(*ng));
        if (!ng)
            goto oom;
        ng->addr = l->addr;
        ng->addrlen = l->addrlen;
        ng->fds = calloc((size_t)c->nworkers, sizeof(int));
        ng->next = groups;
        groups = ng;
        if (!ng->fds)
            goto oom;
        if (g) {
            memcpy(ng->fds, g->fds, (size_t)c->nworkers * sizeof(int));
        } else {
            /* A new SO_REUSEPORT group must be ours alone: a socket of another process (same
             * uid) would join it and take an index the steering program gives a worker, and the
             * connections steered there would never be accepted. Where a recent config listened
             * on the port, our own old sockets may still be closing: they get up to 2 s (a
             * worker closes them at its next loop turn), then the port counts as taken. Where
             * another listener has the port on another address, the probe cannot tell (it
             * always collides). */
            const struct sockaddr *sa = (const struct sockaddr *)&l->addr;
            int ours = take_removed(c, l) || removed_on_port(c, l), free_now = 1;
            if (!port_shared(c, cfg, l))
                free_now = rl_steer_wait_unbound(sa, l->addrlen, ours ? 2000 : 0); /* < 0: the bind will say */
            int rc = free_now == 0 ? -EADDRINUSE : rl_steer_listen(sa, l->addrlen, c->nworkers, cpus, ng->fds);
            if (rc < 0) {
                char a[80];
                format_addr(&l->addr, a, sizeof(a));
                snprintf(err, errlen, "cannot listen on %s: %s", a, strerror(-rc));
                free(ng->fds);
                ng->fds = NULL;
                goto fail;
            }
        }
    }
    /* Groups are per config generation: a kept address gets a new struct sharing the fds,
     * so workers can tell "same socket" by fd and each config owns its own structs. */
    for (uint32_t i = 0; i < cfg->nlisteners; i++) {
        rl_listen_group *g = find_group(groups, &cfg->listeners[i]);
        atomic_store(&g->refs, 1);
        cfg->listeners[i].group = g;
    }
    note_removed(c, groups);
    c->groups = groups;
    cfg->seq = ++c->applied_seq;
    atomic_store(&cfg->holders, c->nworkers);
    rl_cfg *prev = atomic_load(&c->cfg);
    if (prev)
        atomic_store_explicit(&prev->newer, cfg, memory_order_release);
    else
        atomic_store_explicit(&c->first, cfg, memory_order_release);
    atomic_store_explicit(&c->cfg, cfg, memory_order_release);
    wake_all(c);
    return 0;
oom:
    snprintf(err, errlen, "out of memory");
fail:
    /* Close only sockets this call opened (not those shared with the live config). */
    for (rl_listen_group *g = groups, *next; g; g = next) {
        next = g->next;
        int shared = 0;
        for (rl_listen_group *o = c->groups; o; o = o->next)
            if (rl_addr_equal(&o->addr, o->addrlen, &g->addr, g->addrlen))
                shared = 1;
        if (g->fds && !shared)
            for (int i = 0; i < c->nworkers; i++)
                close(g->fds[i]);
        free(g->fds);
        free(g);
    }
    rl_cfg_free(cfg);
    return -1;
}

void rl_core_drain(rl_core *c, uint32_t timeout_ms)
{
    atomic_store(&c->drain_timeout_ms, timeout_ms);
    atomic_store(&c->draining, 1);
    wake_all(c);
}

int rl_core_running(rl_core *c)
{
    int n = 0;
    for (int i = 0; i < c->nworkers; i++)
        n += !atomic_load(&c->workers[i]->exited);
    return n;
}

void rl_core_free(rl_core *c)
{
    if (!c)
        return;
    atomic_store(&c->draining, 2); /* stop now */
    wake_all(c);
    for (int i = 0; i < c->nworkers; i++)
        pthread_join(c->workers[i]->thread, NULL);
    free_workers(c);
    free(c);
}

int rl_core_nworkers(rl_core *c) { return c->nworkers; }

int rl_core_worker_cpu(rl_core *c, int i) { return i >= 0 && i < c->nworkers ? c->workers[i]->cpu : -1; }

uint64_t rl_core_served_generation(rl_core *c)
{
    uint64_t g = UINT64_MAX;
    for (int i = 0; i < c->nworkers; i++) {
        uint64_t wg = __atomic_load_n(&c->workers[i]->totals.config_generation, __ATOMIC_ACQUIRE);
        g = wg < g ? wg : g;
    }
    return g;
}

uint64_t rl_core_applied_seq(rl_core *c) { return c->applied_seq; }

uint64_t rl_core_oldest_seq(rl_core *c)
{
    uint64_t g = UINT64_MAX;
    for (int i = 0; i < c->nworkers; i++) {
        uint64_t wg = __atomic_load_n(&c->workers[i]->totals.oldest_seq, __ATOMIC_ACQUIRE);
        g = wg < g ? wg : g;
    }
    return g;
}

void rl_core_reset_slot(rl_core *c, int table, uint32_t slot)
{
    if (slot >= RL_MAX_SLOTS)
        return;
    for (int i = 0; i < c->nworkers; i++) {
        rl_worker *w = c->workers[i];
        void *p = table == 0   ? (void *)__atomic_load_n(&w->lstats[slot], __ATOMIC_ACQUIRE)
                  : table == 1 ? (void *)__atomic_load_n(&w->rstats[slot], __ATOMIC_ACQUIRE)
                               : (void *)__atomic_load_n(&w->cstats[slot], __ATOMIC_ACQUIRE);
        size_t n = table == 0 ? sizeof(rl_listener_stats) : table == 1 ? sizeof(rl_rule_stats) : sizeof(rl_cluster_stats);
        if (p) /* no worker writes it: no live config has the slot */
            memset(p, 0, n);
    }
}

int rl_core_read_totals(rl_core *c, int i, rl_worker_totals *out)
{
    if (i < 0 || i >= c->nworkers)
        return -1;
    *out = c->workers[i]->totals;
    return 0;
}

/* Every stats struct is a run of uint64_t counters (rl_stats.h), so a sum adds them as such. */
#define SUM_SLOTS(table, type)                                                                   \
    for (uint32_t k = 0; k < n; k++) {                                                           \
        uint64_t *d = (uint64_t *)(void *)&out[k];                                               \
        memset(d, 0, sizeof(type));                                                              \
        for (int i = 0; i < c->nworkers && slots[k] < RL_MAX_SLOTS; i++) {                       \
            const type *p = __atomic_load_n(&c->workers[i]->table[slots[k]], __ATOMIC_ACQUIRE); \
            for (size_t j = 0; p && j < sizeof(type) / sizeof(uint64_t); j++)                   \
                d[j] += ((const uint64_t *)(const void *)p)[j];                                  \
        }                                                                                        \
    }

int rl_core_read_listener(rl_core *c, int i, uint32_t slot, rl_listener_stats *out)
{
    if (i < 0 || i >= c->nworkers || slot >= RL_MAX_SLOTS)
        return -1;
    const rl_listener_stats *p = __atomic_load_n(&c->workers[i]->lstats[slot], __ATOMIC_ACQUIRE);
    if (!p)
        return -1;
    *out = *p;
    return 0;
}

void rl_core_sum_listeners(rl_core *c, const uint32_t *slots, uint32_t n, rl_listener_stats *out)
{
    SUM_SLOTS(lstats, rl_listener_stats);
}

void rl_core_sum_rules(rl_core *c, const uint32_t *slots, uint32_t n, rl_rule_stats *out)
{
    SUM_SLOTS(rstats, rl_rule_stats);
}

void rl_core_sum_clusters(rl_core *c, const uint32_t *slots, uint32_t n, rl_cluster_stats *out)
{
    SUM_SLOTS(cstats, rl_cluster_stats);
}
