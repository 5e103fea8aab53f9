/* rl_buf: slab set-up (see rl_buf.h). */
#include "rl_buf.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

int rl_bufs_init(rl_bufs *b, uint32_t size, uint32_t nrecv, uint32_t ntx)
{
    memset(b, 0, sizeof(*b));
    uint32_t n = nrecv + ntx;
    if (n > 65535)
        return -1;
    b->size = size;
    b->nrecv = nrecv;
    b->ntx = ntx;
    /* mmap so untouched buffers cost no memory until first use. */
    b->slab = mmap(NULL, (size_t)n * size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    b->refs = calloc(n, sizeof(*b->refs));
    b->tx_free = calloc(ntx ? ntx : 1, sizeof(*b->tx_free));
    b->rx_free = calloc(nrecv ? nrecv : 1, sizeof(*b->rx_free));
    if (b->slab == MAP_FAILED || !b->refs || !b->tx_free || !b->rx_free) {
        if (b->slab == MAP_FAILED)
            b->slab = NULL;
        rl_bufs_fini(b);
        return -1;
    }
    for (uint32_t i = 0; i < ntx; i++)
        b->tx_free[b->ntx_free++] = (uint16_t)(nrecv + ntx - 1 - i);
    for (uint32_t i = 0; i < nrecv; i++)
        b->rx_free[b->nrx_free++] = (uint16_t)(nrecv - 1 - i);
    return 0;
}

void rl_bufs_fini(rl_bufs *b)
{
    if (b->slab)
        munmap(b->slab, (size_t)(b->nrecv + b->ntx) * b->size);
    free(b->refs);
    free(b->tx_free);
    free(b->rx_free);
    memset(b, 0, sizeof(*b));
}
