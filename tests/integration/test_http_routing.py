"""Routing (path, headers, method, hostnames, weights) and request rewriting (headers,
prefix, X-Forwarded-For), observed at real backends."""
from __future__ import annotations

import json
import math

import pytest

from .backends import headers_app
from .helpers import (
    Conn,
    cluster,
    config,
    free_port,
    get,
    header_filter,
    http_listener,
    nginx_echo,
    rewrite_filter,
    rule,
    wait_codes,
)

pytestmark = pytest.mark.timeout(30)


def route_of(port: int, path: str, headers=(), host: str = "test.local", method: str = "GET") -> str:  # type: ignore[no-untyped-def]
    r = get(port, path, headers, host=host, method=method)
    if r.status != 200:
        return str(r.status)
    return nginx_echo(r)["route"]


def test_exact_vs_prefix_segments(core, nginx) -> None:
    port = free_port()
    core(config([http_listener(port,
                               rule("default", "a", tag=True),
                               rule("api", "a", prefix="/api", tag=True),
                               rule("api-slash", "a", prefix="/v2/", tag=True),
                               rule("exact", "a", exact="/exact", tag=True))],
                [cluster("a", nginx.a)]))
    cases = {
        "/api": "api", "/api/": "api", "/api/x": "api", "/api/x/y?z=1": "api", "/api?q=1": "api",
        "/apix": "default", "/ap": "default", "/API": "default",
        "/v2": "api-slash", "/v2/x": "api-slash", "/v2x": "default",
        "/exact": "exact", "/exact?q=1": "exact", "/exact/": "default", "/exactly": "default", "/exact/x": "default",
        "/": "default",
    }
    got = {path: route_of(port, path) for path in cases}
    assert got == cases


def test_longest_prefix_wins_over_order(core, nginx) -> None:
    port = free_port()
    core(config([http_listener(port, rule("short", "a", prefix="/a", tag=True),
                               rule("long", "a", prefix="/a/b", tag=True))],
                [cluster("a", nginx.a)]))
    assert route_of(port, "/a/b/c") == "long"
    assert route_of(port, "/a/bc") == "short"


def test_header_match(core, nginx) -> None:
    port = free_port()
    core(config([http_listener(port, rule("default", "a", tag=True),
                               rule("canary", "a", headers=[("x-canary", "1")], tag=True))],
                [cluster("a", nginx.a)]))
    assert route_of(port, "/", [("x-canary", "1")]) == "canary"
    assert route_of(port, "/", [("X-Canary", "1")]) == "canary"  # names are case-insensitive
    assert route_of(port, "/", [("x-canary", "2")]) == "default"
    assert route_of(port, "/", [("x-canary", "1x")]) == "default"
    assert route_of(port, "/") == "default"


def test_method_match(core, nginx) -> None:
    port = free_port()
    core(config([http_listener(port, rule("default", "a", tag=True),
                               rule("posts", "a", prefix="/m", method="POST", tag=True))],
                [cluster("a", nginx.a)]))
    assert route_of(port, "/m", method="POST") == "posts"
    assert route_of(port, "/m", method="GET") == "default"
    assert route_of(port, "/other", method="POST") == "default"


def test_hostnames_exact_and_wildcard(core, nginx) -> None:
    port = free_port()
    core(config([http_listener(port,
                               rule("shop", "a", hostnames=["shop.example.com"], tag=True),
                               rule("wild", "a", hostnames=["*.example.org"], tag=True),
                               rule("any", "a", tag=True))],
                [cluster("a", nginx.a)]))
    assert route_of(port, "/", host="shop.example.com") == "shop"
    assert route_of(port, "/", host="SHOP.Example.COM:8080") == "shop"  # port dropped, case-insensitive
    assert route_of(port, "/", host="a.shop.example.com") == "any"
    assert route_of(port, "/", host="a.example.org") == "wild"
    assert route_of(port, "/", host="x.y.example.org") == "wild"
    assert route_of(port, "/", host="example.org") == "any"  # a wildcard needs a label in front
    assert route_of(port, "/", host="badexample.org") == "any"
    assert route_of(port, "/", host="other.test") == "any"


def test_hostname_precedence(core, nginx) -> None:
    """Gateway API: among rules whose hostnames match, the most specific hostname wins (exact over
    wildcard over none), whatever the config order; path precedence only breaks ties."""
    port = free_port()
    core(config([http_listener(port,
                               rule("any", "a", tag=True),
                               rule("wild", "a", hostnames=["*.example.com"], tag=True),
                               rule("shop", "a", hostnames=["shop.example.com"], tag=True))],
                [cluster("a", nginx.a)]))
    assert route_of(port, "/", host="other.test") == "any"
    assert route_of(port, "/", host="a.example.com") == "wild"
    assert route_of(port, "/", host="shop.example.com") == "shop"


def test_hostname_only_rule_gives_404_elsewhere(core, nginx) -> None:
    port = free_port()
    c = core(config([http_listener(port, rule("shop", "a", hostnames=["shop.example.com"]))],
                    [cluster("a", nginx.a)]))
    assert get(port, "/", host="shop.example.com").status == 200
    assert get(port, "/", host="other.example.com").status == 404
    wait_codes(c, "web", "", s4xx=1)


def test_weighted_split_90_10(core, nginx) -> None:
    n, p = 2000, 0.10
    port = free_port()
    c = core(config([http_listener(port, rule("split", ("a", 90), ("b", 10)))],
                    [cluster("a", nginx.a), cluster("b", nginx.b)]))
    b_count = 0
    with Conn(port) as conn:  # the backend is chosen per request, keep-alive or not
        for i in range(n):
            r = conn.request("GET", f"/w/{i}")
            assert r.status == 200
            b_count += r.text.startswith("B ")
    mean, sigma = n * p, math.sqrt(n * p * (1 - p))
    assert abs(b_count - mean) <= 5 * sigma, f"{b_count} of {n} to the 10% backend (expected {mean}±{5 * sigma:.0f})"
    st = c.cluster_stats()
    assert st["a"]["requests"] + st["b"]["requests"] == n
    assert st["b"]["requests"] == b_count


def test_zero_weight_backend_gets_nothing(core, nginx) -> None:
    port = free_port()
    core(config([http_listener(port, rule("split", ("a", 1), ("b", 0)))],
                [cluster("a", nginx.a), cluster("b", nginx.b)]))
    with Conn(port) as conn:
        assert all(not conn.request("GET", "/").text.startswith("B ") for _ in range(200))


def test_header_set_add_remove(core, http_backend) -> None:
    be = http_backend(headers_app)
    port = free_port()
    core(config([http_listener(port, rule("mod", "h", filters=[
        header_filter(set=[("x-env", "prod")], add=[("x-added", "proxy")], remove=["x-debug"])]))],
        [cluster("h", be.address)]))
    r = get(port, "/h", [("X-Env", "dev"), ("x-debug", "1"), ("X-Debug", "2"), ("x-added", "client"),
                         ("x-keep", "yes")])
    assert r.status == 200
    hdrs = json.loads(r.body)["headers"]
    by = lambda name: [v for k, v in hdrs if k.lower() == name]  # noqa: E731
    assert by("x-env") == ["prod"]
    assert by("x-debug") == []
    assert sorted(by("x-added")) == ["client", "proxy"]
    assert by("x-keep") == ["yes"]
    assert by("host") == ["test.local"]


def test_hop_by_hop_headers_not_forwarded(core, http_backend) -> None:
    be = http_backend(headers_app)
    port = free_port()
    core(config([http_listener(port, rule("all", "h"))], [cluster("h", be.address)]))
    r = get(port, "/", [("Connection", "keep-alive"), ("Keep-Alive", "timeout=5"), ("Proxy-Connection", "x"),
                        ("TE", "trailers")])
    names = {k.lower() for k, _ in json.loads(r.body)["headers"]}
    assert not names & {"keep-alive", "proxy-connection", "te"}, names


def test_headers_named_by_connection_not_forwarded(core, http_backend) -> None:
    """RFC 9110 7.6.1: the fields a Connection header lists are hop-by-hop too. Framing and Host
    stay whatever it lists (dropping Content-Length would smuggle the body as a request), and the
    proxy's own X-Forwarded-For is still written."""
    be = http_backend(headers_app)
    port = free_port()
    core(config([http_listener(port, rule("all", "h"))], [cluster("h", be.address)]))
    with Conn(port) as conn:
        r = conn.request("POST", "/", [("Connection", "keep-alive, X-Secret , content-length"),
                                       ("Connection", "x-forwarded-for,HOST"), ("X-Secret", "1"),
                                       ("X-Forwarded-For", "6.6.6.6"), ("X-Other", "2")], body=b"abc")
        headers = {k.lower(): v for k, v in json.loads(r.body)["headers"]}
        assert "x-secret" not in headers and "connection" not in headers, headers
        assert headers["x-other"] == "2" and headers["content-length"] == "3" and headers["host"] == "test.local"
        assert headers["x-forwarded-for"] == "127.0.0.1"  # the client's (named) chain dropped, ours written
        assert conn.request("GET", "/").status == 200  # the body did not leak into a second request


@pytest.mark.parametrize("prefix,replacement,path,expected", [
    ("/api", "/", "/api/users?x=1", "/users?x=1"),
    ("/api", "/", "/api", "/"),
    ("/api", "/", "/api/", "/"),
    ("/api/", "/", "/api/users", "/users"),
    ("/api", "/v2", "/api/users", "/v2/users"),
    ("/api", "/v2/", "/api/users", "/v2/users"),
    ("/api", "/v2", "/api", "/v2"),
])
def test_prefix_rewrite(core, nginx, prefix, replacement, path, expected) -> None:
    port = free_port()
    core(config([http_listener(port, rule("rw", "a", prefix=prefix, filters=[rewrite_filter(replacement)]))],
                [cluster("a", nginx.a)]))
    r = get(port, path)
    assert r.status == 200
    assert nginx_echo(r)["uri"] == expected


def test_hostname_rewrite(core, http_backend) -> None:
    """urlRewrite.hostname: routed on the client's Host, sent upstream with the new one (once)."""
    from ringlane_sidecar.config.model import Filter, UrlRewrite

    be = http_backend(headers_app)
    port = free_port()
    core(config([http_listener(port, rule("shop", "b", hostnames=["shop.example.com"], filters=[
        Filter(url_rewrite=UrlRewrite(hostname="internal.svc"))]))], [cluster("b", be.address)]))
    r = get(port, "/x", host="shop.example.com")
    assert r.status == 200
    hosts = [v for k, v in json.loads(r.body)["headers"] if k.lower() == "host"]
    assert hosts == ["internal.svc"]
    assert get(port, "/x", host="other.example.com").status == 404  # routing still sees the client's Host


def test_x_forwarded_for(core, nginx) -> None:
    port = free_port()
    core(config([http_listener(port, rule("all", "a"))], [cluster("a", nginx.a)]))
    assert nginx_echo(get(port, "/"))["xff"] == "127.0.0.1"
    assert nginx_echo(get(port, "/", [("X-Forwarded-For", "10.0.0.1")]))["xff"] == "10.0.0.1, 127.0.0.1"
    assert (nginx_echo(get(port, "/", [("X-Forwarded-For", "10.0.0.1, 10.0.0.2")]))["xff"]
            == "10.0.0.1, 10.0.0.2, 127.0.0.1")


def test_x_forwarded_for_lines_become_one_chain(core, http_backend) -> None:
    """Two X-Forwarded-For lines from the client: one line upstream, the client's address once,
    at the end; a rule that sets or removes X-Forwarded-For replaces the proxy's own."""
    be = http_backend(headers_app)
    port = free_port()
    core(config([http_listener(port, rule("all", "b"), rule("set", "b", prefix="/set",
                                                                filters=[header_filter(set=[("X-Forwarded-For", "9.9.9.9")])]),
                                 rule("rm", "b", prefix="/rm", filters=[header_filter(remove=["x-forwarded-for"])]))],
                [cluster("b", be.address)]))

    def xff(path: str) -> list[str]:
        r = get(port, path, [("X-Forwarded-For", "10.0.0.1"), ("X-A", "1"), ("X-Forwarded-For", "10.0.0.2")])
        return [v for k, v in json.loads(r.body)["headers"] if k.lower() == "x-forwarded-for"]

    assert xff("/") == ["10.0.0.1, 10.0.0.2, 127.0.0.1"]
    assert xff("/set") == ["9.9.9.9"]
    assert xff("/rm") == []


def test_nginx_echo_filters(core, nginx) -> None:
    """The brief's example rule, end to end at nginx: x-env set, x-debug removed, XFF appended."""
    port = free_port()
    core(config([http_listener(port, rule("api", "a", prefix="/api", filters=[
        header_filter(set=[("x-env", "prod")], remove=["x-debug"]), rewrite_filter("/")]))],
        [cluster("a", nginx.a)]))
    e = nginx_echo(get(port, "/api/orders?id=7", [("x-debug", "on"), ("x-env", "dev"),
                                                   ("X-Forwarded-For", "192.0.2.1")]))
    assert e["uri"] == "/orders?id=7"
    assert e["x_env"] == "prod"
    assert e["x_debug"] == ""
    assert e["xff"] == "192.0.2.1, 127.0.0.1"


def test_no_route_is_404_counted_on_empty_route(core, nginx) -> None:
    port = free_port()
    c = core(config([http_listener(port, rule("api", "a", prefix="/api"))], [cluster("a", nginx.a)]))
    with Conn(port) as conn:
        r = conn.request("GET", "/nothing/here")
        assert r.status == 404
        # a proxy-made 404 keeps the connection open
        assert conn.request("GET", "/api/x").status == 200
    wait_codes(c, "web", "", s4xx=1)
    wait_codes(c, "web", "api", s2xx=1)
    assert c.cluster_stats()["a"]["requests"] == 1
