/* rl_confine: confinement the core applies to itself once its rings exist. */
#ifndef RL_CONFINE_H
#define RL_CONFINE_H

#include <stddef.h>

/* cffi:begin */
/* Installs a seccomp filter on every thread of the process (no_new_privs, TSYNC) that makes
 * io_uring_setup and io_uring_register fail with EPERM, except io_uring_register(fd, op) for
 * the ops in keep[] (compared as full 64-bit values, so junk in the upper bits is refused).
 * 0, or -errno with err filled. Irreversible, by design. */
int rl_confine_lock_io_uring(const unsigned *keep, int nkeep, char *err, size_t errlen);
/* Creates a ring exactly as the engine does (restricted), submits one SQE with this opcode
 * (a harmless form of it) and returns its completion's res: -EACCES when restrictions refuse. */
int rl_uring_selftest_opcode(int opcode);
/* io_uring_register(fd, op, arg, nr) as a raw call (task-level BPF filters use fd -1). */
int rl_uring_register_raw(int fd, unsigned op, void *arg, unsigned nr);
/* Sets no_new_privs (needed before task-level io_uring filters). 0 or -errno. */
int rl_confine_no_new_privs(void);
/* cffi:end */

#endif
