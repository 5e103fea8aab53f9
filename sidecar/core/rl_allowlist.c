/* rl_allowlist: what the io_uring engine uses, and nothing else (see rl_engine_uring.h). */
#include <liburing.h>

#include "rl_engine_uring.h"
#include "rl_util.h"

static const uint8_t sqe_ops[] = {
    IORING_OP_ACCEPT,       /* multishot accept on listeners */
    IORING_OP_RECV,         /* multishot recv into the provided-buffer ring */
    IORING_OP_SEND,         /* one send in flight per socket */
    IORING_OP_CONNECT,      /* upstream connects */
    IORING_OP_LINK_TIMEOUT, /* connect timeout */
    IORING_OP_ASYNC_CANCEL, /* stop a multishot recv/accept */
    IORING_OP_POLL_ADD,     /* multishot poll on the worker's wake-up eventfd */
};

static const uint8_t register_ops[] = {
    IORING_REGISTER_PBUF_RING,     /* the provided-buffer ring, at start-up */
    IORING_REGISTER_RING_FDS,      /* registered ring fd, at start-up */
    IORING_UNREGISTER_RING_FDS,    /* at exit (liburing's queue_exit) */
};

#define SQE_FLAGS (IOSQE_IO_LINK | IOSQE_BUFFER_SELECT)

static const struct io_uring_restriction restrictions[] = {
    {.opcode = IORING_RESTRICTION_SQE_OP, .sqe_op = IORING_OP_ACCEPT},
    {.opcode = IORING_RESTRICTION_SQE_OP, .sqe_op = IORING_OP_RECV},
    {.opcode = IORING_RESTRICTION_SQE_OP, .sqe_op = IORING_OP_SEND},
    {.opcode = IORING_RESTRICTION_SQE_OP, .sqe_op = IORING_OP_CONNECT},
    {.opcode = IORING_RESTRICTION_SQE_OP, .sqe_op = IORING_OP_LINK_TIMEOUT},
    {.opcode = IORING_RESTRICTION_SQE_OP, .sqe_op = IORING_OP_ASYNC_CANCEL},
    {.opcode = IORING_RESTRICTION_SQE_OP, .sqe_op = IORING_OP_POLL_ADD},
    {.opcode = IORING_RESTRICTION_SQE_FLAGS_ALLOWED, .sqe_flags = SQE_FLAGS},
    {.opcode = IORING_RESTRICTION_REGISTER_OP, .register_op = IORING_REGISTER_PBUF_RING},
    {.opcode = IORING_RESTRICTION_REGISTER_OP, .register_op = IORING_REGISTER_RING_FDS},
    {.opcode = IORING_RESTRICTION_REGISTER_OP, .register_op = IORING_UNREGISTER_RING_FDS},
};

static const rl_uring_allowlist allowlist = {
    .sqe_ops = sqe_ops,
    .nsqe_ops = (int)RL_ARRAY_LEN(sqe_ops),
    .sqe_flags = SQE_FLAGS,
    .register_ops = register_ops,
    .nregister_ops = (int)RL_ARRAY_LEN(register_ops),
    .restrictions = restrictions,
    .nrestrictions = (int)RL_ARRAY_LEN(restrictions),
};

const rl_uring_allowlist *rl_uring_allowlist_get(void) { return &allowlist; }
