/* rl_http: the HTTP/1.1 reverse proxy, in four files with one job each:
 *   rl_http_head.c   request-head spans from llhttp, and route matching (no I/O)
 *   rl_http_build.c  the upstream request head and proxy-generated responses (no I/O)
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
    int has_body;     /* Content-Length > 0 or chunked */
    int keepalive;
    int upgrade;
    int idempotent;
    int reject;   /* a status to answer instead of routing (400, 505), else 0 */
} rl_http_req;

/* rl_http_head.c */
void rl_http_head_settings(llhttp_settings_t *s);
void rl_http_req_facts(const rl_http_head *h, const llhttp_t *p, rl_http_req *out);
/* The best rule of the listener for this request (Gateway API precedence), or NULL. */
const rl_rule *rl_http_route(const rl_cfg *cfg, const rl_listener_cfg *lc, const rl_http_head *h,
                             const rl_http_req *rq);
int rl_span_ieq(const char *base, rl_span s, const char *lit, uint32_t n);

/* rl_http_build.c: write into q; 0, or -1 when out of buffers. */
int rl_http_build_request(rl_worker *w, rl_outq *q, const rl_http_head *h, const rl_http_req *rq,
                          const llhttp_t *p, const rl_rule *r, const char *client_ip);
int rl_http_build_error(rl_worker *w, rl_outq *q, int status, int close);

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
    uint8_t state, method, retry_status, closed, shut_pending;
    uint8_t reused; /* taken from the pool for this request: the upstream may have closed it */
    uint8_t heard;  /* a response byte arrived for this request */
    /* Response head rewrite (hop-by-hop headers out, "Connection: close" in when it is the
     * connection's last): offsets into the buffer being parsed, valid while its head is in it. */
    const char *resp_base;
    uint32_t field_off, field_len;
    uint32_t hop[4][2];
    uint8_t nhop, hop_open, began_here, split, rewrite;
} rl_http_up;

/* rl_http_up.c */
/* An idle pooled connection to ep, or a new connecting one; NULL with *status set (503). */
rl_http_up *rl_http_up_get(rl_worker *w, rl_http_client *c, const rl_cluster *cl, const rl_endpoint *ep,
                           int *status);
void rl_http_up_send(rl_worker *w, rl_http_up *u);           /* kick its output queue */
rl_outq *rl_http_up_outq(rl_http_up *u);
void rl_http_up_detach(rl_worker *w, rl_http_up *u, int reuse); /* client done with it */
void rl_http_up_set_method(rl_http_up *u, int method);
void rl_http_up_resume(rl_worker *w, rl_http_up *u); /* the client drained: read again */
void rl_http_up_pause(rl_worker *w, rl_http_up *u);

/* rl_http.c: what upstream events mean for the client. */
void rl_http_on_up_connected(rl_worker *w, rl_http_client *c, int err);
void rl_http_on_up_data(rl_worker *w, rl_http_client *c, rl_http_up *u, uint16_t bid, uint32_t len);
void rl_http_on_up_end(rl_worker *w, rl_http_client *c, rl_http_up *u, int err);
void rl_http_on_up_sent(rl_worker *w, rl_http_client *c, rl_http_up *u);
const llhttp_settings_t *rl_http_response_settings(rl_worker *w);

#endif
