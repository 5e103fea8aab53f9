"""Clients that read or send slowly, or stop. The idle timeout measures a client's silence: a
client still taking the bytes it is owed, or sending the body the proxy waits for, is never cut;
one that stopped is cut after the idle timeout (with no rule timeouts configured too), so it
cannot hold buffers or upstream connections for good."""
from __future__ import annotations

import hashlib
import time

import pytest

from ringlane_sidecar.config.model import Limits

from .backends import Reply, digest_app, endless
from .helpers import Conn, build_request, cluster, config, free_port, http_listener, rule, wait_for

pytestmark = pytest.mark.timeout(40)

IDLE = Limits(request_header_timeout="1s", idle_timeout="1s")


def active(c) -> int:  # type: ignore[no-untyped-def]
    return sum(t.conns_active for t in c.totals())


def test_client_that_stops_reading_is_cut_without_rule_timeouts(core, http_backend) -> None:
    """No request timeout is configured; the client reads nothing of an endless response."""
    be = http_backend(lambda req: endless)
    port = free_port()
    c = core(config([http_listener(port, rule("all", "b"))], [cluster("b", be.address)], limits=IDLE))
    with Conn(port, rcvbuf=4096) as conn:
        conn.send(build_request("GET", "/endless"))
        wait_for(lambda: be.count == 1, 5, "the request to reach the backend")
        wait_for(lambda: active(c) == 0, 15, "the stalled client to be cut")


def test_connection_close_response_to_a_client_that_stops_reading(core, http_backend) -> None:
    """Connection: close and a response larger than the socket buffers, never read: the
    connection is flushing its last response, and is cut once the client has been silent for
    the idle timeout (before, no timer ran in that state)."""
    be = http_backend(lambda req: Reply(200, b"x" * (8 << 20)))
    port = free_port()
    c = core(config([http_listener(port, rule("all", "b"))], [cluster("b", be.address)], limits=IDLE))
    with Conn(port, rcvbuf=4096) as conn:
        conn.send(build_request("GET", "/big", [("Connection", "close")]))
        wait_for(lambda: be.count == 1, 5, "the request to reach the backend")
        wait_for(lambda: active(c) == 0, 15, "the silent client to be cut")


def test_slow_reader_outlasting_the_idle_timeout_gets_everything(core, http_backend) -> None:
    """A 160 KiB response with Connection: close, read at about 50 KiB/s through a 4 KiB window,
    1 s idle timeout: the proxy has the whole response from the backend long before the client
    has read it (the flush timer starts then), but the client keeps reading, so it is not cut
    and the body arrives whole."""
    body = bytes(range(256)) * (160 << 2)
    be = http_backend(lambda req: Reply(200, body))
    port = free_port()
    core(config([http_listener(port, rule("all", "b"))], [cluster("b", be.address)], limits=IDLE))
    with Conn(port, rcvbuf=4096, timeout=10) as conn:
        conn.send(build_request("GET", "/big", [("Connection", "close")]))
        status, _, _, _ = conn.read_head()
        assert status == 200
        got = bytearray(conn.buf)
        conn.buf = b""
        started = time.monotonic()
        while len(got) < len(body):
            time.sleep(0.08)  # the slow reader under test
            chunk = conn.sock.recv(4096)
            assert chunk, f"cut after {len(got)} of {len(body)} bytes, {time.monotonic() - started:.1f} s in"
            got += chunk
        assert hashlib.sha256(got).digest() == hashlib.sha256(body).digest()
        assert time.monotonic() - started > 2, "the read was not slower than the idle timeout: not a test"


def test_client_that_stops_sending_mid_body_gets_408(core, http_backend) -> None:
    """No rule timeouts; the client sends a head promising 100 kB and 1 kB of it, then nothing:
    it is answered 408 after the idle timeout and both its connection and the upstream one,
    holding half a body, are closed (before, the stall timer only watched reads)."""
    be = http_backend(digest_app)
    port = free_port()
    c = core(config([http_listener(port, rule("all", "b"))], [cluster("b", be.address)], limits=IDLE))
    with Conn(port, timeout=10) as conn:
        conn.send(build_request("POST", "/upload", [("Content-Length", "100000")]) + b"x" * 1000)
        wait_for(lambda: sum(t.upstream_conns_active for t in c.totals()) == 1, 5,
                 "the body to be on its way upstream")
        r = conn.read_response()
        assert r.status == 408
        assert r.header("connection") == "close"
        assert conn.at_eof(timeout=8)
    wait_for(lambda: active(c) == 0 and sum(t.upstream_conns_active for t in c.totals()) == 0, 5,
             "both connections to be closed")
    assert be.count == 0, "a partial body must not reach the backend as a request"


def test_slow_body_sender_outlasting_the_idle_timeout_is_served(core, http_backend) -> None:
    """A 24 kB body sent in 1 kB pieces every 0.15 s (3.6 s in all, 1 s idle timeout): the
    client never falls silent, so the upload completes."""
    be = http_backend(digest_app)
    port = free_port()
    core(config([http_listener(port, rule("all", "b"))], [cluster("b", be.address)], limits=IDLE))
    body = bytes(range(256)) * 96
    with Conn(port, timeout=10) as conn:
        conn.send(build_request("POST", "/upload", [("Content-Length", str(len(body)))]))
        started = time.monotonic()
        for i in range(0, len(body), 1024):
            time.sleep(0.15)  # the slow sender under test
            conn.send(body[i:i + 1024])
        assert time.monotonic() - started > 2, "the upload was not slower than the idle timeout: not a test"
        r = conn.read_response()
        assert r.status == 200
        assert r.text == f"{len(body)} {hashlib.sha256(body).hexdigest()} length\n"
