/* rl_buf: slab set-up (see rl_buf.h). */
#include "rl_buf.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

int rl_bufs_init(rl_bufs *b, uint32_t size, uint32_t nrecv, uint32_t ntx, uint32_t nspill)
{
    memset(b, 0, sizeof(*b));
    uint32_t n = nrecv + ntx;
    if (n > 65535)
        return -1;
    b->size = size;
    b->nrecv = nrecv;
    b->ntx = ntx;
    b->nspill = nspill && nspill < 65535 - n ? nspill : 65535 - n; /* memory only while in use */
    b->spill = calloc(b->nspill ? b->nspill : 1, sizeof(*b->spill));
    b->spill_free = calloc(b->nspill ? b->nspill : 1, sizeof(*b->spill_free));
    /* mmap so untouched buffers cost no memory until first use. */
    b->slab = mmap(NULL, (size_t)n * size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    b->refs = calloc(n + b->nspill, sizeof(*b->refs));
    b->tx_free = calloc(ntx ? ntx : 1, sizeof(*b->tx_free));
    b->rx_free = calloc(nrecv ? nrecv : 1, sizeof(*b->rx_free));
    if (b->slab == MAP_FAILED || !b->refs || !b->tx_free || !b->rx_free || !b->spill || !b->spill_free) {
        if (b->slab == MAP_FAILED)
            b->slab = NULL;
        rl_bufs_fini(b);
        return -1;
    }
    for (uint32_t i = 0; i < ntx; i++)
        b->tx_free[b->ntx_free++] = (uint16_t)(nrecv + ntx - 1 - i);
    for (uint32_t i = 0; i < nrecv; i++)
        b->rx_free[b->nrx_free++] = (uint16_t)(nrecv - 1 - i);
    for (uint32_t i = 0; i < b->nspill; i++)
        b->spill_free[b->nspill_free++] = (uint16_t)(n + b->nspill - 1 - i);
    return 0;
}

int rl_buf_spill_get(rl_bufs *b)
{
    if (!b->nspill_free)
        return -1;
    uint16_t bid = b->spill_free[b->nspill_free - 1];
    char **mem = &b->spill[bid - b->nrecv - b->ntx];
    if (!(*mem = malloc(b->size)))
        return -1;
    b->nspill_free--;
    b->refs[bid] = 1;
    return bid;
}

int rl_buf_tx_get(rl_bufs *b)
{
    if (!b->ntx_free)
        return rl_buf_spill_get(b);
    uint16_t bid = b->tx_free[--b->ntx_free];
    b->refs[bid] = 1;
    return bid;
}

void rl_buf_spill_put(rl_bufs *b, uint16_t bid)
{
    char **mem = &b->spill[bid - b->nrecv - b->ntx];
    free(*mem);
    *mem = NULL;
    b->spill_free[b->nspill_free++] = bid;
}

void rl_bufs_fini(rl_bufs *b)
{
    if (b->slab)
        munmap(b->slab, (size_t)(b->nrecv + b->ntx) * b->size);
    for (uint32_t i = 0; b->spill && i < b->nspill; i++)
        free(b->spill[i]);
    free(b->spill);
    free(b->spill_free);
    free(b->refs);
    free(b->tx_free);
    free(b->rx_free);
    memset(b, 0, sizeof(*b));
}
