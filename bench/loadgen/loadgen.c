/*
 * loadgen: a small OPEN-LOOP HTTP/1.1 load generator for Ringlane's benchmarks.
 *
 * Requests are scheduled at a fixed rate from a start time: request i is due at
 * start + i / rate, whether or not earlier requests have been answered. A due
 * request goes out on the first idle keep-alive connection (FIFO); when none is
 * idle it waits in the queue. Latency is measured from the request's INTENDED
 * send time to the last byte of its response, so a stalled server is charged
 * for the requests it delayed (no coordinated omission). The latency from the
 * actual send time is reported too ("service_us"), to show the difference.
 *
 * One thread, epoll, N keep-alive connections, GET only, Content-Length framing.
 * Latencies go into log buckets (64 sub-buckets per power of two, < 1.6% error).
 * The result is one JSON object on stdout; diagnostics go to stderr.
 *
 * usage: loadgen --port P --rate R [--host 127.0.0.1] [--path /] [--connections 50]
 *                [--duration 5] [--warmup 1] [--timeout-ms 2000] [--header 'K: V']...
 * exit: 0 when the run happened (errors are counted in the JSON), 2 on bad usage,
 *       1 when the connections could not be opened.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define NSEC 1000000000ULL
#define RBUF 16384
#define MAX_HEAD 8192
#define MAX_REQ 2048

/* ---------- histogram: HdrHistogram-like log buckets over nanoseconds ---------- */

#define SUB_BITS 6                       /* 64 sub-buckets per power of two */
#define SUB (1u << SUB_BITS)
#define NBUCKETS (2 * SUB + 58 * SUB)    /* covers every uint64 value */

typedef struct {
    uint64_t counts[NBUCKETS];
    uint64_t total, min, max;
    long double sum;
} hist_t;

static unsigned bucket_of(uint64_t v) {
    if (v < 2 * SUB) return (unsigned)v;                 /* exact below 128 ns */
    unsigned msb = 63u - (unsigned)__builtin_clzll(v);    /* >= 7 */
    unsigned shift = msb - SUB_BITS;                      /* >= 1 */
    unsigned mant = (unsigned)(v >> shift);               /* 64..127 */
    return 2 * SUB + (shift - 1) * SUB + (mant - SUB);
}

static uint64_t bucket_mid(unsigned b) {
    if (b < 2 * SUB) return b;
    unsigned k = b - 2 * SUB, shift = k / SUB + 1, mant = k % SUB + SUB;
    uint64_t lo = (uint64_t)mant << shift, width = 1ULL << shift;
    return lo + width / 2;
}

static void hist_add(hist_t *h, uint64_t v) {
    h->counts[bucket_of(v)]++;
    if (h->total == 0 || v < h->min) h->min = v;
    if (v > h->max) h->max = v;
    h->total++;
    h->sum += v;
}

static uint64_t hist_pct(const hist_t *h, double pct) {
    if (h->total == 0) return 0;
    uint64_t want = (uint64_t)ceil(pct / 100.0 * (double)h->total);
    if (want < 1) want = 1;
    uint64_t seen = 0;
    for (unsigned b = 0; b < NBUCKETS; b++) {
        seen += h->counts[b];
        if (seen >= want) {
            uint64_t v = bucket_mid(b);
            if (v > h->max) v = h->max;
            if (v < h->min) v = h->min;
            return v;
        }
    }
    return h->max;
}

/* ---------- options and state ---------- */

typedef struct {
    const char *host, *path;
    int port, connections;
    double rate, duration, warmup;
    uint64_t timeout_ns;
    char headers[1024];
} opts_t;

enum { C_CONNECTING, C_IDLE, C_BUSY, C_DEAD };

typedef struct {
    int fd, state, in_idle;
    uint64_t intended, sent;      /* ns, of the request in flight */
    int measured;                 /* the request in flight falls in the measurement window */
    size_t wlen, woff;            /* pending write of the request */
    char head[MAX_HEAD];
    size_t head_len;
    int in_body, close_after, status;
    int64_t body_left;
} conn_t;

typedef struct {
    uint64_t connect, read, write, status, parse;
} errors_t;

static opts_t O;
static conn_t *C;
static int EP;
static char REQ[MAX_REQ];
static size_t REQ_LEN;
static int *IDLEQ;                /* FIFO ring of idle connection indices */
static int IQ_HEAD, IQ_LEN;
static hist_t LAT, SVC;
static errors_t ERR;
static uint64_t TIMEOUTS, RECONNECTS, COMPLETED, OK_MEASURED, BYTES;
static int INFLIGHT;              /* connections with a request in flight */
static struct sockaddr_in ADDR;
static volatile sig_atomic_t STOP;

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * NSEC + (uint64_t)ts.tv_nsec;
}

static void die_usage(const char *msg) {
    fprintf(stderr, "loadgen: %s\nusage: loadgen --port P --rate R [--host H] [--path /] "
                    "[--connections N] [--duration S] [--warmup S] [--timeout-ms MS] [--header 'K: V']\n", msg);
    exit(2);
}

static void idle_push(int i) {
    if (C[i].in_idle) return;
    C[i].in_idle = 1;
    IDLEQ[(IQ_HEAD + IQ_LEN) % O.connections] = i;
    IQ_LEN++;
}

static int idle_pop(void) {
    while (IQ_LEN > 0) {
        int i = IDLEQ[IQ_HEAD];
        IQ_HEAD = (IQ_HEAD + 1) % O.connections;
        IQ_LEN--;
        C[i].in_idle = 0;
        if (C[i].state == C_IDLE) return i;
    }
    return -1;
}

/* ---------- connections ---------- */

static int conn_open(int i) {
    conn_t *c = &C[i];
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) { ERR.connect++; c->state = C_DEAD; return -1; }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(c->fd, (struct sockaddr *)&ADDR, sizeof ADDR) < 0 && errno != EINPROGRESS) {
        ERR.connect++;
        close(c->fd);
        c->fd = -1;
        c->state = C_DEAD;
        return -1;
    }
    c->state = C_CONNECTING;
    c->head_len = 0; c->in_body = 0; c->close_after = 0; c->woff = c->wlen = 0;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP, .data.u32 = (uint32_t)i};
    if (epoll_ctl(EP, EPOLL_CTL_ADD, c->fd, &ev) < 0) { perror("epoll_ctl"); exit(1); }
    return 0;
}

static void conn_close(int i) {
    conn_t *c = &C[i];
    if (c->state == C_BUSY) INFLIGHT--;
    if (c->fd >= 0) { epoll_ctl(EP, EPOLL_CTL_DEL, c->fd, NULL); close(c->fd); }
    c->fd = -1;
    c->state = C_DEAD;
}

static void conn_reopen(int i) {
    conn_close(i);
    RECONNECTS++;
    conn_open(i);
}

static void set_events(int i, uint32_t events) {
    struct epoll_event ev = {.events = events, .data.u32 = (uint32_t)i};
    epoll_ctl(EP, EPOLL_CTL_MOD, C[i].fd, &ev);
}

/* Write what is left of the current request; 0 when done or pending, -1 on error. */
static int conn_flush(int i) {
    conn_t *c = &C[i];
    while (c->woff < c->wlen) {
        ssize_t n = send(c->fd, REQ + c->woff, c->wlen - c->woff, MSG_NOSIGNAL);
        if (n > 0) { c->woff += (size_t)n; continue; }
        if (n < 0 && errno == EAGAIN) { set_events(i, EPOLLIN | EPOLLOUT | EPOLLRDHUP); return 0; }
        return -1;
    }
    return 0;
}

static void conn_send(int i, uint64_t intended, int measured) {
    conn_t *c = &C[i];
    c->state = C_BUSY;
    INFLIGHT++;
    c->intended = intended;
    c->measured = measured;
    c->sent = now_ns();
    c->head_len = 0; c->in_body = 0; c->close_after = 0; c->status = 0;
    c->wlen = REQ_LEN; c->woff = 0;
    if (conn_flush(i) < 0) { ERR.write++; conn_reopen(i); }
}

/* ---------- response parsing (status line, Content-Length, Connection: close) ---------- */

static int parse_head(conn_t *c) {
    c->head[c->head_len] = 0;
    if (strncmp(c->head, "HTTP/1.", 7) != 0 || c->head_len < 12) return -1;
    c->status = atoi(c->head + 9);
    c->body_left = -1;
    char *line = strstr(c->head, "\r\n");
    while (line && line[2] != '\r') {
        line += 2;
        char *end = strstr(line, "\r\n");
        if (!end) break;
        if (strncasecmp(line, "content-length:", 15) == 0) c->body_left = strtoll(line + 15, NULL, 10);
        else if (strncasecmp(line, "transfer-encoding:", 18) == 0) return -1; /* chunked: not supported */
        else if (strncasecmp(line, "connection:", 11) == 0 && strcasestr(line, "close") && strcasestr(line, "close") < end)
            c->close_after = 1;
        line = end;
    }
    if (c->body_left < 0) {
        if (c->status == 204 || c->status == 304) c->body_left = 0;
        else return -1;
    }
    c->in_body = 1;
    return 0;
}

static void complete(int i, uint64_t t) {
    conn_t *c = &C[i];
    COMPLETED++;
    if (c->measured) {
        if (c->status >= 200 && c->status < 300) {
            OK_MEASURED++;
            hist_add(&LAT, t - c->intended);
            hist_add(&SVC, t - c->sent);
        } else {
            ERR.status++;
        }
    }
    c->state = C_IDLE;
    INFLIGHT--;
    if (c->close_after) { conn_reopen(i); return; }
    idle_push(i);
}

/* Consume bytes of the response in flight; returns -1 on a protocol error. */
static int feed(int i, const char *p, size_t n) {
    conn_t *c = &C[i];
    while (n > 0) {
        if (c->state != C_BUSY) return -1;       /* bytes nobody asked for */
        if (!c->in_body) {
            size_t take = n;
            if (c->head_len + take > MAX_HEAD - 1) take = MAX_HEAD - 1 - c->head_len;
            if (take == 0) return -1;
            size_t old = c->head_len;
            memcpy(c->head + old, p, take);
            c->head_len += take;
            c->head[c->head_len] = 0;
            size_t from = old >= 3 ? old - 3 : 0;
            char *end = memmem(c->head + from, c->head_len - from, "\r\n\r\n", 4);
            if (!end) { p += take; n -= take; continue; }
            size_t head_bytes = (size_t)(end + 4 - c->head);
            size_t used = head_bytes - old;        /* bytes of this chunk that belong to the head */
            c->head_len = head_bytes;
            if (parse_head(c) < 0) return -1;
            p += used; n -= used;
        }
        if (c->in_body) {
            size_t take = (int64_t)n < c->body_left ? n : (size_t)c->body_left;
            c->body_left -= (int64_t)take;
            p += take; n -= take;
            if (c->body_left == 0) complete(i, now_ns());
        }
    }
    return 0;
}

static void on_event(int i, uint32_t ev) {
    conn_t *c = &C[i];
    if (c->state == C_DEAD || c->fd < 0) return;
    if (c->state == C_CONNECTING) {
        if (ev & (EPOLLOUT | EPOLLERR | EPOLLHUP)) {
            int err = 0;
            socklen_t len = sizeof err;
            getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
            if (err || (ev & (EPOLLERR | EPOLLHUP))) { ERR.connect++; conn_close(i); return; }
            c->state = C_IDLE;
            set_events(i, EPOLLIN | EPOLLRDHUP);
            idle_push(i);
        }
        return;
    }
    if ((ev & EPOLLOUT) && c->state == C_BUSY && c->woff < c->wlen) {
        if (conn_flush(i) < 0) { ERR.write++; conn_reopen(i); return; }
        if (c->woff == c->wlen) set_events(i, EPOLLIN | EPOLLRDHUP);
    }
    if (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
        char buf[RBUF];
        for (;;) {
            ssize_t n = recv(c->fd, buf, sizeof buf, 0);
            if (n > 0) {
                BYTES += (uint64_t)n;
                if (feed(i, buf, (size_t)n) < 0) { ERR.parse++; conn_reopen(i); return; }
                if (c->fd < 0 || c->state == C_CONNECTING) return;   /* reopened after Connection: close */
                if ((size_t)n < sizeof buf) break;
                continue;
            }
            if (n < 0 && errno == EAGAIN) break;
            /* closed or failed: an error if a response was in flight, else a silent reconnect */
            if (c->state == C_BUSY) ERR.read++;
            conn_reopen(i);
            return;
        }
    }
}

static void check_timeouts(uint64_t t) {
    for (int i = 0; i < O.connections; i++) {
        if (C[i].state == C_BUSY && t > C[i].sent && t - C[i].sent > O.timeout_ns) {
            if (C[i].measured) TIMEOUTS++;
            conn_reopen(i);
        }
    }
}

static void wait_events(uint64_t wait_ns) {
    struct epoll_event evs[256];
    struct timespec ts = {.tv_sec = (time_t)(wait_ns / NSEC), .tv_nsec = (long)(wait_ns % NSEC)};
    int n = epoll_pwait2(EP, evs, 256, &ts, NULL);
    if (n < 0 && errno == ENOSYS) {            /* kernels before 5.11: millisecond timeouts */
        int ms = (int)((wait_ns + 999999) / 1000000);
        n = epoll_wait(EP, evs, 256, ms);
    }
    for (int k = 0; k < n; k++) on_event((int)evs[k].data.u32, evs[k].events);
}

static void on_signal(int sig) { (void)sig; STOP = 1; }

static void print_hist(const char *name, const hist_t *h) {
    printf("\"%s\": {\"count\": %" PRIu64 ", \"min\": %.1f, \"mean\": %.1f, \"p50\": %.1f, \"p90\": %.1f, "
           "\"p99\": %.1f, \"p999\": %.1f, \"max\": %.1f}",
           name, h->total, h->min / 1e3, h->total ? (double)(h->sum / h->total) / 1e3 : 0.0,
           hist_pct(h, 50) / 1e3, hist_pct(h, 90) / 1e3, hist_pct(h, 99) / 1e3, hist_pct(h, 99.9) / 1e3,
           h->max / 1e3);
}

int main(int argc, char **argv) {
    O = (opts_t){.host = "127.0.0.1", .path = "/", .connections = 50, .duration = 5, .warmup = 1,
                 .timeout_ns = 2000 * 1000000ULL};
    static const struct option longopts[] = {
        {"host", 1, 0, 'h'}, {"port", 1, 0, 'p'}, {"path", 1, 0, 'P'}, {"connections", 1, 0, 'c'},
        {"rate", 1, 0, 'r'}, {"duration", 1, 0, 'd'}, {"warmup", 1, 0, 'w'}, {"timeout-ms", 1, 0, 't'},
        {"header", 1, 0, 'H'}, {0, 0, 0, 0}};
    int opt;
    while ((opt = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (opt) {
        case 'h': O.host = optarg; break;
        case 'p': O.port = atoi(optarg); break;
        case 'P': O.path = optarg; break;
        case 'c': O.connections = atoi(optarg); break;
        case 'r': O.rate = atof(optarg); break;
        case 'd': O.duration = atof(optarg); break;
        case 'w': O.warmup = atof(optarg); break;
        case 't': O.timeout_ns = (uint64_t)atoll(optarg) * 1000000ULL; break;
        case 'H': {
            size_t have = strlen(O.headers), add = strlen(optarg);
            if (have + add + 3 > sizeof O.headers) die_usage("headers too long");
            memcpy(O.headers + have, optarg, add);
            memcpy(O.headers + have + add, "\r\n", 3);
            break;
        }
        default: die_usage("unknown option");
        }
    }
    if (O.port <= 0 || O.port > 65535) die_usage("--port is required");
    if (!(O.rate > 0)) die_usage("--rate must be > 0");
    if (O.connections < 1 || O.duration <= 0 || O.warmup < 0) die_usage("bad --connections/--duration/--warmup");
    if (inet_pton(AF_INET, O.host, &ADDR.sin_addr) != 1) die_usage("--host must be an IPv4 literal");
    ADDR.sin_family = AF_INET;
    ADDR.sin_port = htons((uint16_t)O.port);
    int rl = snprintf(REQ, sizeof REQ, "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUser-Agent: ringlane-loadgen\r\n%s\r\n",
                      O.path, O.host, O.port, O.headers);
    if (rl < 0 || rl >= (int)sizeof REQ) die_usage("request too long");
    REQ_LEN = (size_t)rl;

    prctl(PR_SET_TIMERSLACK, 1UL);             /* wake-ups to the microsecond, not 50 us late */
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    signal(SIGPIPE, SIG_IGN);

    EP = epoll_create1(EPOLL_CLOEXEC);
    C = calloc((size_t)O.connections, sizeof *C);
    IDLEQ = calloc((size_t)O.connections, sizeof *IDLEQ);
    if (EP < 0 || !C || !IDLEQ) { perror("setup"); return 1; }
    for (int i = 0; i < O.connections; i++) { C[i].fd = -1; conn_open(i); }

    /* Wait (bounded) until every connection is established. */
    uint64_t deadline = now_ns() + 5 * NSEC;
    while (IQ_LEN < O.connections && now_ns() < deadline && !STOP) {
        int dead = 0;
        for (int i = 0; i < O.connections; i++) dead += C[i].state == C_DEAD;
        if (dead) break;
        wait_events(10 * 1000000ULL);
    }
    if (IQ_LEN < O.connections) {
        fprintf(stderr, "loadgen: only %d of %d connections to %s:%d opened\n", IQ_LEN, O.connections, O.host, O.port);
        return 1;
    }
    ERR.connect = 0;

    const uint64_t start = now_ns();
    const double period = (double)NSEC / O.rate;
    const uint64_t measure_from = start + (uint64_t)(O.warmup * NSEC);
    const uint64_t end = measure_from + (uint64_t)(O.duration * NSEC);
    const uint64_t total = (uint64_t)ceil((double)(end - start) / period);
    uint64_t next = 0;                          /* the next request index to send */
    uint64_t last_timeout_check = start;

    while (!STOP) {
        uint64_t t = now_ns();
        /* every request due by now, in order, on idle connections */
        uint64_t due = t < start ? 0 : (uint64_t)((double)(t - start) / period) + 1;
        if (due > total) due = total;
        while (next < due) {
            int i = idle_pop();
            if (i < 0) break;
            uint64_t intended = start + (uint64_t)((double)next * period);
            conn_send(i, intended, intended >= measure_from);
            next++;
        }
        if (t - last_timeout_check > 10 * 1000000ULL) {   /* every 10 ms: timeouts, failed reconnects */
            check_timeouts(now_ns());
            for (int i = 0; i < O.connections; i++)
                if (C[i].state == C_DEAD) conn_open(i);
            last_timeout_check = t;
        }
        if (next >= total && INFLIGHT == 0) break;
        if (t > end + O.timeout_ns + NSEC) break;       /* stragglers get at most the timeout */
        uint64_t wake;
        if (next < total && next >= due) wake = start + (uint64_t)((double)next * period);
        else wake = t + 10 * 1000000ULL;                 /* backlogged or finishing: wait for I/O */
        wait_events(wake > t ? wake - t : 0);
    }

    uint64_t scheduled = 0, unsent = 0;
    for (uint64_t k = 0; k < total; k++) {
        uint64_t intended = start + (uint64_t)((double)k * period);
        if (intended < measure_from) continue;
        scheduled++;
        if (k >= next) unsent++;
    }
    uint64_t lost = 0;                                   /* in flight at the end */
    for (int i = 0; i < O.connections; i++) {
        if (C[i].state == C_BUSY && C[i].measured) lost++;
        conn_close(i);
    }
    printf("{\"target_rate\": %.1f, \"connections\": %d, \"duration_s\": %.3f, \"warmup_s\": %.3f, "
           "\"scheduled\": %" PRIu64 ", \"completed_ok\": %" PRIu64 ", \"achieved_rate\": %.1f, "
           "\"unsent\": %" PRIu64 ", \"unfinished\": %" PRIu64 ", \"timeouts\": %" PRIu64 ", \"reconnects\": %" PRIu64 ", "
           "\"bytes\": %" PRIu64 ", \"interrupted\": %s, "
           "\"errors\": {\"connect\": %" PRIu64 ", \"read\": %" PRIu64 ", \"write\": %" PRIu64 ", \"status\": %" PRIu64
           ", \"parse\": %" PRIu64 "}, ",
           O.rate, O.connections, O.duration, O.warmup, scheduled, OK_MEASURED, OK_MEASURED / O.duration, unsent,
           lost, TIMEOUTS, RECONNECTS, BYTES, STOP ? "true" : "false", ERR.connect, ERR.read, ERR.write, ERR.status,
           ERR.parse);
    print_hist("latency_us", &LAT);
    printf(", ");
    print_hist("service_us", &SVC);
    printf("}\n");
    return 0;
}
