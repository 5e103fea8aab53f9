/* rl_load: outstanding requests per endpoint, a small hash table per worker (see rl_load.h). */
#include "rl_load.h"

#include <stdlib.h>
#include <string.h>

static uint32_t hash(uint32_t slot, const void *addr, socklen_t len)
{
    uint32_t h = 2166136261u ^ slot; /* FNV-1a */
    const unsigned char *p = addr;
    for (socklen_t i = 0; i < len; i++)
        h = (h ^ p[i]) * 16777619u;
    return h ^ (h >> 15);
}

static int same(const rl_load_entry *e, uint32_t slot, const void *addr, socklen_t len)
{
    return e->slot == slot && e->addrlen == len && memcmp(&e->addr, addr, len) == 0;
}

/* The entry of the key, or the free entry where it would go. */
static rl_load_entry *find(const rl_loads *t, uint32_t slot, const void *addr, socklen_t len)
{
    uint32_t mask = t->cap - 1;
    for (uint32_t i = hash(slot, addr, len) & mask;; i = (i + 1) & mask) {
        rl_load_entry *e = &t->e[i];
        if (!e->active || same(e, slot, addr, len))
            return e;
    }
}

static int grow(rl_loads *t)
{
    uint32_t cap = t->cap ? t->cap * 2 : 16;
    rl_load_entry *old = t->e, *e = calloc(cap, sizeof(*e));
    if (!e)
        return -1;
    uint32_t old_cap = t->cap;
    t->e = e;
    t->cap = cap;
    for (uint32_t i = 0; i < old_cap; i++)
        if (old[i].active)
            *find(t, old[i].slot, &old[i].addr, old[i].addrlen) = old[i];
    free(old);
    return 0;
}

uint32_t rl_load_get(const rl_loads *t, uint32_t slot, const struct sockaddr_storage *addr, socklen_t len)
{
    if (!t->n || len > sizeof(struct sockaddr_in6))
        return 0;
    return find(t, slot, addr, len)->active;
}

int rl_load_inc(rl_loads *t, uint32_t slot, const struct sockaddr_storage *addr, socklen_t len)
{
    if (len > sizeof(struct sockaddr_in6))
        return -1;
    if ((t->n + 1) * 2 > t->cap && grow(t)) /* at most half full: probes stay short */
        return -1;
    rl_load_entry *e = find(t, slot, addr, len);
    if (!e->active) {
        e->slot = slot;
        e->addrlen = len;
        memset(&e->addr, 0, sizeof(e->addr));
        memcpy(&e->addr, addr, len);
        t->n++;
    }
    e->active++;
    return 0;
}

void rl_load_dec(rl_loads *t, uint32_t slot, const struct sockaddr_storage *addr, socklen_t len)
{
    if (!t->n || len > sizeof(struct sockaddr_in6))
        return;
    rl_load_entry *e = find(t, slot, addr, len);
    if (!e->active || --e->active)
        return;
    t->n--;
    /* Backward-shift deletion: pull later entries of the probe run into the hole. */
    uint32_t mask = t->cap - 1, hole = (uint32_t)(e - t->e);
    for (uint32_t j = (hole + 1) & mask; t->e[j].active; j = (j + 1) & mask) {
        uint32_t home = hash(t->e[j].slot, &t->e[j].addr, t->e[j].addrlen) & mask;
        /* The entry at j may move to the hole unless its home lies cyclically in (hole, j]. */
        int stays = hole <= j ? (home > hole && home <= j) : (home > hole || home <= j);
        if (stays)
            continue;
        t->e[hole] = t->e[j];
        hole = j;
    }
    t->e[hole].active = 0;
}

void rl_load_free(rl_loads *t)
{
    free(t->e);
    memset(t, 0, sizeof(*t));
}
