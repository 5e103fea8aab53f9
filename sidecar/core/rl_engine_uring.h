/* rl_engine_uring: the io_uring allowlist. One list in code feeds every confinement layer:
 * the ring restrictions registered here, and (through cffi) the seccomp profile and the
 * io_uring BPF filter that the Python agent builds. Add an operation to the engine only
 * together with its entry here. */
#ifndef RL_ENGINE_URING_H
#define RL_ENGINE_URING_H

#include <stdint.h>

/* cffi:begin */
typedef struct rl_uring_allowlist {
    const uint8_t *sqe_ops;      /* IORING_OP_* the engine submits */
    int nsqe_ops;
    uint8_t sqe_flags;           /* IOSQE_* flags it sets */
    const uint8_t *register_ops; /* IORING_REGISTER_* it calls after the ring exists */
    int nregister_ops;
    const void *restrictions;    /* struct io_uring_restriction[] built from the above */
    int nrestrictions;
} rl_uring_allowlist;

const rl_uring_allowlist *rl_uring_allowlist_get(void);
/* cffi:end */

struct io_uring;
/* A ring set up as the engine uses it: created disabled, restricted to the allowlist, enabled. */
int rl_uring_ring_init(struct io_uring *ring, unsigned entries, char *err, size_t n);

#endif
