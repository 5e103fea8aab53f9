/* rl_steer: reuseport listener groups with CPU steering (see rl_steer.h). */
#include "rl_steer.h"

#include <errno.h>
#include <linux/filter.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#ifndef SO_ATTACH_REUSEPORT_CBPF
#define SO_ATTACH_REUSEPORT_CBPF 51
#endif
#ifndef SO_INCOMING_CPU
#define SO_INCOMING_CPU 49
#endif

int rl_steer_program(int n, const int *cpus, void *out, int max)
{
    struct sock_filter *p = out;
    int k = 0;
    if (max < 2 * n + 3)
        return -1;
    /* A = the CPU that is processing this connection's SYN. */
    p[k++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, (uint32_t)(SKF_AD_OFF + SKF_AD_CPU));
    for (int i = 0; i < n; i++) {
        if (cpus[i] < 0)
            continue;
        /* if (A == cpus[i]) return i; */
        p[k++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (uint32_t)cpus[i], 0, 1);
        p[k++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, (uint32_t)i);
    }
    /* A CPU without a worker (or unpinned workers): spread by CPU number. */
    p[k++] = (struct sock_filter)BPF_STMT(BPF_ALU | BPF_MOD | BPF_K, (uint32_t)n);
    p[k++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_A, 0);
    return k;
}

static int listen_one(const struct sockaddr *addr, socklen_t len)
{
    int one = 1;
    int fd = socket(addr->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    /* TCP_NODELAY here: accepted sockets inherit it, which saves a setsockopt per connection. */
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) ||
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) || bind(fd, addr, len) ||
        listen(fd, 4096)) {
        int e = errno;
        close(fd);
        return -e;
    }
    return fd;
}

int rl_steer_wait_unbound(const struct sockaddr *addr, socklen_t len, int timeout_ms)
{
    int one = 1;
    for (int waited = 0;; waited++) {
        int fd = socket(addr->sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
            return -errno;
        /* SO_REUSEADDR: connections the old sockets accepted do not count, listeners do. */
        int rc = setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ? -1 : bind(fd, addr, len);
        int e = errno;
        close(fd);
        if (rc == 0)
            return 1;
        if (e != EADDRINUSE)
            return -e;
        if (waited >= timeout_ms)
            return 0;
        struct timespec ms = {.tv_sec = 0, .tv_nsec = 1000000};
        nanosleep(&ms, NULL); /* a worker closes its socket at its next loop turn */
    }
}

int rl_steer_listen(const struct sockaddr *addr, socklen_t len, int n, const int *cpus, int *fds)
{
    struct sock_filter prog[2 * 256 + 3];
    int i;
    for (i = 0; i < n; i++) {
        fds[i] = listen_one(addr, len);
        if (fds[i] < 0) {
            int e = fds[i];
            while (i-- > 0)
                close(fds[i]);
            return e;
        }
    }
    int k = rl_steer_program(n, cpus, prog, (int)(sizeof(prog) / sizeof(prog[0])));
    struct sock_fprog fprog = {.len = (unsigned short)k, .filter = prog};
    if (n > 1 && (k < 0 || setsockopt(fds[0], SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, &fprog, sizeof(fprog)))) {
        /* Fallback: the kernel prefers the socket whose incoming CPU matches. */
        for (i = 0; i < n; i++)
            if (cpus[i] >= 0)
                setsockopt(fds[i], SOL_SOCKET, SO_INCOMING_CPU, &cpus[i], sizeof(cpus[i]));
    }
    return 0;
}
