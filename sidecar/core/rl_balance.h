/* rl_balance: choosing a backend (weighted) and an endpoint (the cluster's policy). */
#ifndef RL_BALANCE_H
#define RL_BALANCE_H

#include "rl_cfg.h"
#include "rl_worker.h"

/* A cluster index from the rule's weighted backends, or -1 when every weight is 0. */
int rl_pick_backend(rl_worker *w, const rl_rule *r);
/* An endpoint of the cluster, or NULL when it has none. */
const rl_endpoint *rl_pick_endpoint(rl_worker *w, const rl_cluster *cl);

#endif
