/* rl_load: a worker's outstanding requests per upstream endpoint, for least-request balancing.
 * Keyed by (cluster slot, endpoint address) rather than by config position, so requests that
 * started on an older config still count after a reload. Only endpoints with something in
 * flight have an entry: the table stays as small as the worker's busy upstream connections. */
#ifndef RL_LOAD_H
#define RL_LOAD_H

#include <netinet/in.h>
#include <stdint.h>
#include <sys/socket.h>

typedef struct rl_load_entry {
    uint32_t slot;   /* cluster stats slot */
    uint32_t active; /* 0: the entry is free */
    socklen_t addrlen;
    struct sockaddr_in6 addr; /* large enough for both families; compared over addrlen bytes */
} rl_load_entry;

/* Open addressing with linear probing; deletion shifts entries back, so there are no tombstones. */
typedef struct rl_loads {
    rl_load_entry *e;
    uint32_t cap; /* a power of two, or 0 before the first insert */
    uint32_t n;
} rl_loads;

/* Requests in flight to the endpoint (0 when it has no entry). */
uint32_t rl_load_get(const rl_loads *t, uint32_t slot, const struct sockaddr_storage *addr, socklen_t len);
/* One more in flight: 0, or -1 when out of memory (then it is not counted). */
int rl_load_inc(rl_loads *t, uint32_t slot, const struct sockaddr_storage *addr, socklen_t len);
/* One fewer in flight; the entry goes away at zero. */
void rl_load_dec(rl_loads *t, uint32_t slot, const struct sockaddr_storage *addr, socklen_t len);
void rl_load_free(rl_loads *t);

#endif
