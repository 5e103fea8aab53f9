"""The soak's configs and reload schedule. Every reload is a fresh random config over the same
listeners and backends: endpoints come and go (one of them dead), load balancers, pool idle
timeouts, retry policies, timeouts, connection caps and the body limit change, rules and clusters
are renamed, the TCP listener is sometimes removed. Config draws and reload pauses share one RNG
seeded from the run's seed, so a seed replays the same sequence of configs."""
from __future__ import annotations

import itertools
import random
from dataclasses import dataclass

from integration.helpers import cluster, config, http_listener, rule, tcp_listener
from ringlane_sidecar.config.model import Backend, Config, Limits, Listener, Retry, Rule, Timeouts

DRAIN_TIMEOUT_MS = 3000
APPLIES_DURING_DRAIN = 3  # reloads racing the drain must not bring workers back


@dataclass(frozen=True)
class Topology:
    """Where the proxy listens and where its backends are."""
    http_port: int
    tcp_port: int  # TCP listener relaying to the echo backend
    relay_port: int  # TCP listener relaying to b3 (clients speak HTTP through it)
    b1: str
    b2: str
    b3: str
    echo: str
    dead: str  # an endpoint nothing listens on

    @property
    def listen_ports(self) -> set[int]:
        """The ports whose sockets the after-drain check looks for (upstream sides are found
        through the backends' ports)."""
        return {self.http_port, self.tcp_port, self.relay_port}


@dataclass(frozen=True)
class Variations:
    """Parts of the config churn that can be switched off to narrow a failure down."""
    renames: bool = True  # the catch-all rule and the "other" cluster change names
    echo_chaos: bool = True  # the echo cluster has a dead endpoint and a connection cap
    drops_tcp_listener: bool = True  # the TCP listener is absent from some configs
    fast_reloads: bool = False  # 0.02-0.3 s between reloads instead of 0.2-1 s


class Scenario:
    def __init__(self, seed: int, topology: Topology, variations: Variations) -> None:
        self.rng = random.Random(seed ^ 0x5A5A)
        self.top = topology
        self.var = variations
        self.generations = itertools.count(1)

    def reload_pause(self) -> float:
        return self.rng.uniform(0.02, 0.3) if self.var.fast_reloads else self.rng.uniform(0.2, 1.0)

    def _ms(self, lo: int, hi: int) -> str:
        return f"{self.rng.randint(lo, hi)}ms"

    def next_config(self) -> Config:
        """A random config with the next generation. The order of the draws is part of what a seed
        means: changing it changes the configs every recorded seed stands for."""
        rng, top, var, ms = self.rng, self.top, self.var, self._ms
        main_eps = [top.b1, top.b2] + ([top.dead] if rng.random() < 0.5 else [])
        rng.shuffle(main_eps)
        if rng.random() < 0.15:
            main_eps = [rng.choice([top.b1, top.b2])]
        req_to = rng.randint(1200, 2000)
        rules = [
            rule("api", "main", prefix="/api",
                 timeouts=Timeouts(request=f"{req_to}ms", backend_request=ms(200, req_to)),
                 retry=Retry(attempts=rng.randint(0, 2), on=("connect-failure", "503", "reset")[:rng.randint(1, 3)],
                             backoff=ms(1, 30))),
            rule("small", "small", headers=[("x-lane", "small")],
                 timeouts=Timeouts(request=ms(1000, 2000)),
                 retry=Retry(attempts=1, on=("connect-failure", "503"), backoff="5ms")),
            rule("ws", "main", prefix="/ws"),
        ]
        # draws of a catch-all rule the first version built here, then replaced: kept so seeds replay
        rng.randint(0, 3)
        ms(300, 2000)
        other = rng.choice(["other", "other", "other-a", "other-b"]) if var.renames else "other"
        rules.append(rule(rng.choice(["any", "any2"]) if var.renames else "any", ("main", 1),
                          (other, rng.randint(0, 3)), prefix="/",
                          timeouts=Timeouts(request="2s", backend_request=ms(300, 2000)),
                          retry=Retry(attempts=1, on=("503",), backoff="10ms")))
        if rng.random() < 0.8:
            rules.append(rule("exact", other, exact="/exact",
                              timeouts=Timeouts(request=ms(500, 2000), backend_request="400ms")))
        clusters = [
            cluster("main", *main_eps, load_balancer=rng.choice(["round-robin", "least-request", "random"]),
                    idle_timeout=rng.choice(["200ms", "1s", "60s"])),
            cluster("small", top.b3, max_connections=rng.randint(2, 6)),
            cluster(other, top.b3, *([top.b2] if rng.random() < 0.5 else [])),
            cluster("echo", top.echo, top.dead, max_connections=rng.randint(3, 8)) if var.echo_chaos
            else cluster("echo", top.echo),
        ]
        limits = Limits(request_header_timeout="2s", idle_timeout="1s", tunnel_idle_timeout="1s",
                        drain_timeout="3s", max_request_body_bytes=rng.choice([0, 0, 0, 300_000]))
        listeners = [http_listener(top.http_port, *rules)]
        if not (var.drops_tcp_listener and rng.random() < 0.15):
            retry = Retry(attempts=rng.randint(0, 2), on=("connect-failure",), backoff=ms(1, 20))
            listeners.append(Listener(name="tcp", address=f"127.0.0.1:{top.tcp_port}", protocol="tcp",
                                      rules=(Rule(name="tcp", backends=(Backend(cluster="echo"),), retry=retry),)))
        listeners.append(tcp_listener(top.relay_port, "small", name="tcp2"))
        return config(listeners, clusters, generation=next(self.generations), limits=limits)
