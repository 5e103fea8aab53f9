/* rl_http: the HTTP/1.1 reverse proxy, in five files with one job each:
 *   rl_http_head.c   request-head spans from llhttp, and route matching (no I/O)
 *   rl_http_build.c  the upstream request head and proxy-generated responses (no I/O)
 *   rl_http_resp.c   the response head rewrite: dropped lines, header filter (no I/O)
 *   rl_http.c        the client-side state machine
 *   rl_http_up.c     upstream connections and per-worker keep-alive pools */
#ifndef RL_HTTP_H
#define RL_HTTP_H

#include <llhttp.h>

#include "rl_conn.h"

#define RL_HTTP_MAX_HEADERS 1000

typedef struct rl_span {
    uint32_t off, len;
} rl_span;

/* Where the parts of one request head are, as offsets from base (the head's first byte). */
typedef struct rl_http_head {
    const char *base;
    rl_span url, field, value;
    uint32_t nheaders;
    uint32_t max_headers; /* capacity of headers[]: the config's limit */
    uint8_t in_value;
    uint8_t too_many; /* more headers than max_headers: answered with 431 */
    rl_span headers[][2];
} rl_http_head;

#define RL_HTTP_HEAD_SIZE(n) (sizeof(rl_http_head) + (size_t)(n) * 2 * sizeof(rl_span))

/* The facts about a parsed request that routing and forwarding need. */
typedef struct rl_http_req {
    int method;
    rl_span path;     /* without the query */
    rl_span query;    /* including '?', may be empty */
    rl_span host;     /* without port, may be empty */
    rl_span authority; /* of an absolute-form target (host[:port]): replaces Host upstream */
    int has_body;     /* Content-Length > 0 or chunked */
    int keepalive;
    int upgrade;
    int idempotent;
    int expect_continue; /* Expect: 100-continue: the client may wait for a 100 before its body */
    int reject;   /* a status to answer instead of routing (400, 505), else 0 */
    const rl_match *match; /* set by rl_http_route: the match that chose the rule (its prefix is rewritten) */
    uint32_t match_cut;    /* the path bytes that match's prefix covers ("//" counts as "/") */
} rl_http_req;

/* The asterisk-form target "*" (RFC 9112 3.2.4; valid for OPTIONS only). */
static inline int rl_http_req_asterisk(const char *b, const rl_http_req *rq)
{
    return rq->path.len == 1 && b[rq->path.off] == '*' && !rq->authority.len && !rq->query.len;
}

/* rl_http_head.c */
void rl_http_head_settings(llhttp_settings_t *s);

/* Bodies go on as they came (chunk framing included), so their trailer section, which llhttp 8
 * reads leniently (bare LF line ends, folded lines, empty names), is checked byte by byte. */
typedef struct rl_trailer_scan {
    uint8_t active;     /* past the last chunk's size line */
    uint8_t prev;       /* the byte before */
    uint8_t line_start; /* the next byte starts a line */
    uint32_t framing;   /* chunk extension and trailer bytes of the message */
} rl_trailer_scan;
/* Chunk extensions and the trailer section are neither head nor body, so no limit counted
 * them: together they may take what a default head may (more is a 400, or a 502 upstream). */
#define RL_HTTP_MAX_FRAMING 65536
static inline int rl_trailer_count(rl_trailer_scan *t, size_t n)
{
    t->framing += n < RL_HTTP_MAX_FRAMING ? (uint32_t)n : RL_HTTP_MAX_FRAMING;
    return t->framing > RL_HTTP_MAX_FRAMING ? -1 : 0;
}
/* The parsers' on_chunk_header: pauses at the last chunk, where the trailer section starts. */
int rl_http_on_chunk_header(llhttp_t *p);
/* llhttp_execute with the trailer check (t zeroed at each message start): the pause at the
 * last chunk is taken here, never returned; a bad trailer line gives HPE_INVALID_HEADER_TOKEN. */
llhttp_errno_t rl_http_execute(llhttp_t *p, rl_trailer_scan *t, const char *data, size_t len);
/* The facts of a parsed request head. Normalizes the path in place in the head's bytes (see
 * rl_http_path_normalize): a rejected path gets out->reject = 400. */
void rl_http_req_facts(const rl_http_head *h, const llhttp_t *p, rl_http_req *out);
/* RFC 3986 6.2.2 in place, so a backend reads the path that was routed: %XX of an unreserved
 * character decoded, the hex of other escapes in upper case (%2F stays %2F: "group%2Fproject"
 * is one segment to GitLab's API); runs of '/' merged if asked (rule paths; requests keep them,
 * "/fetch/https://h/x" is no "/fetch/https:/h/x", and are matched as if merged). -1 for a
 * malformed escape. */
int rl_http_path_normalize(char *p, uint32_t *len, int merge_slashes);
/* The best rule of the listener for this request (Gateway API precedence), or NULL; the match
 * that chose it goes to rq->match. */
const rl_rule *rl_http_route(const rl_cfg *cfg, const rl_listener_cfg *lc, const rl_http_head *h, rl_http_req *rq);
int rl_span_ieq(const char *base, rl_span s, const char *lit, uint32_t n);

/* The Connection line a response to the client gets: none, close, or keep-alive (an HTTP/1.0
 * client's connection persists only when the response says so: RFC 9112 C.2.2, as nginx). */
enum { RL_CONN_NONE, RL_CONN_CLOSE, RL_CONN_KEEP_ALIVE };

/* rl_http_build.c: write into q; 0, or -1 when out of buffers. */
int rl_http_build_request(rl_worker *w, rl_outq *q, const rl_http_head *h, const rl_http_req *rq,
                          const llhttp_t *p, const rl_rule *r, const char *client_ip);
/* A response the proxy makes itself; r: the rule the request matched (NULL before routing), whose
 * responseHeaderModifier applies. */
int rl_http_build_error(rl_worker *w, rl_outq *q, int status, int conn, int head_only, const rl_rule *r);
/* The SET and ADD fields of r's responseHeaderModifier (none when r is NULL). */
int rl_http_write_resp_ops(rl_worker *w, rl_outq *q, const rl_rule *r);
/* Whether the Connection header value v[0, vlen) lists name[0, n) among its options. */
int rl_http_conn_option(const char *v, uint32_t vlen, const char *name, uint32_t n);
/* Fields never removed because a Connection header names them: the body's framing (dropping
 * it would turn the body into a smuggled message), Host and Upgrade (their own rules). */
int rl_http_conn_option_kept(const char *name, uint32_t n);
/* Whether a rule's header list (set, add or remove) names the field name[0, n), any case. */
int rl_hdr_named(const rl_hdr *list, uint32_t count, const char *name, uint32_t n);

/* A response head being parsed for its rewrite: the header lines to drop, as [start, end)
 * offsets from the head's first byte (the head is contiguous: see rl_http_up.headbuf). */
typedef struct rl_resp_head {
    uint32_t field_off, field_len; /* the field name being parsed */
    uint32_t value_off, value_len; /* the value of a Connection line being parsed */
    uint32_t (*drop)[2];           /* grown on demand, kept across the connection's responses */
    uint32_t ndrop, drop_cap;
    uint32_t ndropped;             /* header lines dropped (ranges merge adjacent lines) */
    uint32_t nconn_keepalive;      /* ... of which "Connection: keep-alive" lines */
    uint32_t conn_opts[4][2];      /* Connection values listing more than keep-alive or close */
    uint8_t nconn_opts;
    uint8_t drop_open;             /* the last dropped line ends where the next field starts */
    uint8_t in_connection;         /* the line being parsed is a Connection line */
    uint8_t folded;                /* a value continues on a line of its own (obs-fold) */
    uint8_t drop_te;               /* Transfer-Encoding lines go too (the client is HTTP/1.0) */
    uint32_t name_end, piece_end;  /* where the field name and the last value piece end */
} rl_resp_head;

/* rl_http_resp.c */
void rl_resp_head_reset(rl_resp_head *h);
void rl_resp_head_free(rl_resp_head *h);
/* llhttp reported a piece of a field name, at off from the head's first byte. */
void rl_resp_head_field(rl_resp_head *h, const char *base, uint32_t off, uint32_t len);
/* The field name is complete (base: the head's first byte; r may be NULL): 0, or -1 when out of memory. */
int rl_resp_head_field_done(rl_resp_head *h, const char *base, const rl_rule *r);
/* Whether a response header line named name[0, n) is dropped (hop-by-hop, or set/removed by r). */
int rl_resp_head_drops(const rl_rule *r, const char *name, uint32_t n);
/* llhttp reported a piece of a field value, and the value is complete: only Connection values
 * are looked at (keep-alive alone is what rl_resp_head_changes may leave in place). */
void rl_resp_head_value(rl_resp_head *h, const char *base, uint32_t off, uint32_t len);
void rl_resp_head_value_done(rl_resp_head *h, const char *base);
/* Whether a head sent on a client connection that stays open must be written again: a line
 * to drop or a header to set or add. "Connection: keep-alive" alone is not a reason: forwarded
 * as it is, it states the proxy's own option for the client connection (RFC 9110 7.6.1 allows
 * replacing the upstream's Connection with that), and the head then goes out unchanged. */
int rl_resp_head_changes(const rl_resp_head *h, const rl_rule *r);
/* The head base[0, end) into q without its dropped lines (and those its Connection options
 * name, RFC 9110 7.6.1), with r's set and add headers, and with
 * the Connection line conn (RL_CONN_*); 0, -1 when out of buffers, -2 when the head has a bare
 * CR (or more Connection lines with options than conn_opts holds). */
int rl_http_build_response_head(rl_worker *w, rl_outq *q, rl_resp_head *h, const char *base, uint32_t end,
                                const rl_rule *r, int conn);

/* Largest response head the proxy collects when it spans receive buffers; larger gets 502. */
#define RL_HTTP_MAX_RESP_HEAD 65536

typedef struct rl_http_client rl_http_client;

enum { U_CONNECTING, U_BUSY, U_IDLE };

/* One upstream connection: busy with one client's request, or idle in its cluster's pool. */
typedef struct rl_http_up {
    rl_conn_base base;
    rl_sock sock;
    rl_outq out; /* request bytes to the upstream */
    llhttp_t parser;
    rl_http_client *client;
    rl_pool *pool;
    rl_list pool_node;
    rl_timer timer;
    struct sockaddr_storage addr;
    socklen_t addrlen;
    uint32_t cluster_slot, idle_ms;
    uint8_t stale;  /* a config since it opened dropped its endpoint: closed after its exchange */
    uint8_t state, method, retry_status, closed, shut_pending;
    uint8_t eof; /* a tunnel's upstream sent FIN: it stays open for what the client still sends */
    uint8_t reused; /* taken from the pool for this request: the upstream may have closed it */
    uint8_t heard;  /* a response byte arrived for this request */
    uint8_t lb;     /* what rl_lb_begin counted for the client's exchange (rl_balance.h) */
    uint8_t no_reuse; /* a 204 that declared a body: what it may still send would desync the next */
    uint8_t resetting; /* its tunnel's client reset: it gets what came before, then a reset */
    uint64_t reset_owed, reset_moved; /* ... bytes still owed, when they last shrank */
    /* Response head rewrite (hop-by-hop headers out, the rule's responseHeaderModifier applied,
     * "Connection: close" in when it is the connection's last). resp_base is the head's first
     * byte: in the receive buffer, or in headbuf when the head spans receives. */
    const char *resp_base;
    rl_resp_head rh;
    char *headbuf;
    uint32_t headbuf_len, headbuf_cap;
    uint8_t in_head;    /* between message begin and headers complete */
    uint8_t between;    /* no response begun yet: leading empty lines are dropped */
    rl_trailer_scan trailer;
    uint8_t head_pause; /* the parser paused at the end of the head, to write it */
    uint8_t rewrite;    /* ... and the head is written again, not forwarded as it is */
    /* A chunked body for an HTTP/1.0 client (RFC 9112 6.1: it cannot read chunked coding) goes
     * on without its chunk framing, ended by the close: the parser's body pieces are forwarded,
     * from the receive buffer body_bid at body_base, for the worker body_w, during a parse. */
    uint8_t dechunk, dechunk_failed;
    uint16_t body_bid;
    const char *body_base;
    rl_worker *body_w;
} rl_http_up;

/* rl_http_up.c */
/* An idle pooled connection to ep (unless fresh), or a new connecting one; NULL with *status
 * set (503). */
rl_http_up *rl_http_up_get(rl_worker *w, rl_http_client *c, const rl_cluster *cl, const rl_endpoint *ep,
                           int fresh, int *status);
void rl_http_up_send(rl_worker *w, rl_http_up *u);           /* kick its output queue */
/* A cluster's pool at max_conns closes an idle connection, if it has one (TCP relays count too). */
void rl_http_pool_make_room(rl_worker *w, rl_pool *pool, uint32_t max_conns);
/* After a reload: idle pooled connections to an endpoint the new config no longer names (its
 * cluster or that endpoint removed) close now, not at their idle timeout. */
void rl_http_pools_prune(rl_worker *w, const rl_cfg *cfg);
void rl_http_up_shutdown_when_sent(rl_worker *w, rl_http_up *u); /* a tunnel's client half-closed */
/* The tunnel's client reset: u leaves it, gets what the client sent before (or stalls for
 * RL_RESET_STALL_MS), then a reset. */
void rl_http_up_reset_when_delivered(rl_worker *w, rl_http_up *u);
rl_outq *rl_http_up_outq(rl_http_up *u);
void rl_http_up_detach(rl_worker *w, rl_http_up *u, int reuse); /* client done with it */
void rl_http_up_unbind(rl_worker *w, rl_http_up *u); /* the exchange ended: no client, not in flight */
void rl_http_up_set_method(rl_http_up *u, int method);
void rl_http_up_resume(rl_worker *w, rl_http_up *u); /* the client drained: read again */
void rl_http_up_pause(rl_worker *w, rl_http_up *u);

/* rl_http.c: what upstream events mean for the client. */
void rl_http_on_up_connected(rl_worker *w, rl_http_client *c, int err);
void rl_http_on_up_data(rl_worker *w, rl_http_client *c, rl_http_up *u, uint16_t bid, uint32_t len);
/* The upstream sent FIN: 1 when that half-closes a tunnel (the upstream stays open for writing). */
int rl_http_on_up_eof(rl_worker *w, rl_http_client *c, rl_http_up *u);
void rl_http_on_up_end(rl_worker *w, rl_http_client *c, rl_http_up *u, int err);
void rl_http_on_up_sent(rl_worker *w, rl_http_client *c, rl_http_up *u, uint32_t sent);
const llhttp_settings_t *rl_http_response_settings(rl_worker *w);

#endif
