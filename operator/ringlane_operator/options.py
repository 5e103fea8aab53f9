"""ringlane-operator's command line and environment -> Options (pure: no I/O here)."""
from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .inject_settings import ENGINES, LOG_LEVELS, InjectSettings
from .quantity import parse_quantity
from .seccomp_spo import CRD_NAME, localhost_profile, profile_name

DESCRIPTION = """\
Ringlane's operator: renders the ProxyRoutes of each namespace into ConfigMap ringlane-routes
(read by the sidecars), keeps their status, and injects the sidecar into new pods of
namespaces labelled ringlane.io/injection=enabled (mutating admission webhook)."""

EPILOG = """\
modes:
  in a cluster  the webhook server listens on --webhook-addr:--webhook-port with --tls-cert/--tls-key;
                the Helm chart owns the webhook configurations (or pass --manage-webhooks and
                --webhook-service NAMESPACE/NAME)
  --dev         out of the cluster against $KUBECONFIG: webhook server on 127.0.0.1 with a fresh
                self-signed certificate (openssl), webhook configurations created at start and
                deleted at exit
high availability:
  by default the operator runs standalone (one replica). With --peering NAME, replicas
  coordinate through kopf's peering objects (the chart creates them): one serves, the others
  wait. Admission requests are served by every replica.
seccomp delivery:
  node  (default) pods reference ringlane/proxy-io_uring.json (--seccomp-profile), written on every
        node by the chart's installer DaemonSet (ringlane-sidecar seccomp-profile --install)
  spo   at start the operator creates or updates the Security Profiles Operator's SeccompProfiles
        ringlane-proxy-io-uring and ringlane-proxy-epoll; pods reference
        operator/ringlane-proxy-io-uring.json, or the epoll one when their engine is epoll.
        Needs the CRD %s
        (else the operator exits saying so)
environment: RINGLANE_SIDECAR_IMAGE, RINGLANE_PROXY_CPU, RINGLANE_PROXY_MEMORY, RINGLANE_ADMIN_PORT,
  RINGLANE_NAMESPACES (comma-separated), RINGLANE_LIVENESS, RINGLANE_PEERING, RINGLANE_SECCOMP_DELIVERY,
  RINGLANE_SPO_NAMESPACE (flags win)""" % CRD_NAME


@dataclass(frozen=True, slots=True)
class Options:
    dev: bool = False
    namespaces: tuple[str, ...] = ()  # () = every namespace
    inject: InjectSettings = InjectSettings()
    liveness: str | None = None
    peering: str | None = None  # None: standalone
    priority: int = 0
    webhook_addr: str = "0.0.0.0"
    webhook_port: int = 9443
    webhook_host: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    manage_webhooks: bool = False
    webhook_service: str | None = None  # NAMESPACE/NAME
    webhook_name: str = "ringlane"
    inject_failure_policy: str = "Fail"
    validate_failure_policy: str = "Ignore"
    debounce_ms: int = 200
    max_delay_ms: int = 500
    native_sidecar: str = "auto"  # auto (by server version) | on | off
    seccomp_delivery: str = "node"  # node (the chart's installer DaemonSet) | spo (SeccompProfile objects)
    spo_namespace: str | None = None  # where SeccompProfiles go if SPO's CRD is namespaced (old releases)
    verbose: bool = False


def _port(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"not a port: {text}")
    return value


def _cpu(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"whole CPUs (1, 2, ...), got {text!r}")
    return int(text)


def _memory(text: str) -> str:
    try:
        parse_quantity(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


SECCOMP_DELIVERIES = ("node", "spo")


def build_parser(env: Mapping[str, str]) -> argparse.ArgumentParser:
    d = InjectSettings()
    p = argparse.ArgumentParser(prog="ringlane-operator", description=DESCRIPTION, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dev", action="store_true", help="run out of the cluster against $KUBECONFIG (see modes)")
    p.add_argument("--namespace", "-n", action="append", dest="namespaces", metavar="NS",
                   help="watch only this namespace (repeatable; default: all)")
    g = p.add_argument_group("sidecar injection")
    g.add_argument("--sidecar-image", default=env.get("RINGLANE_SIDECAR_IMAGE", d.image), metavar="IMAGE")
    g.add_argument("--image-pull-policy", default=d.image_pull_policy, choices=("Always", "IfNotPresent", "Never"))
    g.add_argument("--proxy-cpu", type=_cpu, default=_cpu(env.get("RINGLANE_PROXY_CPU", str(d.cpu))), metavar="N",
                   help="whole CPUs per sidecar, requests == limits (default %(default)s)")
    g.add_argument("--proxy-memory", type=_memory, default=env.get("RINGLANE_PROXY_MEMORY", d.memory), metavar="Q",
                   help="memory per sidecar (default %(default)s)")
    g.add_argument("--admin-port", type=_port, default=_port(env.get("RINGLANE_ADMIN_PORT", str(d.admin_port))))
    g.add_argument("--engine", choices=ENGINES, default=d.engine)
    g.add_argument("--sidecar-log-level", choices=LOG_LEVELS, default=d.log_level)
    g.add_argument("--seccomp-profile", default=None, metavar="PATH",
                   help="Localhost profile, relative to the kubelet's seccomp directory, or RuntimeDefault "
                        f"(default {d.seccomp_profile}; not with --seccomp-delivery spo)")
    g.add_argument("--seccomp-delivery", default=env.get("RINGLANE_SECCOMP_DELIVERY", "node"),
                   choices=SECCOMP_DELIVERIES,
                   help="node: profiles written on the nodes (chart DaemonSet); spo: the Security Profiles "
                        "Operator's SeccompProfile objects, created at start (default %(default)s)")
    g.add_argument("--spo-namespace", default=env.get("RINGLANE_SPO_NAMESPACE") or None, metavar="NS",
                   help="namespace for the SeccompProfiles when the installed SPO's CRD is namespaced "
                        "(releases before it became cluster-scoped)")
    g.add_argument("--prestop-sleep", type=int, default=d.prestop_sleep, metavar="SECONDS",
                   help="sidecar preStop sleep before SIGTERM (0: none; default %(default)s)")
    g.add_argument("--native-sidecar", choices=("auto", "on", "off"), default="auto",
                   help="init container with restartPolicy Always (auto: if the server is >= 1.29)")
    g.add_argument("--inject-failure-policy", choices=("Fail", "Ignore"), default="Fail")
    w = p.add_argument_group("admission webhooks")
    w.add_argument("--webhook-addr", default=None, help="listen address (default 0.0.0.0; --dev: 127.0.0.1)")
    w.add_argument("--webhook-port", type=int, default=None, help="listen port (default 9443; --dev: a free port)")
    w.add_argument("--webhook-host", default=None, help="host name in the webhook URL (default: the address)")
    w.add_argument("--tls-cert", metavar="FILE")
    w.add_argument("--tls-key", metavar="FILE")
    w.add_argument("--manage-webhooks", action="store_true", help="create/update the webhook configurations")
    w.add_argument("--webhook-service", metavar="NS/NAME", help="the Service in front of the webhook server")
    w.add_argument("--webhook-name", default="ringlane", help="name of the webhook configuration objects")
    o = p.add_argument_group("operation")
    o.add_argument("--liveness", default=env.get("RINGLANE_LIVENESS"), metavar="URL",
                   help="kopf liveness endpoint, e.g. http://0.0.0.0:8080/healthz")
    o.add_argument("--peering", default=env.get("RINGLANE_PEERING"), metavar="NAME",
                   help="coordinate replicas through this kopf peering (default: standalone)")
    o.add_argument("--priority", type=int, default=0, help="peering priority")
    o.add_argument("--debounce-ms", type=int, default=200, help="quiet time before a re-render (default 200)")
    o.add_argument("--max-delay-ms", type=int, default=500, help="longest wait for a re-render (default 500)")
    o.add_argument("--verbose", "-v", action="store_true")
    return p


def parse_options(argv: Sequence[str] | None, env: Mapping[str, str]) -> Options:
    parser = build_parser(env)
    a = parser.parse_args(argv)
    if (a.tls_cert is None) != (a.tls_key is None):
        parser.error("--tls-cert and --tls-key go together")
    if not a.dev and a.tls_cert is None:
        parser.error("in a cluster the webhook server needs --tls-cert and --tls-key (or use --dev)")
    if a.manage_webhooks and not a.dev and not (a.webhook_service or a.webhook_host):
        parser.error("--manage-webhooks in a cluster needs --webhook-service NS/NAME (or --webhook-host)")
    if a.prestop_sleep < 0:
        parser.error("--prestop-sleep must be >= 0")
    if not 0 < a.debounce_ms <= a.max_delay_ms < 1000:
        parser.error("need 0 < --debounce-ms <= --max-delay-ms < 1000 (re-renders within a second)")
    if a.seccomp_delivery not in SECCOMP_DELIVERIES:  # from the environment: argparse checks flags only
        parser.error(f"RINGLANE_SECCOMP_DELIVERY={a.seccomp_delivery!r}: must be one of {', '.join(SECCOMP_DELIVERIES)}")
    if a.seccomp_delivery == "spo" and a.seccomp_profile is not None:
        parser.error("--seccomp-profile and --seccomp-delivery spo do not go together: "
                     "with spo, pods reference the SeccompProfiles the operator creates")
    if a.seccomp_delivery == "spo":  # where SPO puts them; the start-up handler confirms from the objects
        profile, epoll = (localhost_profile(profile_name(e)) for e in ("io_uring", "epoll"))
    else:
        profile, epoll = (a.seccomp_profile or InjectSettings().seccomp_profile), None
    namespaces = a.namespaces or [ns for ns in env.get("RINGLANE_NAMESPACES", "").split(",") if ns]
    inject = InjectSettings(
        image=a.sidecar_image, image_pull_policy=a.image_pull_policy, cpu=a.proxy_cpu, memory=a.proxy_memory,
        admin_port=a.admin_port, engine=a.engine, log_level=a.sidecar_log_level, seccomp_profile=profile,
        seccomp_profile_epoll=epoll,
        prestop_sleep=a.prestop_sleep, native_sidecar=a.native_sidecar != "off",
    )
    return Options(
        dev=a.dev, namespaces=tuple(namespaces), inject=inject, liveness=a.liveness, peering=a.peering,
        priority=a.priority,
        webhook_addr=a.webhook_addr or ("127.0.0.1" if a.dev else "0.0.0.0"),
        webhook_port=a.webhook_port if a.webhook_port is not None else (0 if a.dev else 9443),
        webhook_host=a.webhook_host, tls_cert=a.tls_cert, tls_key=a.tls_key,
        manage_webhooks=a.manage_webhooks or a.dev, webhook_service=a.webhook_service, webhook_name=a.webhook_name,
        inject_failure_policy=a.inject_failure_policy, debounce_ms=a.debounce_ms, max_delay_ms=a.max_delay_ms,
        native_sidecar=a.native_sidecar, seccomp_delivery=a.seccomp_delivery, spo_namespace=a.spo_namespace,
        verbose=a.verbose,
    )
