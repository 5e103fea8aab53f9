/* rl_uring_compat: io_uring UAPI bits newer than Debian's liburing 2.3 headers.
 * Values are kernel ABI (include/uapi/linux/io_uring.h and io_uring/query.h). */
#ifndef RL_URING_COMPAT_H
#define RL_URING_COMPAT_H

#include <stdint.h>

#ifndef IORING_SETUP_NO_SQARRAY
#define IORING_SETUP_NO_SQARRAY (1U << 16)
#endif

/* Kernel 6.12: a minimum batch wait (io_uring_getevents_arg.pad became min_wait_usec). */
#define RL_IORING_FEAT_MIN_TIMEOUT (1U << 15)

typedef struct rl_uring_getevents_arg {
    uint64_t sigmask;
    uint32_t sigmask_sz;
    uint32_t min_wait_usec;
    uint64_t ts;
} rl_uring_getevents_arg;

#define RL_IORING_REGISTER_QUERY 35
#define RL_IORING_REGISTER_BPF_FILTER 37
/* Register opcodes a kernel must know for BPF filters to exist (0..37). */
#define RL_NR_REGISTER_OPCODES_BPF_FILTER 38

struct rl_io_uring_query_hdr {
    uint64_t next_entry;
    uint64_t query_data;
    uint32_t query_op;
    uint32_t size;
    int32_t result;
    uint32_t resv[3];
};

struct rl_io_uring_query_opcode {
    uint32_t nr_request_opcodes;
    uint32_t nr_register_opcodes;
    uint64_t feature_flags;
    uint64_t ring_setup_flags;
    uint64_t enter_flags;
    uint64_t sqe_flags;
    uint32_t nr_query_opcodes;
    uint32_t pad;
};


struct io_uring;
struct io_uring_restriction;
/* Debian's liburing.so 2.3 does not export these two (only its .a does): raw syscalls. */
int rl_uring_register_restrictions(struct io_uring *ring, struct io_uring_restriction *res, unsigned n);
int rl_uring_enable_rings(struct io_uring *ring);

#endif
