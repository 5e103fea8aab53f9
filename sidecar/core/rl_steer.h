/* rl_steer: one SO_REUSEPORT listening socket per worker for an address, and a reuseport
 * cBPF program that hands each new connection to the worker pinned on the CPU that received
 * it (SO_INCOMING_CPU when the program cannot be attached). */
#ifndef RL_STEER_H
#define RL_STEER_H

#include <stdint.h>
#include <sys/socket.h>

/* Opens n listening sockets (fds[i] for the worker on cpus[i]); 0 or -errno. */
int rl_steer_listen(const struct sockaddr *addr, socklen_t len, int n, const int *cpus, int *fds);

/* Waits up to timeout_ms until nothing listens on addr any more (a bind without SO_REUSEPORT
 * succeeds); 1 when so, 0 at the deadline, -errno when the probe cannot tell. New sockets that joined a reuseport group whose old
 * sockets are still closing would take their indices in the order those close, and the
 * steering program maps CPUs to indices. */
int rl_steer_wait_unbound(const struct sockaddr *addr, socklen_t len, int timeout_ms);

/* cffi:begin */
/* Builds the cBPF program mapping CPU -> socket index into prog (struct sock_filter[], at
 * most 2n+3 entries); returns the number of instructions. Exposed for tests. */
int rl_steer_program(int n, const int *cpus, void *prog, int max);
/* cffi:end */

#endif
