"""The L4 TCP relay: byte-exact, half-close aware, backpressured, many connections."""
from __future__ import annotations

import hashlib
import os
import socket
import threading
import time

import pytest

from .backends import echo_handler, recv_all, reset, sha_sink_handler
from .helpers import accepted_nodelay, cluster, config, free_port, tcp_listener, wait_for

pytestmark = pytest.mark.timeout(30)


def relay_cfg(port: int, backend: str, generation: int = 1):  # type: ignore[no-untyped-def]
    return config([tcp_listener(port, "up")], [cluster("up", backend)], generation)


def test_echo_round_trip(core, tcp_server) -> None:
    srv = tcp_server(echo_handler)
    port = free_port()
    c = core(relay_cfg(port, srv.address))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        for i in range(20):
            msg = f"hello {i} ".encode() * (i + 1)
            s.sendall(msg)
            got = b""
            while len(got) < len(msg):
                chunk = s.recv(65536)
                assert chunk, "relay closed mid-echo"
                got += chunk
            assert got == msg
        s.shutdown(socket.SHUT_WR)
        assert s.recv(10) == b"", "the echo backend's FIN did not come through"
    stats = wait_for(lambda: (lambda st: st if st["conns_closed"] == 1 else None)(c.listener_stats()["tcp"]), 5,
                     "the relay connection to be counted closed")
    assert stats["conns_opened"] == 1
    assert c.cluster_stats()["up"]["connections_opened"] == 1


def test_accepted_connections_send_without_nagle(core, tcp_server) -> None:
    """TCP_NODELAY (set once on the listeners, inherited by what they accept): a relay must not
    hold a small write back waiting for the previous one's ACK."""
    srv = tcp_server(echo_handler)
    port = free_port()
    core(relay_cfg(port, srv.address))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"x")
        assert s.recv(1) == b"x"
        assert accepted_nodelay(s) == 1


GIB = 1 << 30


@pytest.mark.timeout(120)
def test_one_gib_streamed_sha256(core, tcp_server) -> None:
    """1 GiB client -> relay -> backend, hashed on both ends as a stream (never held in memory)."""
    srv = tcp_server(sha_sink_handler)
    port = free_port()
    core(relay_cfg(port, srv.address))
    blocks = [os.urandom((1 << 20) + 7 * k) for k in range(5)]  # distinct sizes: misordering shows
    sent_hash = hashlib.sha256()
    sent = [0]
    errors: list[BaseException] = []
    s = socket.create_connection(("127.0.0.1", port), timeout=30)

    def sender() -> None:
        try:
            k = 0
            while sent[0] < GIB:
                b = blocks[k % len(blocks)]
                if sent[0] + len(b) > GIB:
                    b = b[: GIB - sent[0]]
                s.sendall(b)
                sent_hash.update(b)
                sent[0] += len(b)
                k += 1
            s.shutdown(socket.SHUT_WR)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    t = threading.Thread(target=sender, daemon=True)
    t.start()
    answer = recv_all(s)  # the sink answers after it has seen EOF (so half-close is exercised too)
    t.join(60)
    s.close()
    assert not errors, errors
    assert sent[0] == GIB
    n, digest = answer.decode().split()
    assert int(n) == GIB
    assert digest == sent_hash.hexdigest()


@pytest.mark.timeout(60)
def test_256_mib_download_sha256(core, tcp_server) -> None:
    """The other direction: backend -> relay -> client, 256 MiB, hashed as a stream."""
    block = os.urandom((1 << 20) + 3)
    total = 256 << 20
    expect = hashlib.sha256()

    def handler(conn: socket.socket, index: int) -> None:
        left = total
        while left:
            b = block[: min(len(block), left)]
            conn.sendall(b)
            left -= len(b)
        conn.shutdown(socket.SHUT_WR)

    left = total
    while left:
        b = block[: min(len(block), left)]
        expect.update(b)
        left -= len(b)
    srv = tcp_server(handler)
    port = free_port()
    core(relay_cfg(port, srv.address))
    got = hashlib.sha256()
    n = 0
    buf = bytearray(1 << 20)
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        while True:
            k = s.recv_into(buf)
            if not k:
                break
            got.update(memoryview(buf)[:k])
            n += k
    assert n == total
    assert got.hexdigest() == expect.hexdigest()


def test_client_reset_closes_backend_side(core, tcp_server) -> None:
    closed = threading.Event()

    def handler(conn: socket.socket, index: int) -> None:
        conn.sendall(b"hi")
        while True:
            try:
                if not conn.recv(100):
                    break
            except ConnectionResetError:
                break
        closed.set()

    srv = tcp_server(handler)
    port = free_port()
    c = core(relay_cfg(port, srv.address))
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    assert s.recv(2) == b"hi"
    reset(s)
    assert closed.wait(5), "the backend side stayed open after the client's reset"
    wait_for(lambda: c.listener_stats()["tcp"]["conns_closed"] == 1, 5, "the relay to close")


def test_half_close_client_still_receives(core, tcp_server) -> None:
    """Client shuts down its write side; the backend sees EOF, then sends 256 KiB + END; all arrive."""
    payload = os.urandom(256 * 1024)

    def handler(conn: socket.socket, index: int) -> None:
        got = recv_all(conn)  # until the client's FIN
        conn.sendall(b"%d\n" % len(got) + payload + b"END")
        conn.shutdown(socket.SHUT_WR)

    srv = tcp_server(handler)
    port = free_port()
    core(relay_cfg(port, srv.address))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"x" * 1000)
        s.shutdown(socket.SHUT_WR)
        got = recv_all(s)
    assert got == b"1000\n" + payload + b"END"


def test_backend_close_propagates(core, tcp_server) -> None:
    def handler(conn: socket.socket, index: int) -> None:
        conn.sendall(b"bye")
        conn.close()

    srv = tcp_server(handler)
    port = free_port()
    c = core(relay_cfg(port, srv.address))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        assert recv_all(s) == b"bye"  # then EOF: the backend's close reached the client
    wait_for(lambda: c.listener_stats()["tcp"]["conns_closed"] == 1, 5, "the relay to close")


def test_backend_refused_closes_client(core) -> None:
    port, dead = free_port(), free_port()
    c = core(relay_cfg(port, f"127.0.0.1:{dead}"))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        try:
            assert s.recv(10) == b""
        except ConnectionResetError:
            pass
    wait_for(lambda: c.cluster_stats()["up"]["connect_errors"] == 1, 5, "a connect error to be counted")


def test_connect_timeout_closes_client(core, blackhole) -> None:
    port = free_port()
    c = core(config([tcp_listener(port, "up")], [cluster("up", blackhole, connect_timeout="300ms")]))
    start = time.monotonic()  # before connecting: the connect timeout starts at the accept
    with socket.create_connection(("127.0.0.1", port), timeout=3) as s:
        try:
            assert s.recv(10) == b""
        except ConnectionResetError:
            pass
        assert 0.25 <= time.monotonic() - start <= 2.0
    wait_for(lambda: c.cluster_stats()["up"]["connect_errors"] == 1, 3, "one connect error")
    wait_for(lambda: sum(t.conns_active for t in c.totals()) == 0, 3, "the relay to be released")


def test_200_concurrent_connections(core, tcp_server) -> None:
    srv = tcp_server(echo_handler)
    port = free_port()
    c = core(relay_cfg(port, srv.address))
    socks = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(200)]
    try:
        msgs = [f"conn-{i}-".encode() * 50 for i in range(200)]
        for s, m in zip(socks, msgs):
            s.sendall(m)
        wait_for(lambda: srv.accepted == 200, 10, "200 upstream connections")
        for s, m in zip(socks, msgs):
            got = b""
            while len(got) < len(m):
                chunk = s.recv(65536)
                assert chunk
                got += chunk
            assert got == m
        assert sum(t.conns_active for t in c.totals()) == 200
    finally:
        for s in socks:
            s.close()
    st = wait_for(lambda: (lambda x: x if x["conns_closed"] == 200 else None)(c.listener_stats()["tcp"]), 10,
                  "200 closes")
    assert st["conns_opened"] == 200
    wait_for(lambda: sum(t.conns_active for t in c.totals()) == 0, 5, "no active connections")
