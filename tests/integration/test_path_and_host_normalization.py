"""Request paths are normalized before routing and sent up so (RFC 3986 6.2.2: unreserved
escapes decoded, hex in upper case); routing reads '//', %2F and %5C as one '/' (as a backend
that decodes and merges would), but they go up as sent; malformed escapes and dot segments
(between separators of any kind) are refused; an invalid Host value is a 400; an absolute-form
target without a path is rewritten like "/".

From an adversarial review: each test here failed before on both engines ("routed on one
rule, served as another path"). A small nginx of its own (`paths`) answers with the path it
actually serves ($uri, after its own %-decoding, slash merging and dot-segment removal) and
the rule that routed the request (x-route)."""
from __future__ import annotations

import json
from typing import Iterator

import pytest

from ringlane_sidecar.config.model import Filter, HeaderModifier

from nginx_proc import nginx_conf, require_nginx, running_nginx

from .backends import headers_app
from .helpers import Conn, cluster, config, free_port, get, http_listener, nginx_echo, rewrite_filter, rule

pytestmark = pytest.mark.timeout(60)

PATHS_SERVER = """\
    default_type text/plain;
    server {{
        listen 127.0.0.1:{port};
        location /admin/ {{ return 200 "admin-location uri=$uri route=$http_x_route\\n"; }}
        location / {{ return 200 "other-location uri=$uri route=$http_x_route\\n"; }}
    }}
"""


@pytest.fixture(scope="module")
def paths(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An nginx whose reply names the location (and $uri) that served the request."""
    exe = require_nginx()
    d = tmp_path_factory.mktemp("nginx_paths")
    port = free_port()
    with running_nginx(exe, d, nginx_conf(d, PATHS_SERVER.format(port=port), connections=256), [port]):
        yield f"127.0.0.1:{port}"


# ==== 1. "..%2F": a dot segment behind an encoded slash ====

@pytest.mark.parametrize("path", ["/public/..%2Fadmin/users", "/public/%2e%2e%2fadmin/users",
                                  "/public/.%2E%2Fadmin/users", "/public/x/..%2F..%2Fadmin/users"])
def test_dot_segment_behind_an_encoded_slash_is_refused(core, paths, path) -> None:
    """The proxy exposes only /public. "/public/..%2Fadmin/users" matches PathPrefix /public
    (has_dot_segment in rl_http_head.c splits segments on a literal '/' only, so "..%2Fadmin"
    is no dot segment) and goes upstream as it came; nginx decodes %2F and removes the dot
    segment, and serves /admin/users. That is exactly the "routed as /public, served as /admin"
    shape the proxy already refuses for "/public/%2e%2e/admin" (test_dot_segments_are_refused):
    it must be a 400 too (or be normalised before matching, as Envoy does with
    normalize_path + path_with_escaped_slashes_action)."""
    port = free_port()
    core(config([http_listener(port, rule("public", "n", prefix="/public", tag=True))], [cluster("n", paths)]),
         cpus=[0])
    r = get(port, path)
    assert r.status == 400, f"{path} got {r.status}: the backend served {r.text.strip()!r}"


# ==== 2. %-encoded unreserved characters: routed on the raw text, served decoded ====

@pytest.mark.parametrize("path", ["/%61dmin/users", "/adm%69n/users", "/admin%2Fusers", "//admin/users",
                                  "/admin%2fusers", "/%2Fadmin/users", "/admin%5Cusers"])
def test_percent_encoded_path_does_not_skip_the_more_specific_rule(core, paths, path) -> None:
    """RFC 3986 2.3 / 6.2.2.2: "%61" and "a" are the same URI character (percent-encoded
    unreserved octets are to be treated as the decoded character). path_matches
    (rl_http_head.c) compares raw bytes, so "/%61dmin/users" misses the /admin rule (here: the
    one that strips the client's identity header) and is routed by the catch-all, while nginx
    (like any backend that decodes the path) serves /admin/users with the client's x-user
    intact. "/admin%2Fusers" is the same with an encoded slash (PathPrefix wants a literal '/'
    after "/admin"; nginx decodes it). Either normalise before matching (Envoy's normalize_path
    decodes unreserved escapes; path_with_escaped_slashes_action handles %2F) or refuse the
    request, as is done for encoded dot segments: never route on one path and serve another."""
    port = free_port()
    core(config([http_listener(port,
                               rule("admin", "n", prefix="/admin", tag=True,
                                    filters=[Filter(request_header_modifier=HeaderModifier(remove=("x-user",)))]),
                               rule("default", "n", tag=True))],
                [cluster("n", paths)]), cpus=[0])
    assert get(port, "/admin/users").text.strip() == "admin-location uri=/admin/users route=admin"
    r = get(port, path, [("x-user", "root")])
    # routed as a backend that decodes %2F and merges slashes reads it (nginx: /admin/users)
    assert r.status == 200 and "route=admin" in r.text, f"{path} got {r.status}: the backend served {r.text.strip()!r}"


@pytest.mark.parametrize("path", ["/caf%c3%a9/menu", "/caf%C3%a9/menu"])
def test_percent_encoding_hex_case_does_not_change_the_route(core, paths, path) -> None:
    """RFC 3986 2.1 / 6.2.2.1: the hex digits of a %XX triplet are case-insensitive ("%c3" and
    "%C3" are the same octet, and the same URI). The schema lets a rule's path hold %XX escapes
    (httpPath), and path_matches (rl_http_head.c) compares bytes, so the rule for "/caf%C3%A9"
    (the path of /café) misses "/caf%c3%a9/menu", which the catch-all takes; nginx serves the
    same file for both spellings. Browsers and curl send what the page or user wrote, either case."""
    port = free_port()
    core(config([http_listener(port, rule("cafe", "n", prefix="/caf%C3%A9", tag=True), rule("default", "n", tag=True))],
                [cluster("n", paths)]), cpus=[0])
    assert "route=cafe" in get(port, "/caf%C3%A9/menu").text
    r = get(port, path)
    assert "route=cafe" in r.text, f"{path} got {r.status}: the backend served {r.text.strip()!r}"


# ==== 3. An invalid Host header value is routed ====

@pytest.mark.parametrize("host", [
    "evil.example/a.example.org",  # '/' is no host character: routed by the *.example.org rule (suffix)
    "a b.example.org",             # a space inside the host: the same
    "shop.example.com:80@evil",    # the "port" is not digits: routed by shop.example.com (text before ':')
])
def test_host_header_that_is_not_a_valid_host_is_400(core, http_backend, host) -> None:
    """RFC 9112 3.2: a server MUST answer 400 to a request with "a Host header field with an
    invalid field value" (Host = uri-host [ ":" port ], RFC 9110 7.2). The core checks exactly
    that for an absolute-form authority (valid_authority in rl_http_head.c:
    test_absolute_form_with_an_invalid_authority_is_400), but rl_http_req_facts takes the Host
    header through host_part() unchecked, so these are routed (by suffix or by the text before
    the first ':') and forwarded with their Host as it came. nginx answers 400 to the first two."""
    be = http_backend(headers_app)
    port = free_port()
    core(config([http_listener(port, rule("wild", "b", hostnames=["*.example.org"], tag=True),
                               rule("shop", "b", hostnames=["shop.example.com"], tag=True))],
                [cluster("b", be.address)]), cpus=[0])
    with Conn(port) as conn:
        conn.send(f"GET /x HTTP/1.1\r\nHost: {host}\r\n\r\n".encode("latin-1"))
        r = conn.read_response()
    routed = {k.lower(): v for k, v in json.loads(r.body)["headers"]}.get("x-route") if r.status == 200 else None
    assert r.status == 400, f"Host {host!r} got {r.status} (routed by rule {routed!r}, expected a 400)"


# ==== 4. absolute-form without a path skips replacePrefixMatch ====

@pytest.mark.parametrize("target,origin", [("http://app.test", "/"), ("http://app.test?q=1", "/?q=1")])
def test_absolute_form_without_path_is_rewritten_like_slash(core, http_backend, target, origin) -> None:
    """RFC 9112 3.2.2 / RFC 3986 6.2.3: "http://app.test?q=1" names the same resource as
    "/?q=1" (an empty http path is "/"); the core routes it as "/" (rl_http_route), so the
    PathPrefix "/" rule with replacePrefixMatch "/app" matches, but write_path
    (rl_http_build.c) writes "/" for an empty path before it looks at the rewrite: upstream
    gets "/?q=1" instead of "/app/?q=1", i.e. the unrewritten path the rule exists to hide."""
    be = http_backend(headers_app)
    port = free_port()
    core(config([http_listener(port, rule("mount", "b", prefix="/", filters=[rewrite_filter("/app")]))],
                [cluster("b", be.address)]), cpus=[0])

    def upstream_target(t: str) -> str:
        with Conn(port) as conn:
            conn.send(f"GET {t} HTTP/1.1\r\nHost: app.test\r\n\r\n".encode())
            r = conn.read_response()
        assert r.status == 200
        return str(json.loads(r.body)["target"])

    want = upstream_target(origin)
    assert want.startswith("/app")
    assert upstream_target(target) == want


# ==== what goes up ====

@pytest.mark.parametrize("target,upstream", [
    ("/a//b/%7euser/%c3%a9", "/a//b/~user/%C3%A9"),
    ("/q/%2f/x%5c", "/q/%2F/x%5C"),
    ("/%41%42%2D%2e%5F%7E/x?q=%61%2F", "/AB-._~/x?q=%61%2F"),  # the query goes up as it came
    ("/x%20y/", "/x%20y/"),
])
def test_the_path_goes_up_normalized(core, http_backend, target, upstream) -> None:
    """The backend gets the path that was routed: unreserved escapes decoded, other escapes in
    upper case, '/' runs merged (RFC 3986 6.2.2.1-6.2.2.2: the same URI)."""
    be = http_backend(headers_app)
    port = free_port()
    core(config([http_listener(port, rule("all", "b"))], [cluster("b", be.address)]))
    r = get(port, target)
    assert r.status == 200 and json.loads(r.body)["target"] == upstream, (r.status, r.body)


@pytest.mark.parametrize("target", ["/a%zz", "/a%2", "/a%", "/a/%2e%2E/b", "/a/..%2fb", "/a%5C.%5Cb"])
def test_malformed_escapes_and_encoded_dot_segments_are_400(core, http_backend, target) -> None:
    be = http_backend(headers_app)
    port = free_port()
    core(config([http_listener(port, rule("all", "b"))], [cluster("b", be.address)]))
    assert get(port, target).status == 400
    assert be.count == 0


def test_rule_paths_are_normalized_like_requests(core, paths) -> None:
    """A rule written "/%61dmin//x" is the rule for "/admin/x"."""
    port = free_port()
    core(config([http_listener(port, rule("admin", "n", prefix="/%61dmin//x", tag=True), rule("default", "n", tag=True))],
                [cluster("n", paths)]), cpus=[0])
    assert "route=admin" in get(port, "/admin/x/y").text
    assert "route=admin" in get(port, "/admin/x").text
    assert "route=default" in get(port, "/admin/xy").text


# ==== path normalization: what backends get ====

@pytest.mark.parametrize("path", ["/api/queues/%2F/orders",            # RabbitMQ management: vhost "/"
                                  "/api/v4/projects/group%2Fproject",  # GitLab: namespaced project id
                                  "/@babel%2fcore"])                   # npm registry: scoped package
def test_encoded_slash_inside_a_segment_is_passed_through(core, nginx, path) -> None:
    """The first version of path normalization answered 400 to every path holding %2F. Those
    are the standard URLs of widely used APIs: RabbitMQ's management API names the default
    vhost "/" as %2F in nearly every call, GitLab's API takes "group%2Fproject" as a project
    id, npm clients fetch scoped packages as "@scope%2fname". nginx (proxy_pass without a URI),
    Envoy (path_with_escaped_slashes_action defaults to KEEP_UNCHANGED) and HAProxy pass them
    through; the attack the commit names ("/public/..%2Fadmin") needs a dot segment next to the
    encoded slash, which can be refused alone. Expected: routed and sent up unchanged (hex case
    aside)."""
    port = free_port()
    core(config([http_listener(port, rule("all", "a"))], [cluster("a", nginx.a)]), cpus=[0])
    r = get(port, path)
    assert r.status == 200, f"{path}: {r.status}"
    assert nginx_echo(r)["uri"].lower() == path.lower()


@pytest.mark.parametrize("path", ["/fetch/https://img.example/a.png", "/bucket/logs//2026/a.txt"])
def test_double_slash_goes_upstream_as_sent(core, nginx, path) -> None:
    """'//' was merged in the path that went upstream, not only for routing (first version). RFC 3986 6.2.2 does
    not make "/a//b" equal "/a/b" (an empty segment is a segment): S3/MinIO object keys with
    "//" are other objects, and URL-in-path services (image proxies, archives) get "https:/".
    nginx merges only for its location match: proxy_pass without a URI sends the request URI
    as it came. The backend sees the path as sent; routing reads it merged."""
    port = free_port()
    core(config([http_listener(port, rule("all", "a"))], [cluster("a", nginx.a)]), cpus=[0])
    r = get(port, path)
    assert r.status == 200
    assert nginx_echo(r)["uri"] == path
