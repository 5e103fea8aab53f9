/* rl_cfg: the immutable compiled config. Python builds it with the rl_cfg_* calls below, hands
 * it to rl_core_apply(), and from then on workers only read it. A config is freed when the
 * last worker has switched away from it and has no connection left that started on it. */
#ifndef RL_CFG_H
#define RL_CFG_H

#include <netinet/in.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/socket.h>

#include "rl_stats.h"
#define RL_MAX_SLOTS_CFG RL_MAX_SLOTS

/* cffi:begin */
#define RL_PROTO_HTTP 0
#define RL_PROTO_TCP 1
#define RL_LB_ROUND_ROBIN 0
#define RL_LB_LEAST_REQUEST 1
#define RL_LB_RANDOM 2
#define RL_PATH_PREFIX 0
#define RL_PATH_EXACT 1
#define RL_RETRY_CONNECT_FAILURE 1
#define RL_RETRY_RESET 2
#define RL_HDR_SET 0
#define RL_HDR_ADD 1
#define RL_HDR_REMOVE 2

typedef struct rl_cfg rl_cfg;

rl_cfg *rl_cfg_new(uint64_t generation);
void rl_cfg_free(rl_cfg *c);
int rl_cfg_set_limits(rl_cfg *c, uint32_t max_header_bytes, uint32_t max_headers,
                      uint32_t header_timeout_ms, uint32_t idle_timeout_ms);
/* Largest request body in bytes (0: unlimited); larger gets 413. */
int rl_cfg_set_body_limit(rl_cfg *c, uint64_t max_request_body_bytes);
/* Close a TCP relay or an upgraded tunnel with no byte moving either way this long (0: never). */
int rl_cfg_set_tunnel_idle(rl_cfg *c, uint32_t tunnel_idle_timeout_ms);
int rl_cfg_add_cluster(rl_cfg *c, uint32_t slot, int lb, uint32_t connect_timeout_ms,
                       uint32_t idle_timeout_ms, uint32_t max_conns);
int rl_cfg_cluster_add_endpoint(rl_cfg *c, int cluster, const char *ip, uint16_t port);
int rl_cfg_add_listener(rl_cfg *c, uint32_t slot, const char *ip, uint16_t port, int proto,
                        uint32_t noroute_slot);
int rl_cfg_add_rule(rl_cfg *c, int listener, uint32_t slot, uint32_t request_timeout_ms,
                    uint32_t backend_timeout_ms, uint32_t retry_attempts, uint32_t retry_backoff_ms);
int rl_cfg_rule_add_hostname(rl_cfg *c, int rule, const char *hostname);
int rl_cfg_rule_add_match(rl_cfg *c, int rule, int path_type, const char *path, const char *method);
int rl_cfg_match_add_header(rl_cfg *c, int rule, int match, const char *name, const char *value);
int rl_cfg_rule_add_backend(rl_cfg *c, int rule, int cluster, uint32_t weight);
int rl_cfg_rule_retry_on(rl_cfg *c, int rule, int flag, int status);
int rl_cfg_rule_header_op(rl_cfg *c, int rule, int op, const char *name, const char *value);
/* responseHeaderModifier: the same ops on response heads; framing and hop-by-hop names are refused. */
int rl_cfg_rule_resp_header_op(rl_cfg *c, int rule, int op, const char *name, const char *value);
int rl_cfg_rule_rewrite_prefix(rl_cfg *c, int rule, const char *prefix);
/* cffi:end */

typedef struct rl_str {
    char *p;
    uint32_t len;
} rl_str;

typedef struct rl_endpoint {
    struct sockaddr_storage addr;
    socklen_t addrlen;
} rl_endpoint;

typedef struct rl_cluster {
    uint32_t slot;
    int lb;
    uint32_t connect_timeout_ms, idle_timeout_ms, max_conns;
    rl_endpoint *eps;
    uint32_t neps;
} rl_cluster;

typedef struct rl_hdr {
    rl_str name, value;
} rl_hdr;

typedef struct rl_match {
    int path_type;
    rl_str path;
    int method; /* llhttp method id, -1 for any */
    rl_hdr *headers;
    uint32_t nheaders;
} rl_match;

typedef struct rl_backend {
    uint32_t cluster;
    uint32_t weight;
} rl_backend;

typedef struct rl_rule {
    uint32_t slot;
    uint32_t listener;
    rl_str *hostnames;
    uint32_t nhostnames;
    rl_match *matches;
    uint32_t nmatches;
    rl_backend *backends;
    uint32_t nbackends;
    uint64_t total_weight;
    uint32_t request_timeout_ms, backend_timeout_ms;
    uint32_t retry_attempts, retry_backoff_ms, retry_flags;
    uint64_t retry_status[2]; /* bitmap of 500..599 */
    rl_hdr *hdr_ops[3];       /* RL_HDR_SET, ADD, REMOVE */
    uint32_t nhdr_ops[3];
    rl_hdr *resp_ops[3];      /* the same, applied to response heads */
    uint32_t nresp_ops[3];
    rl_str rewrite_prefix;
    int has_rewrite;
} rl_rule;

typedef struct rl_listen_group rl_listen_group; /* listening sockets, one per worker (rl_core.c) */

typedef struct rl_listener_cfg {
    uint32_t slot;
    uint32_t noroute_slot; /* rule-stats slot for requests no rule matched */
    int proto;
    struct sockaddr_storage addr;
    socklen_t addrlen;
    uint32_t *rules; /* indices into rl_cfg.rules, in match order */
    uint32_t nrules;
    rl_listen_group *group; /* set by rl_core_apply */
} rl_listener_cfg;

struct rl_cfg {
    uint64_t generation;
    uint64_t seq; /* set by rl_core_apply: 1, 2, ... (generations are the operator's, maybe not increasing) */
    uint32_t max_header_bytes, max_headers, header_timeout_ms, idle_timeout_ms;
    uint32_t tunnel_idle_timeout_ms; /* 0: never */
    uint64_t max_body_bytes; /* 0: unlimited */
    rl_listener_cfg *listeners;
    uint32_t nlisteners;
    rl_rule *rules;
    uint32_t nrules;
    rl_cluster *clusters;
    uint32_t nclusters;
    atomic_int holders; /* workers that still use this config (set by rl_core_apply) */
    struct rl_cfg *_Atomic newer; /* the next published config: workers walk every one */
};

int rl_parse_addr(const char *ip, uint16_t port, struct sockaddr_storage *out, socklen_t *len);
int rl_addr_equal(const struct sockaddr_storage *a, socklen_t alen, const struct sockaddr_storage *b,
                  socklen_t blen);

#endif
