/* rl_core: the process-wide object Python holds: workers, listening socket groups, the
 * published config, drain. Only rl_core_apply/drain/stop/free touch shared state, and only
 * from the agent's thread; workers see changes through atomics and an eventfd wake-up. */
#ifndef RL_CORE_H
#define RL_CORE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "rl_cfg.h"
#include "rl_stats.h"

/* cffi:begin */
#define RL_ENGINE_IO_URING 1
#define RL_ENGINE_EPOLL 2
#define RL_MAX_WORKERS 256

typedef struct rl_core rl_core;

typedef struct rl_core_opts {
    int engine;             /* RL_ENGINE_* */
    int nworkers;
    int cpus[256];          /* CPU per worker; -1 leaves that worker unpinned */
    uint32_t buf_size;      /* receive/transmit buffer size, default 16 KiB */
    uint32_t nrecv_bufs;    /* per worker, default 1024 */
    uint32_t ntx_bufs;      /* per worker, default 512 */
    uint32_t nspill_bufs;   /* heap buffers at most, per worker (rl_buf.h); 0: as many as ids allow */
    uint32_t ring_entries;  /* io_uring SQ size, default 1024 */
} rl_core_opts;

rl_core *rl_core_new(const rl_core_opts *opts, char *err, size_t errlen);
int rl_core_apply(rl_core *core, rl_cfg *cfg, char *err, size_t errlen);
void rl_core_drain(rl_core *core, uint32_t timeout_ms);
int rl_core_running(rl_core *core);
void rl_core_free(rl_core *core);
int rl_core_nworkers(rl_core *core);
int rl_core_worker_cpu(rl_core *core, int worker);
uint64_t rl_core_served_generation(rl_core *core);
/* Configs are numbered 1, 2, ... as applied: the last one applied, and the oldest one a worker
 * still holds (for connections that began on it). Names only older configs had are unused. */
uint64_t rl_core_applied_seq(rl_core *core);
uint64_t rl_core_oldest_seq(rl_core *core);
/* Zero every worker's counters of a stats slot (0 listener, 1 rule, 2 cluster) that no live
 * config names, before it is given to another name. */
void rl_core_reset_slot(rl_core *core, int table, uint32_t slot);
int rl_core_read_totals(rl_core *core, int worker, rl_worker_totals *out);
/* One worker's counters of a listener slot (tests see CPU steering in them); -1 if it has none. */
int rl_core_read_listener(rl_core *core, int worker, uint32_t slot, rl_listener_stats *out);
/* The counters of slots[0..n) summed over the workers into out[0..n) (zeros where no worker has
 * the slot). One call per table per scrape: each cffi call gives up the GIL, and taking it back
 * from a busy thread (a config being validated) costs a switch interval. */
void rl_core_sum_listeners(rl_core *core, const uint32_t *slots, uint32_t n, rl_listener_stats *out);
void rl_core_sum_rules(rl_core *core, const uint32_t *slots, uint32_t n, rl_rule_stats *out);
void rl_core_sum_clusters(rl_core *core, const uint32_t *slots, uint32_t n, rl_cluster_stats *out);
/* cffi:end */

typedef struct rl_worker rl_worker;

struct rl_listen_group {
    struct sockaddr_storage addr;
    socklen_t addrlen;
    int *fds; /* one per worker; each worker closes its own */
    atomic_int refs; /* configs that reference this group */
    struct rl_listen_group *next;
};

struct rl_core {
    rl_core_opts opts;
    rl_worker **workers;
    int nworkers;
    _Atomic(rl_cfg *) cfg;   /* newest published config */
    rl_cfg *_Atomic first;   /* first published config: where a new worker starts walking */
    atomic_int draining;
    atomic_uint drain_timeout_ms;
    rl_listen_group *groups; /* groups of the latest config */
    /* Addresses recent configs stopped listening on (their sockets close as workers switch): a
     * config that listens there again first waits for them to be gone (rl_steer_wait_unbound). */
    struct {
        struct sockaddr_storage addr;
        socklen_t addrlen;
    } removed[16];
    int nremoved;
    uint64_t applied_seq;    /* of the latest config (rl_core_apply runs on one thread) */
    pthread_mutex_t start_mu;
    pthread_cond_t start_cv;
    int started, start_err;
    char start_msg[256];
};

/* A worker drops its use of a config: the last one frees it. */
void rl_core_cfg_unhold(rl_cfg *cfg);
/* A worker reports the outcome of its start-up (engine init). */
void rl_core_worker_started(rl_core *core, int err, const char *msg);

#endif
