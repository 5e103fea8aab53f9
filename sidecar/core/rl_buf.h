/* rl_buf: a worker's buffer slab. Receive buffers (ids 0..nrecv-1) live in the io_uring
 * provided-buffer ring or, for epoll, on a free stack; transmit buffers (the rest) hold bytes
 * the proxy writes itself (rewritten request heads, error responses). A buffer may be shared
 * by several queued slices, so it carries a small reference count.
 *
 * Spill buffers (ids after the slab's) are transmit buffers allocated from the heap while the
 * slab's are all in use, and freed when done. When most receive buffers sit in queues to peers
 * that do not read, received bytes are copied into them (rl_worker_rx_take), so the receive
 * pool never runs dry: else no socket of the worker could be read (a slow reader's denial of
 * service, or a deadlock of peers that write before they read). */
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
    uint32_t rx_held;  /* receive buffers the proxy holds (not in the ring / on the free stack) */
    uint32_t nspill;   /* spill buffer ids: nrecv + ntx .. + nspill - 1 */
    char **spill;      /* their memory, NULL while free */
    uint16_t *spill_free;
    uint32_t nspill_free;
} rl_bufs;

int rl_bufs_init(rl_bufs *b, uint32_t size, uint32_t nrecv, uint32_t ntx, uint32_t nspill);
void rl_bufs_fini(rl_bufs *b);

static inline char *rl_buf_data(const rl_bufs *b, uint16_t bid)
{
    uint32_t nslab = b->nrecv + b->ntx;
    return bid < nslab ? b->slab + (size_t)bid * b->size : b->spill[bid - nslab];
}
static inline int rl_buf_is_rx(const rl_bufs *b, uint16_t bid) { return bid < b->nrecv; }
static inline int rl_buf_is_spill(const rl_bufs *b, uint16_t bid) { return bid >= b->nrecv + b->ntx; }
/* Most receive buffers are held: what arrives now is better copied out (see above). */
static inline int rl_buf_rx_scarce(const rl_bufs *b) { return b->rx_held >= b->nrecv - b->nrecv / 4; }

/* A transmit buffer with one reference (the slab's first, then a spill one), or -1 when all
 * are in use or the heap has none. */
int rl_buf_tx_get(rl_bufs *b);
/* A spill buffer with one reference, or -1. */
int rl_buf_spill_get(rl_bufs *b);
/* A spill buffer whose last reference went: its memory goes back to the heap. */
void rl_buf_spill_put(rl_bufs *b, uint16_t bid);

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
