/* rl_buf: a worker's buffer slab. Receive buffers (ids 0..nrecv-1) live in the io_uring
 * provided-buffer ring or, for epoll, on a free stack; transmit buffers (the rest) hold bytes
 * the proxy writes itself (rewritten request heads, error responses). A buffer may be shared
 * by several queued slices, so it carries a small reference count. */
#ifndef RL_BUF_H
#define RL_BUF_H

#include <stddef.h>
#include <stdint.h>

typedef struct rl_bufs {
    char *slab;
    uint32_t size;   /* bytes per buffer */
    uint32_t nrecv;  /* receive buffers */
    uint32_t ntx;    /* transmit buffers */
    uint16_t *refs;  /* per buffer */
    uint16_t *tx_free;
    uint32_t ntx_free;
    uint16_t *rx_free; /* epoll only: receive buffers not in use */
    uint32_t nrx_free;
} rl_bufs;

int rl_bufs_init(rl_bufs *b, uint32_t size, uint32_t nrecv, uint32_t ntx);
void rl_bufs_fini(rl_bufs *b);

static inline char *rl_buf_data(const rl_bufs *b, uint16_t bid) { return b->slab + (size_t)bid * b->size; }
static inline int rl_buf_is_rx(const rl_bufs *b, uint16_t bid) { return bid < b->nrecv; }

/* A transmit buffer with one reference, or -1 when all are in use. */
static inline int rl_buf_tx_get(rl_bufs *b)
{
    if (!b->ntx_free)
        return -1;
    uint16_t bid = b->tx_free[--b->ntx_free];
    b->refs[bid] = 1;
    return bid;
}

/* A slice is a byte range of one buffer queued for sending. */
typedef struct rl_slice {
    uint16_t bid;
    uint32_t off, len;
} rl_slice;

/* Bytes queued for one socket, sent in order, one (gathered) send in flight at a time. A growable ring:
 * readers pause at a few slices, but a multishot recv may deliver more before its cancel
 * lands, so the queue must take them rather than drop the connection. Empty queues of idle
 * connections keep their small array (no allocation per request). */
typedef struct rl_outq {
    rl_slice *s;
    uint16_t head, count, cap;
    uint8_t nbusy; /* slices from the head handed to the engine (one send in flight) */
    uint32_t bytes;
} rl_outq;

#endif
