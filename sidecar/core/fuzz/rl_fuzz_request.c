/* libFuzzer target for the request path: llhttp parsing with Ringlane's span callbacks, request
 * facts, routing, and the upstream head rewrite. Built by `make fuzz` (clang, ASan + UBSan). */
#include <stdlib.h>
#include <string.h>

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
    if (rl_bufs_init(&w->bufs, 16384, 0, 64))
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
    return c;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    rl_worker *w = fuzz_worker();
    rl_cfg *cfg = fuzz_cfg();
    llhttp_settings_t settings;
    llhttp_t parser;
    rl_http_head_settings(&settings);
    llhttp_init(&parser, HTTP_REQUEST, &settings);
    rl_http_head *head = calloc(1, RL_HTTP_HEAD_SIZE(100));
    head->max_headers = 100;
    head->base = (const char *)data;
    parser.data = &head;
    /* Feed in two pieces (split chosen by the input) so token spans get extended. */
    size_t split = size ? data[0] % (size + 1) : 0;
    const char *p = (const char *)data;
    llhttp_errno_t err = llhttp_execute(&parser, p, split);
    if (err == HPE_OK)
        err = llhttp_execute(&parser, p + split, size - split);
    if (err == HPE_PAUSED) {
        const char *body = llhttp_get_error_pos(&parser);
        rl_http_req rq;
        rl_http_req_facts(head, &parser, &rq);
        /* The proxy answers a rejected request itself; only the rest is routed and rewritten. */
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
        llhttp_resume(&parser);
        llhttp_execute(&parser, body, (size_t)(p + size - body));
    }
    free(head);
    return 0;
}
