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

/* An index other than i, uniformly. */
static uint32_t other(rl_worker *w, uint32_t i, uint32_t n)
{
    return (i + 1 + rl_worker_rand(w) % (n - 1)) % n;
}

/* Envoy's power of two choices over this worker's requests in flight per endpoint. The two
 * candidates are distinct, so an endpoint busier than another is never chosen over it when
 * there are only two; a tie goes to the first, which is random. */
static const rl_endpoint *least_request(rl_worker *w, const rl_cluster *cl, const rl_endpoint *avoid)
{
    uint32_t a = rl_worker_rand(w) % cl->neps, b = other(w, a, cl->neps);
    const rl_endpoint *ea = &cl->eps[a], *eb = &cl->eps[b];
    /* A failed endpoint finishes its requests fast, so it looks idle: a retry must not go back. */
    if (ea == avoid || eb == avoid)
        return ea == avoid ? eb : ea;
    uint32_t la = rl_load_get(&w->loads, cl->slot, &ea->addr, ea->addrlen);
    uint32_t lb = rl_load_get(&w->loads, cl->slot, &eb->addr, eb->addrlen);
    return lb < la ? eb : ea;
}

const rl_endpoint *rl_pick_endpoint(rl_worker *w, const rl_cluster *cl, const rl_endpoint *avoid)
{
    if (!cl->neps)
        return NULL;
    if (cl->neps == 1)
        return &cl->eps[0];
    uint32_t i;
    switch (cl->lb) {
    case RL_LB_RANDOM:
        i = rl_worker_rand(w) % cl->neps;
        return &cl->eps[&cl->eps[i] == avoid ? other(w, i, cl->neps) : i];
    case RL_LB_LEAST_REQUEST:
        return least_request(w, cl, avoid);
    default:
        i = w->rr[cl->slot]++ % cl->neps;
        if (&cl->eps[i] == avoid)
            i = w->rr[cl->slot]++ % cl->neps;
        return &cl->eps[i];
    }
}

int rl_lb_begin(rl_worker *w, const rl_cluster *cl, const struct sockaddr_storage *addr, socklen_t len)
{
    int counted = RL_LB_GAUGE;
    rl_worker_cstats(w, cl->slot)->rq_active++;
    /* Only least-request reads the per-endpoint counts: other policies skip the hashing. */
    if (cl->lb == RL_LB_LEAST_REQUEST && !rl_load_inc(&w->loads, cl->slot, addr, len))
        counted |= RL_LB_LOAD;
    return counted;
}

void rl_lb_end(rl_worker *w, uint32_t slot, const struct sockaddr_storage *addr, socklen_t len, int counted)
{
    if (counted & RL_LB_GAUGE)
        rl_worker_cstats(w, slot)->rq_active--;
    if (counted & RL_LB_LOAD)
        rl_load_dec(&w->loads, slot, addr, len);
}
