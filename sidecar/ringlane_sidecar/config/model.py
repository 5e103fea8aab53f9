"""The typed, immutable sidecar config (version 1) that parse_config returns.

Field names are the snake_case of the JSON names. Durations keep the text as
written (so rendering round-trips) and derive *_ms at construction; addresses keep
the text and derive host and port. Derived fields are init=False, so code that
builds a Config by hand (the operator) passes only the text and cannot make the
two disagree. Lists are tuples so a Config is deeply immutable and hashable.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from .addresses import parse_address
from .durations import parse_duration_ms

EngineKind = Literal["auto", "io_uring", "epoll"]
Protocol = Literal["http", "tcp"]
PathMatchType = Literal["Exact", "PathPrefix"]
HeaderMatchType = Literal["Exact"]
LoadBalancer = Literal["round-robin", "least-request", "random"]
SelectorOperator = Literal["In", "NotIn", "Exists", "DoesNotExist"]


def _derive(obj: object, name: str, value: object) -> None:
    object.__setattr__(obj, name, value)  # frozen: derived fields are set once, here


def _ms(text: str | None) -> int | None:
    return None if text is None else parse_duration_ms(text)


@dataclass(frozen=True, slots=True)
class EngineSettings:
    kind: EngineKind = "auto"
    workers: int | Literal["auto"] = "auto"
    pin: bool = True


@dataclass(frozen=True, slots=True)
class AdminSettings:
    address: str = "0.0.0.0:9901"
    host: str = field(init=False)
    port: int = field(init=False)

    def __post_init__(self) -> None:
        host, port = parse_address(self.address)
        _derive(self, "host", host)
        _derive(self, "port", port)


@dataclass(frozen=True, slots=True)
class Limits:
    max_request_header_bytes: int = 65536
    max_request_headers: int = 100
    max_request_body_bytes: int = 0  # 0: unlimited (bodies stream; nothing is buffered)
    request_header_timeout: str = "10s"
    idle_timeout: str = "60s"
    drain_timeout: str = "20s"
    tunnel_idle_timeout: str = "1h"  # "0s": never
    request_header_timeout_ms: int = field(init=False)
    idle_timeout_ms: int = field(init=False)
    drain_timeout_ms: int = field(init=False)
    tunnel_idle_timeout_ms: int = field(init=False)

    def __post_init__(self) -> None:
        _derive(self, "request_header_timeout_ms", parse_duration_ms(self.request_header_timeout))
        _derive(self, "idle_timeout_ms", parse_duration_ms(self.idle_timeout))
        _derive(self, "drain_timeout_ms", parse_duration_ms(self.drain_timeout))
        _derive(self, "tunnel_idle_timeout_ms", parse_duration_ms(self.tunnel_idle_timeout))


@dataclass(frozen=True, slots=True)
class LabelSelectorRequirement:
    key: str
    operator: SelectorOperator
    values: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class LabelSelector:
    match_labels: tuple[tuple[str, str], ...] = ()  # (key, value) pairs in document order
    match_expressions: tuple[LabelSelectorRequirement, ...] = ()


@dataclass(frozen=True, slots=True)
class PathMatch:
    type: PathMatchType = "PathPrefix"
    value: str = "/"


@dataclass(frozen=True, slots=True)
class HeaderMatch:
    name: str
    value: str
    type: HeaderMatchType = "Exact"


@dataclass(frozen=True, slots=True)
class Match:
    path: PathMatch = PathMatch()
    headers: tuple[HeaderMatch, ...] = ()
    method: str | None = None


@dataclass(frozen=True, slots=True)
class Backend:
    cluster: str
    weight: int = 1


@dataclass(frozen=True, slots=True)
class Timeouts:
    request: str | None = None
    backend_request: str | None = None
    request_ms: int | None = field(init=False)
    backend_request_ms: int | None = field(init=False)

    def __post_init__(self) -> None:
        _derive(self, "request_ms", _ms(self.request))
        _derive(self, "backend_request_ms", _ms(self.backend_request))


@dataclass(frozen=True, slots=True)
class Retry:
    attempts: int = 0
    on: tuple[str, ...] = ()  # "connect-failure", "reset", "500".."599"
    backoff: str = "25ms"
    backoff_ms: int = field(init=False)

    def __post_init__(self) -> None:
        _derive(self, "backoff_ms", parse_duration_ms(self.backoff))


@dataclass(frozen=True, slots=True)
class Header:
    name: str
    value: str


@dataclass(frozen=True, slots=True)
class HeaderModifier:
    set: tuple[Header, ...] = ()
    add: tuple[Header, ...] = ()
    remove: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class UrlRewrite:
    hostname: str | None = None
    replace_prefix_match: str | None = None  # JSON: path.replacePrefixMatch


@dataclass(frozen=True, slots=True)
class Filter:
    """Exactly one of the three is set."""

    request_header_modifier: HeaderModifier | None = None
    response_header_modifier: HeaderModifier | None = None
    url_rewrite: UrlRewrite | None = None

    def __post_init__(self) -> None:
        kinds = (self.request_header_modifier, self.response_header_modifier, self.url_rewrite)
        if sum(kind is not None for kind in kinds) != 1:
            raise ValueError("a Filter sets exactly one of request_header_modifier, response_header_modifier, url_rewrite")


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    backends: tuple[Backend, ...]
    selector: LabelSelector | None = None  # None: every pod serves this rule
    hostnames: tuple[str, ...] = ()
    # parse_config fills one match-all (PathPrefix "/") for http rules; tcp rules have none
    matches: tuple[Match, ...] = ()
    timeouts: Timeouts = Timeouts()
    retry: Retry = Retry()
    filters: tuple[Filter, ...] = ()


@dataclass(frozen=True, slots=True)
class Listener:
    name: str
    address: str
    protocol: Protocol = "http"
    rules: tuple[Rule, ...] = ()
    host: str = field(init=False)
    port: int = field(init=False)

    def __post_init__(self) -> None:
        host, port = parse_address(self.address)
        _derive(self, "host", host)
        _derive(self, "port", port)


@dataclass(frozen=True, slots=True)
class Endpoint:
    address: str
    host: str = field(init=False)
    port: int = field(init=False)

    def __post_init__(self) -> None:
        host, port = parse_address(self.address)
        _derive(self, "host", host)
        _derive(self, "port", port)


@dataclass(frozen=True, slots=True)
class Cluster:
    name: str
    endpoints: tuple[Endpoint, ...] = ()
    load_balancer: LoadBalancer = "round-robin"
    connect_timeout: str = "1s"
    max_connections: int = 1024  # per worker
    idle_timeout: str = "60s"
    connect_timeout_ms: int = field(init=False)
    idle_timeout_ms: int = field(init=False)

    def __post_init__(self) -> None:
        _derive(self, "connect_timeout_ms", parse_duration_ms(self.connect_timeout))
        _derive(self, "idle_timeout_ms", parse_duration_ms(self.idle_timeout))


@dataclass(frozen=True, slots=True)
class Config:
    version: Literal[1] = 1
    generation: int = 0
    engine: EngineSettings = EngineSettings()
    admin: AdminSettings = AdminSettings()
    limits: Limits = Limits()
    listeners: tuple[Listener, ...] = ()
    clusters: tuple[Cluster, ...] = ()
