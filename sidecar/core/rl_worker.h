/* rl_worker: one pinned thread that owns its engine, listeners, connections, buffers,
 * upstream pools and stats. Nothing here is written by another thread except through the
 * atomics the core uses to publish a new config or ask for drain/stop. */
#ifndef RL_WORKER_H
#define RL_WORKER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "rl_buf.h"
#include "rl_cfg.h"
#include "rl_io.h"
#include "rl_load.h"
#include "rl_stats.h"
#include "rl_timer.h"

typedef struct rl_core rl_core;

/* A config this worker still uses, with the number of its connections that started on it. */
typedef struct rl_cfg_hold {
    rl_list node;
    rl_cfg *cfg;
    uint32_t conns;
} rl_cfg_hold;

/* One listening socket of this worker (its member of the address's SO_REUSEPORT group). */
typedef struct rl_listener {
    rl_sock sock;
    rl_list node;
    rl_listen_group *group;
    uint32_t cfg_index; /* index in the current config's listeners */
    rl_timer backoff;   /* accepting paused: the process ran out of descriptors or memory */
} rl_listener;

/* Idle upstream connections of one cluster (by stats slot), most recently used first. */
typedef struct rl_pool {
    rl_list idle; /* most recently used first */
    rl_list busy; /* HTTP connections in use (rl_http_up.pool_node): a reload marks stale ones */
    uint32_t nidle;
    uint32_t nopen;
} rl_pool;

struct rl_worker {
    rl_core *core;
    int index;
    int cpu; /* -1: not pinned */
    pthread_t thread;
    const rl_engine_ops *eng;
    void *eng_state;
    rl_bufs bufs;
    rl_wheel wheel;
    uint64_t now_ms;
    uint32_t rng; /* xorshift state for random balancing and weighted picks */
    void *http_scratch;             /* rl_http_head for heads parsed in place */
    void *http_req_settings, *http_resp_settings; /* llhttp callback tables */

    rl_cfg *cfg;
    rl_cfg_hold *cur_hold;
    rl_list holds;
    rl_list listeners;
    rl_list conns;   /* client-side connections, for drain */
    rl_list upconns; /* upstream connections, for shutdown */
    uint32_t nconns;
    int wake_fd;    /* eventfd: the core wakes the worker after publishing */
    int draining, accepting;
    uint64_t drain_deadline_ms;
    uint32_t rr[RL_MAX_SLOTS_CFG]; /* round-robin cursor per cluster slot */
    rl_loads loads;                /* requests in flight per endpoint (least-request) */

    rl_pool *pools[RL_MAX_SLOTS];
    rl_listener_stats *lstats[RL_MAX_SLOTS];
    rl_rule_stats *rstats[RL_MAX_SLOTS];
    rl_cluster_stats *cstats[RL_MAX_SLOTS];
    _Alignas(RL_CACHELINE) rl_worker_totals totals;
    _Alignas(RL_CACHELINE) atomic_int exited;
};

/* Lazily allocated stats blocks; the pointer is published with a release store for readers. */
rl_listener_stats *rl_worker_lstats(rl_worker *w, uint32_t slot);
rl_rule_stats *rl_worker_rstats(rl_worker *w, uint32_t slot);
rl_cluster_stats *rl_worker_cstats(rl_worker *w, uint32_t slot);
rl_pool *rl_worker_pool(rl_worker *w, uint32_t slot);

/* Buffer reference counting (receive buffers go back to the engine at zero). */
static inline void rl_buf_ref(rl_worker *w, uint16_t bid) { w->bufs.refs[bid]++; }
void rl_buf_unref(rl_worker *w, uint16_t bid);
/* An engine hands a filled receive buffer to the proxy: the id to pass on (one reference), a
 * spill copy when receive buffers are scarce (rl_buf.h). */
uint16_t rl_worker_rx_take(rl_worker *w, uint16_t bid, uint32_t len);

/* Connection accounting against the config each connection started on. */
rl_cfg_hold *rl_worker_hold_cfg(rl_worker *w);
void rl_worker_release_cfg(rl_worker *w, rl_cfg_hold *h);

/* Called by the engines when a listener accepted fd (or failed with -errno). */
void rl_worker_on_accept(rl_worker *w, rl_listener *l, int fd);
/* Accepting on l failed for want of descriptors or memory and the engine stopped: it is
 * started again after RL_ACCEPT_BACKOFF_MS (retrying at once would spin). */
void rl_worker_pause_accept(rl_worker *w, rl_listener *l);

uint32_t rl_worker_rand(rl_worker *w);
void *rl_worker_main(void *arg);

#endif
