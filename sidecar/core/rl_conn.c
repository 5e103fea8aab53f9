/* rl_conn: output queues and connection tracking (see rl_conn.h). */
#include "rl_conn.h"

#include <errno.h>
#include <linux/sockios.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>

#define RL_OUTQ_FIRST_CAP 4

static int outq_grow(rl_outq *q)
{
    uint16_t cap = q->cap ? (uint16_t)(q->cap * 2) : RL_OUTQ_FIRST_CAP;
    if (cap > 4096)
        return -1;
    rl_slice *s = malloc(cap * sizeof(*s));
    if (!s)
        return -1;
    for (uint16_t i = 0; i < q->count; i++)
        s[i] = q->s[(q->head + i) % q->cap];
    free(q->s);
    q->s = s;
    q->cap = cap;
    q->head = 0;
    return 0;
}

int rl_outq_push(rl_worker *w, rl_outq *q, uint16_t bid, uint32_t off, uint32_t len)
{
    (void)w;
    if (q->count == q->cap && outq_grow(q))
        return -1;
    rl_slice *s = &q->s[(q->head + q->count) % q->cap];
    s->bid = bid;
    s->off = off;
    s->len = len;
    q->count++;
    q->bytes += len;
    return 0;
}

int rl_outq_write(rl_worker *w, rl_outq *q, const char *p, uint32_t len)
{
    while (len) {
        rl_slice *last = q->count ? &q->s[(q->head + q->count - 1) % q->cap] : NULL;
        /* Append to the tail transmit buffer when it is ours alone and not in flight (the
         * engine already has the lengths of the slices it sends). */
        int append = last && q->count > q->nbusy && !rl_buf_is_rx(&w->bufs, last->bid) &&
                     w->bufs.refs[last->bid] == 1 && last->off + last->len < w->bufs.size;
        if (!append) {
            int bid = rl_buf_tx_get(&w->bufs);
            if (bid < 0 || rl_outq_push(w, q, (uint16_t)bid, 0, 0)) {
                if (bid >= 0)
                    rl_buf_unref(w, (uint16_t)bid);
                return -1;
            }
            last = &q->s[(q->head + q->count - 1) % q->cap];
        }
        uint32_t room = w->bufs.size - (last->off + last->len);
        uint32_t n = len < room ? len : room;
        memcpy(rl_buf_data(&w->bufs, last->bid) + last->off + last->len, p, n);
        last->len += n;
        q->bytes += n;
        p += n;
        len -= n;
    }
    return 0;
}

uint32_t rl_outq_tail_room(rl_worker *w, const rl_outq *q)
{
    if (q->count <= q->nbusy)
        return 0;
    const rl_slice *last = &q->s[(q->head + q->count - 1) % q->cap];
    if (rl_buf_is_rx(&w->bufs, last->bid) || w->bufs.refs[last->bid] != 1)
        return 0;
    return w->bufs.size - (last->off + last->len);
}

void rl_outq_kick(rl_worker *w, rl_sock *s, rl_outq *q)
{
    if (!q->count || (s->flags & (RL_S_SENDING | RL_S_CLOSED)))
        return;
    /* Everything queued goes in one gathered send: a body arriving faster than the client
     * reads leaves several slices here, and each send costs a syscall or an SQE. */
    struct iovec iov[RL_SEND_IOV_MAX];
    unsigned n = 0;
    for (; n < q->count && n < RL_SEND_IOV_MAX; n++) {
        const rl_slice *sl = &q->s[(q->head + n) % q->cap];
        iov[n].iov_base = rl_buf_data(&w->bufs, sl->bid) + sl->off;
        iov[n].iov_len = sl->len;
    }
    q->nbusy = (uint8_t)n;
    w->eng->send(w, s, iov, n);
}

void rl_outq_sent(rl_worker *w, rl_outq *q, uint32_t bytes)
{
    unsigned busy = q->nbusy;
    q->nbusy = 0;
    for (; busy && q->count; busy--) {
        rl_slice *h = &q->s[q->head];
        if (bytes < h->len) { /* a partial send: the rest of this slice goes next */
            h->off += bytes;
            h->len -= bytes;
            q->bytes -= bytes;
            return;
        }
        bytes -= h->len;
        rl_outq_pop(w, q);
    }
}

void rl_outq_pop(rl_worker *w, rl_outq *q)
{
    if (!q->count)
        return;
    rl_slice *h = &q->s[q->head];
    q->bytes -= h->len;
    rl_buf_unref(w, h->bid);
    q->head = (uint16_t)((q->head + 1) % q->cap);
    q->count--;
}

void rl_outq_clear(rl_worker *w, rl_outq *q)
{
    /* Slices of a send still in flight stay referenced: the kernel may still read them, and
     * a recycled receive buffer would send another connection's bytes. */
    while (q->count > q->nbusy) {
        rl_slice *tail = &q->s[(q->head + q->count - 1) % q->cap];
        q->bytes -= tail->len;
        rl_buf_unref(w, tail->bid);
        q->count--;
    }
    if (!q->count)
        q->head = 0;
}

void rl_outq_release(rl_worker *w, rl_outq *q)
{
    q->nbusy = 0;
    rl_outq_clear(w, q);
    rl_outq_free(q);
}

void rl_outq_free(rl_outq *q)
{
    free(q->s);
    q->s = NULL;
    q->cap = q->count = q->head = 0;
}

void rl_outq_shrink(rl_outq *q)
{
    if (!q->count && q->cap > RL_OUTQ_FIRST_CAP)
        rl_outq_free(q);
}

int rl_conn_peer_spoke(int fd)
{
    char b;
    ssize_t n = recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    return n >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK);
}

static uint64_t owed_to_peer(const rl_outq *q, int fd)
{
    int n = 0;
    return q->bytes + (ioctl(fd, SIOCOUTQ, &n) == 0 && n > 0 ? (uint64_t)n : 0);
}

int rl_conn_reset_waits(const rl_worker *w, const rl_outq *q, int fd, uint64_t *owed, uint64_t *moved)
{
    uint64_t left = owed_to_peer(q, fd);
    if (left < *owed) {
        *owed = left;
        *moved = w->now_ms;
    }
    return left && w->now_ms - *moved < RL_RESET_STALL_MS;
}

void rl_conn_abort_on_close(int fd)
{
    struct linger lg = {1, 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
}

void rl_conn_track(rl_worker *w, rl_conn_base *c, int client)
{
    rl_list_push_back(client ? &w->conns : &w->upconns, &c->node);
    if (client) {
        w->nconns++;
        w->totals.conns_active++;
    }
}

void rl_conn_untrack(rl_worker *w, rl_conn_base *c, int client)
{
    rl_list_unlink(&c->node);
    if (client) {
        w->nconns--;
        w->totals.conns_active--;
    }
}
