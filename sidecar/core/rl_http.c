/* rl_http: the client side of the HTTP/1.1 proxy. One request at a time per connection:
 * the head is parsed (in place when it fits one receive buffer), routed, rewritten and sent
 * upstream; the body and the response are streamed as buffer slices, never buffered whole;
 * pipelined requests wait as slices until the response before them has been sent. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "rl_balance.h"
#include "rl_http.h"

enum { C_IDLE, C_HEAD, C_BODY, C_WAIT, C_TUNNEL, C_LINGER };
#define PAUSE_AT 8 /* queued slices on a destination before its source stops reading */
#define LINGER_MS 5000 /* longest wait for a client to stop sending a body the proxy refused */

struct rl_http_client {
    rl_conn_base base;
    rl_sock sock;
    rl_outq out;   /* to the client */
    rl_outq in;    /* received but not yet parsed (pipelined requests) */
    rl_outq retry; /* the upstream request head (and the body until connected), kept for a retry */
    llhttp_t parser;
    rl_http_head *head; /* the worker's scratch, or owned while a head spans receives */
    char *headbuf;
    uint32_t headbuf_len, headbuf_cap;
    rl_cfg_hold *hold;
    const rl_listener_cfg *lc;
    const rl_rule *rule;
    rl_http_up *up;
    const rl_endpoint *ep, *avoid; /* of the current attempt; the one a retry should not reuse */
    rl_timer timer;
    uint64_t start_ns, first_ms; /* the request's first byte */
    uint64_t req_deadline; /* timeouts.request, from the first byte (0: none) */
    uint64_t try_deadline; /* the sooner of that and this attempt's timeouts.backendRequest */
    uint64_t body_bytes; /* of the current request, for limits.maxRequestBodyBytes */
    uint32_t stat_slot, cluster_slot;
    int status;
    uint8_t state, attempts, resp_started, req_done, keepalive, close_after, client_eof;
    uint8_t has_body, idempotent, upgrade, method, closed, retry_wait;
    uint8_t awaits_continue; /* sent Expect: 100-continue and no body byte yet, and no 100 came */
    uint8_t fresh_only; /* a pooled connection failed it as a stale one: the rest go on new ones */
    uint8_t too_large; /* the body grew past the limit */
    uint8_t body_kept; /* no upstream connected yet: the body so far is in `retry` too, for a connect retry */
    uint8_t counted;   /* the current request is in the route's stats (count_response) */
    uint8_t linger;    /* the client may still be sending a body the proxy will not read */
    uint8_t shut_when_flushed; /* a tunnel's upstream sent FIN: so does the client side, once flushed */
    uint8_t up_eof;            /* ... and the half-open rest is cut after a tunnel idle timeout of silence */
    uint8_t stall_guard; /* the timer only watches a client gone silent (no deadline set) */
    rl_trailer_scan trailer; /* of the request body */
    uint32_t replaying;  /* pipelined slices taken out of `in` by a replay and not yet fed */
    uint32_t heard, heard_seen; /* sends the client took plus receives; the count when a quiet timer was armed */
    uint64_t reset_owed, reset_moved; /* the upstream reset a tunnel: bytes still owed, when they last shrank */
    char ip[INET6_ADDRSTRLEN];
};

static const rl_sock_ops client_ops;
static void feed(rl_worker *w, rl_http_client *c, uint16_t bid, uint32_t off, uint32_t len);
static void start_attempt(rl_worker *w, rl_http_client *c);

static rl_http_head *scratch(rl_worker *w, uint32_t max_headers)
{
    /* One per worker, sized for the largest header limit a config may set. */
    if (!w->http_scratch)
        w->http_scratch = malloc(RL_HTTP_HEAD_SIZE(RL_HTTP_MAX_HEADERS));
    rl_http_head *h = w->http_scratch;
    if (h) {
        memset(h, 0, sizeof(*h));
        h->max_headers = max_headers < RL_HTTP_MAX_HEADERS ? max_headers : RL_HTTP_MAX_HEADERS;
    }
    return h;
}

static const rl_cfg *cfg_of(rl_http_client *c) { return c->hold->cfg; }

/* ---- closing ---- */

/* A request routed (or refused) and not yet counted when its connection goes. */
static int uncounted(const rl_http_client *c)
{
    return (c->state == C_BODY || c->state == C_WAIT) && !c->counted;
}

static void count_response(rl_worker *w, rl_http_client *c, int status);

static int client_http10(const rl_http_client *c) { return c->parser.http_major == 1 && c->parser.http_minor == 0; }

/* The Connection line of the response the client gets now (RL_CONN_*). */
static int client_conn_line(const rl_http_client *c)
{
    if (!c->keepalive)
        return RL_CONN_CLOSE;
    return client_http10(c) ? RL_CONN_KEEP_ALIVE : RL_CONN_NONE;
}

static void client_close(rl_worker *w, rl_http_client *c)
{
    if (c->closed)
        return;
    c->closed = 1;
    /* Gone mid-exchange (the client left, or stopped reading for a whole timeout): counted as
     * the response it was getting, or before any, as 499 like nginx (client closed request). */
    if (uncounted(c))
        count_response(w, c, c->resp_started && c->up ? (int)c->up->parser.status_code : 499);
    rl_timer_cancel(&w->wheel, &c->timer);
    if (c->up) {
        /* The upstream holds part of a request, or is owed tunnel bytes: a reset says so now (a
         * FIN would wait behind bytes an upstream that stopped reading never takes, or make a
         * cut stream look complete). */
        rl_http_up *u = c->up;
        int cut = c->state == C_TUNNEL ? rl_unsent(&u->out, &u->sock) : !c->req_done || rl_unsent(&u->out, &u->sock);
        if (u->sock.fd >= 0 && cut)
            rl_conn_abort_on_close(u->sock.fd);
        rl_http_up_detach(w, u, 0);
        c->up = NULL;
    }
    if (rl_unsent(&c->out, &c->sock))
        rl_conn_abort_on_close(c->sock.fd); /* bytes it is owed are dropped: a reset, not a FIN */
    rl_outq_clear(w, &c->out);
    rl_outq_clear(w, &c->in);
    rl_outq_clear(w, &c->retry);
    rl_worker_lstats(w, c->lc->slot)->conns_closed++;
    w->eng->close(w, &c->sock);
}

static void on_released(rl_worker *w, rl_sock *s)
{
    rl_http_client *c = s->owner;
    rl_conn_untrack(w, &c->base, 1);
    rl_worker_release_cfg(w, c->hold);
    rl_outq_release(w, &c->out);
    rl_outq_release(w, &c->in);
    rl_outq_release(w, &c->retry);
    if (c->head && c->head != w->http_scratch)
        free(c->head);
    free(c->headbuf);
    free(c);
}

/* ---- timers ---- */

static void on_timer(rl_worker *w, rl_timer *t);

static void arm(rl_worker *w, rl_http_client *c, uint32_t ms);
static void arm_quiet(rl_worker *w, rl_http_client *c, int stall_guard);

/* Whether the client may still be sending: a body, requests pipelined after the last one
 * answered (read or not), or, after a response that ends the connection, requests it has not
 * yet seen that answer for (a drain, which shuts every connection, waits only for known ones). */
static int may_still_send(const rl_worker *w, const rl_http_client *c)
{
    int n = 0;
    return c->linger || (c->state != C_IDLE && !w->draining) || c->in.count || c->replaying ||
           (ioctl(c->sock.fd, FIONREAD, &n) == 0 && n > 0);
}

/* The last response is out. Closing while the client still sends would make the kernel answer
 * its unread bytes with a reset, which can destroy the response before the client reads it;
 * so, like nginx's lingering close: FIN, discard what still arrives, close at EOF or LINGER_MS. */
static void flushed_close(rl_worker *w, rl_http_client *c)
{
    if (c->client_eof || c->state == C_LINGER || !may_still_send(w, c))
        return client_close(w, c);
    c->state = C_LINGER;
    shutdown(c->sock.fd, SHUT_WR);
    arm(w, c, LINGER_MS);
    w->eng->recv_start(w, &c->sock); /* feed() discards: close_after is set */
}

/* Close once everything queued for the client has been sent. */
static void close_when_flushed(rl_worker *w, rl_http_client *c)
{
    c->close_after = 1;
    w->eng->recv_stop(w, &c->sock);
    if (!rl_unsent(&c->out, &c->sock))
        flushed_close(w, c);
    else
        arm_quiet(w, c, 0); /* a client that never reads the rest must not hold on forever */
}

static void arm(rl_worker *w, rl_http_client *c, uint32_t ms)
{
    c->stall_guard = 0;
    c->try_deadline = 0; /* any other timer: the exchange's deadlines no longer apply */
    if (ms)
        rl_timer_set(&w->wheel, &c->timer, w->now_ms + ms, on_timer);
    else
        rl_timer_cancel(&w->wheel, &c->timer);
}

/* Idle, flush and stall timers measure the client's silence: while it takes the bytes owed to
 * it, or sends the body the proxy waits for, they move on (on_timer), so a slow client is never
 * cut for being slow, and one that stopped reading or sending is cut after the idle timeout. */
static void arm_quiet(rl_worker *w, rl_http_client *c, int stall_guard)
{
    arm(w, c, cfg_of(c)->idle_timeout_ms);
    c->stall_guard = (uint8_t)stall_guard;
    c->heard_seen = c->heard;
}

/* During an attempt: the client's silence is watched as always (a client that stops sending the
 * body or reading the response is cut after idleTimeout, whatever the rule's timeouts), and the
 * attempt's deadline, whichever comes first. */
static void arm_attempt(rl_worker *w, rl_http_client *c)
{
    uint64_t at = w->now_ms + cfg_of(c)->idle_timeout_ms;
    if (c->try_deadline && c->try_deadline < at)
        at = c->try_deadline;
    c->stall_guard = 1;
    c->heard_seen = c->heard;
    rl_timer_set(&w->wheel, &c->timer, at, on_timer);
}

/* An open tunnel: every byte either way is a receive or a send on the client side, so the
 * same count shows it moving; silent for limits.tunnelIdleTimeout, it is closed. */
static void arm_tunnel(rl_worker *w, rl_http_client *c)
{
    arm(w, c, cfg_of(c)->tunnel_idle_timeout_ms);
    c->heard_seen = c->heard;
}

/* ---- responses ---- */

static void count_response(rl_worker *w, rl_http_client *c, int status)
{
    static const uint64_t bounds[RL_HIST_BUCKETS] = RL_HIST_BOUNDS_NS;
    c->counted = 1;
    rl_rule_stats *rs = rl_worker_rstats(w, c->stat_slot);
    int cls = status / 100 - 1;
    rs->requests[cls < 0 ? 0 : cls > 4 ? 4 : cls]++;
    uint64_t ns = rl_now_ns() - c->start_ns;
    int b = 0;
    while (b < RL_HIST_BUCKETS - 1 && ns > bounds[b])
        b++;
    rs->duration_buckets[b]++;
    rs->duration_sum_ns += ns;
}

/* Between requests a keep-alive connection moves to the newest config, so pooled clients see
 * route and endpoint changes; a connection whose listener is gone closes instead, and so does
 * one whose address another listener took (its stats would otherwise move with it). */
static const rl_listener_cfg *newest_listener(const rl_worker *w, const rl_http_client *c)
{
    const rl_cfg *cur = w->cfg;
    for (uint32_t i = 0; cur && i < cur->nlisteners; i++) {
        const rl_listener_cfg *l = &cur->listeners[i];
        if (l->proto == RL_PROTO_HTTP && l->slot == c->lc->slot &&
            rl_addr_equal(&l->addr, l->addrlen, &c->lc->addr, c->lc->addrlen))
            return l;
    }
    return NULL;
}

static void adopt_newest_cfg(rl_worker *w, rl_http_client *c)
{
    if (!w->cfg || w->cfg == c->hold->cfg)
        return;
    const rl_listener_cfg *l = newest_listener(w, c);
    if (!l) {
        c->keepalive = 0;
        return;
    }
    rl_cfg_hold *old = c->hold;
    c->hold = rl_worker_hold_cfg(w); /* take the new one before the old one may be freed */
    c->lc = l;
    rl_worker_release_cfg(w, old);
}

/* Before a response head is written: a reload that removed this connection's listener ends
 * the connection after it, and the head says so (a pipelined request behind it is not served,
 * and the client must learn that from this response, RFC 9112 9.6). */
static void close_if_listener_gone(const rl_worker *w, rl_http_client *c)
{
    if (c->keepalive && w->cfg && w->cfg != c->hold->cfg && !newest_listener(w, c))
        c->keepalive = 0;
}

/* Ready for the next request on this connection (or close it). */
static void finish_request(rl_worker *w, rl_http_client *c)
{
    adopt_newest_cfg(w, c);
    rl_outq_clear(w, &c->retry);
    rl_outq_shrink(&c->retry);
    /* Answered without a 101 (or an HTTP/1.0 Upgrade, ignored): the connection stays HTTP/1.x. */
    int refused_upgrade = c->upgrade || c->parser.upgrade;
    c->rule = NULL;
    c->ep = c->avoid = NULL;
    c->status = 0;
    c->attempts = c->resp_started = c->req_done = c->has_body = c->upgrade = c->retry_wait = c->fresh_only = 0;
    c->body_kept = 0;
    /* Requests still to come: received and unparsed, or in the hands of a replay below (a
     * response the proxy makes itself finishes a request from inside the replay). */
    uint32_t unanswered = c->in.count + c->replaying;
    if (!c->keepalive || w->draining || (c->client_eof && !unanswered))
        return close_when_flushed(w, c);
    c->state = C_IDLE;
    arm_quiet(w, c, 0);
    /* llhttp paused at the end of the message: continue with the next one. After an upgrade
     * it would stop again at the upgrade itself, so it starts afresh. */
    if (refused_upgrade)
        llhttp_reset(&c->parser);
    else
        llhttp_resume(&c->parser);
    /* Replay what arrived while this request was being served, in order. */
    rl_outq pending = c->in;
    memset(&c->in, 0, sizeof(c->in));
    c->replaying += pending.count;
    for (uint16_t i = 0; i < pending.count; i++) {
        rl_slice s = pending.s[(pending.head + i) % pending.cap];
        if (c->closed || c->state == C_WAIT || c->state == C_TUNNEL) { /* still waiting: keep order */
            if (rl_outq_push(w, &c->in, s.bid, s.off, s.len)) { /* out of memory */
                rl_buf_unref(w, s.bid);
                client_close(w, c);
            }
        } else
            feed(w, c, s.bid, s.off, s.len); /* counted until fed: it may hold more requests */
        c->replaying--;
    }
    free(pending.s);
    if (c->closed || c->close_after || c->state == C_WAIT || c->state == C_TUNNEL)
        return;
    if (c->client_eof && !c->replaying) /* the client sent FIN after pipelined requests: all answered */
        return close_when_flushed(w, c);
    w->eng->recv_start(w, &c->sock);
}

/* An upstream connected, or the proxy answers itself: the body is no longer kept for a connect
 * retry, nor the head (a request with a body is retried on connect failure only). */
static void drop_kept_body(rl_worker *w, rl_http_client *c)
{
    if (!c->body_kept)
        return;
    c->body_kept = 0;
    rl_outq_clear(w, &c->retry);
}

/* A response the proxy makes itself (400, 404, 431, 502, 503, 504). */
static void respond_error(rl_worker *w, rl_http_client *c, int status)
{
    if (c->closed)
        return;
    drop_kept_body(w, c);
    if (c->resp_started) { /* part of a response already went out: only a cut is honest */
        count_response(w, c, status); /* a failed exchange, counted as the answer it would have had */
        rl_conn_abort_on_close(c->sock.fd); /* a reset: a FIN would make a cut body look complete */
        return client_close(w, c);
    }
    if (c->up) {
        rl_http_up_detach(w, c->up, 0);
        c->up = NULL;
    }
    /* A request whose body was not read to the end leaves the stream unparseable: close. */
    int must_close = c->state == C_HEAD || c->state == C_IDLE || (c->has_body && !c->req_done);
    if (must_close)
        c->keepalive = 0;
    if (c->has_body && !c->req_done)
        c->linger = 1;
    c->resp_started = 1;
    close_if_listener_gone(w, c);
    int head_only = c->state != C_HEAD && c->state != C_IDLE && c->method == HTTP_HEAD; /* method known */
    if (rl_http_build_error(w, &c->out, status, client_conn_line(c), head_only, c->rule))
        return client_close(w, c);
    rl_outq_kick(w, &c->sock, &c->out);
    count_response(w, c, status);
    arm(w, c, 0);
    if (!c->req_done && !must_close) {
        c->status = status; /* finish once the rest of the request has been read */
        return;
    }
    finish_request(w, c);
}

/* ---- request head ---- */


static void head_done(rl_worker *w, rl_http_client *c)
{
    const rl_cfg *cfg = cfg_of(c);
    rl_http_head *h = c->head;
    rl_http_req rq;
    rl_http_req_facts(h, &c->parser, &rq);
    c->keepalive = (uint8_t)rq.keepalive;
    c->has_body = (uint8_t)rq.has_body;
    c->idempotent = (uint8_t)rq.idempotent;
    c->upgrade = (uint8_t)rq.upgrade;
    c->method = (uint8_t)rq.method;
    c->awaits_continue = (uint8_t)(rq.expect_continue && rq.has_body);
    c->state = C_BODY;
    c->body_bytes = 0;
    memset(&c->trailer, 0, sizeof(c->trailer));
    c->too_large = 0;
    if (rq.reject) {
        c->stat_slot = c->lc->noroute_slot;
        c->keepalive = 0;
        c->has_body = 1; /* what follows a refused head is not parsed: read and dropped */
        return respond_error(w, c, rq.reject);
    }
    c->rule = rl_http_route(cfg, c->lc, h, &rq);
    c->stat_slot = c->rule ? c->rule->slot : c->lc->noroute_slot;
    if (!c->rule)
        return respond_error(w, c, 404);
    /* A declared length over the limit is refused before a byte goes upstream. */
    if (cfg->max_body_bytes && (c->parser.flags & F_CONTENT_LENGTH) && c->parser.content_length > cfg->max_body_bytes)
        return respond_error(w, c, 413);
    if (rl_http_build_request(w, &c->retry, h, &rq, &c->parser, c->rule, c->ip))
        return respond_error(w, c, 503);
    /* A body goes to a new upstream only if none reached one: kept until a connection is up. */
    c->body_kept = c->has_body && !c->upgrade && c->rule->retry_attempts &&
                   (c->rule->retry_flags & RL_RETRY_CONNECT_FAILURE);
    uint32_t rt = c->rule->request_timeout_ms;
    c->req_deadline = rt ? c->first_ms + rt : 0;
    if (c->req_deadline && c->req_deadline <= w->now_ms) /* the head alone took the whole timeout */
        return respond_error(w, c, 504);
    start_attempt(w, c);
}

/* Parses head bytes; returns how many were consumed (the rest is body or the next request). */
static uint32_t parse_head(rl_worker *w, rl_http_client *c, const char *data, uint32_t len)
{
    if (c->state == C_IDLE) { /* empty lines before a request start none (RFC 9112 2.2: ignored) */
        uint32_t blank = 0;
        while (blank < len && (data[blank] == '\r' || data[blank] == '\n'))
            blank++;
        if (blank)
            return blank;
    }
    const char *start = data;
    if (c->state == C_IDLE)
        adopt_newest_cfg(w, c); /* a reload while the connection was idle applies from here on */
    const rl_cfg *cfg = cfg_of(c);
    if (c->state == C_IDLE) {
        c->state = C_HEAD;
        c->counted = 0;
        c->start_ns = rl_now_ns();
        c->first_ms = w->now_ms;
        c->stat_slot = c->lc->noroute_slot; /* a 400/408/431 before routing: not the last request's rule */
        arm(w, c, cfg->header_timeout_ms);
        c->head = scratch(w, cfg->max_headers);
        if (!c->head) {
            client_close(w, c);
            return len;
        }
        c->head->base = data;
    } else if (c->headbuf) {
        /* The head spans receives: it continues in our own copy, up to the limit (what follows
         * the head in this receive is body or the next request: parsing stops at the head's end). */
        if (c->headbuf_len >= cfg->max_header_bytes) {
            respond_error(w, c, 431);
            return len;
        }
        if (len > cfg->max_header_bytes - c->headbuf_len)
            len = cfg->max_header_bytes - c->headbuf_len;
        if (c->headbuf_len + len > c->headbuf_cap) {
            uint32_t cap = c->headbuf_cap * 2 > c->headbuf_len + len ? c->headbuf_cap * 2 : c->headbuf_len + len;
            char *nb = realloc(c->headbuf, cap);
            if (!nb) {
                client_close(w, c);
                return len;
            }
            c->headbuf = nb;
            c->headbuf_cap = cap;
        }
        memcpy(c->headbuf + c->headbuf_len, data, len);
        start = c->headbuf + c->headbuf_len;
        c->headbuf_len += len;
        c->head->base = c->headbuf;
    } else {
        c->head->base = data; /* a scratch head that was parsed from offset 0 of this buffer */
    }
    llhttp_errno_t err = llhttp_execute(&c->parser, start, len);
    if (err == HPE_PAUSED) {
        uint32_t used = (uint32_t)(llhttp_get_error_pos(&c->parser) - start);
        uint32_t head_bytes = (uint32_t)(start - c->head->base) + used;
        llhttp_resume(&c->parser);
        if (head_bytes > cfg->max_header_bytes)
            respond_error(w, c, 431);
        else
            head_done(w, c);
        if (c->head != w->http_scratch)
            free(c->head);
        c->head = NULL;
        free(c->headbuf);
        c->headbuf = NULL;
        c->headbuf_len = c->headbuf_cap = 0;
        return used;
    }
    if (err != HPE_OK) {
        respond_error(w, c, c->head && c->head->too_many ? 431 : 400);
        return len;
    }
    /* Incomplete: keep the bytes (and the spans into them) until the rest arrives. */
    if (!c->headbuf) {
        uint32_t have = (uint32_t)(start + len - c->head->base);
        if (have > cfg->max_header_bytes) {
            respond_error(w, c, 431);
            return len;
        }
        uint32_t cap = have < 2048 ? 4096 : have * 2;
        c->headbuf = malloc(cap);
        rl_http_head *own = malloc(RL_HTTP_HEAD_SIZE(c->head->max_headers));
        if (!c->headbuf || !own) {
            free(own);
            client_close(w, c);
            return len;
        }
        memcpy(own, c->head, RL_HTTP_HEAD_SIZE(c->head->max_headers));
        c->head = own;
        memcpy(c->headbuf, c->head->base, have);
        c->headbuf_len = have;
        c->headbuf_cap = cap;
        c->head->base = c->headbuf;
    }
    return len;
}

/* Request body bytes: returns how many belong to this request (forwarded upstream). */
static uint32_t parse_body(rl_worker *w, rl_http_client *c, uint16_t bid, uint32_t off, uint32_t len)
{
    const char *data = rl_buf_data(&w->bufs, bid) + off;
    llhttp_errno_t err = rl_http_execute(&c->parser, &c->trailer, data, len);
    uint32_t used = len;
    if (err == HPE_PAUSED || err == HPE_PAUSED_UPGRADE) {
        used = (uint32_t)(llhttp_get_error_pos(&c->parser) - data);
        c->req_done = 1;
        c->state = C_WAIT; /* an upgrade too: the tunnel opens on the upstream's 101 (start_tunnel) */
    } else if (err != HPE_OK) {
        /* Past the limit mid-stream: 413 if no response byte went out yet (else a cut); either
         * way the upstream connection, holding part of a body, is closed, not pooled. The
         * stream cannot be parsed past the error: the connection closes (as for an unread
         * body, what the client still sends is read and dropped). */
        c->has_body = 1;
        if (c->status) { /* answered already (a 404 read the body to its end): now it ends */
            c->keepalive = 0;
            c->linger = 1;
            finish_request(w, c);
            return len;
        }
        respond_error(w, c, c->too_large ? 413 : 400);
        return len;
    }
    if (used && c->body_kept) {
        rl_buf_ref(w, bid);
        if (rl_outq_push(w, &c->retry, bid, off, used)) {
            rl_buf_unref(w, bid);
            client_close(w, c);
            return len;
        }
        if (!c->up && c->retry.count >= PAUSE_AT) /* waiting to retry: as much as one attempt holds */
            w->eng->recv_stop(w, &c->sock);
    }
    if (used && c->up) {
        rl_buf_ref(w, bid);
        if (rl_outq_push(w, rl_http_up_outq(c->up), bid, off, used)) {
            rl_buf_unref(w, bid);
            client_close(w, c);
            return len;
        }
        rl_http_up_send(w, c->up);
        if (rl_http_up_outq(c->up)->count >= PAUSE_AT)
            w->eng->recv_stop(w, &c->sock);
    }
    if (c->req_done && c->status) /* an error response already went out: now finish */
        finish_request(w, c);
    return used;
}

/* Everything the client sends goes through here; consumes the caller's reference on bid. */
static void feed(rl_worker *w, rl_http_client *c, uint16_t bid, uint32_t off, uint32_t len)
{
    while (!c->closed && !c->close_after) {
        if (c->state == C_WAIT) {
            /* A pipelined request (or early tunnel bytes): hold it, stop reading. */
            if (len) {
                rl_buf_ref(w, bid);
                if (rl_outq_push(w, &c->in, bid, off, len)) {
                    rl_buf_unref(w, bid);
                    client_close(w, c);
                }
                w->eng->recv_stop(w, &c->sock);
            }
            break;
        }
        if (c->state == C_TUNNEL) {
            if (len && c->up) {
                rl_buf_ref(w, bid);
                if (rl_outq_push(w, rl_http_up_outq(c->up), bid, off, len)) { /* out of memory */
                    rl_buf_unref(w, bid);
                    client_close(w, c);
                    break;
                }
                rl_http_up_send(w, c->up);
                if (rl_http_up_outq(c->up)->count >= PAUSE_AT)
                    w->eng->recv_stop(w, &c->sock);
            }
            break;
        }
        if (c->state == C_BODY) {
            uint32_t used = parse_body(w, c, bid, off, len);
            off += used;
            len -= used;
            if (!len && c->state == C_BODY)
                break;
            continue;
        }
        if (!len)
            break;
        uint32_t used = parse_head(w, c, rl_buf_data(&w->bufs, bid) + off, len);
        off += used;
        len -= used;
        /* A body-less request completes right after its head: let llhttp say so. */
    }
    rl_buf_unref(w, bid);
}

/* ---- upstream attempts ---- */

/* No body byte has gone upstream: there is none, or the client waits for a 100 Continue before
 * sending it (the request can go again as a body-less one would). */
static int body_unsent(const rl_http_client *c) { return !c->has_body || (c->awaits_continue && !c->body_bytes); }

static int may_retry(const rl_http_client *c, int flag, int status)
{
    const rl_rule *r = c->rule;
    if (!r || c->attempts > r->retry_attempts || c->resp_started || c->upgrade)
        return 0;
    if (flag == RL_RETRY_CONNECT_FAILURE) /* nothing reached the upstream: safe for any method */
        return (body_unsent(c) || c->body_kept) && (r->retry_flags & (uint32_t)flag) != 0;
    if (!body_unsent(c)) /* streamed, not kept: it cannot go again */
        return 0;
    if (flag) /* a reset after the request went out: it may have had effects */
        return c->idempotent && (r->retry_flags & (uint32_t)flag) != 0;
    if (!c->idempotent || status < 500 || status > 599)
        return 0;
    return (r->retry_status[(status - 500) / 64] >> ((status - 500) % 64)) & 1;
}

static void start_attempt(rl_worker *w, rl_http_client *c)
{
    const rl_cfg *cfg = cfg_of(c);
    c->attempts++;
    c->retry_wait = 0;
    int ci = rl_pick_backend(w, c->rule);
    const rl_cluster *cl = ci >= 0 ? &cfg->clusters[ci] : NULL;
    const rl_endpoint *ep = cl ? rl_pick_endpoint(w, cl, c->avoid) : NULL;
    if (!ep)
        return respond_error(w, c, 503);
    c->ep = ep;
    c->cluster_slot = cl->slot;
    int status = 503;
    c->up = rl_http_up_get(w, c, cl, ep, c->fresh_only, &status);
    if (!c->up) /* refused here (maxConnections, no socket): nothing went upstream */
        return respond_error(w, c, status);
    rl_worker_cstats(w, cl->slot)->requests++;
    rl_http_up_set_method(c->up, c->method);
    /* Queue the head (shared buffers: the retry copy keeps its own references). */
    rl_outq *uq = rl_http_up_outq(c->up);
    for (uint16_t i = 0; i < c->retry.count; i++) {
        rl_slice s = c->retry.s[(c->retry.head + i) % c->retry.cap];
        rl_buf_ref(w, s.bid);
        if (rl_outq_push(w, uq, s.bid, s.off, s.len)) { /* out of memory */
            rl_buf_unref(w, s.bid);
            return respond_error(w, c, 503);
        }
    }
    rl_http_up_send(w, c->up);
    if (c->up->state != U_CONNECTING) /* a pooled connection */
        drop_kept_body(w, c);
    uint32_t bt = c->rule->backend_timeout_ms;
    uint64_t deadline = bt ? w->now_ms + bt : 0;
    if (c->req_deadline && (!deadline || c->req_deadline < deadline))
        deadline = c->req_deadline;
    c->try_deadline = deadline;
    arm_attempt(w, c);
}

static void retry_or_fail(rl_worker *w, rl_http_client *c, int flag, int status, int fail_status)
{
    if (c->up) {
        rl_http_up_detach(w, c->up, 0);
        c->up = NULL;
    }
    if (!may_retry(c, flag, status))
        return respond_error(w, c, fail_status);
    c->avoid = c->ep; /* the config (and so the endpoint) is held until the request ends */
    /* No body byte went up (it waits for a 100 Continue): what the client sends meanwhile
     * is kept for the next attempt (it was parsed and dropped). */
    if (c->has_body && !c->req_done)
        c->body_kept = 1;
    uint64_t at = w->now_ms + c->rule->retry_backoff_ms;
    if (c->req_deadline && at >= c->req_deadline) { /* the request times out first: 504 then */
        c->stall_guard = 0;
        c->try_deadline = c->req_deadline;
        return rl_timer_set(&w->wheel, &c->timer, c->req_deadline, on_timer);
    }
    if (at == w->now_ms)
        return start_attempt(w, c);
    c->retry_wait = 1;
    c->stall_guard = 0;
    rl_timer_set(&w->wheel, &c->timer, at, on_timer);
}

static void on_reset_wait(rl_worker *w, rl_timer *t);

/* The upstream reset the tunnel: the client gets what came before it, then a reset, as with a
 * direct connection (its receiver reads the data that arrived before the reset), or once it
 * took nothing for RL_RESET_STALL_MS. A FIN would make the cut stream look complete. */
static void reset_when_delivered(rl_worker *w, rl_http_client *c)
{
    if (rl_conn_reset_waits(w, &c->out, c->sock.fd, &c->reset_owed, &c->reset_moved))
        return rl_timer_set(&w->wheel, &c->timer, w->now_ms + RL_TICK_MS, on_reset_wait);
    rl_conn_abort_on_close(c->sock.fd);
    client_close(w, c);
}

static void on_reset_wait(rl_worker *w, rl_timer *t) { reset_when_delivered(w, rl_container_of(t, rl_http_client, timer)); }

/* A tunnel cut for silence: bytes owed to a side that stopped reading end in resets on both
 * sides, never a FIN that would make the cut stream look complete. */
static void cut_tunnel(rl_worker *w, rl_http_client *c)
{
    if (rl_unsent(&c->out, &c->sock) || (c->up && rl_unsent(&c->up->out, &c->up->sock))) {
        rl_conn_abort_on_close(c->sock.fd);
        if (c->up)
            rl_conn_abort_on_close(c->up->sock.fd);
    }
    client_close(w, c);
}

static void on_timer(rl_worker *w, rl_timer *t)
{
    rl_http_client *c = rl_container_of(t, rl_http_client, timer);
    if (c->retry_wait)
        return start_attempt(w, c);
    if (c->try_deadline && w->now_ms >= c->try_deadline) {
        c->try_deadline = 0;
        if (!c->req_deadline || w->now_ms < c->req_deadline) /* backendRequest: one attempt's */
            return retry_or_fail(w, c, 0, 504, 504);
        return respond_error(w, c, 504);
    }
    if (c->state == C_TUNNEL && (c->up_eof || !c->close_after)) { /* open (one way or both): moving, or cut */
        if (c->heard != c->heard_seen)
            return arm_tunnel(w, c);
        return cut_tunnel(w, c);
    }
    if (c->state == C_IDLE || c->close_after || c->stall_guard) {
        int owed = rl_unsent(&c->out, &c->sock);
        /* The proxy reads the body and is not itself the holdup (upstream backlog, buffers), nor
         * is the upstream (a client may hold its body until the 100 Continue). */
        int awaited = c->state == C_BODY && (c->sock.flags & (RL_S_RECV_ON | RL_S_STARVED)) == RL_S_RECV_ON &&
                      !(c->awaits_continue && !c->body_bytes);
        /* Still taking what it is owed or sending the body; or, with no timeout configured,
         * waiting on the upstream: wait on. */
        if (((owed || awaited) && c->heard != c->heard_seen) || (!owed && !awaited && c->stall_guard)) {
            if (c->stall_guard)
                return arm_attempt(w, c); /* try_deadline is kept */
            return arm_quiet(w, c, 0);
        }
        if (awaited && !owed) { /* stopped sending mid-body: 408, as for a slow head */
            c->keepalive = 0;
            return respond_error(w, c, 408);
        }
        return client_close(w, c); /* idle, or owed bytes it has not read for a whole timeout */
    }
    switch (c->state) {
    case C_LINGER:
        return client_close(w, c); /* the client kept sending */
    case C_HEAD:
        c->keepalive = 0; /* slow head (slowloris): answer 408 and cut */
        return respond_error(w, c, 408);
    case C_TUNNEL:
        return;
    default:
        return respond_error(w, c, 504);
    }
}

/* ---- events from the upstream side (rl_http_up.c) ---- */

void rl_http_on_up_connected(rl_worker *w, rl_http_client *c, int err)
{
    if (!err)
        return drop_kept_body(w, c);
    rl_worker_cstats(w, c->cluster_slot)->connect_errors++;
    retry_or_fail(w, c, RL_RETRY_CONNECT_FAILURE, 0, 503);
}

void rl_http_on_up_sent(rl_worker *w, rl_http_client *c, rl_http_up *u, uint32_t sent)
{
    if (c->state == C_TUNNEL) /* bytes moving toward the upstream keep a tunnel alive too */
        c->heard += sent > 0;
    if (u->out.count < PAUSE_AT / 2 && (c->state == C_BODY || c->state == C_TUNNEL) &&
        !(c->sock.flags & RL_S_RECV_ON) && !c->client_eof && !c->close_after)
        w->eng->recv_start(w, &c->sock);
}

/* The response is complete: count it, release the upstream, serve the next request. */
static void response_done(rl_worker *w, rl_http_client *c, rl_http_up *u, int reuse)
{
    count_response(w, c, (int)u->parser.status_code);
    /* A pipelined request is replayed below, before the engine delivers what else this upstream
     * sent: a FIN that came with the response would fail it on this connection (a 502 for a
     * POST that never went out), and stray bytes would answer it. So the socket is asked, and
     * the engine for what it took from it already (io_uring), only then. */
    int pool = reuse && c->req_done && !u->no_reuse;
    if (pool && c->in.count &&
        (rl_conn_peer_spoke(u->sock.fd) || (w->eng->rx_pending && w->eng->rx_pending(w, &u->sock))))
        pool = 0;
    rl_http_up_detach(w, u, pool);
    c->up = NULL;
    arm(w, c, 0);
    if (!c->req_done) { /* the upstream answered before the body ended: stop here */
        c->keepalive = 0;
        c->linger = 1;
    }
    finish_request(w, c);
}

static void shut_if_flushed(rl_http_client *c)
{
    if (c->shut_when_flushed && !rl_unsent(&c->out, &c->sock)) {
        c->shut_when_flushed = 0;
        shutdown(c->sock.fd, SHUT_WR);
    }
}

int rl_http_on_up_eof(rl_worker *w, rl_http_client *c, rl_http_up *u)
{
    if (c->state != C_TUNNEL)
        return 0;
    if (c->client_eof) { /* both sides are done: once what the client sent is out (shut_wr ends it) */
        if (!rl_unsent(&u->out, &u->sock))
            return 0;
        c->shut_when_flushed = 1; /* the directions close apart: the client gets the FIN now */
        shut_if_flushed(c);
        return 1;
    }
    c->shut_when_flushed = 1; /* FIN to the client after what is queued; it may still send */
    c->up_eof = 1;
    shut_if_flushed(c);
    arm_tunnel(w, c); /* the half-open rest is a tunnel too (as a relay's) */
    return 1;
}

void rl_http_on_up_end(rl_worker *w, rl_http_client *c, rl_http_up *u, int err)
{
    c->up = NULL;
    /* Closed (and out of its pool's count) before a retry picks an endpoint and asks that pool
     * for a connection: at maxConnections the dead one would refuse it a 503. */
    rl_http_up_detach(w, u, 0);
    if (c->state == C_TUNNEL && err) { /* the upstream reset the tunnel: so does the client side */
        c->shut_when_flushed = 0;
        c->reset_owed = UINT64_MAX;
        w->eng->recv_stop(w, &c->sock); /* its bytes have nowhere to go */
        return reset_when_delivered(w, c);
    }
    if (c->state == C_TUNNEL) /* both sides sent FIN, or the upstream closed: flush, close */
        return close_when_flushed(w, c);
    /* A response framed by connection close ends here. */
    if (!err && c->resp_started && llhttp_finish(&u->parser) == HPE_PAUSED) {
        count_response(w, c, (int)u->parser.status_code);
        c->keepalive = 0; /* framed by the close: the client learns the end the same way */
        arm(w, c, 0);
        return finish_request(w, c);
    }
    /* The keep-alive race: the upstream closed a pooled connection as we reused it, without a
     * byte of response. It likely processed nothing, so an idempotent request goes again
     * whatever the retry policy (as browsers and Go's client do), not counted as an attempt;
     * once, and on a new connection: an upstream that resets on this very request must not see
     * it again on every pooled connection. */
    if (u->reused && !u->heard && !c->resp_started && c->idempotent && body_unsent(c) && !c->fresh_only) {
        c->attempts--;
        c->fresh_only = 1;
        return start_attempt(w, c);
    }
    /* Reset or EOF before the response ended. */
    retry_or_fail(w, c, RL_RETRY_RESET, 0, 502);
}

static void start_tunnel(rl_worker *w, rl_http_client *c, rl_http_up *u)
{
    count_response(w, c, 101); /* the exchange ends here for stats: the tunnel is not a request */
    c->state = C_TUNNEL;
    u->sock.flags &= (uint16_t)~RL_S_DATA_FIRST; /* a byte stream now: a reset goes on at once */
    arm_tunnel(w, c);
    /* Bytes the client sent after its upgrade request go first. */
    while (c->in.count) {
        rl_slice s = c->in.s[c->in.head];
        rl_buf_ref(w, s.bid);
        if (rl_outq_push(w, &u->out, s.bid, s.off, s.len)) { /* out of memory */
            rl_buf_unref(w, s.bid);
            return client_close(w, c);
        }
        rl_outq_pop(w, &c->in);
    }
    rl_http_up_send(w, u);
    if (!c->client_eof)
        w->eng->recv_start(w, &c->sock);
    else /* the client half-closed before the switch: FIN goes on once its bytes are sent */
        rl_http_up_shutdown_when_sent(w, u);
}

#define COALESCE_MAX 2048 /* small pieces are copied next to what precedes them: one send, not two */

/* A final response (or a 101) has begun: after only a 1xx, an error can still answer. */
static int final_status(const rl_http_up *u) { return u->parser.status_code >= 200 || u->parser.status_code == 101; }

static int forward_to_client(rl_worker *w, rl_http_client *c, uint16_t bid, uint32_t off, uint32_t len, int final)
{
    if (!len)
        return 0;
    if (len <= COALESCE_MAX && rl_outq_tail_room(w, &c->out) >= len) {
        rl_outq_write(w, &c->out, rl_buf_data(&w->bufs, bid) + off, len);
        c->resp_started |= (uint8_t)final;
        rl_outq_kick(w, &c->sock, &c->out);
        return 0;
    }
    rl_buf_ref(w, bid);
    if (rl_outq_push(w, &c->out, bid, off, len)) {
        rl_buf_unref(w, bid);
        return -1;
    }
    c->resp_started |= (uint8_t)final;
    rl_outq_kick(w, &c->sock, &c->out);
    return 0;
}

/* The response head base[0, end) goes to the client: written again when the head changes,
 * else copied from headbuf, where it was collected. A head that needs no change and lies in
 * one receive buffer is never paused for: it streams with the body as a slice. Not sent from
 * here: a small body that follows is copied in after it, and both leave in one send (the end
 * of rl_http_on_up_data kicks). */
static int write_head(rl_worker *w, rl_http_client *c, rl_http_up *u, const char *base, uint32_t end)
{
    int final = u->parser.status_code >= 200; /* the rule's headers and Connection: close are not for a 1xx */
    int rc = u->rewrite ? rl_http_build_response_head(w, &c->out, &u->rh, base, end, final ? c->rule : NULL,
                                                      final ? client_conn_line(c) : RL_CONN_NONE)
                        : rl_outq_write(w, &c->out, base, end);
    u->rewrite = 0;
    if (rc)
        return rc;
    c->resp_started |= (uint8_t)final_status(u);
    return 0;
}

/* Appends head bytes to headbuf: a head that spans receive buffers is rewritten whole, and
 * the offsets recorded so far stay valid (they count from the head's first byte). */
static int keep_head(rl_http_up *u, const char *p, uint32_t n)
{
    uint32_t need = u->headbuf_len + n;
    if (need > RL_HTTP_MAX_RESP_HEAD)
        return -1;
    if (need > u->headbuf_cap) {
        uint32_t cap = u->headbuf_cap ? u->headbuf_cap : 4096;
        while (cap < need)
            cap *= 2;
        char *b = realloc(u->headbuf, cap);
        if (!b)
            return -1;
        u->headbuf = b;
        u->headbuf_cap = cap;
    }
    memcpy(u->headbuf + u->headbuf_len, p, n);
    u->headbuf_len = need;
    return 0;
}

static void drop_headbuf(rl_http_up *u)
{
    free(u->headbuf); /* rare: not worth keeping per connection */
    u->headbuf = NULL;
    u->headbuf_len = u->headbuf_cap = 0;
}

/* RFC 9110 15.2: no 1xx to an HTTP/1.0 client (its request went up as 1.0, but an upstream
 * may send one anyway). */
static int interim_unwanted(const rl_http_client *c, const rl_http_up *u)
{
    return u->parser.status_code >= 100 && u->parser.status_code < 200 && u->parser.status_code != 101 &&
           client_http10(c);
}

void rl_http_on_up_data(rl_worker *w, rl_http_client *c, rl_http_up *u, uint16_t bid, uint32_t len)
{
    const char *data = rl_buf_data(&w->bufs, bid);
    uint32_t pos = 0;
    int again = 1; /* after a pause the parser runs once more even on no bytes: the message may end there */
    if (!c->resp_started)
        close_if_listener_gone(w, c);
    while ((pos < len || again) && !c->closed && c->up == u) {
        again = 0;
        if (c->state == C_TUNNEL) {
            if (pos < len && forward_to_client(w, c, bid, pos, len - pos, 1))
                client_close(w, c);
            break;
        }
        /* Empty lines before a status line: llhttp skips them, and so must what is relayed. */
        while (u->between && pos < len && (data[pos] == '\r' || data[pos] == '\n'))
            pos++;
        /* Parse in the receive buffer, or after the part of a head kept from earlier ones. */
        const char *from = data + pos;
        uint32_t n = len - pos, kept = u->headbuf_len;
        if (kept) {
            n = n < RL_HTTP_MAX_RESP_HEAD - kept ? n : RL_HTTP_MAX_RESP_HEAD - kept;
            if (keep_head(u, from, n)) {
                rl_buf_unref(w, bid);
                return retry_or_fail(w, c, 0, 0, 502);
            }
            from = u->headbuf + kept;
        }
        u->resp_base = kept ? u->headbuf : from;
        u->body_w = w, u->body_bid = bid, u->body_base = data; /* for resp_on_body: a de-chunked body is parsed in data */
        llhttp_errno_t err = rl_http_execute(&u->parser, &u->trailer, from, n);
        uint32_t used = err == HPE_OK ? n : (uint32_t)(llhttp_get_error_pos(&u->parser) - from);
        if (err == HPE_PAUSED && u->head_pause) { /* the head ends here: write it, go on with the body */
            u->head_pause = 0;
            llhttp_resume(&u->parser);
            int rc = interim_unwanted(c, u) ? 0 : write_head(w, c, u, u->resp_base, kept + used);
            if (rc == -2) { /* a malformed head: nothing of it went out yet */
                rl_buf_unref(w, bid);
                return retry_or_fail(w, c, 0, 0, 502);
            }
            if (rc) {
                client_close(w, c);
                break;
            }
            drop_headbuf(u);
            pos += used;
            again = 1;
            continue;
        }
        if (err == HPE_OK && u->in_head) { /* the head goes on in the next receive buffer */
            if ((!kept && keep_head(u, from, n)) || u->headbuf_len == RL_HTTP_MAX_RESP_HEAD) {
                rl_buf_unref(w, bid);
                return retry_or_fail(w, c, 0, 0, 502); /* too large to rewrite */
            }
            break;
        }
        int done = err == HPE_PAUSED || err == HPE_PAUSED_UPGRADE;
        if (u->dechunk_failed) {
            client_close(w, c);
            break;
        }
        if (!done && u->retry_status) { /* resp_on_headers_complete chose to retry */
            rl_buf_unref(w, bid);
            return retry_or_fail(w, c, 0, (int)u->parser.status_code, (int)u->parser.status_code);
        } else if (!done && err != HPE_OK) {
            rl_buf_unref(w, bid);
            return retry_or_fail(w, c, RL_RETRY_RESET, 0, 502); /* garbage from upstream */
        }
        if (!u->dechunk && !(done && interim_unwanted(c, u)) && forward_to_client(w, c, bid, pos, used, final_status(u))) {
            client_close(w, c);
            break;
        }
        pos += used;
        if (!done)
            break;
        int status = (int)u->parser.status_code;
        if (err == HPE_PAUSED_UPGRADE && status == 101 && c->upgrade) {
            start_tunnel(w, c, u);
            continue; /* the rest of this buffer is tunnel data */
        }
        if (status >= 100 && status < 200) { /* 100 Continue and friends: the final one follows */
            llhttp_resume(&u->parser);
            u->between = 1;
            if (status == 100)
                c->awaits_continue = 0; /* the body is the client's to send now */
            again = 1;
            continue;
        }
        response_done(w, c, u, pos == len && llhttp_should_keep_alive(&u->parser));
        break;
    }
    if (!c->closed)
        rl_outq_kick(w, &c->sock, &c->out); /* a head written above, with what followed it */
    rl_buf_unref(w, bid);
    if (c->up == u && c->out.count >= PAUSE_AT)
        rl_http_up_pause(w, u);
}

static int resp_on_message_begin(llhttp_t *p)
{
    rl_http_up *u = p->data;
    u->in_head = 1;
    u->between = 0;
    u->rewrite = u->head_pause = 0;
    u->dechunk = u->dechunk_failed = 0;
    memset(&u->trailer, 0, sizeof(u->trailer));
    rl_resp_head_reset(&u->rh);
    u->rh.drop_te = u->client && client_http10(u->client);
    return 0;
}

static int resp_on_header_field(llhttp_t *p, const char *at, size_t len)
{
    rl_http_up *u = p->data;
    if (u->in_head) /* not trailer fields */
        rl_resp_head_field(&u->rh, u->resp_base, (uint32_t)(at - u->resp_base), (uint32_t)len);
    return 0;
}

static int resp_on_header_field_complete(llhttp_t *p)
{
    rl_http_up *u = p->data;
    if (!u->in_head)
        return 0;
    const rl_rule *r = u->client && p->status_code >= 200 ? u->client->rule : NULL; /* a 1xx: hop-by-hop only */
    return rl_resp_head_field_done(&u->rh, u->resp_base, r) ? HPE_USER : 0;
}

static int resp_on_header_value(llhttp_t *p, const char *at, size_t len)
{
    rl_http_up *u = p->data;
    if (u->in_head)
        rl_resp_head_value(&u->rh, u->resp_base, (uint32_t)(at - u->resp_base), (uint32_t)len);
    return 0;
}

static int resp_on_header_value_complete(llhttp_t *p)
{
    rl_http_up *u = p->data;
    if (u->in_head)
        rl_resp_head_value_done(&u->rh, u->resp_base);
    return 0;
}

static int resp_on_headers_complete(llhttp_t *p)
{
    rl_http_up *u = p->data;
    rl_http_client *c = u->client;
    int status = p->status_code;
    u->in_head = 0;
    if (c && status >= 500 && may_retry(c, 0, status)) {
        u->retry_status = 1;
        return HPE_USER;
    }
    /* RFC 9110 15: codes outside 100..599 are invalid, to be handled as a server error; so is
     * a version other than 1.x (llhttp takes "HTTP/2.0" and "HTTP/0.9" status lines). */
    if (status < 100 || status > 599 || p->http_major != 1)
        return HPE_USER;
    /* A 101 is final: the tunnel opens only when the client asked for it and the upstream
     * switched properly; any other 101 is garbage (relayed, it would desync the client). */
    if (status == 101 && !(c && c->upgrade && p->upgrade))
        return HPE_USER;
    /* An interim response does not end the connection, whatever its Connection says: the final
     * one follows on it (llhttp would refuse those bytes as data after close). */
    if (status >= 100 && status < 200 && status != 101)
        p->flags &= (uint16_t)~F_CONNECTION_CLOSE;
    /* No body follows, whatever the headers say (RFC 9112 6.3; this llhttp does not know it
     * for statuses): bytes after such a head would reach the client as the next response. */
    int no_body = u->method == HTTP_HEAD || status == 204 || status == 304 || (status >= 100 && status < 200 && status != 101);
    /* RFC 9110 8.6, 6.1: a 204 has no framing fields; one that has them may send a body after
     * its head, which the next request on the connection would take for its response. */
    u->no_reuse = status == 204 && ((p->flags & F_CHUNKED) || p->content_length > 0);
    /* RFC 9112 6.1: an HTTP/1.0 message with Transfer-Encoding has faulty framing: the
     * connection closes after it, whatever its Connection says. */
    if (p->http_minor == 0 && (p->flags & F_TRANSFER_ENCODING))
        u->no_reuse = 1;
    if (c && status >= 200 && !c->req_done)
        c->keepalive = 0; /* an early response: the unread rest of the body ends the connection */
    if (c && !no_body && status >= 200 && status != 204 && status != 304 &&
        !(p->flags & (F_CHUNKED | F_CONTENT_LENGTH)))
        c->keepalive = 0; /* the body ends when the upstream closes: so must the client's */
    /* Chunked to an HTTP/1.0 client (its request went up as 1.0, the upstream answered chunked
     * anyway): the body goes on de-chunked and the close ends it (as nginx does). */
    u->dechunk = c && !no_body && status >= 200 && (p->flags & F_CHUNKED) && client_http10(c);
    if (u->dechunk)
        c->keepalive = 0;
    /* Written again when that changes the head: a final one for the rule and Connection, a 1xx
     * for its hop-by-hop fields; a 101's Connection/Upgrade are the switch itself. */
    /* An HTTP/1.0 status line is written as 1.1 too (RFC 9110 2.5: a proxy sends its own
     * version), else a 1.1 client takes the connection kept alive here for a closing one. */
    int final_changes = !c || client_conn_line(c) != RL_CONN_NONE || p->http_minor == 0 ||
                        rl_resp_head_changes(&u->rh, c->rule);
    u->rewrite = c && (status >= 200 ? final_changes : status != 101 && rl_resp_head_changes(&u->rh, NULL));
    if (!u->rewrite && !u->headbuf_len)
        return no_body; /* 1: llhttp skips the body */
    if (no_body)
        p->flags |= F_SKIPBODY; /* what returning 1 does, as the pause needs the return value */
    u->head_pause = 1;
    return HPE_PAUSED;
}

static int resp_on_body(llhttp_t *p, const char *at, size_t len)
{
    rl_http_up *u = p->data;
    if (!u->dechunk || !u->client)
        return 0;
    uint32_t off = (uint32_t)(at - u->body_base);
    if (forward_to_client(u->body_w, u->client, u->body_bid, off, (uint32_t)len, 1)) {
        u->dechunk_failed = 1; /* out of buffers: the client connection goes */
        return HPE_USER;
    }
    return 0;
}

static int resp_on_chunk_extension(llhttp_t *p, const char *at, size_t len)
{
    (void)at;
    rl_http_up *u = p->data;
    return rl_trailer_count(&u->trailer, len) ? HPE_USER : 0;
}

static int resp_on_message_complete(llhttp_t *p)
{
    (void)p;
    return HPE_PAUSED;
}

const llhttp_settings_t *rl_http_response_settings(rl_worker *w)
{
    if (!w->http_resp_settings) {
        llhttp_settings_t *s = calloc(1, sizeof(*s));
        if (s) {
            llhttp_settings_init(s);
            s->on_message_begin = resp_on_message_begin;
            s->on_header_field = resp_on_header_field;
            s->on_header_field_complete = resp_on_header_field_complete;
            s->on_header_value = resp_on_header_value;
            s->on_header_value_complete = resp_on_header_value_complete;
            s->on_headers_complete = resp_on_headers_complete;
            s->on_body = resp_on_body;
            s->on_chunk_extension_name = s->on_chunk_extension_value = resp_on_chunk_extension;
            s->on_message_complete = resp_on_message_complete;
            s->on_chunk_header = rl_http_on_chunk_header;
        }
        w->http_resp_settings = s;
    }
    return w->http_resp_settings;
}

/* ---- client socket callbacks ---- */

static void on_recv(rl_worker *w, rl_sock *s, uint16_t bid, uint32_t len)
{
    rl_http_client *c = s->owner;
    rl_worker_lstats(w, c->lc->slot)->rx_bytes += len;
    c->heard++;
    feed(w, c, bid, 0, len);
}

static void on_recv_end(rl_worker *w, rl_sock *s, int err)
{
    rl_http_client *c = s->owner;
    c->client_eof = 1;
    if (err && c->state == C_TUNNEL && c->up) { /* the client reset the tunnel: so does the upstream side */
        rl_http_up_reset_when_delivered(w, c->up); /* ... after what the client sent before it */
        c->up = NULL;
    }
    if (err || c->state == C_LINGER)
        return client_close(w, c);
    if (c->close_after)
        return; /* closing once the response is flushed: the client has stopped sending */
    if (c->state == C_IDLE || c->state == C_HEAD)
        return close_when_flushed(w, c); /* a response may still be on its way out */
    if (c->state == C_BODY)
        return client_close(w, c); /* body cut short: the upstream must not see a partial request */
    if (c->state == C_TUNNEL && c->up) /* half-close: FIN goes on once the queue is sent */
        rl_http_up_shutdown_when_sent(w, c->up);
}

static void on_sent(rl_worker *w, rl_sock *s, int res)
{
    rl_http_client *c = s->owner;
    if (res < 0)
        return client_close(w, c);
    rl_worker_lstats(w, c->lc->slot)->tx_bytes += (uint32_t)res;
    c->heard += res > 0;
    rl_outq_sent(w, &c->out, (uint32_t)res);
    rl_outq_kick(w, s, &c->out);
    if (c->state == C_IDLE)
        rl_outq_shrink(&c->out);
    if (c->close_after && !rl_unsent(&c->out, s))
        return flushed_close(w, c);
    shut_if_flushed(c);
    if (c->up && c->out.count < PAUSE_AT / 2)
        rl_http_up_resume(w, c->up);
}

static void on_connected(rl_worker *w, rl_sock *s, int err)
{
    (void)w;
    (void)s;
    (void)err;
}

static const rl_sock_ops client_ops = {
    .on_recv = on_recv,
    .on_recv_end = on_recv_end,
    .on_sent = on_sent,
    .on_connected = on_connected,
    .on_released = on_released,
};

static void client_drain(rl_worker *w, rl_conn_base *b)
{
    rl_http_client *c = rl_container_of(b, rl_http_client, base);
    if (c->state == C_LINGER)
        client_close(w, c);
    else if (c->state == C_IDLE && !c->in.count)
        close_when_flushed(w, c); /* the last response may still be on its way out */
    else
        c->keepalive = 0; /* finish this request, then close */
}

static void client_destroy(rl_worker *w, rl_conn_base *b)
{
    rl_http_client *c = rl_container_of(b, rl_http_client, base);
    rl_timer_cancel(&w->wheel, &c->timer); /* the wheel outlives it (an upstream's cancel walks it) */
    if (!c->closed) { /* cut at the drain deadline: counted, and a reset when mid-exchange */
        if (uncounted(c))
            count_response(w, c, 504);
        if (c->state != C_IDLE || c->out.count)
            rl_conn_abort_on_close(c->sock.fd);
        rl_worker_lstats(w, c->lc->slot)->conns_closed++;
        close(c->sock.fd);
    }
    rl_conn_untrack(w, &c->base, 1);
    if (c->head && c->head != w->http_scratch)
        free(c->head);
    free(c->headbuf);
    rl_outq_free(&c->out);
    rl_outq_free(&c->in);
    rl_outq_free(&c->retry);
    free(c);
}

/* Request body bytes (chunk framing excluded) against limits.maxRequestBodyBytes. */
static int req_on_body(llhttp_t *p, const char *at, size_t len)
{
    rl_http_client *c = rl_container_of((rl_http_head **)p->data, rl_http_client, head);
    uint64_t max = cfg_of(c)->max_body_bytes;
    (void)at;
    c->body_bytes += len;
    if (max && c->body_bytes > max) {
        c->too_large = 1;
        return HPE_USER;
    }
    return 0;
}

static int req_on_chunk_extension(llhttp_t *p, const char *at, size_t len)
{
    (void)at;
    rl_http_client *c = rl_container_of((rl_http_head **)p->data, rl_http_client, head);
    return rl_trailer_count(&c->trailer, len) ? HPE_USER : 0;
}

static const llhttp_settings_t *request_settings(rl_worker *w)
{
    if (!w->http_req_settings) {
        llhttp_settings_t *s = calloc(1, sizeof(*s));
        if (s) {
            rl_http_head_settings(s);
            s->on_body = req_on_body;
            s->on_chunk_extension_name = s->on_chunk_extension_value = req_on_chunk_extension;
        }
        w->http_req_settings = s;
    }
    return w->http_req_settings;
}

void rl_http_accept(rl_worker *w, const rl_listener_cfg *lc, int fd)
{
    rl_http_client *c = calloc(1, sizeof(*c));
    const llhttp_settings_t *settings = request_settings(w);
    if (!c || !settings) {
        free(c);
        close(fd);
        return;
    }
    c->base.drain = client_drain;
    c->base.destroy = client_destroy;
    c->sock.fd = fd;
    c->sock.ops = &client_ops;
    c->sock.owner = c;
    c->lc = lc;
    c->stat_slot = lc->noroute_slot;
    c->hold = rl_worker_hold_cfg(w);
    rl_conn_track(w, &c->base, 1);
    llhttp_init(&c->parser, HTTP_REQUEST, settings);
    c->parser.data = &c->head;
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    strcpy(c->ip, "unknown");
    if (getpeername(fd, (struct sockaddr *)&ss, &sl) == 0) {
        if (ss.ss_family == AF_INET)
            inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, c->ip, sizeof(c->ip));
        else
            inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, c->ip, sizeof(c->ip));
    }
    if (w->eng->attach(w, &c->sock)) { /* TCP_NODELAY comes from the listener */
        client_close(w, c);
        return;
    }
    arm(w, c, cfg_of(c)->header_timeout_ms);
    w->eng->recv_start(w, &c->sock);
}
