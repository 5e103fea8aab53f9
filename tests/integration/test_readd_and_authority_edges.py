"""Edges of three changes, from an adversarial review (each test failed when written; the
docstrings say what was wrong and where): an upstream connection whose endpoint a reload dropped
is not pooled even if a later reload names the address again or it was opened for a request
routed on the old config; a re-added listener next to another listener on its port applies at
once (no wait for sockets that are not its own); an absolute-form authority must be a valid one,
and a rule that adds Host gets one Host line."""
from __future__ import annotations

import json
import socket
import threading
import time

import pytest

from ringlane_sidecar.config.model import Listener

from .backends import Reply, headers_app, recv_all, recv_head
from .conftest import apply_and_wait
from .helpers import Conn, build_request, cluster, config, free_port, header_filter, http_listener, rule, wait_for
from .test_reload_endpoint_churn import NamedServer

pytestmark = pytest.mark.timeout(60)

ONE = [0]


# ==== 5649c30: pooling after an endpoint removal ====

def test_endpoint_removed_and_readded_while_busy_old_connection_is_not_pooled(core, http_backend) -> None:
    """Endpoint A (old pod) has a request in flight; reload 2 replaces A with B, reload 3 (an
    EndpointSlice update a moment later) names A's address again: Kubernetes gave it to a new
    pod. The exchange on the old pod ends after both reloads. The connection was busy across a
    config that dropped its endpoint: it must be closed, not pooled (README: "After a reload,
    an upstream connection to an endpoint the config no longer names is closed once its
    exchange ends, never pooled"); the next requests must reach the new pod.
    Fails: endpoint_current (rl_http_up.c) only asks whether the *newest* config names the
    address (u->cfg_seq is compared with w->cfg_seq lazily, at detach); reload 3 names it again,
    so rl_http_up_detach pools the old pod's connection and rl_http_up_get reuses it."""
    release = threading.Event()
    pa = free_port()
    old = NamedServer("old-pod", pa, hold=release)
    b = http_backend(lambda req: Reply(200, b"B"))
    port = free_port()
    new = None
    try:
        c = core(config([http_listener(port, rule("r", "up"))], [cluster("up", f"127.0.0.1:{pa}")]), cpus=ONE)
        with Conn(port) as conn:
            conn.send(build_request("GET", "/held"))
            assert old.got.wait(5)
            apply_and_wait(c, config([http_listener(port, rule("r", "up"))], [cluster("up", b.address)],
                                     generation=2))
            old.stop_listening()  # the old pod goes away; its IP goes to a new pod
            new = NamedServer("new-pod", pa)
            apply_and_wait(c, config([http_listener(port, rule("r", "up"))], [cluster("up", f"127.0.0.1:{pa}")],
                                     generation=3))
            release.set()
            assert conn.read_response().text == "old-pod"
        answers = []
        with Conn(port) as conn:
            for i in range(3):
                answers.append(conn.request("GET", f"/after/{i}").text)
        assert answers == ["new-pod"] * 3, (
            f"requests after the reloads went to the removed endpoint's old connection: {answers}")
    finally:
        old.close()
        if new is not None:
            new.close()


def test_connection_opened_for_a_request_routed_on_the_old_config_is_not_pooled(core, tcp_server, http_backend) -> None:
    """A client starts a request head under config 1 (cluster up = A); a reload replaces A with
    B before the head ends. The request is routed on the config it began under (its hold) and
    goes to A on a *new* upstream connection, opened after the worker switched. That connection
    is to an endpoint no live config names: once the exchange ends it must be closed (as the
    test in test_reload_endpoint_churn.py expects for one opened before the reload): A sees EOF.
    Fails: rl_http_up_get (rl_http_up.c) stamps a new connection with the worker's current
    cfg_seq (u->cfg_seq = w->cfg_seq), i.e. "known to be named by the newest config", though
    the endpoint came from the client's older config; endpoint_current then never checks it and
    rl_http_up_detach pools it (until the next reload's prune or the idle timeout)."""
    eof = threading.Event()
    got = threading.Event()

    def handler(conn: socket.socket, index: int) -> None:
        if recv_head(conn) is None:
            return
        got.set()
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nA")
        recv_all(conn)
        eof.set()

    a = tcp_server(handler)
    b = http_backend(lambda req: Reply(200, b"B"))
    port = free_port()
    c = core(config([http_listener(port, rule("r", "up"))], [cluster("up", a.address)]), cpus=ONE)
    with Conn(port) as conn:
        part = b"GET /slow-head HTTP/1.1\r\nHost: test.local\r\n"
        conn.send(part)  # the head is under way (read, and parsed as it came) before the reload
        wait_for(lambda: c.listener_stats().get("web", {}).get("rx_bytes", 0) >= len(part), 5, "head bytes read")
        apply_and_wait(c, config([http_listener(port, rule("r", "up"))], [cluster("up", b.address)], generation=2))
        conn.send(b"X-Late: 1\r\n\r\n")
        r = conn.read_response()
        assert (r.status, r.text) == (200, "A"), "routed on the config the request began under"
        assert got.is_set()
    assert eof.wait(5), "the new connection to removed endpoint A went to the pool and stays open"


# ==== 8fb7c98: a re-added listener waits for its old sockets ====

def web(address: str, name: str = "web") -> Listener:
    return Listener(name=name, address=address, protocol="http", rules=(rule("r", "up"),))


def timed_apply(c, cfg) -> float:  # type: ignore[no-untyped-def]
    t0 = time.monotonic()
    c.apply(cfg)
    took = time.monotonic() - t0
    wait_for(lambda: c.served_generation() == cfg.generation, 5, f"generation {cfg.generation}")
    return took


def test_listener_moved_to_the_wildcard_address_and_back_applies_at_once(core, http_backend) -> None:
    """A listener moves from 127.0.0.1:P to 0.0.0.0:P (config 2) and back (config 3). Before
    8fb7c98 config 3 applied at once (SO_REUSEPORT lets 127.0.0.1:P bind beside the live
    0.0.0.0:P sockets); now rl_core_apply blocks 2 s on it, every time.
    Why: take_removed (rl_core.c) finds 127.0.0.1:P among the addresses config 2 removed, and
    rl_steer_wait_unbound (rl_steer.c) probes with a plain SO_REUSEADDR bind of 127.0.0.1:P,
    which conflicts with *any* listening socket on the port, including the wildcard 0.0.0.0:P
    group of the live config, which only closes after this very apply publishes config 3. The
    probe cannot succeed: the wait always runs to its 2 s deadline (and so does a re-add beside
    any other live listener on the same port, e.g. [::]:P)."""
    be = http_backend(lambda req: Reply(200, b"ok"))
    p = free_port()
    cl = [cluster("up", be.address)]
    c = core(config([web(f"127.0.0.1:{p}")], cl), cpus=ONE)
    took = []
    for gen in (2, 4):
        timed_apply(c, config([web(f"0.0.0.0:{p}")], cl, generation=gen))
        took.append(timed_apply(c, config([web(f"127.0.0.1:{p}")], cl, generation=gen + 1)))
        with Conn(p) as conn:
            assert conn.request("GET", "/").status == 200
    assert max(took) < 1.0, f"moving the listener back to 127.0.0.1 blocked apply() for {took} s"


def test_listener_readded_beside_a_wildcard_listener_on_its_port_applies_at_once(core, http_backend) -> None:
    """Config 1 listens on 127.0.0.1:P (listener a) and 0.0.0.0:P (listener b); config 2 drops
    a, config 3 adds it back. a's old sockets are long closed when config 3 is applied, yet
    apply() blocks 2 s (it was instant before 8fb7c98): the probe bind in rl_steer_wait_unbound
    (rl_steer.c) conflicts with b's live listening sockets, not a's, and rl_core_apply
    (rl_core.c) waits for it to its deadline."""
    be = http_backend(lambda req: Reply(200, b"ok"))
    p = free_port()
    cl = [cluster("up", be.address)]
    a, b = web(f"127.0.0.1:{p}", "a"), web(f"0.0.0.0:{p}", "b")
    c = core(config([a, b], cl), cpus=ONE)
    timed_apply(c, config([b], cl, generation=2))
    took = timed_apply(c, config([a, b], cl, generation=3))
    with Conn(p) as conn:
        assert conn.request("GET", "/").status == 200
    assert took < 1.0, f"re-adding listener a beside b blocked apply() for {took:.2f} s"


# ==== 5c9ffe4: request targets ====

def upstream_hosts(raw: bytes) -> list[str]:
    body = raw.partition(b"\r\n\r\n")[2]
    return [v for k, v in json.loads(body)["headers"] if k.lower() == "host"]


@pytest.mark.parametrize("authority", ["[", "[::1", "[::1]junk", "h:abc"])
def test_absolute_form_with_an_invalid_authority_is_400(core, http_backend, authority) -> None:
    """`GET http://<authority>/x HTTP/1.0` with no Host line: the proxy now *makes* the
    upstream's Host from the target's authority (5c9ffe4), so it must be a valid one. RFC 3986
    3.2.2/3.2.3: a host is an IP-literal in brackets ("[" ... "]"), an IPv4 address or a
    reg-name (no '[' or ']'), and a port is digits only; RFC 9112 3.2 / RFC 9110 4.2.1: an
    invalid http URI target is a 400. 5c9ffe4 refuses an empty host and "[]" but not these:
    the proxy routes on host_part() ("[::1]" for "[::1]junk") and sends `Host: [::1]junk` (or
    "[", "[::1", "h:abc") upstream: a field value a conforming server must answer with 400,
    generated by the proxy, and for "[::1]junk" not the host it routed on.
    Where: rl_http_req_facts (rl_http_head.c) checks only host.len == 0 or "[]"; host_part
    takes an unterminated "[" to the end and ignores what follows "]"."""
    be = http_backend(headers_app)
    port = free_port()
    core(config([http_listener(port, rule("r", "up"))], [cluster("up", be.address)]))
    with Conn(port, timeout=3) as conn:
        conn.send(b"GET http://%s/x HTTP/1.0\r\n\r\n" % authority.encode())
        out = conn.read_to_close()
    assert out.startswith(b"HTTP/1.1 400"), f"proxied with Host {upstream_hosts(out) if b'{' in out else out!r}"


def test_http10_absolute_form_with_a_rule_adding_host_sends_one_host(core, http_backend) -> None:
    """A rule's filter adds `Host: added.example`; an HTTP/1.0 client sends
    `GET http://a.example/x HTTP/1.0` with no Host line. Before 5c9ffe4 the upstream got one
    Host (the rule's); now it gets two (`Host: a.example` made from the target, then the rule's):
    RFC 9112 3.2 makes a server answer 400 to more than one Host, and two Hosts can be read
    differently by two hops. The commit's own rule is "unless the rule sets or removes it";
    an added Host is ignored. Where: rl_http_build_request (rl_http_build.c) checks only the
    rule's set and remove lists (rl_hdr_named(set, ...) / (rem, ...)), not RL_HDR_ADD."""
    be = http_backend(headers_app)
    port = free_port()
    core(config([http_listener(port, rule("r", "up", filters=[header_filter(add=[("Host", "added.example")])]))],
                [cluster("up", be.address)]))
    with Conn(port, timeout=3) as conn:
        conn.send(b"GET http://a.example/x HTTP/1.0\r\n\r\n")
        out = conn.read_to_close()
    assert out.startswith(b"HTTP/1.1 200"), out
    assert len(upstream_hosts(out)) == 1, f"upstream got Host lines {upstream_hosts(out)}"
