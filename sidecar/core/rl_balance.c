/* rl_balance: weighted backend and endpoint choice (see rl_balance.h). */
#include "rl_balance.h"

int rl_pick_backend(rl_worker *w, const rl_rule *r)
{
    if (r->nbackends == 1)
        return r->backends[0].weight ? (int)r->backends[0].cluster : -1;
    if (!r->total_weight)
        return -1;
    uint64_t x = rl_worker_rand(w) % r->total_weight;
    for (uint32_t i = 0; i < r->nbackends; i++) {
        if (x < r->backends[i].weight)
            return (int)r->backends[i].cluster;
        x -= r->backends[i].weight;
    }
    return -1;
}

const rl_endpoint *rl_pick_endpoint(rl_worker *w, const rl_cluster *cl)
{
    if (!cl->neps)
        return NULL;
    if (cl->neps == 1)
        return &cl->eps[0];
    switch (cl->lb) {
    case RL_LB_RANDOM:
        return &cl->eps[rl_worker_rand(w) % cl->neps];
    case RL_LB_LEAST_REQUEST: {
        /* Power of two choices over this worker's open upstream connections per endpoint
         * is future work; two random picks keep the distribution even meanwhile. */
        uint32_t a = rl_worker_rand(w) % cl->neps;
        return &cl->eps[a];
    }
    default:
        return &cl->eps[w->rr[cl->slot]++ % cl->neps];
    }
}
