/* rl_http_build: bytes the proxy writes itself: the upstream request head (hop-by-hop headers
 * and those the client's Connection header names dropped, rule filters applied, X-Forwarded-For
 * appended) and generated error responses. */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "rl_http.h"

#define W(p, n)                                                                                    \
    do {                                                                                           \
        if (rl_outq_write(w, q, (p), (uint32_t)(n)))                                               \
            return -1;                                                                             \
    } while (0)
#define WS(lit) W(lit, sizeof(lit) - 1)

static int is_hop_by_hop(const char *b, rl_span n)
{
    static const char *const names[] = {"connection", "keep-alive", "proxy-connection", "te", "upgrade",
                                        "x-forwarded-for"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (rl_span_ieq(b, n, names[i], (uint32_t)strlen(names[i])))
            return 1;
    return 0;
}

/* Whitespace around list elements; CR and LF too, for a value folded over lines (obs-fold). */
static int is_ows(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

int rl_http_conn_option(const char *v, uint32_t vlen, const char *name, uint32_t n)
{
    for (const char *end = v + vlen; v < end;) {
        const char *comma = memchr(v, ',', (size_t)(end - v));
        const char *t = v, *te = comma ? comma : end;
        while (t < te && is_ows(*t))
            t++;
        while (te > t && is_ows(te[-1]))
            te--;
        if ((uint32_t)(te - t) == n && strncasecmp(t, name, n) == 0)
            return 1;
        v = comma ? comma + 1 : end;
    }
    return 0;
}

int rl_http_conn_option_kept(const char *name, uint32_t n)
{
    static const char *const kept[] = {"content-length", "transfer-encoding", "host", "upgrade"};
    for (size_t i = 0; i < sizeof(kept) / sizeof(kept[0]); i++)
        if (n == strlen(kept[i]) && strncasecmp(name, kept[i], n) == 0)
            return 1;
    return 0;
}

/* Whether a Connection header of the head lists the field `n` (RFC 9110 7.6.1: a proxy removes
 * the fields its client marked as hop-by-hop that way). The fields the proxy writes itself
 * (X-Forwarded-For, the rule's set and add) go out whatever the client listed. */
static int named_by_connection(const rl_http_head *h, rl_span n)
{
    const char *b = h->base;
    if (rl_http_conn_option_kept(b + n.off, n.len))
        return 0;
    for (uint32_t i = 0; i < h->nheaders; i++)
        if (rl_span_ieq(b, h->headers[i][0], "connection", 10) &&
            rl_http_conn_option(b + h->headers[i][1].off, h->headers[i][1].len, b + n.off, n.len))
            return 1;
    return 0;
}

static int in_list(const char *b, rl_span n, const rl_hdr *list, uint32_t count)
{
    for (uint32_t i = 0; i < count; i++)
        if (rl_span_ieq(b, n, list[i].name.p, list[i].name.len))
            return 1;
    return 0;
}

int rl_hdr_named(const rl_hdr *list, uint32_t count, const char *name, uint32_t n)
{
    for (uint32_t i = 0; i < count; i++)
        if (list[i].name.len == n && strncasecmp(list[i].name.p, name, n) == 0)
            return 1;
    return 0;
}

static int write_path(rl_worker *w, rl_outq *q, const rl_http_head *h, const rl_http_req *rq, const rl_rule *r)
{
    const char *path = rq->path.len ? h->base + rq->path.off : "/"; /* absolute-form without a path */
    uint32_t len = rq->path.len ? rq->path.len : 1;
    /* RFC 9112 3.2.4: OPTIONS for the server as a whole (asterisk-form, or absolute-form
     * without path and query) goes on as "*", never rewritten into a resource path. */
    if (rl_http_req_asterisk(h->base, rq) || (!rq->path.len && !rq->query.len && rq->method == HTTP_OPTIONS))
        WS("*");
    else if (!r->has_rewrite)
        W(path, len);
    else {
        /* The prefix of the match that chose the rule is what gets replaced (not the longest
         * of the rule's prefixes: that match may have failed on method or headers). */
        uint32_t cut = rq->match ? rq->match_cut : 0;
        if (cut > len)
            cut = 0; /* not a prefix of this path: cannot happen for the match that routed it */
        const rl_str *rp = &r->rewrite_prefix;
        const char *rest = path + cut;
        uint32_t rest_len = len - cut;
        uint32_t plen = rp->len;
        if (plen && rp->p[plen - 1] == '/' && rest_len && rest[0] == '/')
            plen--; /* "/" + "/users" must not become "//users" */
        if (plen)
            W(rp->p, plen);
        if (rest_len)
            W(rest, rest_len);
        if (!plen && !rest_len)
            WS("/");
    }
    W(h->base + rq->query.off, rq->query.len);
    return 0;
}

int rl_http_build_request(rl_worker *w, rl_outq *q, const rl_http_head *h, const rl_http_req *rq,
                          const llhttp_t *p, const rl_rule *r, const char *client_ip)
{
    const char *b = h->base;
    const char *m = llhttp_method_name((llhttp_method_t)rq->method);
    W(m, strlen(m));
    WS(" ");
    if (write_path(w, q, h, rq, r))
        return -1;
    /* An HTTP/1.0 client's request goes up as 1.0 (as nginx sends all of them): the upstream
     * then frames the response so that client can read it (no chunked coding, no 1xx);
     * Connection: keep-alive below keeps the upstream connection poolable. */
    int http10 = p->http_major == 1 && p->http_minor == 0;
    if (http10)
        WS(" HTTP/1.0\r\n");
    else
        WS(" HTTP/1.1\r\n");
    const rl_hdr *set = r->hdr_ops[RL_HDR_SET], *rem = r->hdr_ops[RL_HDR_REMOVE];
    uint32_t nset = r->nhdr_ops[RL_HDR_SET], nrem = r->nhdr_ops[RL_HDR_REMOVE];
    /* The rule's set or remove of X-Forwarded-For replaces the proxy's own. */
    int xff_done = rl_hdr_named(set, nset, "x-forwarded-for", 15) || rl_hdr_named(rem, nrem, "x-forwarded-for", 15);
    int conn_options = 0;
    for (uint32_t i = 0; i < h->nheaders; i++) /* options beyond keep-alive/close are rare */
        if (rl_span_ieq(b, h->headers[i][0], "connection", 10) && !rl_span_ieq(b, h->headers[i][1], "keep-alive", 10) &&
            !rl_span_ieq(b, h->headers[i][1], "close", 5))
            conn_options = 1;
    int host_seen = 0;
    for (uint32_t i = 0; i < h->nheaders; i++) {
        rl_span n = h->headers[i][0], v = h->headers[i][1];
        host_seen |= rl_span_ieq(b, n, "host", 4);
        if (conn_options && named_by_connection(h, n))
            continue;
        if (rl_span_ieq(b, n, "x-forwarded-for", 15)) {
            if (xff_done)
                continue;
            /* Every X-Forwarded-For line of the client in one, then the client's address. */
            WS("X-Forwarded-For: ");
            for (uint32_t j = i; j < h->nheaders; j++) {
                rl_span vj = h->headers[j][1];
                if (rl_span_ieq(b, h->headers[j][0], "x-forwarded-for", 15) && vj.len) {
                    W(b + vj.off, vj.len);
                    WS(", ");
                }
            }
            W(client_ip, strlen(client_ip));
            WS("\r\n");
            xff_done = 1;
            continue;
        }
        if (is_hop_by_hop(b, n) && !(rq->upgrade && rl_span_ieq(b, n, "upgrade", 7)))
            continue;
        if (in_list(b, n, set, nset) || in_list(b, n, rem, nrem))
            continue;
        if (rq->authority.len && rl_span_ieq(b, n, "host", 4))
            v = rq->authority; /* RFC 9112 3.2.2: from the absolute-form target */
        W(b + n.off, n.len);
        WS(": ");
        W(b + v.off, v.len);
        WS("\r\n");
    }
    /* RFC 9112 3.2.2: a proxy makes Host from an absolute-form target (an HTTP/1.0 request
     * may have come without one), unless the rule sets it (the config allows no other edit). */
    if (!host_seen && rq->authority.len && !rl_hdr_named(set, nset, "host", 4)) {
        WS("Host: ");
        W(b + rq->authority.off, rq->authority.len);
        WS("\r\n");
    }
    for (int op = RL_HDR_SET; op <= RL_HDR_ADD; op++)
        for (uint32_t i = 0; i < r->nhdr_ops[op]; i++) {
            const rl_hdr *hd = &r->hdr_ops[op][i];
            W(hd->name.p, hd->name.len);
            WS(": ");
            W(hd->value.p, hd->value.len);
            WS("\r\n");
        }
    if (!xff_done) {
        WS("X-Forwarded-For: ");
        W(client_ip, strlen(client_ip));
        WS("\r\n");
    }
    if (rq->upgrade)
        WS("Connection: upgrade\r\n");
    else if (http10)
        WS("Connection: keep-alive\r\n");
    WS("\r\n");
    return 0;
}

static const char *reason(int status)
{
    switch (status) {
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 413: return "Content Too Large";
    case 431: return "Request Header Fields Too Large";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return "Error";
    }
}

int rl_http_write_resp_ops(rl_worker *w, rl_outq *q, const rl_rule *r)
{
    for (int op = RL_HDR_SET; r && op <= RL_HDR_ADD; op++)
        for (uint32_t i = 0; i < r->nresp_ops[op]; i++) {
            const rl_hdr *hd = &r->resp_ops[op][i];
            W(hd->name.p, hd->name.len);
            WS(": ");
            W(hd->value.p, hd->value.len);
            WS("\r\n");
        }
    return 0;
}

/* One of the proxy's own fields, unless the rule sets or removes it. */
static int write_own_field(rl_worker *w, rl_outq *q, const rl_rule *r, const char *name, const char *value)
{
    uint32_t n = (uint32_t)strlen(name);
    if (rl_resp_head_drops(r, name, n))
        return 0;
    W(name, n);
    WS(": ");
    W(value, strlen(value));
    WS("\r\n");
    return 0;
}

int rl_http_build_error(rl_worker *w, rl_outq *q, int status, int conn, int head_only, const rl_rule *r)
{
    char line[64], length[16];
    const char *why = reason(status);
    int n = snprintf(line, sizeof(line), "HTTP/1.1 %d %s\r\n", status, why);
    W(line, n);
    snprintf(length, sizeof(length), "%zu", strlen(why) + 1);
    if (write_own_field(w, q, r, "content-type", "text/plain") || write_own_field(w, q, r, "content-length", length) ||
        write_own_field(w, q, r, "server", "ringlane"))
        return -1;
    /* RFC 9110 15.5.6: a 405 lists what is allowed (only CONNECT is refused: every other
     * method goes upstream). */
    if (status == 405 && write_own_field(w, q, r, "allow", "GET, HEAD, POST, PUT, DELETE, OPTIONS, TRACE, PATCH"))
        return -1;
    /* The matched rule's responseHeaderModifier applies to the proxy's own answers for it too
     * (a 502/503/504, a 413): security and CORS headers belong on those as well, as in Envoy. */
    if (rl_http_write_resp_ops(w, q, r))
        return -1;
    if (conn == RL_CONN_CLOSE)
        WS("connection: close\r\n");
    else if (conn == RL_CONN_KEEP_ALIVE)
        WS("connection: keep-alive\r\n");
    WS("\r\n");
    if (!head_only) { /* a HEAD's answer has no body (RFC 9110 9.3.2) */
        W(why, strlen(why));
        WS("\n");
    }
    return 0;
}
