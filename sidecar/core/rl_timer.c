/* rl_timer: timing wheel (see rl_timer.h). */
#include "rl_timer.h"

#include <string.h>

void rl_wheel_init(rl_wheel *wh, uint64_t now_ms)
{
    memset(wh, 0, sizeof(*wh));
    for (int i = 0; i < RL_WHEEL_SLOTS; i++)
        rl_list_init(&wh->slots[i]);
    wh->tick = now_ms / RL_TICK_MS;
}

static void mark(rl_wheel *wh, uint32_t slot, int used)
{
    if (used)
        wh->used[slot / 64] |= 1ull << (slot % 64);
    else
        wh->used[slot / 64] &= ~(1ull << (slot % 64));
}

void rl_timer_cancel(rl_wheel *wh, rl_timer *t)
{
    if (!rl_timer_armed(t))
        return;
    rl_list *next = t->node.next, *prev = t->node.prev;
    rl_list_unlink(&t->node);
    wh->armed--;
    /* If the slot became empty its head now points to itself. */
    if (next == prev && next >= &wh->slots[0] && next < &wh->slots[RL_WHEEL_SLOTS])
        mark(wh, (uint32_t)(next - &wh->slots[0]), 0);
}

void rl_timer_set(rl_wheel *wh, rl_timer *t, uint64_t deadline_ms, rl_timer_fn fn)
{
    rl_timer_cancel(wh, t);
    /* Round up: a slot is processed once its tick has fully started, so every timer in it is
     * due then (rounding down would leave it waiting a whole turn of the wheel). */
    uint64_t tick = (deadline_ms + RL_TICK_MS - 1) / RL_TICK_MS;
    if (tick <= wh->tick)
        tick = wh->tick + 1;
    uint32_t slot = (uint32_t)(tick % RL_WHEEL_SLOTS);
    t->deadline_ms = deadline_ms;
    t->fn = fn;
    rl_list_push_back(&wh->slots[slot], &t->node);
    mark(wh, slot, 1);
    wh->armed++;
}

void rl_wheel_expire(rl_wheel *wh, rl_worker *w, uint64_t now_ms)
{
    uint64_t now_tick = now_ms / RL_TICK_MS;
    rl_list due;
    rl_list_init(&due);
    uint32_t ndue = 0; /* on `due`, still counted in armed: a callback may cancel or re-set them */
    for (; wh->tick < now_tick; ) {
        wh->tick++;
        uint32_t slot = (uint32_t)(wh->tick % RL_WHEEL_SLOTS);
        rl_list *head = &wh->slots[slot];
        for (rl_list *n = head->next, *next; n != head; n = next) {
            next = n->next;
            rl_timer *t = rl_container_of(n, rl_timer, node);
            if (t->deadline_ms <= now_ms) {
                rl_list_unlink(n);
                rl_list_push_back(&due, n);
                ndue++;
            }
        }
        mark(wh, slot, !rl_list_empty(head));
        if (wh->armed == ndue)
            wh->tick = now_tick; /* nothing left in the wheel: skip the empty turn */
    }
    /* Fire after the walk: a callback may arm or cancel other timers, those on `due` too. */
    for (rl_list *n; (n = rl_list_pop_front(&due));) {
        rl_timer *t = rl_container_of(n, rl_timer, node);
        wh->armed--;
        t->fn(w, t);
    }
}

int rl_wheel_next_ms(const rl_wheel *wh, uint64_t now_ms)
{
    if (!wh->armed)
        return -1;
    for (uint32_t i = 1; i <= RL_WHEEL_SLOTS; i++) {
        uint32_t slot = (uint32_t)((wh->tick + i) % RL_WHEEL_SLOTS);
        if (!(wh->used[slot / 64] & (1ull << (slot % 64)))) {
            /* skip a whole empty word quickly */
            if (slot % 64 == 0 && wh->used[slot / 64] == 0)
                i += 63;
            continue;
        }
        uint64_t at = (wh->tick + i) * RL_TICK_MS;
        return at > now_ms ? (int)(at - now_ms) : 0;
    }
    return RL_TICK_MS;
}
