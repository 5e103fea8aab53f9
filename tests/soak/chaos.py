#!/usr/bin/env python3
"""Seeded chaos soak of the data plane: the core on one engine, random concurrent clients against
hostile backends for SECONDS, a random reload every fraction of a second, then a drain with the
clients still running and reloads racing it; the invariants (invariants.py) are checked
throughout and after.

    .venv/bin/python tests/soak/chaos.py SEED SECONDS ENGINE [--clients N] [...]
    make soak [SOAK_SEED=N] [SOAK_SECONDS=60] [SOAK_ASAN=1]     (both engines)

Prints VIOLATION lines as they happen, counters, and a last RESULT line with the seed. Exit 0 when
clean, 1 on any violation or when the run hangs (every thread's stack is dumped then). Timing is
not replayed, so a seed repeats the configs and each client's choices, not the interleaving."""
from __future__ import annotations

import argparse
import faulthandler
import os
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO / "sidecar"), str(REPO / "tests")]

from integration.helpers import free_port, wait_for  # noqa: E402
from ringlane_sidecar.core import Core  # noqa: E402
from soak import invariants  # noqa: E402
from soak.backends import Backends  # noqa: E402
from soak.clients import KEEPALIVE_BEHAVIOURS, ClientOptions, Clients  # noqa: E402
from soak.scenario import APPLIES_DURING_DRAIN, DRAIN_TIMEOUT_MS, Scenario, Topology, Variations  # noqa: E402

HANG_SLACK = 90  # seconds past the run for the drain and the checks before it counts as a hang
THREAD_JOIN_TIMEOUT = 15
SMALL_BUFFERS = "4096,64,32"


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("seed", type=int)
    p.add_argument("seconds", type=float, help="how long the clients run before the drain")
    p.add_argument("engine", choices=("io_uring", "epoll"))
    p.add_argument("--clients", type=int, default=8, metavar="N", help="client threads (default 8)")
    n = p.add_argument_group("narrowing a failure down (the defaults are the soak)")
    n.add_argument("--behaviours", default=",".join(KEEPALIVE_BEHAVIOURS), metavar="B,B,...",
                   help="backend behaviours the keep-alive scenario asks for")
    n.add_argument("--keepalive-only", action="store_true", help="the keep-alive scenario alone")
    n.add_argument("--no-head", action="store_true", help="no HEAD requests (keep-alive, pipelining)")
    n.add_argument("--no-renames", action="store_true", help="reloads keep rule and cluster names")
    n.add_argument("--no-echo-chaos", action="store_true",
                   help="the TCP listener's cluster has no dead endpoint and no connection cap")
    n.add_argument("--keep-tcp-listener", action="store_true", help="no reload removes the TCP listener")
    n.add_argument("--fast-reloads", action="store_true", help="0.02-0.3 s between reloads instead of 0.2-1 s")
    n.add_argument("--no-reloads-during-drain", action="store_true")
    n.add_argument("--small-buffers", nargs="?", const=SMALL_BUFFERS, metavar="SIZE,RECV,TX",
                   help=f"the core's buffer size and receive/send buffer counts (bare: {SMALL_BUFFERS})")
    n.add_argument("--verbose", action="store_true", help="print each connection the proxy closed early")
    return p.parse_args(argv)


def core_options(small_buffers: str | None) -> dict[str, int]:
    if not small_buffers:
        return {}
    size, recv, tx = (int(v) for v in small_buffers.split(","))
    return {"buf_size": size, "recv_bufs": recv, "tx_bufs": tx}


def run(args: argparse.Namespace) -> int:
    findings = invariants.Findings()
    stop = threading.Event()
    backends = Backends(findings, stop)
    top = Topology(http_port=free_port(), tcp_port=free_port(), relay_port=free_port(),
                   b1=backends.b1.address, b2=backends.b2.address, b3=backends.b3.address,
                   echo=backends.echo.address, dead=f"127.0.0.1:{free_port()}")
    scenario = Scenario(args.seed, top, Variations(renames=not args.no_renames, echo_chaos=not args.no_echo_chaos,
                                                   drops_tcp_listener=not args.keep_tcp_listener,
                                                   fast_reloads=args.fast_reloads))
    clients = Clients(args.seed, top, findings, stop,
                      ClientOptions(keepalive_behaviours=tuple(args.behaviours.split(",")), head=not args.no_head,
                                    keepalive_only=args.keepalive_only, verbose=args.verbose))
    baseline_fds = invariants.open_fds()  # the backends' listeners included: they are closed too

    opts = core_options(args.small_buffers)
    print("core opts", opts, flush=True)
    core = Core(args.engine, [0, 1], **opts)
    core.apply(scenario.next_config())
    wait_for(lambda: core.served_generation() >= 1, 5, "gen 1")
    threads = [threading.Thread(target=clients.run, args=(i,), daemon=True) for i in range(args.clients)]
    for t in threads:
        t.start()

    end = time.monotonic() + args.seconds
    reloads = 0
    while time.monotonic() < end:
        time.sleep(scenario.reload_pause())
        try:
            core.apply(scenario.next_config())
            reloads += 1
        except Exception as e:
            findings.violation(f"apply failed: {e}")
        invariants.check_gauges_sane(findings, core)

    # drain with the clients still running
    clients.draining.set()
    core.drain(DRAIN_TIMEOUT_MS)
    t0 = time.monotonic()
    if not args.no_reloads_during_drain:
        for _ in range(APPLIES_DURING_DRAIN):
            time.sleep(0.1)
            try:
                core.apply(scenario.next_config())
            except Exception as e:
                print("apply during drain:", e, flush=True)  # refusing it is fine
    invariants.check_workers_exited(findings, core)
    print(f"drain took {time.monotonic() - t0:.2f}s", flush=True)
    stop.set()
    for t in threads:
        t.join(THREAD_JOIN_TIMEOUT)
        if t.is_alive():
            findings.violation("client thread stuck")

    invariants.check_drained(findings, core)
    print("cluster_stats", core.cluster_stats(), flush=True)
    print("totals", [(t.uring_buf_exhausted, t.rx_copied, t.loop_turns) for t in core.totals()], flush=True)
    print("listener_stats", core.listener_stats(), flush=True)
    invariants.check_proxy_sockets_closed(findings, top.listen_ports, backends.ports)
    core.close()
    backends.close()
    invariants.check_fds_back_to(findings, baseline_fds)

    print("non-200 answers", dict(sorted(findings.non_200.items())), flush=True)
    print(f"reloads={reloads} stats={dict(sorted(findings.stats.items()))}", flush=True)
    if findings.violations:
        # again, together: the live ones are scattered through the output above
        print(f"{len(findings.violations)} violations:", flush=True)
        for v in findings.violations[:invariants.SHOWN_LIVE]:
            print("VIOLATION", v, flush=True)
        asan = " SOAK_ASAN=1" if os.environ.get("RINGLANE_CORE_SO") else ""
        print(f"replay: make soak SOAK_SEED={args.seed} SOAK_SECONDS={args.seconds:g}{asan}  (both engines)", flush=True)
        print("    or:", os.path.relpath(sys.executable, REPO), "tests/soak/chaos.py", *sys.argv[1:],
              " (this engine, same environment)", flush=True)
    print(f"RESULT seed={args.seed} engine={args.engine} violations={len(findings.violations)}", flush=True)
    return 1 if findings.violations else 0


def main() -> None:
    args = parse_args(sys.argv[1:])
    print(f"seed={args.seed} duration={args.seconds:g} engine={args.engine} clients={args.clients}", flush=True)
    faulthandler.dump_traceback_later(args.seconds + HANG_SLACK, exit=True)
    rc = run(args)
    sys.stdout.flush()
    os._exit(rc)  # daemon client and backend threads may still sit in blocking calls


if __name__ == "__main__":
    main()
