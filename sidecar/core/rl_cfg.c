/* rl_cfg: building and freeing the immutable config (see rl_cfg.h). Build-time only: no
 * function here runs on the data path. */
#include "rl_cfg.h"
#include "rl_http.h"

#include <arpa/inet.h>
#include <llhttp.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Grows *arr to hold n+1 items of size sz; returns the new item (zeroed) or NULL. */
static void *grow(void *arr_ptr, uint32_t *n, size_t sz)
{
    void **arr = arr_ptr;
    void *p = realloc(*arr, (*n + 1) * sz);
    if (!p)
        return NULL;
    *arr = p;
    void *item = (char *)p + (size_t)*n * sz;
    memset(item, 0, sz);
    (*n)++;
    return item;
}

static int dup_str(rl_str *s, const char *src)
{
    size_t n = strlen(src);
    s->p = malloc(n + 1);
    if (!s->p)
        return -1;
    memcpy(s->p, src, n + 1);
    s->len = (uint32_t)n;
    return 0;
}

int rl_parse_addr(const char *ip, uint16_t port, struct sockaddr_storage *out, socklen_t *len)
{
    memset(out, 0, sizeof(*out));
    struct sockaddr_in *a4 = (struct sockaddr_in *)out;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)out;
    if (inet_pton(AF_INET, ip, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons(port);
        *len = sizeof(*a4);
        return 0;
    }
    if (inet_pton(AF_INET6, ip, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons(port);
        *len = sizeof(*a6);
        return 0;
    }
    return -1;
}

int rl_addr_equal(const struct sockaddr_storage *a, socklen_t alen, const struct sockaddr_storage *b,
                  socklen_t blen)
{
    return alen == blen && memcmp(a, b, alen) == 0;
}

rl_cfg *rl_cfg_new(uint64_t generation)
{
    rl_cfg *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->generation = generation;
    c->max_header_bytes = 65536;
    c->max_headers = 100;
    c->header_timeout_ms = 10000;
    c->idle_timeout_ms = 60000;
    c->tunnel_idle_timeout_ms = 3600000;
    return c;
}

static void free_hdrs(rl_hdr *list, uint32_t n)
{
    for (uint32_t h = 0; h < n; h++) {
        free(list[h].name.p);
        free(list[h].value.p);
    }
    free(list);
}

void rl_cfg_free(rl_cfg *c)
{
    if (!c)
        return;
    for (uint32_t i = 0; i < c->nrules; i++) {
        rl_rule *r = &c->rules[i];
        for (uint32_t h = 0; h < r->nhostnames; h++)
            free(r->hostnames[h].p);
        free(r->hostnames);
        for (uint32_t m = 0; m < r->nmatches; m++) {
            free(r->matches[m].path.p);
            for (uint32_t h = 0; h < r->matches[m].nheaders; h++) {
                free(r->matches[m].headers[h].name.p);
                free(r->matches[m].headers[h].value.p);
            }
            free(r->matches[m].headers);
        }
        free(r->matches);
        free(r->backends);
        for (int op = 0; op < 3; op++) {
            free_hdrs(r->hdr_ops[op], r->nhdr_ops[op]);
            free_hdrs(r->resp_ops[op], r->nresp_ops[op]);
        }
        free(r->rewrite_prefix.p);
    }
    free(c->rules);
    for (uint32_t i = 0; i < c->nlisteners; i++)
        free(c->listeners[i].rules);
    free(c->listeners);
    for (uint32_t i = 0; i < c->nclusters; i++)
        free(c->clusters[i].eps);
    free(c->clusters);
    free(c);
}

int rl_cfg_set_limits(rl_cfg *c, uint32_t max_header_bytes, uint32_t max_headers,
                      uint32_t header_timeout_ms, uint32_t idle_timeout_ms)
{
    c->max_header_bytes = max_header_bytes;
    c->max_headers = max_headers;
    c->header_timeout_ms = header_timeout_ms;
    c->idle_timeout_ms = idle_timeout_ms;
    return 0;
}

int rl_cfg_set_body_limit(rl_cfg *c, uint64_t max_request_body_bytes)
{
    c->max_body_bytes = max_request_body_bytes;
    return 0;
}

int rl_cfg_set_tunnel_idle(rl_cfg *c, uint32_t tunnel_idle_timeout_ms)
{
    c->tunnel_idle_timeout_ms = tunnel_idle_timeout_ms;
    return 0;
}

int rl_cfg_add_cluster(rl_cfg *c, uint32_t slot, int lb, uint32_t connect_timeout_ms,
                       uint32_t idle_timeout_ms, uint32_t max_conns)
{
    if (slot >= RL_MAX_SLOTS_CFG)
        return -1;
    rl_cluster *cl = grow(&c->clusters, &c->nclusters, sizeof(*cl));
    if (!cl)
        return -1;
    cl->slot = slot;
    cl->lb = lb;
    cl->connect_timeout_ms = connect_timeout_ms;
    cl->idle_timeout_ms = idle_timeout_ms;
    cl->max_conns = max_conns ? max_conns : 1;
    return (int)c->nclusters - 1;
}

int rl_cfg_cluster_add_endpoint(rl_cfg *c, int cluster, const char *ip, uint16_t port)
{
    if (cluster < 0 || (uint32_t)cluster >= c->nclusters)
        return -1;
    rl_cluster *cl = &c->clusters[cluster];
    struct sockaddr_storage ss;
    socklen_t len;
    if (rl_parse_addr(ip, port, &ss, &len))
        return -1;
    rl_endpoint *ep = grow(&cl->eps, &cl->neps, sizeof(*ep));
    if (!ep)
        return -1;
    ep->addr = ss;
    ep->addrlen = len;
    return 0;
}

int rl_cfg_add_listener(rl_cfg *c, uint32_t slot, const char *ip, uint16_t port, int proto,
                        uint32_t noroute_slot)
{
    struct sockaddr_storage ss;
    socklen_t len;
    if (slot >= RL_MAX_SLOTS_CFG || noroute_slot >= RL_MAX_SLOTS_CFG || rl_parse_addr(ip, port, &ss, &len))
        return -1;
    rl_listener_cfg *l = grow(&c->listeners, &c->nlisteners, sizeof(*l));
    if (!l)
        return -1;
    l->slot = slot;
    l->noroute_slot = noroute_slot;
    l->proto = proto;
    l->addr = ss;
    l->addrlen = len;
    return (int)c->nlisteners - 1;
}

int rl_cfg_add_rule(rl_cfg *c, int listener, uint32_t slot, uint32_t request_timeout_ms,
                    uint32_t backend_timeout_ms, uint32_t retry_attempts, uint32_t retry_backoff_ms)
{
    if (listener < 0 || (uint32_t)listener >= c->nlisteners || slot >= RL_MAX_SLOTS_CFG)
        return -1;
    rl_listener_cfg *l = &c->listeners[listener];
    uint32_t *ids = realloc(l->rules, (l->nrules + 1) * sizeof(*ids));
    if (!ids)
        return -1;
    l->rules = ids;
    rl_rule *r = grow(&c->rules, &c->nrules, sizeof(*r));
    if (!r)
        return -1;
    l->rules[l->nrules++] = c->nrules - 1;
    r->slot = slot;
    r->listener = (uint32_t)listener;
    r->request_timeout_ms = request_timeout_ms;
    r->backend_timeout_ms = backend_timeout_ms;
    r->retry_attempts = retry_attempts;
    r->retry_backoff_ms = retry_backoff_ms;
    return (int)c->nrules - 1;
}

static rl_rule *rule_at(rl_cfg *c, int rule)
{
    return rule >= 0 && (uint32_t)rule < c->nrules ? &c->rules[rule] : NULL;
}

int rl_cfg_rule_add_hostname(rl_cfg *c, int rule, const char *hostname)
{
    rl_rule *r = rule_at(c, rule);
    rl_str *s = r ? grow(&r->hostnames, &r->nhostnames, sizeof(*s)) : NULL;
    return s ? dup_str(s, hostname) : -1;
}

static int method_id(const char *m)
{
    for (int i = 0; i < 64; i++) {
        const char *name = llhttp_method_name((llhttp_method_t)i);
        if (name && strcmp(name, m) == 0)
            return i;
    }
    return -2;
}

int rl_cfg_rule_add_match(rl_cfg *c, int rule, int path_type, const char *path, const char *method)
{
    rl_rule *r = rule_at(c, rule);
    rl_match *m = r ? grow(&r->matches, &r->nmatches, sizeof(*m)) : NULL;
    if (!m || dup_str(&m->path, path ? path : "/") || rl_http_path_normalize(m->path.p, &m->path.len, 1))
        return -1; /* normalized as requests are: "/%61pi" matches what "/api" does */
    m->path.p[m->path.len] = '\0';
    m->path_type = path_type;
    m->method = method ? method_id(method) : -1;
    if (m->method == -2)
        return -1;
    return (int)r->nmatches - 1;
}

int rl_cfg_match_add_header(rl_cfg *c, int rule, int match, const char *name, const char *value)
{
    rl_rule *r = rule_at(c, rule);
    if (!r || match < 0 || (uint32_t)match >= r->nmatches)
        return -1;
    rl_match *m = &r->matches[match];
    rl_hdr *h = grow(&m->headers, &m->nheaders, sizeof(*h));
    return h && !dup_str(&h->name, name) && !dup_str(&h->value, value) ? 0 : -1;
}

int rl_cfg_rule_add_backend(rl_cfg *c, int rule, int cluster, uint32_t weight)
{
    rl_rule *r = rule_at(c, rule);
    if (!r || cluster < 0 || (uint32_t)cluster >= c->nclusters)
        return -1;
    rl_backend *b = grow(&r->backends, &r->nbackends, sizeof(*b));
    if (!b)
        return -1;
    b->cluster = (uint32_t)cluster;
    b->weight = weight;
    r->total_weight += weight;
    return 0;
}

int rl_cfg_rule_retry_on(rl_cfg *c, int rule, int flag, int status)
{
    rl_rule *r = rule_at(c, rule);
    if (!r)
        return -1;
    r->retry_flags |= (uint32_t)flag;
    if (status >= 500 && status <= 599)
        r->retry_status[(status - 500) / 64] |= 1ull << ((status - 500) % 64);
    return 0;
}

/* Bodies stream through untouched, so the headers that frame them (and the ones the proxy manages
 * per connection) stay as the peer and the proxy wrote them, in both directions: an edited
 * request Content-Length would smuggle a second request past the proxy. */
static int proxy_owned(const char *name)
{
    static const char *const owned[] = {"content-length", "transfer-encoding", "connection", "keep-alive",
                                        "proxy-connection", "upgrade", "te", "trailer"};
    for (size_t i = 0; i < sizeof(owned) / sizeof(owned[0]); i++)
        if (strcasecmp(name, owned[i]) == 0)
            return 1;
    return 0;
}

/* What the proxy writes into heads must not end a line or the head early, whatever produced
 * the config (the agent validates first; this holds for any caller of the C API). */
static int head_safe(const char *s, const char *also_banned)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if ((*p < 0x20 && *p != '\t') || *p == 0x7f || strchr(also_banned, *p))
            return 0;
    return 1;
}

static int add_hdr_op(rl_hdr **ops, uint32_t *nops, int op, const char *name, const char *value)
{
    if (op < 0 || op > 2 || proxy_owned(name) || !*name || !head_safe(name, ": \t") ||
        (value && !head_safe(value, "")))
        return -1;
    rl_hdr *h = grow(&ops[op], &nops[op], sizeof(*h));
    return h && !dup_str(&h->name, name) && !dup_str(&h->value, value ? value : "") ? 0 : -1;
}

int rl_cfg_rule_header_op(rl_cfg *c, int rule, int op, const char *name, const char *value)
{
    rl_rule *r = rule_at(c, rule);
    if (op != RL_HDR_SET && strcasecmp(name, "host") == 0)
        return -1; /* a request has exactly one Host (RFC 9112 3.2): set replaces it */
    return r ? add_hdr_op(r->hdr_ops, r->nhdr_ops, op, name, value) : -1;
}

int rl_cfg_rule_resp_header_op(rl_cfg *c, int rule, int op, const char *name, const char *value)
{
    rl_rule *r = rule_at(c, rule);
    return r ? add_hdr_op(r->resp_ops, r->nresp_ops, op, name, value) : -1;
}

int rl_cfg_rule_rewrite_prefix(rl_cfg *c, int rule, const char *prefix)
{
    rl_rule *r = rule_at(c, rule);
    if (!r || prefix[0] != '/' || !head_safe(prefix, " \t") || dup_str(&r->rewrite_prefix, prefix))
        return -1;
    r->has_rewrite = 1;
    return 0;
}
