/* rl_allowlist: what the io_uring engine uses, and nothing else (see rl_engine_uring.h).
 * The ring restrictions are derived from these two lists, so the three layers (ring
 * restrictions here, seccomp and io_uring BPF filters in the agent) cannot disagree. */
#include <pthread.h>

#include <liburing.h>

#include "rl_engine_uring.h"
#include "rl_util.h"

static const uint8_t sqe_ops[] = {
    IORING_OP_ACCEPT,       /* multishot accept on listeners */
    IORING_OP_RECV,         /* multishot recv into the provided-buffer ring */
    IORING_OP_SEND,         /* one send in flight per socket */
    IORING_OP_SENDMSG,      /* the same, gathering several queued slices */
    IORING_OP_CONNECT,      /* upstream connects */
    IORING_OP_LINK_TIMEOUT, /* connect timeout */
    IORING_OP_ASYNC_CANCEL, /* stop a multishot recv/accept */
    IORING_OP_POLL_ADD,     /* multishot polls: the wake-up eventfd, errors on sockets not read */
};

/* Register ops called on an enabled ring (restrictions and enable come before). */
static const uint8_t register_ops[] = {
    IORING_REGISTER_PBUF_RING,  /* the provided-buffer ring, at start-up */
    IORING_REGISTER_RING_FDS,   /* registered ring fd, at start-up */
    IORING_UNREGISTER_RING_FDS, /* at exit (liburing's queue_exit) */
};

#define SQE_FLAGS (IOSQE_IO_LINK | IOSQE_BUFFER_SELECT)
#define NRESTRICTIONS (RL_ARRAY_LEN(sqe_ops) + RL_ARRAY_LEN(register_ops) + 1)

static struct io_uring_restriction restrictions[NRESTRICTIONS];
static rl_uring_allowlist allowlist;
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void build(void)
{
    size_t k = 0;
    for (size_t i = 0; i < RL_ARRAY_LEN(sqe_ops); i++)
        restrictions[k++] = (struct io_uring_restriction){.opcode = IORING_RESTRICTION_SQE_OP, .sqe_op = sqe_ops[i]};
    for (size_t i = 0; i < RL_ARRAY_LEN(register_ops); i++)
        restrictions[k++] =
            (struct io_uring_restriction){.opcode = IORING_RESTRICTION_REGISTER_OP, .register_op = register_ops[i]};
    restrictions[k++] = (struct io_uring_restriction){.opcode = IORING_RESTRICTION_SQE_FLAGS_ALLOWED, .sqe_flags = SQE_FLAGS};
    allowlist = (rl_uring_allowlist){
        .sqe_ops = sqe_ops,
        .nsqe_ops = (int)RL_ARRAY_LEN(sqe_ops),
        .sqe_flags = SQE_FLAGS,
        .register_ops = register_ops,
        .nregister_ops = (int)RL_ARRAY_LEN(register_ops),
        .restrictions = restrictions,
        .nrestrictions = (int)k,
    };
}

const rl_uring_allowlist *rl_uring_allowlist_get(void)
{
    pthread_once(&once, build);
    return &allowlist;
}
