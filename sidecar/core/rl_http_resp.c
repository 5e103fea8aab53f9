/* rl_http_resp: the response head rewrite, without I/O: which header lines to drop (hop-by-hop,
 * and the names the rule's responseHeaderModifier sets or removes), and the head written again
 * without them plus the rule's set and add headers. Framing headers are never edited (rl_cfg
 * refuses filters that name them), but for an HTTP/1.0 client, which cannot read chunked coding
 * and gets the body without it (rl_http.c), Transfer-Encoding goes. */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "rl_http.h"

void rl_resp_head_reset(rl_resp_head *h)
{
    h->field_off = h->field_len = 0;
    h->value_off = h->value_len = 0;
    h->ndrop = h->ndropped = h->nconn_keepalive = 0;
    h->nconn_opts = 0;
    h->drop_open = h->in_connection = h->folded = h->drop_te = 0;
    h->name_end = h->piece_end = 0;
}

void rl_resp_head_free(rl_resp_head *h)
{
    free(h->drop);
    memset(h, 0, sizeof(*h));
}

void rl_resp_head_field(rl_resp_head *h, const char *base, uint32_t off, uint32_t len)
{
    if (!h->field_len && h->name_end) { /* more than one line end since the last value: a fold */
        uint32_t from = h->piece_end > h->name_end ? h->piece_end : h->name_end;
        const char *lf = memchr(base + from, '\n', off - from);
        if (lf && memchr(lf + 1, '\n', (size_t)(base + off - lf - 1)))
            h->folded = 1;
    }
    if (!h->field_len) { /* a new header line: it ends the dropped line before it */
        if (h->drop_open) {
            h->drop[h->ndrop - 1][1] = off;
            h->drop_open = 0;
        }
        h->field_off = off;
    }
    h->field_len += len; /* the head is contiguous from base, so pieces follow each other */
}

int rl_resp_head_drops(const rl_rule *r, const char *name, uint32_t n)
{
    static const char *const hop[] = {"connection", "keep-alive", "proxy-connection"};
    for (size_t i = 0; i < sizeof(hop) / sizeof(hop[0]); i++)
        if (n == strlen(hop[i]) && strncasecmp(name, hop[i], n) == 0)
            return 1;
    return r && (rl_hdr_named(r->resp_ops[RL_HDR_SET], r->nresp_ops[RL_HDR_SET], name, n) ||
                 rl_hdr_named(r->resp_ops[RL_HDR_REMOVE], r->nresp_ops[RL_HDR_REMOVE], name, n));
}

int rl_resp_head_field_done(rl_resp_head *h, const char *base, const rl_rule *r)
{
    uint32_t off = h->field_off, n = h->field_len;
    h->field_len = 0;
    h->name_end = off + n;
    h->piece_end = 0;
    int te = h->drop_te && n == 17 && strncasecmp(base + off, "transfer-encoding", 17) == 0;
    if (!te && !rl_resp_head_drops(r, base + off, n))
        return 0;
    h->ndropped++;
    h->in_connection = n == 10 && strncasecmp(base + off, "connection", 10) == 0;
    h->value_len = 0;
    if (h->ndrop && h->drop[h->ndrop - 1][1] == off) { /* right after a dropped line: extend it */
        h->drop_open = 1;
        return 0;
    }
    if (h->ndrop == h->drop_cap) { /* e.g. many Set-Cookie lines a filter removes */
        uint32_t cap = h->drop_cap ? h->drop_cap * 2 : 8;
        uint32_t(*d)[2] = realloc(h->drop, cap * sizeof(*d));
        if (!d)
            return -1;
        h->drop = d;
        h->drop_cap = cap;
    }
    h->drop[h->ndrop][0] = h->drop[h->ndrop][1] = off;
    h->ndrop++;
    h->drop_open = 1;
    return 0;
}

void rl_resp_head_value(rl_resp_head *h, const char *base, uint32_t off, uint32_t len)
{
    /* obs-fold: a piece that does not follow the one before it (llhttp skips the CRLF and the
     * whitespace), or a value that only starts on the next line. */
    if (h->piece_end ? off != h->piece_end : memchr(base + h->name_end, '\n', off - h->name_end) != NULL)
        h->folded = 1;
    h->piece_end = off + len;
    if (!h->in_connection)
        return;
    if (!h->value_len)
        h->value_off = off;
    h->value_len = off + len - h->value_off; /* to the end of the last piece (a folded value skips CRLF SP) */
}

static int is_ows(char c) { return c == ' ' || c == '\t'; }

void rl_resp_head_value_done(rl_resp_head *h, const char *base)
{
    if (!h->in_connection)
        return;
    h->in_connection = 0;
    const char *v = base + h->value_off;
    uint32_t n = h->value_len;
    while (n && is_ows(*v))
        v++, n--;
    while (n && is_ows(v[n - 1]))
        n--;
    if (n == 10 && strncasecmp(v, "keep-alive", 10) == 0)
        h->nconn_keepalive++;
    else if (!(n == 5 && strncasecmp(v, "close", 5) == 0)) { /* options naming other fields */
        if (h->nconn_opts < RL_ARRAY_LEN(h->conn_opts)) {
            h->conn_opts[h->nconn_opts][0] = (uint32_t)(v - base);
            h->conn_opts[h->nconn_opts][1] = n;
        }
        if (h->nconn_opts < UINT8_MAX)
            h->nconn_opts++; /* more than the array holds: the head is refused (502) */
    }
}

int rl_resp_head_changes(const rl_resp_head *h, const rl_rule *r)
{
    return h->ndropped > h->nconn_keepalive || h->folded ||
           (r && (r->nresp_ops[RL_HDR_SET] || r->nresp_ops[RL_HDR_ADD]));
}

#define W(p, n)                                                                                    \
    do {                                                                                           \
        if (rl_outq_write(w, q, (p), (uint32_t)(n)))                                               \
            return -1;                                                                             \
    } while (0)

/* base[from, to) with each bare LF written as CRLF: llhttp takes a lone LF as a line end (RFC
 * 9112 2.2 allows it), and lines the proxy appends after it must start on a line of their own. */
static int write_lines(rl_worker *w, rl_outq *q, const char *base, uint32_t from, uint32_t to)
{
    const char *lf;
    while (from < to && (lf = memchr(base + from, '\n', to - from))) {
        uint32_t i = (uint32_t)(lf - base);
        if (i && base[i - 1] == '\r') {
            W(base + from, i + 1 - from);
        } else {
            W(base + from, i - from);
            W("\r\n", 2);
        }
        from = i + 1;
    }
    W(base + from, to - from);
    return 0;
}

static int named_by_connection(const rl_resp_head *h, const char *base, const char *name, uint32_t n)
{
    if (rl_http_conn_option_kept(name, n))
        return 0;
    for (uint32_t i = 0; i < h->nconn_opts; i++)
        if (rl_http_conn_option(base + h->conn_opts[i][0], h->conn_opts[i][1], name, n))
            return 1;
    return 0;
}

/* The header lines base[from, tail) without the dropped ones and those the Connection options
 * name; a continuation line (obs-fold) goes with the line it continues. */
static int write_kept_lines(rl_worker *w, rl_outq *q, const rl_resp_head *h, const char *base, uint32_t from,
                            uint32_t tail)
{
    uint32_t k = 0;
    int drop = 0;
    while (from < tail) {
        const char *lf = memchr(base + from, '\n', tail - from);
        uint32_t end = lf ? (uint32_t)(lf - base) + 1 : tail;
        if (base[from] == ' ' || base[from] == '\t') { /* obs-fold: goes with the line it continues */
            if (!drop && write_lines(w, q, base, from, end))
                return -1;
            from = end;
            continue;
        }
        while (k < h->ndrop && h->drop[k][1] <= from)
            k++;
        drop = k < h->ndrop && h->drop[k][0] <= from;
        if (!drop && h->nconn_opts) {
            const char *colon = memchr(base + from, ':', end - from);
            drop = colon && named_by_connection(h, base, base + from, (uint32_t)(colon - (base + from)));
        }
        if (!drop && write_lines(w, q, base, from, end))
            return -1;
        from = end;
    }
    return 0;
}

int rl_http_build_response_head(rl_worker *w, rl_outq *q, rl_resp_head *h, const char *base, uint32_t end,
                                const rl_rule *r, int conn)
{
    /* A bare CR is invalid (RFC 9112 2.2) and llhttp's reading of it need not be the client's:
     * a head that has one is not edited line by line. */
    for (const char *cr = base; (cr = memchr(cr, '\r', (size_t)(base + end - cr))); cr++)
        if (cr + 1 == base + end || cr[1] != '\n')
            return -2;
    /* The empty line that ends the head: CRLF, or a bare LF. */
    uint32_t tail = end >= 2 && base[end - 2] == '\r' ? end - 2 : end - 1;
    /* obs-fold: RFC 9112 5.2 lets a proxy answer 502 instead of unfolding; folds in framing
     * fields are how responses get smuggled, so none is forwarded. */
    for (const char *lf = base; (lf = memchr(lf, '\n', (size_t)(base + tail - lf))) && lf + 1 < base + tail; lf++)
        if (lf[1] == ' ' || lf[1] == '\t')
            return -2;
    if (h->drop_open) {
        h->drop[h->ndrop - 1][1] = tail;
        h->drop_open = 0;
    }
    if (h->nconn_opts > RL_ARRAY_LEN(h->conn_opts))
        return -2; /* more Connection lines with options than any server sends */
    const char *lf = memchr(base, '\n', tail);
    uint32_t first = lf ? (uint32_t)(lf - base) + 1 : tail; /* after the status line */
    uint32_t from = 0;
    if (first >= 8 && memcmp(base, "HTTP/1.0", 8) == 0) { /* the proxy's own version */
        W("HTTP/1.1", 8);
        from = 8;
    }
    if (write_lines(w, q, base, from, first) || write_kept_lines(w, q, h, base, first, tail))
        return -1;
    if (rl_http_write_resp_ops(w, q, r))
        return -1;
    if (conn == RL_CONN_CLOSE)
        W("Connection: close\r\n", 19);
    else if (conn == RL_CONN_KEEP_ALIVE)
        W("Connection: keep-alive\r\n", 24);
    W("\r\n", 2);
    return 0;
}
