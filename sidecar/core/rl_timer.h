/* rl_timer: a hashed timing wheel (16 ms ticks, 4096 slots, about 65 s per turn) with a
 * bitmap of non-empty slots, so an idle worker sleeps until its next deadline instead of
 * ticking. Timers further out than one turn wait in their slot until their deadline. */
#ifndef RL_TIMER_H
#define RL_TIMER_H

#include <stdint.h>

#include "rl_util.h"

#define RL_TICK_MS 16
#define RL_WHEEL_SLOTS 4096

typedef struct rl_worker rl_worker;
typedef struct rl_timer rl_timer;
typedef void (*rl_timer_fn)(rl_worker *w, rl_timer *t);

struct rl_timer {
    rl_list node;
    uint64_t deadline_ms;
    rl_timer_fn fn;
};

typedef struct rl_wheel {
    rl_list slots[RL_WHEEL_SLOTS];
    uint64_t used[RL_WHEEL_SLOTS / 64];
    uint64_t tick; /* last processed tick */
    uint32_t armed;
} rl_wheel;

void rl_wheel_init(rl_wheel *wh, uint64_t now_ms);
void rl_timer_set(rl_wheel *wh, rl_timer *t, uint64_t deadline_ms, rl_timer_fn fn);
void rl_timer_cancel(rl_wheel *wh, rl_timer *t);
static inline int rl_timer_armed(const rl_timer *t) { return rl_list_linked(&t->node); }
/* Fires every timer whose deadline has passed. */
void rl_wheel_expire(rl_wheel *wh, rl_worker *w, uint64_t now_ms);
/* Milliseconds until the next non-empty slot, or -1 when no timer is armed. */
int rl_wheel_next_ms(const rl_wheel *wh, uint64_t now_ms);

#endif
