"""Response framing from the upstream: statuses that never carry a body (204, 304, 1xx) end at
their head whatever their headers say, a 101 is final (a tunnel only when asked for), an
HTTP/1.0 client gets no chunked coding and no 1xx, an early response says Connection: close,
a status outside 100..599 is a 502 and a 1xx loses its hop-by-hop fields.
Each test failed before its fix; the docstrings say what went wrong."""
from __future__ import annotations

import os
import socket
import textwrap

import pytest

from .backends import Reply, read_request, recv_head, write_reply
from .conftest import run_python
from ringlane_sidecar.config.model import Filter, Header, HeaderModifier

from .helpers import Conn, build_request, cluster, config, free_port, http_listener, rule

pytestmark = pytest.mark.timeout(60)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def raw_then_next(target: str, data: bytes):  # type: ignore[no-untyped-def]
    """An app: a request for `target` gets the raw bytes `data`; every request after it on that
    connection (and any other request) gets a plain 200 "next"."""
    def serve_rest(conn, r) -> None:  # type: ignore[no-untyped-def]
        while (req := read_request(r, conn, 0)) is not None:
            write_reply(conn, req, Reply(200, b"next"))

    def act(conn, r) -> None:  # type: ignore[no-untyped-def]
        conn.sendall(data)
        serve_rest(conn, r)

    return lambda req: act if req.target == target else Reply(200, b"next")


INJECTED = b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled"


@pytest.mark.parametrize("status", [204, 304])
def test_bodyless_status_with_content_length_does_not_hang(core, http_backend, status) -> None:
    """RFC 9110 8.6 / 15.4.5: a 304 may carry the Content-Length of the representation, and no
    body follows (204 likewise never has content). Debian's llhttp 8.1 has no 204/304/1xx rule in
    llhttp__after_headers_complete: only on_headers_complete returning 1 skips the body, and
    resp_on_headers_complete (rl_http.c) returns 1 only for HEAD. The proxy then waits for a body
    that never comes: the response never completes, the next request on the client connection
    is never sent upstream (without timeouts: forever)."""
    be = http_backend(raw_then_next("/empty", f"HTTP/1.1 {status} X\r\nETag: \"1\"\r\nContent-Length: 10\r\n\r\n".encode()))
    port = free_port()
    core(config([http_listener(port, rule("all", "b"))], [cluster("b", be.address)]))
    with Conn(port, timeout=3) as conn:
        r = conn.request("GET", "/empty")
        assert r.status == status and r.body == b""
        assert conn.request("GET", "/after").body == b"next"


@pytest.mark.parametrize("status", [204, 304, 103])
def test_bodyless_status_content_is_not_relayed_as_a_response(core, http_backend, status) -> None:
    """Response smuggling toward the client: an upstream's 204/304/1xx with Content-Length and
    bytes after it. llhttp 8.1 (no bodyless-status rule, see above) reads those bytes as the
    response's body and the proxy forwards them; the client (RFC 9112 6.3: these responses end
    at their head) reads them as the NEXT response, i.e. the answer to its next request is one
    the upstream injected (and the real one is then paired with the request after it)."""
    head = f"HTTP/1.1 {status} X\r\nContent-Length: {len(INJECTED)}\r\n\r\n".encode()
    final = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nreal" if status < 200 else b""
    be = http_backend(raw_then_next("/first", head + INJECTED + final))
    port = free_port()
    core(config([http_listener(port, rule("all", "b"))], [cluster("b", be.address)]))
    with Conn(port, timeout=3) as conn:
        r = conn.request("GET", "/first")
        if status < 200:  # the 1xx ends at its head: what follows is the final response
            assert r.body == b"smuggled", r
        else:
            assert r.status == status and r.body == b""
        r2 = conn.request("GET", "/second")
        assert r2.body == b"next", f"the client took the injected bytes as its response: {r2}"


_HANG_SCRIPT = textwrap.dedent("""
    import socket, sys, threading
    sys.path[:0] = [{root!r}, {tests!r}]
    from tests.integration.backends import TcpServer, recv_head
    from tests.integration.helpers import Conn, cluster, config, free_port, http_listener, rule, wait_for
    from ringlane_sidecar.core import Core

    def handler(conn, index):
        if recv_head(conn) is None:
            return
        conn.sendall({resp!r})
        conn.recv(1)  # hold the connection open

    srv = TcpServer(handler)
    port = free_port()
    core = Core({engine!r}, [0])
    cfg = config([http_listener(port, rule("all", "b"))], [cluster("b", srv.address)])
    core.apply(cfg)
    wait_for(lambda: core.served_generation() == cfg.generation, 5, "config")
    c = Conn(port, timeout=3)
    c.send({req!r})
    try:
        data = c.sock.recv(65536)
        print("FIRST", repr(data[:200]), flush=True)
    except Exception as e:
        print("FIRST-EXC", repr(e), flush=True)
    # Whatever the first exchange did, the (single) worker must still serve a new connection.
    try:
        c2 = Conn(port, timeout=3)
        c2.send(b"GET /x HTTP/1.1\\r\\nHost: t\\r\\n\\r\\n")
        print("SECOND", repr(c2.sock.recv(65536)[:100]), flush=True)
    except Exception as e:
        print("SECOND-EXC", repr(e), flush=True)
        sys.stdout.flush()
        import os; os._exit(3)
    import os; os._exit(0)
""")


def _run_isolated(engine: str, req: bytes, resp: bytes) -> tuple[int, str]:
    script = _HANG_SCRIPT.format(root=ROOT, tests=os.path.join(ROOT, "tests"), engine=engine, req=req, resp=resp)
    return run_python(script, 20)


def test_101_to_a_request_without_upgrade_does_not_spin_the_worker(engine) -> None:
    """rl_http_on_up_data (rl_http.c, the 1xx branch): a 101 with Upgrade + Connection: upgrade
    makes llhttp stop with HPE_PAUSED_UPGRADE. When the client did not ask for an upgrade
    (c->upgrade == 0) the 101 falls into the "100 Continue and friends" branch, which calls
    llhttp_resume() (a no-op on HPE_PAUSED_UPGRADE) and loops with again = 1: llhttp_execute
    returns the stored error at once with 0 bytes used, forever. The worker thread spins at
    100% CPU and never serves any connection again (one upstream reply hangs a worker).
    Run in a subprocess: a spinning worker cannot be joined by Core.close()."""
    rc, out = _run_isolated(engine, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n",
                            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
    assert rc == 0, f"worker hung (rc={rc}):\n{out}"


def test_101_without_upgrade_headers_is_not_relayed_as_interim(core, http_backend) -> None:
    """llhttp 8.1 only stops at a 101 carrying Upgrade + Connection: upgrade; a bare 101 is just
    another 1xx to it, and rl_http_on_up_data's 1xx branch forwards it and parses what follows
    as a new HTTP response. The client takes the 101 as final (it ends HTTP on the connection,
    RFC 9110 15.2.2), so any response that follows is either lost in the "tunnel" or, on a
    request that asked no upgrade, a second response on the client's stream (desync). A 101 to a
    request without Upgrade must not reach the client (502), and must never be interim."""
    be = http_backend(raw_then_next("/first", b"HTTP/1.1 101 Switching Protocols\r\n\r\n" + INJECTED))
    port = free_port()
    core(config([http_listener(port, rule("all", "b"))], [cluster("b", be.address)]))
    with Conn(port, timeout=3) as conn:
        r = conn.request("GET", "/first")
        r2 = conn.request("GET", "/second")
        assert r.status != 101 and r2.body == b"next", (r, r2)


def test_http10_request_goes_up_as_http10_and_keeps_the_upstream_connection(core, tcp_server) -> None:
    """An HTTP/1.0 client cannot read chunked coding (RFC 9112 6.1) or a 1xx: its request goes
    up as HTTP/1.0, so the upstream frames the response for it, with Connection: keep-alive so
    the upstream connection is still pooled (two such requests, one upstream connection)."""
    lines: list[bytes] = []

    def handler(conn: socket.socket, index: int) -> None:
        buf = b""
        while (got := recv_head(conn, buf)) is not None:
            head, buf = got
            lines.append(head)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")

    srv = tcp_server(handler)
    port = free_port()
    core(config([http_listener(port, rule("all", "b"))], [cluster("b", srv.address)]), cpus=[0])  # one pool
    for _ in range(2):
        with Conn(port, timeout=3) as conn:
            conn.send(b"GET /old HTTP/1.0\r\nHost: t\r\n\r\n")
            raw = conn.read_to_close()
        assert raw.startswith(b"HTTP/1.1 200") and raw.endswith(b"\r\n\r\nhello"), raw
    assert len(lines) == 2 and srv.accepted == 1, (lines, srv.accepted)
    for head in lines:
        assert head.startswith(b"GET /old HTTP/1.0\r\n"), head
        assert b"\r\nConnection: keep-alive" in head, head


def test_1xx_is_not_sent_to_an_http10_client(core, http_backend) -> None:
    """RFC 9110 15.2: a server must not send a 1xx to an HTTP/1.0 client. The request goes up as
    HTTP/1.1, so the upstream may send 103/100; rl_http_on_up_data forwards every 1xx as it is."""
    be = http_backend(raw_then_next("/", b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"
                                         b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal"))
    port = free_port()
    core(config([http_listener(port, rule("all", "b"))], [cluster("b", be.address)]))
    with Conn(port, timeout=3) as conn:
        conn.send(b"GET / HTTP/1.0\r\nHost: t\r\n\r\n")
        raw = conn.read_to_close()
    assert raw.startswith(b"HTTP/1.1 200"), raw


def test_early_response_that_ends_the_connection_says_connection_close(core, tcp_server) -> None:
    """The upstream answers (keep-alive, Content-Length) before the client's body has arrived.
    response_done then sets c->keepalive = 0 and closes the client connection, but the head went
    out earlier (resp_on_headers_complete/write_head decide "Connection: close" from
    c->keepalive, still 1 there although c->req_done == 0 is already known): the client is told
    the connection persists and then sees it closed (a reused/pipelined request is lost)."""
    def handler(conn, index):  # type: ignore[no-untyped-def]
        if recv_head(conn) is None:
            return
        conn.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 4\r\n\r\nnope")
        try:
            while conn.recv(1 << 16):
                pass
        except OSError:
            pass

    srv = tcp_server(handler)
    port = free_port()
    core(config([http_listener(port, rule("all", "d"))], [cluster("d", srv.address)]))
    with Conn(port, timeout=5) as conn:
        conn.send(build_request("POST", "/up", [("Content-Length", str(1 << 20))]) + b"x" * 1000)
        r = conn.read_response()
        assert r.status == 403
        closes = conn.at_eof(3)
        assert not closes or (r.header("connection") or "").lower() == "close", r.headers


@pytest.mark.parametrize("status", ["099", "000", "600", "999"])
def test_status_outside_100_to_599_is_a_502(core, http_backend, status) -> None:
    """RFC 9110 15: codes outside 100..599 are invalid and a client should take them as a server
    error. llhttp reads any three digits; resp_on_headers_complete relayed them, and a status
    below 100 has no class a client can act on (HAProxy answers 502 too)."""
    be = http_backend(raw_then_next("/odd", f"HTTP/1.1 {status} Odd\r\nContent-Length: 3\r\n\r\nodd".encode()))
    port = free_port()
    core(config([http_listener(port, rule("all", "b"))], [cluster("b", be.address)]))
    with Conn(port, timeout=3) as conn:
        assert conn.request("GET", "/odd").status == 502
    with Conn(port, timeout=3) as conn:
        assert conn.request("GET", "/after").body == b"next"


def test_interim_response_loses_its_hop_by_hop_fields(core, http_backend) -> None:
    """RFC 9110 7.6.1: a proxy removes Connection and the fields it names from every message it
    forwards; a 1xx passed as it was, so a 103's Connection: X-Hop and X-Hop reached the client.
    The rule's response headers are for the final response only."""
    be = http_backend(raw_then_next("/", b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n"
                                         b"Connection: X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\n\r\n"
                                         b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal"))
    port = free_port()
    sets = Filter(response_header_modifier=HeaderModifier(set=(Header("X-Rule", "y"),)))
    core(config([http_listener(port, rule("all", "b", filters=[sets]))], [cluster("b", be.address)]))
    with Conn(port, timeout=3) as conn:
        conn.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        status, _, headers, _ = conn.read_head()
        final = conn.read_response()
    names = {k.lower() for k, _ in headers}
    assert status == 103 and ("Link", "</a.css>; rel=preload") in headers, headers
    assert not names & {"connection", "x-hop", "keep-alive", "x-rule"}, headers
    assert final.status == 200 and final.body == b"final" and final.header("x-rule") == "y", final
