"""The keep-alive race: an upstream closes a pooled connection just as the proxy reuses it.

The first request on every backend connection is answered with keep-alive; the second request
on the same connection is read and the connection closed without a byte of response (what a
server does when its idle timeout fires as the request arrives, or when its process is killed).
Nothing was processed, so an idempotent request is retried on a fresh connection whatever the
route's retry policy says (as browsers and Go's HTTP client do); a POST is not (it may have had
effects) and gets 502."""
from __future__ import annotations

import pytest

from .backends import Reply, Request, raw_then_close
from .helpers import Conn, cluster, config, free_port, http_listener, rule

pytestmark = pytest.mark.timeout(30)


def closes_second_request(req: Request):  # type: ignore[no-untyped-def]
    """Per connection: answer request 1, close on request 2 without answering."""
    seen = closes_second_request.counts  # type: ignore[attr-defined]
    seen[req.conn_index] = seen.get(req.conn_index, 0) + 1
    if seen[req.conn_index] == 2:
        return raw_then_close(b"")
    return Reply(200, f"conn {req.conn_index}\n".encode())


@pytest.fixture
def backend(http_backend):  # type: ignore[no-untyped-def]
    closes_second_request.counts = {}  # type: ignore[attr-defined]
    return http_backend(closes_second_request)


def test_idempotent_request_on_a_stale_pooled_connection_is_retried(core, backend) -> None:
    port = free_port()
    core(config([http_listener(port, rule("r", "b"))], [cluster("b", backend.address)]))  # no retry policy
    with Conn(port) as conn:
        for i in range(4):
            r = conn.request("GET", f"/{i}")
            assert r.status == 200, (i, r)
    # Every request after the first met a pooled connection the backend then closed, and was
    # sent again on a new one (whose first request is answered).
    assert [q.target for q in backend.requests] == ["/0", "/1", "/1", "/2", "/2", "/3", "/3"]


def test_post_on_a_stale_pooled_connection_is_not_retried(core, backend) -> None:
    port = free_port()
    core(config([http_listener(port, rule("r", "b"))], [cluster("b", backend.address)]))
    with Conn(port) as conn:
        assert conn.request("GET", "/warm").status == 200
        r = conn.request("POST", "/order", body=b"one order")
        assert r.status == 502  # it reached the backend: sending it again could order twice
    assert [q.target for q in backend.requests] == ["/warm", "/order"]


def test_upgrade_request_on_a_stale_pooled_connection_is_retried(core, backend) -> None:
    """An upgrade request holds back what the client sends after it until the 101: nothing of it
    was processed either, so it goes again like any idempotent request (it got a 502)."""
    port = free_port()
    core(config([http_listener(port, rule("r", "b"))], [cluster("b", backend.address)]), cpus=[0])
    with Conn(port) as conn:
        assert conn.request("GET", "/warm").status == 200
        r = conn.request("GET", "/ws", headers=[("Upgrade", "websocket"), ("Connection", "Upgrade")])
        assert r.status == 200, r  # this backend refuses upgrades: a plain answer on the new connection
    assert [q.target for q in backend.requests] == ["/warm", "/ws", "/ws"]
