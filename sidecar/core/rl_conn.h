/* rl_conn: what every connection object shares: its place in the worker's lists (for drain
 * and shutdown) and the output queue helpers used by both proxy state machines. */
#ifndef RL_CONN_H
#define RL_CONN_H

#include "rl_buf.h"
#include "rl_io.h"
#include "rl_worker.h"

typedef struct rl_conn_base rl_conn_base;
struct rl_conn_base {
    rl_list node;
    void (*drain)(rl_worker *w, rl_conn_base *c);   /* finish in-flight work, then close */
    void (*destroy)(rl_worker *w, rl_conn_base *c); /* worker exit: count, untrack, free without I/O */
};

/* Queue bytes of a buffer for sending (the caller hands over one reference). 0, or -1 when full. */
int rl_outq_push(rl_worker *w, rl_outq *q, uint16_t bid, uint32_t off, uint32_t len);
/* Start sending the queue (up to RL_SEND_IOV_MAX slices at once) if nothing is in flight. */
void rl_outq_kick(rl_worker *w, rl_sock *s, rl_outq *q);
/* A send took `bytes`: drop the slices it finished, advance into a partly sent one. */
void rl_outq_sent(rl_worker *w, rl_outq *q, uint32_t bytes);
/* Drop the head slice (not in flight). */
void rl_outq_pop(rl_worker *w, rl_outq *q);
/* Drop what is queued, except the slices of a send in flight (see rl_outq_release). */
void rl_outq_clear(rl_worker *w, rl_outq *q);
/* The socket was released (no send in flight any more): drop everything, free the array. */
void rl_outq_release(rl_worker *w, rl_outq *q);
/* Bytes that rl_outq_write can still append to the tail buffer without a new slice. */
uint32_t rl_outq_tail_room(rl_worker *w, const rl_outq *q);
/* Free the queue's array (it must be empty, or the worker is exiting). */
void rl_outq_free(rl_outq *q);
/* An empty queue that grew past its first size gives its array back: a connection going idle
 * after a large transfer holds no more than a fresh one. */
void rl_outq_shrink(rl_outq *q);
/* Copy bytes into the queue's last transmit buffer or a new one; 0, or -1 when out of buffers. */
int rl_outq_write(rl_worker *w, rl_outq *q, const char *p, uint32_t len);

/* Bytes queued for s or in a send in flight. */
static inline int rl_unsent(const rl_outq *q, const rl_sock *s) { return q->count || (s->flags & RL_S_SENDING); }

/* The socket's close becomes a reset (a linger of 0): a stream cut short must not look complete. */
void rl_conn_abort_on_close(int fd);

/* A reset from one side of a stream waits for the other to take what came before it (a close
 * with linger 0 discards what its kernel holds), while it takes some within this time. */
#define RL_RESET_STALL_MS 1000
/* Whether a reset waits on: bytes are still owed to the peer of fd (queued in q, or held by the
 * kernel, unsent or unacknowledged) and it took some within RL_RESET_STALL_MS. *owed and *moved
 * track the progress (*owed starts at UINT64_MAX). */
int rl_conn_reset_waits(const rl_worker *w, const rl_outq *q, int fd, uint64_t *owed, uint64_t *moved);

/* Whether the peer already sent FIN, a reset or bytes nobody asked for (a peek, no wait): a
 * connection that must not be handed to the next request. */
int rl_conn_peer_spoke(int fd);

/* Client connections (counted for drain) and upstream connections. */
void rl_conn_track(rl_worker *w, rl_conn_base *c, int client);
void rl_conn_untrack(rl_worker *w, rl_conn_base *c, int client);

/* Accept handlers of the two protocols. */
void rl_relay_accept(rl_worker *w, const rl_listener_cfg *lc, int fd);
void rl_http_accept(rl_worker *w, const rl_listener_cfg *lc, int fd);

#endif
