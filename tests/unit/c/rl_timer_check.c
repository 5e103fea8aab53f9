/* Checks of the timing wheel (sidecar/core/rl_timer.c), built and run by test_timer_wheel.py. */
#include <stdio.h>
#include <stdlib.h>

#include "rl_timer.h"

static rl_wheel wheel;
static rl_timer a, b;
static int fired_a, fired_b;

#define CHECK(cond)                                                             \
    do {                                                                        \
        if (!(cond)) {                                                          \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
            exit(1);                                                            \
        }                                                                       \
    } while (0)

static void on_b(rl_worker *w, rl_timer *t) { (void)w, (void)t, fired_b++; }

/* A callback that moves another timer that is due in the same pass. */
static void on_a_resets_b(rl_worker *w, rl_timer *t)
{
    (void)w, (void)t, fired_a++;
    rl_timer_set(&wheel, &b, 1000 + 500, on_b);
}

static void on_a_cancels_b(rl_worker *w, rl_timer *t)
{
    (void)w, (void)t, fired_a++;
    rl_timer_cancel(&wheel, &b);
}

int main(void)
{
    /* A callback re-arms a timer that was due in the same pass: it stays armed and fires. */
    rl_wheel_init(&wheel, 0);
    rl_timer_set(&wheel, &a, 100, on_a_resets_b);
    rl_timer_set(&wheel, &b, 100, on_b);
    rl_wheel_expire(&wheel, NULL, 1000);
    CHECK(fired_a == 1 && fired_b == 0);
    CHECK(wheel.armed == 1);
    CHECK(rl_wheel_next_ms(&wheel, 1000) >= 0);
    rl_wheel_expire(&wheel, NULL, 2000);
    CHECK(fired_b == 1 && wheel.armed == 0);
    CHECK(rl_wheel_next_ms(&wheel, 2000) == -1);

    /* A callback cancels a timer that was due in the same pass: it never fires, nothing stays counted. */
    fired_a = fired_b = 0;
    rl_wheel_init(&wheel, 0);
    rl_timer_set(&wheel, &a, 100, on_a_cancels_b);
    rl_timer_set(&wheel, &b, 100, on_b);
    rl_wheel_expire(&wheel, NULL, 1000);
    CHECK(fired_a == 1 && fired_b == 0);
    CHECK(wheel.armed == 0);
    rl_timer_set(&wheel, &a, 1500, on_b);
    CHECK(wheel.armed == 1);
    rl_wheel_expire(&wheel, NULL, 2000);
    CHECK(fired_b == 1 && wheel.armed == 0);
    puts("ok");
    return 0;
}
