"""Upgrade (WebSocket) tunnels behave as the L4 relay does: idle timeouts see bytes moving either
way, a cut stream ends in resets, a reset reaches the other side after what came before it, and
the two directions close apart. From a review pass: each tunnel test failed before its fix (the
docstrings name what was wrong); each is paired with the same scenario through the TCP relay
(a control that passed already)."""
from __future__ import annotations

import hashlib
import os
import socket
import threading
import time

import pytest

from ringlane_sidecar.config.model import Limits

from .backends import recv_head, reset
from .helpers import (Conn, cluster, config, fill_until_blocked, free_port, http_listener, proxy_side, rule,
                      tcp_listener, wait_for)
from .test_tunnel_and_continue_edges import SWITCH, UPGRADE, inq, outq

pytestmark = pytest.mark.timeout(60)


def ws_cfg(port: int, backend: str, limits: Limits):  # type: ignore[no-untyped-def]
    return config([http_listener(port, rule("ws", "w"))], [cluster("w", backend)], limits=limits)


def relay_cfg(port: int, backend: str, limits: Limits):  # type: ignore[no-untyped-def]
    return config([tcp_listener(port, "up")], [cluster("up", backend)], limits=limits)


def actives(c) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    ts = list(c.totals())
    return sum(t.conns_active for t in ts), sum(t.upstream_conns_active for t in ts)


def read_all_how(conn: socket.socket, timeout: float = 15.0) -> tuple[int, bytes, str]:
    """Reads conn to its end: (bytes, their sha256, 'eof' | 'reset' | 'timeout')."""
    conn.settimeout(timeout)
    h = hashlib.sha256()
    n = 0
    try:
        while True:
            d = conn.recv(1 << 16)
            if not d:
                return n, h.digest(), "eof"
            h.update(d)
            n += len(d)
    except ConnectionResetError:
        return n, h.digest(), "reset"
    except socket.timeout:
        return n, h.digest(), "timeout"


# ---- (1) a tunnel's idle timer does not see bytes moving toward the upstream ----

SLOW_LIMITS = Limits(request_header_timeout="2s", tunnel_idle_timeout="1s")
SLOW_PAYLOAD = 48 * 1024  # fits the proxy's queue: the client side is read once, at the start
SLOW_STEP_BYTES, SLOW_STEP_S = 1024, 0.05  # ~20 kB/s: 2.4 s for the payload, a byte at least every 50 ms


def slow_reader(conn: socket.socket, expect: int, got: list[tuple[int, str]], done: threading.Event) -> None:
    """Reads expect bytes, SLOW_STEP_BYTES at a time (pacing, not synchronisation), then answers
    the count; records (bytes, how it ended)."""
    n, how = 0, "ok"
    conn.settimeout(10)
    try:
        while n < expect:
            d = conn.recv(SLOW_STEP_BYTES)
            if not d:
                how = "eof"
                break
            n += len(d)
            time.sleep(SLOW_STEP_S)
        if how == "ok":
            conn.sendall(b"got %d" % n)
    except OSError as e:
        how = type(e).__name__
    finally:
        got.append((n, how))
        done.set()


def shrink_proxy_side(peer: socket.socket) -> None:
    """The proxy's socket whose peer is `peer`: a small send buffer, so what waits for a slow
    reader waits in the proxy (sends complete one small piece at a time)."""
    ps = wait_for(lambda: proxy_side(peer), 3, "the proxy's socket to the backend")
    try:
        ps.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    finally:
        ps.close()


def test_tunnel_upload_to_slow_upstream_is_not_cut_as_idle(core, tcp_server) -> None:
    """A WebSocket client uploads 48 kB and waits for the upstream's answer; the
    upstream consumes it steadily, 1 kB every 50 ms (2.4 s in all), with tunnelIdleTimeout=1s.
    Bytes move toward the upstream the whole time, yet the tunnel is cut after 1 s (both sides
    reset, the upload lost, no answer). HAProxy's `timeout tunnel` and nginx's proxy_timeout
    count a write to either side as activity, and so does this proxy's own TCP relay
    (rl_relay.c on_sent: `r->moved += res > 0`, see the control test below). The tunnel's timer
    counts only the client side: rl_http.c arm_tunnel/on_timer compare c->heard, which on_recv
    and on_sent of the *client* socket bump; rl_http_on_up_sent (a send that the upstream took)
    does not, so once the client's bytes are all read into the proxy, a slow upstream draining
    them is "no byte moving"."""
    got: list[tuple[int, str]] = []
    done = threading.Event()
    upc: list[socket.socket] = []

    def handler(conn: socket.socket, index: int) -> None:
        if recv_head(conn) is None:
            return
        conn.sendall(SWITCH)
        upc.append(conn)
        slow_reader(conn, SLOW_PAYLOAD, got, done)

    be = tcp_server(handler)
    be.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a slow upstream: small window
    port = free_port()
    c = core(ws_cfg(port, be.address, SLOW_LIMITS))
    payload = os.urandom(SLOW_PAYLOAD)
    with Conn(port, timeout=10) as conn:
        conn.send(UPGRADE)
        assert conn.read_response().status == 101
        wait_for(lambda: upc, 5, "the upstream to switch")
        shrink_proxy_side(upc[0])
        conn.send(payload)
        assert done.wait(20)
        n, how = got[0]
        assert how == "ok", (f"the tunnel was cut while the upstream was still reading the upload "
                             f"({n} of {SLOW_PAYLOAD} bytes read, then {how})")
        try:
            answer = conn.sock.recv(100)
        except ConnectionResetError:
            answer = b"<reset>"
        assert answer == b"got %d" % SLOW_PAYLOAD, (
            f"the upstream read the whole upload, 1 kB every 50 ms, but the tunnel had been closed as idle "
            f"meanwhile: its answer never reached the client (got {answer!r})")
    wait_for(lambda: actives(c) == (0, 0), 5, "the tunnel to be released")


def test_relay_upload_to_slow_upstream_is_not_cut_as_idle(core, tcp_server) -> None:
    """Control (the TCP relay): the same slow upload through the TCP relay
    is not cut, as every send the upstream takes counts as movement (rl_relay.c on_sent)."""
    got: list[tuple[int, str]] = []
    done = threading.Event()
    upc: list[socket.socket] = []

    def handler(conn: socket.socket, index: int) -> None:
        upc.append(conn)
        slow_reader(conn, SLOW_PAYLOAD, got, done)

    be = tcp_server(handler)
    be.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    port = free_port()
    core(relay_cfg(port, be.address, SLOW_LIMITS))
    payload = os.urandom(SLOW_PAYLOAD)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        wait_for(lambda: upc, 5, "the relay to connect")
        shrink_proxy_side(upc[0])
        s.sendall(payload)
        assert done.wait(20)
        n, how = got[0]
        assert how == "ok", f"relay cut while moving: {n} bytes, then {how}"
        assert s.recv(100) == b"got %d" % SLOW_PAYLOAD


# ---- (2) a half-closed tunnel cut at the idle timeout ends an upload with a FIN ----

HALF_LIMITS = Limits(request_header_timeout="2s", idle_timeout="1s", tunnel_idle_timeout="1s")


def half_closed_stalled_upstream(kind: str, tcp_server, core):  # type: ignore[no-untyped-def]
    """The upstream switches (kind 'ws') or accepts (kind 'tcp'), sends its last bytes and FIN,
    then stops reading until told; the client streams until the proxy stops taking its bytes.
    Returns (core, how the upstream's read of the upload ended, bytes it read, bytes sent)."""
    release = threading.Event()
    done = threading.Event()
    got: list[tuple[int, bytes, str]] = []

    def handler(conn: socket.socket, index: int) -> None:
        if kind == "ws":
            if recv_head(conn) is None:
                return
            conn.sendall(SWITCH + b"bye")
        else:
            conn.sendall(b"bye")
        conn.shutdown(socket.SHUT_WR)
        release.wait(30)
        got.append(read_all_how(conn))
        done.set()

    be = tcp_server(handler)
    be.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    port = free_port()
    c = core((ws_cfg if kind == "ws" else relay_cfg)(port, be.address, HALF_LIMITS))
    with Conn(port, timeout=10) as conn:
        if kind == "ws":
            conn.send(UPGRADE)
            assert conn.read_response().status == 101
        assert conn.read_to_close() == b"bye"  # the upstream's FIN came through
        sent = fill_until_blocked(conn.sock)  # the upstream does not read: the proxy stops too
        # Nothing moves either way: the proxy cuts the session after its timeout.
        wait_for(lambda: actives(c) == (0, 0), 10, lambda: f"the stalled session to be cut ({actives(c)})")
        release.set()
        assert done.wait(20)
    n, _, how = got[0]
    return c, how, n, sent


def test_half_closed_tunnel_cut_at_idle_timeout_resets_the_upstream(core, tcp_server) -> None:
    """The upstream switches protocols, sends its last message and half-closes, then
    stops reading for a while; the client keeps uploading. Nothing moves for idleTimeout, so the
    proxy cuts the rest of the tunnel, dropping the upload bytes it still holds for the upstream
    (u->out). The upstream, once it reads again, gets a truncated upload followed by a clean
    EOF: a cut stream passes for a complete one. A direct TCP connection, HAProxy and this
    proxy's own TCP relay (rl_relay.c on_idle: `if (!flushed(...)) return relay_abort(...)`, see
    the control test below) end it with a reset. rl_http.c on_timer, branch
    `c->state == C_TUNNEL && c->up_eof`, calls client_close, which excludes tunnels from its
    abort-on-close (`c->state != C_TUNNEL && ...`) and whose rl_http_up_detach -> up_close clears
    u->out and closes gracefully; the open-tunnel branch just below does the abort right."""
    _, how, n, sent = half_closed_stalled_upstream("ws", tcp_server, core)
    assert n < sent, "the upstream got the whole upload: the scenario did not stall"
    assert how == "reset", (f"the upstream read {n} of the {sent} bytes the client sent, then a clean EOF: "
                            f"a cut upload that looks complete")


def test_half_closed_relay_cut_at_idle_timeout_resets_the_upstream(core, tcp_server) -> None:
    """Control (the TCP relay): the TCP relay in the same state resets the
    upstream (rl_relay.c on_idle)."""
    _, how, n, sent = half_closed_stalled_upstream("tcp", tcp_server, core)
    assert n < sent
    assert how == "reset", f"the upstream read {n} of {sent} bytes, then {how}"


# ---- (3) a reset in a tunnel drops what came before it ----

RESET_PAYLOAD = 60_000  # fits the proxy's queue toward the other side without pausing reads


def upstream_resets_after_payload(kind: str, tcp_server, core) -> tuple[int, str]:  # type: ignore[no-untyped-def]
    """The upstream sends RESET_PAYLOAD bytes, waits until the proxy has read every one of them
    (its kernel acknowledged them and the proxy's receive queue is empty), then resets. The
    client reads slowly (small windows both ways: the bytes wait in the proxy's own queue).
    Returns (bytes the client read, how its stream ended)."""
    payload = os.urandom(RESET_PAYLOAD)
    taken = threading.Event()

    def handler(conn: socket.socket, index: int) -> None:
        if kind == "ws":
            if recv_head(conn) is None:
                return
            conn.sendall(SWITCH)
        go.wait(10)
        conn.sendall(payload)
        ps = wait_for(lambda: proxy_side(conn), 3, "the proxy's socket to the upstream")
        try:
            wait_for(lambda: outq(conn) == 0 and inq(ps) == 0, 5, "the proxy to read the whole payload")
        finally:
            ps.close()
        reset(conn)
        taken.set()

    go = threading.Event()
    be = tcp_server(handler)
    port = free_port()
    core((ws_cfg if kind == "ws" else relay_cfg)(port, be.address, Limits(request_header_timeout="2s")))
    conn = Conn(port, timeout=10, rcvbuf=4096)
    with conn:
        cs = wait_for(lambda: proxy_side(conn.sock), 3, "the proxy to accept")
        try:
            cs.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)  # what waits, waits in the proxy
        finally:
            cs.close()
        if kind == "ws":
            conn.send(UPGRADE)
            assert conn.read_response().status == 101
        go.set()
        assert taken.wait(10), "the proxy never read the upstream's payload"
        n, digest, how = read_all_how(conn.sock)
        n += len(conn.buf)
        return n, how


def test_tunnel_upstream_reset_delivers_what_came_before_it(core, tcp_server) -> None:
    """The upstream of a WebSocket tunnel sends 60 kB, then resets the connection (an
    abort after its last message). Every byte had reached the proxy; the client, reading a bit
    slowly, gets only a prefix, then the reset. With a direct TCP connection the receiver reads
    all the data that arrived before the RST, then ECONNRESET (Linux tcp_recvmsg drains the
    receive queue before reporting sk_err), and this proxy's TCP relay does the same
    (rl_relay.c side_failed/reset_when_delivered: "the other side gets what `dead` sent before,
    then a reset"; test_relay_reset_delivers_what_came_before_it, and the control below). The
    tunnel path drops it: rl_http.c rl_http_on_up_end, `c->state == C_TUNNEL && err`, sets
    linger 0 on the client socket and calls client_close at once, which clears c->out."""
    n, how = upstream_resets_after_payload("ws", tcp_server, core)
    assert (n, how) == (RESET_PAYLOAD, "reset"), (
        f"the client got {n} of the {RESET_PAYLOAD} bytes the upstream sent before its reset, then {how}")


def test_relay_upstream_reset_delivers_what_came_before_it_small_windows(core, tcp_server) -> None:
    """Control (the TCP relay, with the bytes held in the relay's own queue
    rather than in the kernel): the relay delivers them all, then the reset."""
    n, how = upstream_resets_after_payload("tcp", tcp_server, core)
    assert (n, how) == (RESET_PAYLOAD, "reset"), f"{n} of {RESET_PAYLOAD} bytes, then {how}"


def client_resets_after_payload(kind: str, tcp_server, core) -> tuple[int, str]:  # type: ignore[no-untyped-def]
    """The mirror: the client sends RESET_PAYLOAD bytes toward an upstream that reads only later,
    waits until the proxy has read them all, then resets. Returns (bytes the upstream read,
    how its stream ended)."""
    payload = os.urandom(RESET_PAYLOAD)
    release = threading.Event()
    done = threading.Event()
    got: list[tuple[int, bytes, str]] = []
    upc: list[socket.socket] = []

    def handler(conn: socket.socket, index: int) -> None:
        if kind == "ws":
            if recv_head(conn) is None:
                return
            conn.sendall(SWITCH)
        upc.append(conn)
        release.wait(10)
        got.append(read_all_how(conn))
        done.set()

    be = tcp_server(handler)
    be.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # small window: bytes wait in the proxy
    port = free_port()
    core((ws_cfg if kind == "ws" else relay_cfg)(port, be.address, Limits(request_header_timeout="2s")))
    conn = Conn(port, timeout=10)
    try:
        if kind == "ws":
            conn.send(UPGRADE)
            assert conn.read_response().status == 101
        wait_for(lambda: upc, 5, "the upstream to be connected")
        shrink_proxy_side(upc[0])
        conn.send(payload)
        cs = wait_for(lambda: proxy_side(conn.sock), 3, "the proxy's client socket")
        try:
            wait_for(lambda: outq(conn.sock) == 0 and inq(cs) == 0, 5, "the proxy to read the whole payload")
        finally:
            cs.close()
        reset(conn.sock)
    finally:
        conn.sock.close()
        release.set()
    assert done.wait(15)
    n, _, how = got[0]
    return n, how


def test_tunnel_client_reset_delivers_what_came_before_it(core, tcp_server) -> None:
    """The mirror of the test above: a WebSocket client sends 60 kB and aborts (RST);
    the proxy had read every byte, but the upstream, reading a bit behind, gets only what was
    already in its own kernel buffers, then the reset. The relay delivers everything the client
    sent before its reset, then resets (rl_relay.c side_failed; control below). rl_http.c
    on_recv_end (`err && c->state == C_TUNNEL`) sets linger 0 on the upstream socket and calls
    client_close, whose rl_http_up_detach -> up_close clears u->out at once."""
    n, how = client_resets_after_payload("ws", tcp_server, core)
    assert (n, how) == (RESET_PAYLOAD, "reset"), (
        f"the upstream got {n} of the {RESET_PAYLOAD} bytes the client sent before its reset, then {how}")


def test_relay_client_reset_delivers_what_came_before_it_small_windows(core, tcp_server) -> None:
    """Control (the TCP relay)."""
    n, how = client_resets_after_payload("tcp", tcp_server, core)
    assert (n, how) == (RESET_PAYLOAD, "reset"), f"{n} of {RESET_PAYLOAD} bytes, then {how}"


# ---- (4) both sides half-closed: the client's FIN waits for the upstream to read ----

CLOSE_WAIT = 8  # tcp_info.tcpi_state


def both_fin_client_first(kind: str, tcp_server, core) -> tuple[bytes, str]:  # type: ignore[no-untyped-def]
    """The client sends 60 kB and half-closes; the proxy reads all of it (FIN included) while most
    still waits in its queue for an upstream with a small window that is not reading yet. The
    upstream then sends its last bytes and half-closes, and reads only once the client saw the
    end of the stream (or after a deadline). Returns what the client read and how it ended
    within 3 s."""
    release = threading.Event()
    done = threading.Event()
    go = threading.Event()
    got: list[tuple[int, bytes, str]] = []
    upc: list[socket.socket] = []

    def handler(conn: socket.socket, index: int) -> None:
        if kind == "ws":
            if recv_head(conn) is None:
                return
            conn.sendall(SWITCH)
        upc.append(conn)
        go.wait(10)
        conn.sendall(b"bye")
        conn.shutdown(socket.SHUT_WR)
        release.wait(6)  # not synchronisation: a direct connection needs no release at all
        got.append(read_all_how(conn))
        done.set()

    be = tcp_server(handler)
    be.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    port = free_port()
    c = core((ws_cfg if kind == "ws" else relay_cfg)(port, be.address, Limits(request_header_timeout="2s")))
    payload = os.urandom(RESET_PAYLOAD)
    with Conn(port, timeout=10) as conn:
        if kind == "ws":
            conn.send(UPGRADE)
            assert conn.read_response().status == 101
        wait_for(lambda: upc, 5, "the upstream to be connected")
        shrink_proxy_side(upc[0])
        conn.send(payload)
        conn.sock.shutdown(socket.SHUT_WR)
        cs = wait_for(lambda: proxy_side(conn.sock), 3, "the proxy's client socket")
        try:
            wait_for(lambda: inq(cs) == 0 and cs.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0] == CLOSE_WAIT,
                     5, "the proxy to read the client's bytes and FIN")
        finally:
            cs.close()
        go.set()
        data, how = b"", "timeout"
        conn.sock.settimeout(3)
        try:
            while True:
                d = conn.sock.recv(100)
                if not d:
                    how = "eof"
                    break
                data += d
        except socket.timeout:
            pass
        except ConnectionResetError:
            how = "reset"
        release.set()
        assert done.wait(15)
        n, digest, up_how = got[0]
        assert (n, digest, up_how) == (len(payload), hashlib.sha256(payload).digest(), "eof"), \
            f"the upstream got {n} of {len(payload)} bytes, then {up_how}"
    wait_for(lambda: actives(c) == (0, 0), 5, "the session to be released")
    return data, how


def test_tunnel_upstream_fin_after_client_fin_reaches_client_at_once(core, tcp_server) -> None:
    """A WebSocket client sends its last 60 kB and half-closes; the upstream, reading
    behind, sends "bye" and half-closes too. The client gets "bye" but not the end of the
    stream: its FIN is held until the upstream has read every byte the client sent, which may
    be long (or, for an upstream that reads only once its peer has seen its close, until
    tunnelIdleTimeout, 1 h by default). The two directions of a TCP connection close
    independently (RFC 9293 3.6), a direct connection or the TCP relay (rl_relay.c
    maybe_shutdown, control below) passes the FIN on as soon as what precedes it is delivered.
    rl_http.c rl_http_on_up_eof: when c->client_eof is set it returns rl_unsent(&u->out)
    without setting c->shut_when_flushed (the branch below it does), so nothing sends the
    client its FIN until shut_wr -> rl_http_on_up_end -> close_when_flushed."""
    data, how = both_fin_client_first("ws", tcp_server, core)
    assert (data, how) == (b"bye", "eof"), (
        f"the client got {data!r} and then {how} within 3 s: the upstream's FIN was held back while the upstream "
        f"had not yet read everything the client sent")


def test_relay_upstream_fin_after_client_fin_reaches_client_at_once(core, tcp_server) -> None:
    """Control (the TCP relay)."""
    data, how = both_fin_client_first("tcp", tcp_server, core)
    assert (data, how) == (b"bye", "eof"), f"{data!r}, then {how}"
