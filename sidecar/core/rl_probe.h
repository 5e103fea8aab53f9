/* rl_probe: what this kernel's io_uring offers, tested for real (never assumed). */
#ifndef RL_PROBE_H
#define RL_PROBE_H

#include <stdint.h>

/* cffi:begin */
/* Feature bits reported in rl_probe_result.features. */
enum {
    RL_FEAT_MULTISHOT_ACCEPT = 0x1,
    RL_FEAT_MULTISHOT_RECV   = 0x2,
    RL_FEAT_BUF_RING         = 0x4,
    RL_FEAT_DEFER_TASKRUN    = 0x8,
    RL_FEAT_SINGLE_ISSUER    = 0x10,
    RL_FEAT_SUBMIT_ALL       = 0x20,
    RL_FEAT_COOP_TASKRUN     = 0x40,
    RL_FEAT_NO_SQARRAY       = 0x80,
    RL_FEAT_REGISTER_QUERY   = 0x100,
    RL_FEAT_R_DISABLED       = 0x200,
    RL_FEAT_RESTRICTIONS     = 0x400,
    RL_FEAT_REG_RING_FD      = 0x800,
    RL_FEAT_BPF_FILTER       = 0x1000,
};

typedef struct rl_probe_result {
    char kernel[128];
    int io_uring_disabled;      /* kernel.io_uring_disabled, -1 when the sysctl is absent */
    int setup_errno;            /* 0 when io_uring_setup worked, else its errno */
    uint32_t features;          /* RL_FEAT_* found by trying them */
    uint32_t kernel_features;   /* IORING_FEAT_* from io_uring_params */
    int nr_request_opcodes;     /* from IORING_REGISTER_QUERY, or from PROBE when absent */
    int nr_register_opcodes;    /* from IORING_REGISTER_QUERY, -1 when unknown */
    uint8_t op_supported[256];  /* IORING_OP_* supported per IORING_REGISTER_PROBE */
} rl_probe_result;

/* Fills *out; returns 0 if io_uring is usable for the proxy, else a negative errno. */
int rl_probe(rl_probe_result *out);
/* cffi:end */

#endif
