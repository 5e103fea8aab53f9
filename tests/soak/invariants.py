"""What the soak asserts, and where violations are recorded: no client gets another request's
response, backends see only well-formed requests a proxy may forward, gauges stay sane during the
run and are back to zero after the drain, and every socket and fd the core opened is closed."""
from __future__ import annotations

import os
import re
import threading
from collections import Counter

from integration.helpers import own_stream_sockets, wait_for
from ringlane_sidecar.core import Core

from .wire import ForwardedRequest, Malformed

PROXY_ERRORS = {400, 404, 408, 413, 431, 502, 503, 504}
SHOWN_LIVE = 60  # violations printed as they happen (a broken invariant tends to repeat)
GAUGES = ("conns_active", "upstream_conns_active", "upstream_conns_idle")
WRAPPED = 1 << 40  # a gauge this large went below zero


class Findings:
    """Violations and counters of one run, shared by every client and backend thread."""

    def __init__(self) -> None:
        self.violations: list[str] = []
        self._lock = threading.Lock()
        self.stats: Counter[str] = Counter()
        self.non_200: Counter[str] = Counter()  # "scenario:behaviour:method:status"

    def violation(self, msg: str) -> None:
        with self._lock:
            self.violations.append(msg)
            if len(self.violations) < SHOWN_LIVE:
                print("VIOLATION", msg, flush=True)


def check_forwarded(req: ForwardedRequest) -> None:
    """What the proxy must never forward (Malformed): anything but one Host, a missing or foreign
    X-Forwarded-For (the TCP relay's raw HTTP carries X-Via-Relay instead), ambiguous framing,
    hop-by-hop headers other than Connection (kept for upgrades)."""
    d, target = req.headers, req.target
    if len(d.get("host", [])) != 1:
        raise Malformed(f"{target}: host count {d.get('host')}")
    if not d.get("x-forwarded-for") and not d.get("x-via-relay"):
        raise Malformed(f"{target}: no X-Forwarded-For")
    for xff in d.get("x-forwarded-for", []):
        if "127.0.0.1" not in xff:
            raise Malformed(f"{target}: XFF {xff!r}")
    cl, te = d.get("content-length"), d.get("transfer-encoding")
    if cl and te:
        raise Malformed(f"{target}: CL and TE")
    if cl and (len(cl) > 1 or not cl[0].isdigit()):
        raise Malformed(f"{target}: CL {cl}")
    if te and [t.lower() for t in te] != ["chunked"]:
        raise Malformed(f"{target}: TE {te}")
    for hop in ("keep-alive", "proxy-connection", "te"):
        if hop in d:
            raise Malformed(f"{target}: hop header {hop} forwarded")


def check_response(findings: Findings, rid: str, beh: str, method: str, status: int,
                   hs: dict[str, list[str]], body: bytes, ctx: str) -> None:
    """Identity and sanity of one final response to request id<rid>, which asked its backend to
    behave as beh: nothing in it may name another request, a proxy error carries no backend body,
    a 200 is the backend's answer to this very request."""
    findings.stats[f"st{status}"] += 1
    if status != 200:
        findings.non_200[f"{ctx}:{beh}:{method}:{status}"] += 1
    text = body[:4000].decode("latin-1")
    others = {m for m in re.findall(r"id(\d+)(?=[ .\-:])", text) if m != rid}
    xr = hs.get("x-req-id")
    if others or (xr and xr != [rid]):
        findings.violation(f"{ctx}: id{rid}/{beh} got another request's response: status {status} "
                           f"x-req-id {xr} body {text[:200]!r}")
        return
    if status in PROXY_ERRORS:
        if xr is None and re.search(r"id\d+", text):
            findings.violation(f"{ctx}: id{rid}: proxy error {status} with backend body {text[:100]!r}")
        return
    if status == 200:
        if xr != [rid]:
            findings.violation(f"{ctx}: id{rid}/{beh}: 200 without our X-Req-Id: {hs} {text[:100]!r}")
        elif method != "HEAD" and beh != "big" and not text.startswith(f"id{rid} "):
            findings.violation(f"{ctx}: id{rid}/{beh}: 200 body {text[:100]!r}")
        elif beh == "big" and method != "HEAD":
            unit = f"id{rid}.".encode()
            exp = (unit * (len(body) // len(unit) + 1))[:len(body)]
            if body != exp or int(hs.get("content-length", [len(body)])[0]) != len(body):
                findings.violation(f"{ctx}: id{rid}: big body corrupted (len {len(body)})")
        elif beh in ("s503", "reset", "stall") and method != "HEAD":
            findings.violation(f"{ctx}: id{rid}/{beh}: unexpected 200")
        return
    findings.violation(f"{ctx}: id{rid}/{beh}: unexpected status {status} {hs} {text[:100]!r}")


def check_gauges_sane(findings: Findings, core: Core) -> None:
    """Mid-run: a gauge decremented once too often wraps to a huge unsigned value."""
    for i, t in enumerate(core.totals()):
        for k in GAUGES:
            if getattr(t, k) > WRAPPED:
                findings.violation(f"mid-run worker {i} {k} wrapped: {getattr(t, k)}")
    for name, st in core.cluster_stats().items():
        if st["active"] > WRAPPED:
            findings.violation(f"mid-run cluster {name} active wrapped: {st['active']}")


def check_workers_exited(findings: Findings, core: Core) -> None:
    """The drain (3 s, clients still connecting) ends with every worker gone."""
    try:
        wait_for(lambda: core.running_workers() == 0, 6, "workers to exit after drain")
    except AssertionError as e:
        findings.violation(str(e))


def check_drained(findings: Findings, core: Core) -> None:
    """After the drain every gauge is zero and every accepted connection was closed."""
    for i, t in enumerate(core.totals()):
        for k in GAUGES:
            v = getattr(t, k)
            if v != 0:
                findings.violation(f"after drain worker {i} {k} = {v}")
    for name, st in core.listener_stats().items():
        if st["conns_opened"] != st["conns_closed"]:
            findings.violation(f"after drain listener {name}: opened {st['conns_opened']} "
                               f"closed {st['conns_closed']}")
    for name, st in core.cluster_stats().items():
        if st["active"] != 0:
            findings.violation(f"after drain cluster {name} active = {st['active']}")


def proxy_sockets(listen_ports: set[int], backend_ports: set[int]) -> list[tuple[object, object]]:
    """(local, peer) of this process's sockets that are the proxy's: bound to one of its listener
    ports, or connected to a backend (the core runs in this process, so they are among ours)."""
    out = []
    for s in own_stream_sockets():
        with s:
            try:
                loc = s.getsockname()
                try:
                    peer = s.getpeername()
                except OSError:
                    peer = None
                if loc[1] in listen_ports or (peer and peer[1] in backend_ports):
                    out.append((loc, peer))
            except OSError:
                pass
    return out


def check_proxy_sockets_closed(findings: Findings, listen_ports: set[int], backend_ports: set[int]) -> None:
    try:
        wait_for(lambda: not proxy_sockets(listen_ports, backend_ports), 5, "proxy sockets to close after drain")
    except AssertionError:
        findings.violation(f"proxy sockets open after drain+exit: {proxy_sockets(listen_ports, backend_ports)[:10]}")


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def check_fds_back_to(findings: Findings, baseline: set[str]) -> None:
    """After the core and the backends are closed, no fd beyond the baseline is left (io_uring
    rings, epoll and event fds, sockets)."""
    try:
        wait_for(lambda: open_fds() <= baseline, 5, "fds back to baseline")
    except AssertionError:
        desc = []
        for f in sorted(open_fds() - baseline)[:20]:
            try:
                desc.append(f"{f}->{os.readlink(f'/proc/self/fd/{f}')}")
            except OSError:
                pass
        findings.violation(f"fds left after close: {desc}")

