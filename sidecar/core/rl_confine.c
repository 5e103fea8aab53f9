/* rl_confine: the seccomp lock installed after the rings exist, and a ring self-test. */
#include "rl_confine.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <liburing.h>

#include "rl_engine_uring.h"

#if defined(__x86_64__)
#define RL_AUDIT_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define RL_AUDIT_ARCH AUDIT_ARCH_AARCH64
#else
#error "rl_confine: unsupported architecture"
#endif

#define MAX_KEEP 16
#define ARG_LO(i) (offsetof(struct seccomp_data, args[i]))
#define ARG_HI(i) (offsetof(struct seccomp_data, args[i]) + 4)

int rl_confine_lock_io_uring(const unsigned *keep, int nkeep, char *err, size_t errlen)
{
    struct sock_filter prog[16 + 4 * MAX_KEEP];
    int k = 0;
    if (nkeep < 0 || nkeep > MAX_KEEP) {
        snprintf(err, errlen, "too many io_uring_register ops to keep (%d)", nkeep);
        return -EINVAL;
    }
    const uint32_t deny = SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA);
    /* Another architecture's calling convention must never slip through: kill. */
    prog[k++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch));
    prog[k++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, RL_AUDIT_ARCH, 1, 0);
    prog[k++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS);
    prog[k++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr));
    prog[k++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 0, 1);
    prog[k++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, deny);
    prog[k++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_register, 1, 0);
    prog[k++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
    /* io_uring_register: the upper half of the opcode must be 0, the lower one kept. */
    prog[k++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, ARG_HI(1));
    prog[k++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0, 1, 0);
    prog[k++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, deny);
    prog[k++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, ARG_LO(1));
    for (int i = 0; i < nkeep; i++) {
        prog[k++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, keep[i], 0, 1);
        prog[k++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
    }
    prog[k++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, deny);
    struct sock_fprog fprog = {.len = (unsigned short)k, .filter = prog};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)) {
        snprintf(err, errlen, "prctl(NO_NEW_PRIVS): %s", strerror(errno));
        return -errno;
    }
    /* TSYNC: the workers, the agent and every other thread get the filter at once. */
    long rc = syscall(__NR_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC, &fprog);
    if (rc != 0) {
        int e = rc > 0 ? ESRCH : errno;
        snprintf(err, errlen, "seccomp(TSYNC): %s", rc > 0 ? "a thread could not be synchronised" : strerror(e));
        return -e;
    }
    return 0;
}

int rl_uring_selftest_opcode(int opcode)
{
    struct io_uring ring;
    char err[128];
    int rc = rl_uring_ring_init(&ring, 8, err, sizeof(err));
    if (rc)
        return rc;
    struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
    io_uring_prep_nop(sqe);
    sqe->opcode = (uint8_t)opcode;
    if (opcode == IORING_OP_OPENAT)
        io_uring_prep_openat(sqe, AT_FDCWD, "/", O_RDONLY | O_DIRECTORY, 0);
    io_uring_submit(&ring);
    struct io_uring_cqe *cqe;
    rc = io_uring_wait_cqe(&ring, &cqe);
    if (!rc) {
        rc = cqe->res;
        if (opcode == IORING_OP_OPENAT && rc >= 0)
            close(rc);
        io_uring_cqe_seen(&ring, cqe);
    }
    io_uring_queue_exit(&ring);
    return rc;
}

int rl_uring_register_raw(int fd, unsigned op, void *arg, unsigned nr)
{
    long rc = syscall(__NR_io_uring_register, fd, op, arg, nr);
    return rc < 0 ? -errno : (int)rc;
}

int rl_confine_no_new_privs(void)
{
    return prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) ? -errno : 0;
}
