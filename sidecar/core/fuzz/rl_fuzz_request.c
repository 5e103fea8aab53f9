/* libFuzzer target for the request path: llhttp parsing with Ringlane's span callbacks, request
 * facts, routing, and the upstream head rewrite; and, for inputs that start with "HTTP/", the
 * response head rewrite (dropped lines, responseHeaderModifier) checked against the head it
 * must produce. Built by `make fuzz` (clang, ASan + UBSan). */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "rl_http.h"

/* The harness has no engine: every buffer it uses is a transmit buffer. */
void rl_buf_unref(rl_worker *w, uint16_t bid)
{
    if (--w->bufs.refs[bid] == 0)
        w->bufs.tx_free[w->bufs.ntx_free++] = bid;
}

static rl_worker *fuzz_worker(void)
{
    static rl_worker *w;
    if (w)
        return w;
    w = calloc(1, sizeof(*w));
    if (rl_bufs_init(&w->bufs, 16384, 0, 64, 0))
        abort();
    return w;
}

/* Two rules: a prefix route with a header match and a rewrite, and an exact route by host. */
static rl_cfg *fuzz_cfg(void)
{
    static rl_cfg *c;
    if (c)
        return c;
    c = rl_cfg_new(1);
    int cl = rl_cfg_add_cluster(c, 0, RL_LB_ROUND_ROBIN, 1000, 60000, 16);
    rl_cfg_cluster_add_endpoint(c, cl, "127.0.0.1", 9);
    int l = rl_cfg_add_listener(c, 0, "127.0.0.1", 8080, RL_PROTO_HTTP, 1);
    int r = rl_cfg_add_rule(c, l, 2, 5000, 1000, 2, 10);
    int m = rl_cfg_rule_add_match(c, r, RL_PATH_PREFIX, "/api", NULL);
    rl_cfg_match_add_header(c, r, m, "x-canary", "1");
    rl_cfg_rule_add_match(c, r, RL_PATH_PREFIX, "/v2/", "GET");
    rl_cfg_rule_add_backend(c, r, cl, 1);
    rl_cfg_rule_header_op(c, r, RL_HDR_SET, "x-env", "prod");
    rl_cfg_rule_header_op(c, r, RL_HDR_REMOVE, "x-debug", NULL);
    rl_cfg_rule_rewrite_prefix(c, r, "/");
    int r2 = rl_cfg_add_rule(c, l, 3, 0, 0, 0, 0);
    rl_cfg_rule_add_hostname(c, r2, "*.example.com");
    rl_cfg_rule_add_match(c, r2, RL_PATH_EXACT, "/", NULL);
    rl_cfg_rule_add_backend(c, r2, cl, 1);
    /* A third rule, only for the response path: a responseHeaderModifier. */
    int r3 = rl_cfg_add_rule(c, l, 4, 0, 0, 0, 0);
    rl_cfg_rule_add_match(c, r3, RL_PATH_PREFIX, "/resp", NULL);
    rl_cfg_rule_add_backend(c, r3, cl, 1);
    rl_cfg_rule_resp_header_op(c, r3, RL_HDR_SET, "X-Env", "prod");
    rl_cfg_rule_resp_header_op(c, r3, RL_HDR_ADD, "x-added", "a1");
    rl_cfg_rule_resp_header_op(c, r3, RL_HDR_REMOVE, "server", NULL);
    rl_cfg_rule_resp_header_op(c, r3, RL_HDR_REMOVE, "X-SECRET", NULL);
    return c;
}

/* ---- the response path ---- */

#define MAX_NAMES 256

/* Field names of one parsed response head, as spans of base (pieces of one name are contiguous). */
typedef struct names {
    const char *base;
    uint32_t off[MAX_NAMES], len[MAX_NAMES];
    uint32_t n, piece;
    int in_head;
    rl_resp_head rh; /* for the original head: the rewrite's bookkeeping, as rl_http.c feeds it */
    const rl_rule *rule;
} names;

static int nm_begin(llhttp_t *p)
{
    names *f = p->data;
    f->in_head = 1;
    rl_resp_head_reset(&f->rh);
    return 0;
}

static int nm_field(llhttp_t *p, const char *at, size_t len)
{
    names *f = p->data;
    if (!f->in_head)
        return 0;
    uint32_t off = (uint32_t)(at - f->base);
    if (!f->piece && f->n < MAX_NAMES) { /* past MAX_NAMES, n stays there: the head is skipped */
        f->off[f->n] = off;
        f->len[f->n] = 0;
    }
    if (f->n < MAX_NAMES)
        f->len[f->n] = off + (uint32_t)len - f->off[f->n];
    f->piece = 1;
    if (f->rule)
        rl_resp_head_field(&f->rh, f->base, off, (uint32_t)len);
    return 0;
}

static int nm_field_done(llhttp_t *p)
{
    names *f = p->data;
    if (!f->in_head)
        return 0;
    f->piece = 0;
    if (f->n < MAX_NAMES)
        f->n++;
    return f->rule && rl_resp_head_field_done(&f->rh, f->base, f->rule) ? -1 : 0;
}

static int nm_headers_done(llhttp_t *p)
{
    ((names *)p->data)->in_head = 0;
    return HPE_PAUSED;
}

static void names_settings(llhttp_settings_t *s)
{
    llhttp_settings_init(s);
    s->on_message_begin = nm_begin;
    s->on_header_field = nm_field;
    s->on_header_field_complete = nm_field_done;
    s->on_headers_complete = nm_headers_done;
}

static int is(const names *f, uint32_t i, const char *lit)
{
    return f->len[i] == strlen(lit) && strncasecmp(f->base + f->off[i], lit, f->len[i]) == 0;
}

/* What the proxy drops, said independently of rl_resp_head_drops: hop-by-hop, set and removed. */
static int dropped(const names *f, uint32_t i)
{
    return is(f, i, "connection") || is(f, i, "keep-alive") || is(f, i, "proxy-connection") || is(f, i, "server") ||
           is(f, i, "x-secret") || is(f, i, "x-env");
}

static void fuzz_response(rl_worker *w, const rl_rule *rule, const uint8_t *data, size_t size)
{
    llhttp_settings_t settings;
    names_settings(&settings);
    static names in, out; /* large: not on the stack */
    memset(&in, 0, sizeof(in));
    in.base = (const char *)data;
    in.rule = rule;
    llhttp_t parser;
    llhttp_init(&parser, HTTP_RESPONSE, &settings);
    parser.data = &in;
    /* Two pieces, like a head collected from two receive buffers. */
    size_t split = data[size - 1] % (size + 1);
    llhttp_errno_t err = llhttp_execute(&parser, (const char *)data, split);
    if (err == HPE_OK)
        err = llhttp_execute(&parser, (const char *)data + split, size - split);
    /* The rewrite may add three lines: the written head's names must fit in `out` as well. */
    if (err != HPE_PAUSED || in.n > MAX_NAMES - 3 || parser.status_code < 200) {
        rl_resp_head_free(&in.rh);
        return; /* not a complete final head: the proxy passes or refuses it, nothing to rewrite */
    }
    uint32_t end = (uint32_t)(llhttp_get_error_pos(&parser) - (const char *)data);
    int conn = (int)(size % 3); /* RL_CONN_NONE, _CLOSE, _KEEP_ALIVE */
    rl_outq q;
    memset(&q, 0, sizeof(q));
    if (rl_http_build_response_head(w, &q, &in.rh, (const char *)data, end, rule, conn)) {
        rl_outq_clear(w, &q);
        rl_outq_free(&q);
        rl_resp_head_free(&in.rh);
        return; /* a bare CR (the proxy answers 502), or out of transmit buffers */
    }
    char *buf = malloc(q.bytes ? q.bytes : 1);
    uint32_t len = 0;
    for (uint16_t i = 0; i < q.count; i++) {
        rl_slice sl = q.s[(q.head + i) % q.cap];
        memcpy(buf + len, rl_buf_data(&w->bufs, sl.bid) + sl.off, sl.len);
        len += sl.len;
    }
    rl_outq_clear(w, &q);
    rl_outq_free(&q);
    rl_resp_head_free(&in.rh);

    /* The written head is one complete head, with the same status and framing... */
    memset(&out, 0, sizeof(out));
    out.base = buf;
    llhttp_t again;
    llhttp_init(&again, HTTP_RESPONSE, &settings);
    again.data = &out;
    if (llhttp_execute(&again, buf, len) != HPE_PAUSED || llhttp_get_error_pos(&again) != buf + len)
        abort();
    uint16_t framing = F_CHUNKED | F_CONTENT_LENGTH;
    if (again.status_code != parser.status_code || (again.flags & framing) != (parser.flags & framing) ||
        ((parser.flags & F_CONTENT_LENGTH) && again.content_length != parser.content_length))
        abort();
    /* ... whose field names are the kept ones in order, then the filter's, then Connection. */
    uint32_t k = 0;
    for (uint32_t i = 0; i < in.n; i++) {
        if (dropped(&in, i))
            continue;
        if (k >= out.n || out.len[k] != in.len[i] || memcmp(out.base + out.off[k], in.base + in.off[i], in.len[i]))
            abort();
        k++;
    }
    if (k + 2 + (uint32_t)(conn != RL_CONN_NONE) != out.n || !is(&out, k, "x-env") || !is(&out, k + 1, "x-added") ||
        (conn != RL_CONN_NONE && !is(&out, k + 2, "connection")))
        abort();
    free(buf);
}

/* What a routed path looks like, said independently of rl_http_path_normalize: "*" or a path
 * with only upper-case escapes of reserved characters, and no "." or ".." segment between
 * separators of any kind ('/', %2F, %5C). */
static int normalized(const char *s, uint32_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    if (n == 1 && s[0] == '*')
        return 1;
    uint32_t seg = 0; /* where the current segment starts */
    for (uint32_t i = 0; i <= n; i++) {
        int sep = i == n || s[i] == '/' ? 1 : 0;
        if (!sep && s[i] == '%') {
            if (n - i < 3 || !s[i + 1] || !s[i + 2] || !strchr(hex, s[i + 1]) || !strchr(hex, s[i + 2]))
                return 0;
            int v = (int)((strchr(hex, s[i + 1]) - hex) << 4 | (strchr(hex, s[i + 2]) - hex));
            if (isalnum(v) || (v && strchr("-._~", v)))
                return 0;
            sep = v == '/' || v == '\\' ? 3 : 0;
        }
        if (!sep)
            continue;
        uint32_t len = i - seg;
        if ((len == 1 && s[seg] == '.') || (len == 2 && s[seg] == '.' && s[seg + 1] == '.'))
            return 0;
        i += (uint32_t)sep - 1;
        seg = i + 1;
    }
    return n && s[0] == '/';
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    rl_worker *w = fuzz_worker();
    rl_cfg *cfg = fuzz_cfg();
    if (size > 5 && memcmp(data, "HTTP/", 5) == 0) {
        fuzz_response(w, &cfg->rules[2], data, size);
        return 0;
    }
    llhttp_settings_t settings;
    llhttp_t parser;
    rl_http_head_settings(&settings);
    llhttp_init(&parser, HTTP_REQUEST, &settings);
    rl_http_head *head = calloc(1, RL_HTTP_HEAD_SIZE(100));
    head->max_headers = 100;
    char *own = malloc(size ? size : 1); /* the proxy normalizes the path in place: not in libFuzzer's input */
    memcpy(own, data, size);
    head->base = own;
    parser.data = &head;
    /* Feed in two pieces (split chosen by the input) so token spans get extended. */
    size_t split = size ? data[0] % (size + 1) : 0;
    const char *p = own;
    llhttp_errno_t err = llhttp_execute(&parser, p, split);
    if (err == HPE_OK)
        err = llhttp_execute(&parser, p + split, size - split);
    if (err == HPE_PAUSED) {
        const char *body = llhttp_get_error_pos(&parser);
        rl_http_req rq;
        rl_http_req_facts(head, &parser, &rq);
        /* The proxy answers a rejected request itself; only the rest is routed and rewritten. */
        if (!rq.reject && rq.path.len && !normalized(own + rq.path.off, rq.path.len))
            abort();
        const rl_rule *r = rq.reject ? NULL : rl_http_route(cfg, &cfg->listeners[0], head, &rq);
        if (r) {
            rl_outq q;
            memset(&q, 0, sizeof(q));
            if (rl_http_build_request(w, &q, head, &rq, &parser, r, "192.0.2.1") == 0 && q.count) {
                /* The rewritten head must itself parse as one complete request head. */
                llhttp_t again;
                llhttp_init(&again, HTTP_REQUEST, &settings);
                rl_http_head *h2 = calloc(1, RL_HTTP_HEAD_SIZE(200));
                h2->max_headers = 200;
                h2->base = rl_buf_data(&w->bufs, q.s[q.head].bid) + q.s[q.head].off;
                again.data = &h2;
                if (q.count == 1 && llhttp_execute(&again, h2->base, q.s[q.head].len) != HPE_PAUSED)
                    abort();
                free(h2);
            }
            rl_outq_clear(w, &q);
            rl_outq_free(&q);
        }
        /* The body (and pipelined requests) as the proxy parses them: with no head any more
         * (a chunked body's trailer fields come through the head callbacks). */
        rl_http_head *done = head;
        head = NULL;
        llhttp_resume(&parser);
        rl_trailer_scan trailer;
        memset(&trailer, 0, sizeof(trailer));
        rl_http_execute(&parser, &trailer, body, (size_t)(p + size - body));
        head = done;
    }
    free(head);
    free(own);
    return 0;
}
