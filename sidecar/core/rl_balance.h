/* rl_balance: choosing a backend (weighted) and an endpoint (the cluster's policy), and the
 * bookkeeping of exchanges in flight that least-request reads. */
#ifndef RL_BALANCE_H
#define RL_BALANCE_H

#include "rl_cfg.h"
#include "rl_worker.h"

/* A cluster index from the rule's weighted backends, or -1 when every weight is 0. */
int rl_pick_backend(rl_worker *w, const rl_rule *r);
/* An endpoint of the cluster, or NULL when it has none. A retry passes the endpoint that just
 * failed as avoid (else NULL): with another endpoint to choose, it is not chosen again. */
const rl_endpoint *rl_pick_endpoint(rl_worker *w, const rl_cluster *cl, const rl_endpoint *avoid);

/* What rl_lb_begin counted: pass it back to rl_lb_end, which must follow exactly once. */
#define RL_LB_GAUGE 1 /* the cluster's rq_active gauge */
#define RL_LB_LOAD 2  /* the endpoint's in-flight count (least-request clusters only) */

/* An exchange (one upstream request, or one TCP session) with the endpoint starts / ends. */
int rl_lb_begin(rl_worker *w, const rl_cluster *cl, const struct sockaddr_storage *addr, socklen_t len);
void rl_lb_end(rl_worker *w, uint32_t slot, const struct sockaddr_storage *addr, socklen_t len, int counted);

#endif
