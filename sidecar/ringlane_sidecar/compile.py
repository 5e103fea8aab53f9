"""Compile a validated Config into the C core's immutable config (rl_cfg).

Stats labels are "slots" (ringlane_sidecar.slots): small integers per listener, rule and
cluster name, so each keeps its counters across reloads.
"""
from __future__ import annotations

from ringlane_sidecar.config import Config, HeaderModifier, Rule
from ringlane_sidecar.slots import OutOfSlots, Slots

LB = {"round-robin": 0, "least-request": 1, "random": 2}
PROTO = {"http": 0, "tcp": 1}
PATH = {"PathPrefix": 0, "Exact": 1}
RETRY_FLAGS = {"connect-failure": 1, "reset": 2}


def rule_key(listener: str, route: str) -> str:
    """Slot name of a rule's stats; route "" counts requests that no rule matched."""
    return f"{listener}\x1f{route}"


def split_rule_key(key: str) -> tuple[str, str]:
    listener, _, route = key.partition("\x1f")
    return listener, route


class CompileError(Exception):
    """The config is valid but the core cannot take it (e.g. out of label slots)."""


def _check(rc: int, what: str) -> int:
    if rc < 0:
        raise CompileError(f"core refused {what}")
    return rc


HEADER_RULE = ("(a header the proxy manages itself, Host edited other than by set, a name that is not a token, "
               "or a value with a control character)")


def _c_str(text: str, what: str) -> bytes:
    """text for a C string: an embedded NUL would silently cut it short."""
    if "\x00" in text:
        raise CompileError(f"{what}: NUL character in {text!r}")
    return text.encode()


def _header_ops(ffi, lib, add_op, c, ri: int, mod: HeaderModifier, what: str) -> None:  # type: ignore[no-untyped-def]
    for op, verb, hs in ((lib.RL_HDR_SET, "set", mod.set), (lib.RL_HDR_ADD, "add", mod.add)):
        for h in hs:
            where = f"{what} {verb} {h.name}"
            _check(add_op(c, ri, op, _c_str(h.name, where), _c_str(h.value, where)), f"{where} {HEADER_RULE}")
    for name in mod.remove:
        where = f"{what} remove {name}"
        _check(add_op(c, ri, lib.RL_HDR_REMOVE, _c_str(name, where), ffi.NULL), f"{where} {HEADER_RULE}")


def _rule_filters(ffi, lib, c, ri: int, rule: Rule) -> None:  # type: ignore[no-untyped-def]
    for f in rule.filters:
        if f.request_header_modifier:
            _header_ops(ffi, lib, lib.rl_cfg_rule_header_op, c, ri, f.request_header_modifier, "request header")
        if f.response_header_modifier:
            _header_ops(ffi, lib, lib.rl_cfg_rule_resp_header_op, c, ri, f.response_header_modifier,
                        "response header")
        if f.url_rewrite and f.url_rewrite.hostname:  # Gateway API: the Host header sent upstream
            _check(lib.rl_cfg_rule_header_op(c, ri, lib.RL_HDR_SET, b"Host", f.url_rewrite.hostname.encode()),
                   "hostname rewrite")
        if f.url_rewrite and f.url_rewrite.replace_prefix_match is not None:
            _check(lib.rl_cfg_rule_rewrite_prefix(c, ri, f.url_rewrite.replace_prefix_match.encode()), "rewrite")


def compile_config(cfg: Config, slots: Slots, ffi, lib):  # type: ignore[no-untyped-def]
    """Returns an owned rl_cfg* (hand it to rl_core_apply, which takes ownership)."""
    c = lib.rl_cfg_new(cfg.generation)
    if c == ffi.NULL:
        raise CompileError("out of memory")
    try:
        lim = cfg.limits
        lib.rl_cfg_set_limits(c, lim.max_request_header_bytes, lim.max_request_headers,
                              lim.request_header_timeout_ms, lim.idle_timeout_ms)
        lib.rl_cfg_set_body_limit(c, lim.max_request_body_bytes)
        lib.rl_cfg_set_tunnel_idle(c, lim.tunnel_idle_timeout_ms)
        cluster_index: dict[str, int] = {}
        for cl in cfg.clusters:
            ci = _check(lib.rl_cfg_add_cluster(c, slots.clusters.slot(cl.name), LB[cl.load_balancer],
                                               cl.connect_timeout_ms, cl.idle_timeout_ms,
                                               cl.max_connections), f"cluster {cl.name}")
            cluster_index[cl.name] = ci
            for ep in cl.endpoints:
                _check(lib.rl_cfg_cluster_add_endpoint(c, ci, ep.host.encode(), ep.port), f"endpoint {ep.address}")
        for lst in cfg.listeners:
            li = _check(lib.rl_cfg_add_listener(c, slots.listeners.slot(lst.name), lst.host.encode(),
                                                lst.port, PROTO[lst.protocol],
                                                slots.rules.slot(rule_key(lst.name, "")) ), f"listener {lst.name}")
            for rule in lst.rules:
                t, r = rule.timeouts, rule.retry
                ri = _check(lib.rl_cfg_add_rule(c, li, slots.rules.slot(rule_key(lst.name, rule.name)), t.request_ms or 0,
                                                t.backend_request_ms or 0, r.attempts, r.backoff_ms),
                            f"rule {rule.name}")
                for host in rule.hostnames:
                    _check(lib.rl_cfg_rule_add_hostname(c, ri, host.lower().encode()), "hostname")
                for m in rule.matches:
                    mi = _check(lib.rl_cfg_rule_add_match(c, ri, PATH[m.path.type], m.path.value.encode(),
                                                          m.method.encode() if m.method else ffi.NULL), "match")
                    for h in m.headers:
                        _check(lib.rl_cfg_match_add_header(c, ri, mi, h.name.lower().encode(), h.value.encode()),
                               "header match")
                for b in rule.backends:
                    _check(lib.rl_cfg_rule_add_backend(c, ri, cluster_index[b.cluster], b.weight), "backend")
                for on in r.on:
                    if on in RETRY_FLAGS:
                        lib.rl_cfg_rule_retry_on(c, ri, RETRY_FLAGS[on], 0)
                    else:
                        lib.rl_cfg_rule_retry_on(c, ri, 0, int(on))
                _rule_filters(ffi, lib, c, ri, rule)
    except OutOfSlots as exc:
        lib.rl_cfg_free(c)
        raise CompileError(str(exc)) from None
    except BaseException:
        lib.rl_cfg_free(c)
        raise
    return c
