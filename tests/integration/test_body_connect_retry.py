"""Requests with a body and retries. Until an upstream connection is up nothing of the request
has reached a backend, so a failed connection is retried for a request with a body as for one
without (the body received so far is kept until a connection is up, bounded like the queue to
one upstream). Once a connection took the body it is streamed, not kept: a reset then ends the
request with 502, whatever the method."""
from __future__ import annotations

import hashlib
import os

import pytest

from ringlane_sidecar.config.model import Retry

from .backends import digest_app, reset_action
from .helpers import Conn, build_request, cluster, config, free_port, http_listener, rule

pytestmark = pytest.mark.timeout(60)

ONE = [0]  # one worker: round-robin over [refused, live] starts at the refused endpoint


def digest(body: bytes, framing: str) -> list[str]:
    return [str(len(body)), hashlib.sha256(body).hexdigest(), framing]


def chunked(body: bytes, size: int) -> bytes:
    parts = [body[i:i + size] for i in range(0, len(body), size)]
    return b"".join(f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in parts) + b"0\r\n\r\n"


def test_body_is_replayed_after_a_refused_connection(core, http_backend) -> None:
    """POST and PUT, by length and chunked, alternate between a refused endpoint and a live one:
    every one ends 200 with the body the client sent, and the backend saw each exactly once."""
    be = http_backend(digest_app)
    port, dead = free_port(), free_port()
    c = core(config([http_listener(port, rule("r", "b", retry=Retry(attempts=1, on=("connect-failure",),
                                                                     backoff="1ms")))],
                    [cluster("b", f"127.0.0.1:{dead}", be.address)]), cpus=ONE)
    body = os.urandom(300 * 1024)  # many receive buffers
    with Conn(port, timeout=10) as conn:
        for i in range(4):
            method = "POST" if i % 2 == 0 else "PUT"
            conn.send(build_request(method, f"/by-length/{i}", body=body))
            r = conn.read_response()
            assert (r.status, r.text.split()) == (200, digest(body, "length")), r
            conn.send(build_request(method, f"/chunked/{i}", [("Transfer-Encoding", "chunked")]) +
                      chunked(body, 40000))
            r = conn.read_response()
            assert (r.status, r.text.split()) == (200, digest(body, "chunked")), r
    assert be.count == 8
    assert c.cluster_stats()["b"]["connect_errors"] >= 4  # half of them went to the refused one first


def test_body_sent_during_the_retry_backoff_is_kept(core, http_backend) -> None:
    """The connection is refused at once; the body (1 MiB, far more than one attempt's queue)
    arrives while the proxy waits out the backoff: it stops reading at the queue's bound and the
    next attempt gets all of it, in order."""
    be = http_backend(digest_app)
    port, dead = free_port(), free_port()
    c = core(config([http_listener(port, rule("r", "b", retry=Retry(attempts=1, on=("connect-failure",),
                                                                     backoff="300ms")))],
                    [cluster("b", f"127.0.0.1:{dead}", be.address)]), cpus=ONE)
    body = os.urandom(1 << 20)
    with Conn(port, timeout=10) as conn:
        conn.send(build_request("POST", "/upload", [("Content-Length", str(len(body)))]))
        conn.send(body)
        r = conn.read_response()
        assert (r.status, r.text.split()) == (200, digest(body, "length")), r
        assert c.cluster_stats()["b"]["connect_errors"] == 1
        assert conn.request("GET", "/after").status == 200  # the connection stays usable
    assert be.count == 2


def test_body_without_connect_failure_retry_is_503(core, http_backend) -> None:
    """A rule that retries resets only does not replay a body on a refused connection."""
    be = http_backend(digest_app)
    port, dead = free_port(), free_port()
    core(config([http_listener(port, rule("r", "b", retry=Retry(attempts=1, on=("reset",), backoff="1ms")))],
                [cluster("b", f"127.0.0.1:{dead}", be.address)]), cpus=ONE)
    with Conn(port) as conn:
        r = conn.request("POST", "/", body=b"x" * 1000)
    assert r.status == 503
    assert be.count == 0


def test_body_that_reached_the_upstream_is_not_replayed(core, http_backend) -> None:
    """An idempotent PUT with a body, reset by the upstream after it took the request: the body
    was streamed and is gone, so the reset is answered 502 even with reset retries on."""
    be = http_backend(lambda req: reset_action)
    port = free_port()
    core(config([http_listener(port, rule("r", "b", retry=Retry(attempts=2, on=("reset", "connect-failure"),
                                                                 backoff="1ms")))],
                [cluster("b", be.address)]), cpus=ONE)
    with Conn(port) as conn:
        r = conn.request("PUT", "/", body=b"y" * 5000)
    assert r.status == 502
    assert be.count == 1
