/* rl_probe: find what io_uring offers by trying each feature on a scratch ring. */
#include "rl_probe.h"
#include "rl_uring_compat.h"

#include <errno.h>
#include <liburing.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <unistd.h>

static int read_io_uring_disabled(void)
{
    FILE *f = fopen("/proc/sys/kernel/io_uring_disabled", "r");
    int v = -1;
    if (!f)
        return -1;
    if (fscanf(f, "%d", &v) != 1)
        v = -1;
    fclose(f);
    return v;
}

/* Raw io_uring_setup so flags liburing 2.3 does not know can be tried too. */
static int try_setup(unsigned flags, struct io_uring_params *out)
{
    struct io_uring_params p;
    memset(&p, 0, sizeof(p));
    p.flags = flags;
    int fd = (int)syscall(__NR_io_uring_setup, 4, &p);
    if (fd < 0)
        return -errno;
    if (out)
        *out = p;
    close(fd);
    return 0;
}

static int wait_one(struct io_uring *ring, struct io_uring_cqe **cqe)
{
    struct __kernel_timespec ts = {.tv_sec = 1, .tv_nsec = 0};
    return io_uring_wait_cqe_timeout(ring, cqe, &ts);
}

static int loopback_listener(struct sockaddr_in *addr)
{
    socklen_t len = sizeof(*addr);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    memset(addr, 0, sizeof(*addr));
    addr->sin_family = AF_INET;
    addr->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)addr, sizeof(*addr)) || listen(fd, 4) ||
        getsockname(fd, (struct sockaddr *)addr, &len)) {
        close(fd);
        return -1;
    }
    return fd;
}

static int test_multishot_accept(struct io_uring *ring)
{
    struct sockaddr_in addr;
    struct io_uring_cqe *cqe;
    int ok = 0, lfd = loopback_listener(&addr), cfd = -1;
    if (lfd < 0)
        return 0;
    io_uring_prep_multishot_accept(io_uring_get_sqe(ring), lfd, NULL, NULL, SOCK_CLOEXEC);
    io_uring_submit(ring);
    cfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (cfd >= 0 && connect(cfd, (struct sockaddr *)&addr, sizeof(addr)) == 0 &&
        wait_one(ring, &cqe) == 0) {
        ok = cqe->res >= 0 && (cqe->flags & IORING_CQE_F_MORE);
        if (cqe->res >= 0)
            close(cqe->res);
        io_uring_cqe_seen(ring, cqe);
    }
    if (cfd >= 0)
        close(cfd);
    close(lfd);
    return ok;
}

/* Registers a tiny provided-buffer ring and does one multishot recv from it. */
static uint32_t test_buf_ring_recv(struct io_uring *ring)
{
    enum { NBUF = 8, BUFSZ = 64, BGID = 7 };
    uint32_t found = 0;
    size_t ring_sz = NBUF * sizeof(struct io_uring_buf);
    struct io_uring_buf_reg reg;
    struct io_uring_cqe *cqe;
    int sv[2];
    char *bufs = malloc(NBUF * BUFSZ);
    void *mem = mmap(NULL, ring_sz, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    if (!bufs || mem == MAP_FAILED)
        goto out;
    struct io_uring_buf_ring *br = mem;
    memset(&reg, 0, sizeof(reg));
    reg.ring_addr = (unsigned long)br;
    reg.ring_entries = NBUF;
    reg.bgid = BGID;
    if (io_uring_register_buf_ring(ring, &reg, 0))
        goto out;
    found |= RL_FEAT_BUF_RING;
    io_uring_buf_ring_init(br);
    for (int i = 0; i < NBUF; i++)
        io_uring_buf_ring_add(br, bufs + i * BUFSZ, BUFSZ, i, io_uring_buf_ring_mask(NBUF), i);
    io_uring_buf_ring_advance(br, NBUF);
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0) {
        struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
        io_uring_prep_recv_multishot(sqe, sv[0], NULL, 0, 0);
        sqe->flags |= IOSQE_BUFFER_SELECT;
        sqe->buf_group = BGID;
        io_uring_submit(ring);
        if (write(sv[1], "x", 1) == 1 && wait_one(ring, &cqe) == 0) {
            if (cqe->res == 1 && (cqe->flags & IORING_CQE_F_BUFFER) && (cqe->flags & IORING_CQE_F_MORE))
                found |= RL_FEAT_MULTISHOT_RECV;
            io_uring_cqe_seen(ring, cqe);
        }
        close(sv[0]);
        close(sv[1]);
    }
    io_uring_unregister_buf_ring(ring, BGID);
out:
    if (mem != MAP_FAILED)
        munmap(mem, ring_sz);
    free(bufs);
    return found;
}

static int test_restrictions(void)
{
    struct io_uring ring;
    struct io_uring_restriction res[1];
    int ok = 0;
    if (io_uring_queue_init(4, &ring, IORING_SETUP_R_DISABLED))
        return 0;
    memset(res, 0, sizeof(res));
    res[0].opcode = IORING_RESTRICTION_SQE_OP;
    res[0].sqe_op = IORING_OP_NOP;
    ok = rl_uring_register_restrictions(&ring, res, 1) == 0 && rl_uring_enable_rings(&ring) == 0;
    io_uring_queue_exit(&ring);
    return ok;
}

static void query_opcodes(rl_probe_result *out)
{
    struct rl_io_uring_query_opcode q;
    struct rl_io_uring_query_hdr h;
    memset(&q, 0, sizeof(q));
    memset(&h, 0, sizeof(h));
    h.query_data = (uint64_t)(uintptr_t)&q;
    h.query_op = 0;
    h.size = sizeof(q);
    /* The query interface needs no ring: fd -1. */
    if (syscall(__NR_io_uring_register, -1, RL_IORING_REGISTER_QUERY, &h, 0) == 0 && h.result >= 0) {
        out->features |= RL_FEAT_REGISTER_QUERY;
        out->nr_request_opcodes = (int)q.nr_request_opcodes;
        out->nr_register_opcodes = (int)q.nr_register_opcodes;
        if (q.nr_register_opcodes >= RL_NR_REGISTER_OPCODES_BPF_FILTER)
            out->features |= RL_FEAT_BPF_FILTER;
    }
}

int rl_probe(rl_probe_result *out)
{
    struct utsname u;
    struct io_uring_params params;
    struct io_uring ring;
    memset(out, 0, sizeof(*out));
    memset(&params, 0, sizeof(params));
    out->nr_register_opcodes = -1;
    if (uname(&u) == 0)
        snprintf(out->kernel, sizeof(out->kernel), "%s", u.release);
    out->io_uring_disabled = read_io_uring_disabled();

    int rc = try_setup(0, &params);
    out->setup_errno = rc < 0 ? -rc : 0;
    if (rc < 0)
        return rc;
    out->kernel_features = params.features;
    if (try_setup(IORING_SETUP_SINGLE_ISSUER, NULL) == 0)
        out->features |= RL_FEAT_SINGLE_ISSUER;
    if (try_setup(IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN, NULL) == 0)
        out->features |= RL_FEAT_DEFER_TASKRUN;
    if (try_setup(IORING_SETUP_SUBMIT_ALL, NULL) == 0)
        out->features |= RL_FEAT_SUBMIT_ALL;
    if (try_setup(IORING_SETUP_COOP_TASKRUN, NULL) == 0)
        out->features |= RL_FEAT_COOP_TASKRUN;
    if (try_setup(IORING_SETUP_NO_SQARRAY, NULL) == 0)
        out->features |= RL_FEAT_NO_SQARRAY;
    if (try_setup(IORING_SETUP_R_DISABLED, NULL) == 0)
        out->features |= RL_FEAT_R_DISABLED;
    if (test_restrictions())
        out->features |= RL_FEAT_RESTRICTIONS;
    query_opcodes(out);

    if (io_uring_queue_init(8, &ring, 0))
        return -errno;
    struct io_uring_probe *p = io_uring_get_probe_ring(&ring);
    if (p) {
        for (int op = 0; op <= p->last_op && op < 256; op++)
            out->op_supported[op] = (p->ops[op].flags & IO_URING_OP_SUPPORTED) ? 1 : 0;
        if (!(out->features & RL_FEAT_REGISTER_QUERY))
            out->nr_request_opcodes = p->last_op + 1;
        io_uring_free_probe(p);
    }
    if (io_uring_register_ring_fd(&ring) == 1)
        out->features |= RL_FEAT_REG_RING_FD;
    if (test_multishot_accept(&ring))
        out->features |= RL_FEAT_MULTISHOT_ACCEPT;
    out->features |= test_buf_ring_recv(&ring);
    io_uring_queue_exit(&ring);
    return 0;
}
