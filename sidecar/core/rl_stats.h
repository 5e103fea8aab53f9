/* rl_stats: per-worker counters, written only by their worker, read by Python on scrape.
 * Labels (listener, rule, cluster) are stable "slots" that the Python agent assigns for the
 * life of the process, so counters never go backwards across config reloads. */
#ifndef RL_STATS_H
#define RL_STATS_H

#include <stdint.h>

/* cffi:begin */
#define RL_MAX_SLOTS 4096
#define RL_HIST_BUCKETS 15
#define RL_CODE_CLASSES 5

typedef struct rl_listener_stats {
    uint64_t conns_opened;
    uint64_t conns_closed;
    uint64_t rx_bytes;
    uint64_t tx_bytes;
} rl_listener_stats;

typedef struct rl_rule_stats {
    uint64_t requests[5];          /* by code class: 1xx..5xx */
    uint64_t duration_buckets[15]; /* cumulative counts are made by the reader */
    uint64_t duration_sum_ns;
} rl_rule_stats;

typedef struct rl_cluster_stats {
    uint64_t requests;
    uint64_t connect_errors;
    uint64_t connections_opened;
    uint64_t rq_active; /* a gauge: requests (or TCP sessions) in flight to the cluster now */
} rl_cluster_stats;

typedef struct rl_worker_totals {
    uint64_t uring_submits;        /* SQEs submitted */
    uint64_t uring_enters;         /* io_uring_enter calls */
    uint64_t uring_buf_exhausted;  /* recv completions that found the buffer ring empty */
    uint64_t epoll_waits;
    uint64_t loop_turns;
    uint64_t config_generation;    /* generation this worker serves */
    uint64_t oldest_seq;           /* oldest config it still holds (rl_core_applied_seq numbering) */
    uint64_t conns_active;         /* client connections open now */
    uint64_t upstream_conns_active;
    uint64_t upstream_conns_idle;
    uint64_t rx_copied;            /* receives copied out of a scarce receive-buffer pool */
    uint64_t draining;             /* 1 once the worker has taken a drain in (it writes no keep-alive after) */
} rl_worker_totals;
/* cffi:end */

/* Upper bounds (seconds) of the latency histogram buckets; the last is +Inf. */
#define RL_HIST_BOUNDS_NS                                                                      \
    {500000ull, 1000000ull, 2500000ull, 5000000ull, 10000000ull, 25000000ull, 50000000ull,     \
     100000000ull, 250000000ull, 500000000ull, 1000000000ull, 2500000000ull, 5000000000ull,    \
     10000000000ull, UINT64_MAX}

#endif
