/* rl_util: small helpers shared by every module: time, intrusive lists, branch hints. */
#ifndef RL_UTIL_H
#define RL_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define RL_CACHELINE 64
#define rl_likely(x) __builtin_expect(!!(x), 1)
#define rl_unlikely(x) __builtin_expect(!!(x), 0)
#define rl_container_of(p, type, member) ((type *)((char *)(p) - offsetof(type, member)))
#define RL_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* Monotonic milliseconds; the coarse clock is enough for proxy timeouts and costs no syscall. */
static inline uint64_t rl_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Monotonic nanoseconds, for request latency histograms. */
static inline uint64_t rl_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Circular doubly linked list with a sentinel head. */
typedef struct rl_list {
    struct rl_list *prev, *next;
} rl_list;

static inline void rl_list_init(rl_list *h) { h->prev = h->next = h; }
static inline int rl_list_empty(const rl_list *h) { return h->next == h; }
static inline int rl_list_linked(const rl_list *n) { return n->next != NULL && n->next != n; }

static inline void rl_list_push_back(rl_list *h, rl_list *n)
{
    n->prev = h->prev;
    n->next = h;
    h->prev->next = n;
    h->prev = n;
}

static inline void rl_list_unlink(rl_list *n)
{
    if (!n->next)
        return;
    n->prev->next = n->next;
    n->next->prev = n->prev;
    n->prev = n->next = n;
}

static inline rl_list *rl_list_pop_front(rl_list *h)
{
    rl_list *n = h->next;
    if (n == h)
        return NULL;
    rl_list_unlink(n);
    return n;
}

#endif
