"""Running out of receive buffers and of file descriptors: the worker neither spins nor leaks,
and serves again once the resource is back."""
from __future__ import annotations

import os
import resource
import socket
import struct
import time

import pytest

from ringlane_sidecar.config.model import Limits

from .backends import Reply, endless
from .helpers import Conn, build_request, cluster, config, free_port, http_listener, rule, total, wait_for
from .test_http_client_stalls import active

pytestmark = pytest.mark.timeout(40)


def test_connection_closed_while_waiting_for_a_buffer_is_released(core, http_backend) -> None:
    """Three clients that never read endless responses hold all 8 receive buffers of the one
    worker; a fourth sends part of a head, finds no buffer, and is closed by the header timeout
    while it waits for one. It is released (it used to stay on the waiting list forever on
    io_uring), and the worker does not spin while buffers are out (it used to on epoll)."""
    be = http_backend(lambda req: endless)
    port = free_port()
    c = core(config([http_listener(port, rule("all", "b"))], [cluster("b", be.address)],
                    limits=Limits(request_header_timeout="1s", idle_timeout="60s")),
             cpus=[0], buf_size=4096, recv_bufs=8, spill_bufs=1)  # no heap copies to fall back on
    stalled = [Conn(port, rcvbuf=4096) for _ in range(3)]
    for s in stalled:
        s.send(build_request("GET", "/endless"))
    wait_for(lambda: be.count == 3, 5, "the requests to reach the backend")
    wait_for(lambda: total(c, "uring_buf_exhausted") > 0, 5, "the receive buffers to run out")
    turns = total(c, "loop_turns")
    with Conn(port, timeout=10) as victim:
        victim.send(b"GET / HT")
        try:  # closed by the header timeout: 408 if it got a buffer, else unread (so a reset)
            rest = victim.read_to_close()
        except ConnectionResetError:
            rest = b""
        assert rest == b"" or rest.startswith(b"HTTP/1.1 408 "), rest[:100]
    assert total(c, "loop_turns") - turns < 5000, "the worker spun while buffers were out"
    for s in stalled:  # reset: their buffered responses go, and the buffers come back
        s.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.sock.close()
    wait_for(lambda: active(c) == 0 and total(c, "upstream_conns_active") == 0, 10,
             "every connection, client and upstream, to be released")


def test_slow_readers_do_not_starve_the_worker_of_receive_buffers(core, http_backend) -> None:
    """Clients that request big responses and read none park receive buffers in their queues
    (up to PAUSE_AT slices each): a dozen of them held all 8 receive buffers of the worker, and no
    socket of it could be read any more (every other client waited for an idle timeout to cut
    a slow reader: a denial of service for a few connections). When most receive buffers are
    held, what arrives is copied into heap buffers and the receive buffer goes back at once."""
    be = http_backend(lambda req: endless if req.target == "/endless" else Reply(200, b"small"))
    port = free_port()
    c = core(config([http_listener(port, rule("all", "b"))], [cluster("b", be.address)],
                    limits=Limits(request_header_timeout="10s", idle_timeout="60s")),
             cpus=[0], buf_size=4096, recv_bufs=8)
    stalled = [Conn(port, rcvbuf=4096) for _ in range(12)]
    try:
        for s in stalled:
            s.send(build_request("GET", "/endless"))
        wait_for(lambda: be.count == 12, 5, "the requests to reach the backend")
        wait_for(lambda: total(c, "rx_copied") or total(c, "uring_buf_exhausted"), 5, "receive buffers to run short")
        with Conn(port, timeout=5) as other:
            assert other.request("GET", "/small").body == b"small"
        assert total(c, "rx_copied") > 0
    finally:
        for s in stalled:
            s.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.sock.close()
    wait_for(lambda: active(c) == 0 and total(c, "upstream_conns_active") == total(c, "upstream_conns_idle"), 10,
             lambda: f"every connection but the pooled one to be released: {list(c.totals())}")


def test_out_of_descriptors_pauses_accepting_then_resumes(core, nginx) -> None:
    """The process hits RLIMIT_NOFILE while clients connect: accept fails with EMFILE, the
    worker stops accepting for a while instead of retrying at once (it spun on epoll), and
    serves the waiting connections once descriptors are available again."""
    port = free_port()
    c = core(config([http_listener(port, rule("all", "a"))], [cluster("a", nginx.a)]), cpus=[0])
    clients = [socket.socket() for _ in range(3)]  # made before the limit: connect needs no new fd
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    turns = total(c, "loop_turns")
    resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) - 1, hard))
    try:
        for s in clients:
            s.connect(("127.0.0.1", port))  # completes in the kernel; the proxy cannot accept
        time.sleep(0.5)  # the window under test: accepting fails all along
        turns = total(c, "loop_turns") - turns
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert turns < 1000, f"{turns} loop turns in 0.5 s without descriptors: the worker spun"
    for s in clients:
        with s:
            s.settimeout(5)
            s.sendall(build_request("GET", "/after-emfile"))
            assert s.recv(12) == b"HTTP/1.1 200"
