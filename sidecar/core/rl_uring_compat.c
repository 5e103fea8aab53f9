/* rl_uring_compat: liburing calls missing from Debian's shared liburing 2.3. */
#include "rl_uring_compat.h"

#include <errno.h>
#include <liburing.h>
#include <sys/syscall.h>
#include <unistd.h>

static int register_call(struct io_uring *ring, unsigned op, void *arg, unsigned n)
{
    long rc = syscall(__NR_io_uring_register, ring->ring_fd, op, arg, n);
    return rc < 0 ? -errno : (int)rc;
}

int rl_uring_register_restrictions(struct io_uring *ring, struct io_uring_restriction *res, unsigned n)
{
    return register_call(ring, IORING_REGISTER_RESTRICTIONS, res, n);
}

int rl_uring_enable_rings(struct io_uring *ring)
{
    return register_call(ring, IORING_REGISTER_ENABLE_RINGS, NULL, 0);
}
