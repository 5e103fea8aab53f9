/* rl_http_head: request-head spans recorded from llhttp callbacks, request facts, and route
 * matching with Gateway API precedence. No I/O here. */
#include <ctype.h>
#include <string.h>
#include <strings.h>

#include "rl_http.h"

/* NULL after the head: llhttp reports a chunked body's trailer fields through the same
 * callbacks, and trailers go upstream as they are, with the body. */
static rl_http_head *head_of(llhttp_t *p) { return *(rl_http_head **)p->data; }

/* llhttp may report one token in several pieces: they are contiguous from base, so extend. */
static void extend(rl_span *s, const rl_http_head *h, const char *at, size_t len)
{
    uint32_t off = (uint32_t)(at - h->base);
    if (!s->len)
        s->off = off;
    s->len = off + (uint32_t)len - s->off;
}

static int on_url(llhttp_t *p, const char *at, size_t len)
{
    rl_http_head *h = head_of(p);
    if (!h)
        return 0;
    extend(&h->url, h, at, len);
    return 0;
}

static int on_field(llhttp_t *p, const char *at, size_t len)
{
    rl_http_head *h = head_of(p);
    if (!h)
        return 0;
    extend(&h->field, h, at, len);
    return 0;
}

static int on_value(llhttp_t *p, const char *at, size_t len)
{
    rl_http_head *h = head_of(p);
    if (!h)
        return 0;
    extend(&h->value, h, at, len);
    h->in_value = 1;
    return 0;
}

static int on_value_complete(llhttp_t *p)
{
    rl_http_head *h = head_of(p);
    if (!h)
        return 0;
    /* obs-fold (a value continued on the next line) is a smuggling shape llhttp 8 accepts. */
    if (h->value.len && (memchr(h->base + h->value.off, '\n', h->value.len) ||
                         memchr(h->base + h->value.off, '\r', h->value.len)))
        return -1;
    /* RFC 9110 5.5: trailing whitespace is not part of the value (llhttp keeps it). */
    while (h->value.len && (h->base[h->value.off + h->value.len - 1] == ' ' ||
                            h->base[h->value.off + h->value.len - 1] == '\t'))
        h->value.len--;
    if (!h->field.len) /* ": value": no name (llhttp 8 takes it) */
        return -1;
    if (h->nheaders >= h->max_headers) {
        h->too_many = 1; /* llhttp reports any callback error as its own code: keep ours */
        return -1;
    }
    h->headers[h->nheaders][0] = h->field;
    h->headers[h->nheaders][1] = h->value;
    h->nheaders++;
    memset(&h->field, 0, sizeof(h->field));
    memset(&h->value, 0, sizeof(h->value));
    h->in_value = 0;
    return 0;
}

/* An empty header value never calls on_header_value: complete it when the field completes. */
static int on_field_complete(llhttp_t *p)
{
    rl_http_head *h = head_of(p);
    if (h)
        h->in_value = 0;
    return 0;
}

static int on_headers_complete(llhttp_t *p)
{
    (void)p;
    return HPE_PAUSED; /* hand control back: the body is routed after the head */
}

static int on_message_complete(llhttp_t *p)
{
    (void)p;
    return HPE_PAUSED; /* the next pipelined request waits for this response */
}

int rl_http_on_chunk_header(llhttp_t *p) { return p->content_length ? 0 : HPE_PAUSED; }

/* RFC 9112 2.2, 5.2, 7.1.2: every line ends in CRLF; a line that starts with whitespace
 * (obs-fold) or a colon (no name) is refused, as in a head. */
static int trailer_bytes_ok(rl_trailer_scan *t, const char *b, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint8_t ch = (uint8_t)b[i];
        if (t->line_start && (ch == ' ' || ch == '\t' || ch == ':'))
            return 0;
        if ((ch == '\n') != (t->prev == '\r'))
            return 0; /* a bare LF, or a CR not followed by LF */
        t->line_start = ch == '\n';
        t->prev = ch;
    }
    return 1;
}

llhttp_errno_t rl_http_execute(llhttp_t *p, rl_trailer_scan *t, const char *data, size_t len)
{
    const char *at = data, *end = data + len;
    for (;;) {
        llhttp_errno_t err = llhttp_execute(p, at, (size_t)(end - at));
        const char *stop = err == HPE_OK ? end : llhttp_get_error_pos(p);
        if (t->active && (!trailer_bytes_ok(t, at, (size_t)(stop - at)) || rl_trailer_count(t, (size_t)(stop - at))))
            return HPE_INVALID_HEADER_TOKEN;
        /* The last chunk's size line ends here: the trailer section follows. */
        if (err != HPE_PAUSED || t->active || strcmp(llhttp_get_error_reason(p), "on_chunk_header pause") != 0)
            return err;
        llhttp_resume(p);
        t->active = t->line_start = 1;
        t->prev = '\n';
        at = stop;
    }
}

void rl_http_head_settings(llhttp_settings_t *s)
{
    llhttp_settings_init(s);
    s->on_url = on_url;
    s->on_header_field = on_field;
    s->on_header_value = on_value;
    s->on_header_field_complete = on_field_complete;
    s->on_header_value_complete = on_value_complete;
    s->on_headers_complete = on_headers_complete;
    s->on_message_complete = on_message_complete;
    s->on_chunk_header = rl_http_on_chunk_header;
}

int rl_span_ieq(const char *base, rl_span s, const char *lit, uint32_t n)
{
    return s.len == n && strncasecmp(base + s.off, lit, n) == 0;
}

/* The host of a Host value or authority, without the port. */
static rl_span host_part(const char *b, rl_span value)
{
    const char *v = b + value.off;
    if (value.len && v[0] == '[') { /* [v6]:port */
        const char *rb = memchr(v, ']', value.len);
        value.len = rb ? (uint32_t)(rb - v + 1) : value.len;
    } else {
        const char *colon = memchr(v, ':', value.len);
        if (colon)
            value.len = (uint32_t)(colon - v);
        if (value.len > 1 && v[value.len - 1] == '.') /* the root label: same name (RFC 1034 3.1) */
            value.len--;
    }
    return value;
}

/* An authority of an http URI (RFC 3986 3.2.2-3.2.3): a bracketed IP literal or a non-empty
 * reg-name / IPv4 address, then an optional ":" and digits. The proxy makes Host from it. */
static int valid_authority(const char *v, uint32_t n)
{
    uint32_t i = 0;
    if (n && v[0] == '[') {
        for (i = 1; i < n && v[i] != ']'; i++)
            if (!isxdigit((unsigned char)v[i]) && v[i] != ':' && v[i] != '.')
                return 0;
        if (i >= n || i == 1)
            return 0; /* "[" unterminated, or "[]" */
        i++;
    } else {
        for (; i < n && v[i] != ':'; i++)
            if (!isalnum((unsigned char)v[i]) && (!v[i] || !strchr("-._~!$&'()*+,;=%", v[i])))
                return 0;
        if (i == 0)
            return 0; /* no host: ":80" */
    }
    if (i < n && v[i++] != ':')
        return 0; /* "[::1]junk" */
    for (; i < n; i++)
        if (!isdigit((unsigned char)v[i]))
            return 0;
    return 1;
}

/* The length of an "http://" or "https://" prefix (any case, RFC 9110 4.2.3), else 0: only
 * those schemes name a host a reverse proxy could serve ("ftp://h/x" is no request of ours). */
static uint32_t http_scheme_len(const char *u, uint32_t n)
{
    if (n >= 7 && strncasecmp(u, "http://", 7) == 0)
        return 7;
    return n >= 8 && strncasecmp(u, "https://", 8) == 0 ? 8 : 0;
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = (char)(c | 0x20);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

static int unreserved(int c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || (c && strchr("-._~", c));
}

int rl_http_path_normalize(char *p, uint32_t *len, int merge_slashes)
{
    static const char hex[] = "0123456789ABCDEF";
    uint32_t n = *len, o = 0;
    for (uint32_t i = 0; i < n; i++) {
        char ch = p[i];
        if (ch == '%') {
            int hi = n - i >= 3 ? hex_value(p[i + 1]) : -1, lo = n - i >= 3 ? hex_value(p[i + 2]) : -1;
            if (hi < 0 || lo < 0)
                return -1;
            i += 2;
            if (!unreserved(hi << 4 | lo)) { /* o <= i - 2: the three bytes written were all read */
                p[o++] = '%';
                p[o++] = hex[hi];
                p[o++] = hex[lo];
                continue;
            }
            ch = (char)(hi << 4 | lo);
        }
        if (merge_slashes && ch == '/' && o && p[o - 1] == '/')
            continue;
        p[o++] = ch;
    }
    *len = o;
    return 0;
}

/* The length of a segment separator at p: '/', or an encoded '/' or '\' (3), which a backend
 * that decodes them reads as one; 0 when p is none. */
static int separator(const char *p, const char *e)
{
    if (*p == '/')
        return 1;
    return e - p >= 3 && p[0] == '%' && ((p[1] == '2' && p[2] == 'F') || (p[1] == '5' && p[2] == 'C')) ? 3 : 0;
}

/* A "." or ".." segment (after normalizing, so also one that came as %2e), between separators
 * of any kind: the upstream resolves it (RFC 3986 5.2.4), so "/public/../admin" or
 * "/public/..%2Fadmin" would be routed as /public and served as /admin. */
static int has_dot_segment(const char *p, uint32_t n)
{
    const char *e = p + n, *seg = p;
    for (const char *q = p; q <= e; q++) {
        int sep = q < e ? separator(q, e) : 1;
        if (!sep)
            continue;
        if ((q - seg == 1 && seg[0] == '.') || (q - seg == 2 && seg[0] == '.' && seg[1] == '.'))
            return 1;
        q += sep - 1;
        seg = q + 1;
    }
    return 0;
}

void rl_http_req_facts(const rl_http_head *h, const llhttp_t *p, rl_http_req *rq)
{
    memset(rq, 0, sizeof(*rq));
    rq->method = llhttp_get_method((llhttp_t *)p);
    const char *b = h->base;
    rl_span url = h->url;
    int bad_authority = 0;
    /* absolute-form (http://host/path?query): path and query follow the authority; the
     * path may be empty (http://host?q), written upstream as "/" */
    uint32_t scheme = http_scheme_len(b + url.off, url.len);
    if (scheme) {
        const char *e = b + url.off + url.len, *host = b + url.off + scheme, *end = host;
        while (end < e && *end != '/' && *end != '?')
            end++;
        rq->authority.off = (uint32_t)(host - b);
        rq->authority.len = (uint32_t)(end - host);
        /* RFC 9110 4.2.1, 4.2.4: an http URI needs a host (not only a port, nor "[]"), and
         * userinfo is an error ('@' is no authority character) */
        bad_authority = !valid_authority(host, rq->authority.len);
        url.off = (uint32_t)(end - b);
        url.len = (uint32_t)(e - end);
    }
    const char *q = memchr(b + url.off, '?', url.len);
    rq->path.off = url.off;
    rq->path.len = q ? (uint32_t)(q - (b + url.off)) : url.len;
    rq->query.off = rq->path.off + rq->path.len;
    rq->query.len = url.len - rq->path.len;
    /* Routed and sent up normalized, so a backend reads the path that was routed. The head's
     * bytes are the worker's own (a receive buffer or the connection's copy); this only
     * shortens the path in place. */
    int bad_path = 0;
    if (rq->path.len && b[rq->path.off] == '/') {
        bad_path = rl_http_path_normalize((char *)b + rq->path.off, &rq->path.len, 0) ||
                   has_dot_segment(b + rq->path.off, rq->path.len);
    }
    int hosts = 0, bad_host_value = 0, te_lines = 0;
    for (uint32_t i = 0; i < h->nheaders; i++) {
        rl_span name = h->headers[i][0], value = h->headers[i][1];
        if (rl_span_ieq(b, name, "host", 4) && hosts++ == 0) {
            rq->host = host_part(b, value);
            /* RFC 9112 3.2: an invalid Host value is a 400 ("a.example/x" would route as *.example) */
            bad_host_value = value.len && !valid_authority(b + value.off, value.len);
        }
        else if (rl_span_ieq(b, name, "upgrade", 7))
            rq->upgrade = 1;
        else if (rl_span_ieq(b, name, "transfer-encoding", 17))
            te_lines++;
        else if (rl_span_ieq(b, name, "expect", 6) && rl_span_ieq(b, h->headers[i][1], "100-continue", 12))
            rq->expect_continue = 1;
    }
    /* RFC 9112 3.2.2: a proxy takes the host from an absolute-form target, not from Host
     * (which must still be present and single; it is replaced upstream). */
    if (rq->authority.len)
        rq->host = host_part(b, rq->authority);
    /* RFC 9112 3.2: an HTTP/1.1 request needs exactly one Host; two could route on one and be
     * served on the other. */
    int bad_host = hosts > 1 || (hosts == 0 && p->http_major == 1 && p->http_minor >= 1) || bad_host_value;
    /* RFC 9112 6.1: Transfer-Encoding in an HTTP/1.0 message means faulty framing; its
     * request goes up as 1.0, where an upstream could frame the body differently. */
    int te10 = p->http_minor == 0 && (p->flags & F_TRANSFER_ENCODING);
    /* RFC 9112 6.3: a request's Transfer-Encoding must end in chunked, and comes without a
     * Content-Length. llhttp only says so once the head has been routed and sent up, and lets
     * an empty value pass (forwarded, an upstream could frame the body by it). */
    int bad_te = te_lines && (!(p->flags & F_CHUNKED) || (p->flags & F_CONTENT_LENGTH));
    /* llhttp also reads RTSP/1.0 and ICE/1.0 request lines: they are no HTTP to rewrite. */
    const char *proto = b + h->url.off + h->url.len;
    int not_http = proto[0] != ' ' || memcmp(proto + 1, "HTTP/", 5) != 0;
    /* Only HTTP/1.x is relayed: an HTTP/0.9 line or a stray HTTP/2 preface method cannot be
     * rewritten into a request the upstream would read the same way. */
    if (p->http_major != 1)
        rq->reject = 505;
    else if (rq->method == HTTP_CONNECT)
        rq->reject = 405; /* a reverse proxy opens no tunnels to arbitrary hosts */
    /* RFC 9112 3.2: no fragment in a request target; a backend that drops it would serve
     * another path than the one routed. */
    else if (bad_host || bad_authority || te10 || bad_te || not_http || rq->method == HTTP_PRI || memchr(b + h->url.off, '#', h->url.len) ||
             /* RFC 9112 3.2: origin-form starts with '/'; asterisk-form is for OPTIONS only */
             (rq->path.len && b[rq->path.off] != '/' && !(rl_http_req_asterisk(b, rq) && rq->method == HTTP_OPTIONS)) ||
             bad_path)
        rq->reject = 400;
    /* RFC 9110 7.8: Upgrade in an HTTP/1.0 request is ignored (dropped as hop-by-hop). */
    rq->upgrade = rq->upgrade && (p->flags & F_CONNECTION_UPGRADE) && p->http_minor >= 1;
    rq->has_body = (p->flags & F_CHUNKED) || ((p->flags & F_CONTENT_LENGTH) && p->content_length > 0);
    rq->keepalive = llhttp_should_keep_alive(p);
    int m = rq->method;
    rq->idempotent = m == HTTP_GET || m == HTTP_HEAD || m == HTTP_OPTIONS || m == HTTP_PUT ||
                     m == HTTP_DELETE || m == HTTP_TRACE;
}

/* How well the request's host matches the rule: -1 not at all, 0 the rule has no hostnames,
 * then wildcards (longer suffix first), then exact names (Gateway API precedence). */
static int64_t host_rank(const rl_rule *r, const char *b, rl_span host)
{
    if (!r->nhostnames)
        return 0;
    int64_t best = -1;
    for (uint32_t i = 0; i < r->nhostnames; i++) {
        const rl_str *hn = &r->hostnames[i];
        int64_t rank = -1;
        if (hn->len > 2 && hn->p[0] == '*' && hn->p[1] == '.') {
            uint32_t sl = hn->len - 1; /* ".example.com" */
            if (host.len > sl && strncasecmp(b + host.off + host.len - sl, hn->p + 1, sl) == 0)
                rank = 1 + sl;
        } else if (host.len == hn->len && strncasecmp(b + host.off, hn->p, hn->len) == 0) {
            rank = (1 << 16) + hn->len;
        }
        best = rank > best ? rank : best;
    }
    return best;
}

/* The request bytes that spell the rule's path, or -1 when they do not. Read as a backend that
 * decodes %2F (or %5C) and merges slashes would (nginx does both for its locations): a '/' of
 * the rule takes a run of separators, so "//admin" and "/%2Fadmin" are under /admin. Rule paths
 * have no "//". */
static int64_t spelled(const char *rule, uint32_t rl, const char *path, uint32_t len)
{
    const char *e = path + len;
    uint32_t j = 0;
    for (uint32_t i = 0; i < rl; i++) {
        if (rule[i] != '/') {
            if (j >= len || path[j] != rule[i])
                return -1;
            j++;
            continue;
        }
        int sep = j < len ? separator(path + j, e) : 0;
        if (!sep)
            return -1;
        do
            j += (uint32_t)sep;
        while (j < len && (sep = separator(path + j, e)));
    }
    return j;
}

/* Whether the match takes the path; *cut gets the request bytes its prefix covers (what a
 * prefix rewrite replaces). PathPrefix matches whole segments: /api matches /api, /api/,
 * /api//x and /api%2Fx, never /apix. */
static int path_matches(const rl_match *m, const char *path, uint32_t len, uint32_t *cut)
{
    uint32_t pl = m->path.len;
    *cut = 0;
    if (m->path_type == RL_PATH_EXACT)
        return spelled(m->path.p, pl, path, len) == (int64_t)len;
    while (pl > 1 && m->path.p[pl - 1] == '/')
        pl--;
    if (pl == 1 && m->path.p[0] == '/')
        return 1;
    int64_t j = spelled(m->path.p, pl, path, len);
    if (j < 0 || (j < len && !separator(path + j, path + len)))
        return 0;
    *cut = (uint32_t)j;
    return 1;
}

static int headers_match(const rl_match *m, const rl_http_head *h)
{
    for (uint32_t i = 0; i < m->nheaders; i++) {
        const rl_hdr *want = &m->headers[i];
        int found = 0;
        for (uint32_t k = 0; k < h->nheaders && !found; k++) {
            if (rl_span_ieq(h->base, h->headers[k][0], want->name.p, want->name.len)) {
                rl_span v = h->headers[k][1];
                found = v.len == want->value.len && memcmp(h->base + v.off, want->value.p, v.len) == 0;
                if (!found)
                    break; /* the first occurrence decides */
            }
        }
        if (!found)
            return 0;
    }
    return 1;
}

/* Gateway API precedence: the most specific hostname, then exact path, then longest prefix,
 * then method, then most header matches, then config order. */
static uint64_t match_score(const rl_match *m, int64_t host)
{
    return ((uint64_t)(host & 0x1ffff) << 41) | ((uint64_t)(m->path_type == RL_PATH_EXACT) << 40) |
           ((uint64_t)(m->path.len & 0xfffff) << 20) | ((uint64_t)(m->method >= 0) << 16) | (m->nheaders & 0xffff);
}

const rl_rule *rl_http_route(const rl_cfg *cfg, const rl_listener_cfg *lc, const rl_http_head *h, rl_http_req *rq)
{
    const rl_rule *best = NULL;
    uint64_t best_score = 0;
    const char *path = rq->path.len ? h->base + rq->path.off : "/"; /* http://host?q: written up as "/" */
    uint32_t path_len = rq->path.len ? rq->path.len : 1;
    for (uint32_t i = 0; i < lc->nrules; i++) {
        const rl_rule *r = &cfg->rules[lc->rules[i]];
        int64_t host = host_rank(r, h->base, rq->host);
        if (host < 0)
            continue;
        for (uint32_t k = 0; k < r->nmatches; k++) {
            const rl_match *m = &r->matches[k];
            uint32_t cut;
            if ((m->method >= 0 && m->method != rq->method) || !path_matches(m, path, path_len, &cut) ||
                !headers_match(m, h))
                continue;
            uint64_t score = match_score(m, host) + 1;
            if (score > best_score) {
                best = r;
                best_score = score;
                rq->match = m;
                rq->match_cut = cut;
            }
        }
    }
    return best;
}
