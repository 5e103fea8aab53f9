"""ringlane-sidecar: the command line of the sidecar (one subcommand per job)."""
from __future__ import annotations

import argparse
import json
import re
import sys
from typing import Sequence

from ringlane_sidecar import __version__

MAX_WORKERS = 256  # RL_MAX_WORKERS in rl_core.h (a test checks they agree)
MAX_CPU = 4095  # the highest CPU number taken (NR_CPUS of common kernel builds, minus one)

DESCRIPTION = """\
Ringlane's sidecar proxy: a CPU-pinned io_uring (or epoll) HTTP/TCP proxy driven by a
Python agent. Normally started by the operator's injected container; the commands below
are also useful on their own to validate configs and inspect a node."""

EPILOG = """\
examples:
  ringlane-sidecar run --config examples/http-minimal.yaml --engine auto
  ringlane-sidecar check --config examples/http-minimal.yaml
  ringlane-sidecar probe
exit codes: 0 ok, 2 invalid input (every problem is printed, one per line), 70 internal error"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ringlane-sidecar",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = sub.add_parser(
        "run",
        help="run the sidecar proxy (what the injected container runs)",
        description="Validate the config, start one pinned worker per CPU, serve the admin port "
        "(/metrics /healthz /ready /config, POST /drain), reload the config when it changes, and "
        "drain on SIGTERM or SIGINT (a second signal exits at once). Logs are JSON lines on stderr.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="engine: auto tries io_uring and falls back to epoll when it is blocked (seccomp,\n"
        "kernel.io_uring_disabled, missing features), saying why; io_uring fails instead of falling back.",
    )
    run.add_argument("--config", metavar="FILE", help="config file (JSON or YAML); reloaded when it changes")
    run.add_argument("--engine", choices=("auto", "io_uring", "epoll"), help="overrides the config's engine.kind")
    run.add_argument("--workers", type=worker_count, metavar="N", help="worker threads (default: one per CPU)")
    run.add_argument("--cpus", type=cpu_list, metavar="LIST", help="CPUs to use, e.g. 2,3 or 0-3 (default: the cpuset)")
    run.add_argument("--admin", metavar="ADDR", help="admin address (default from the config: 0.0.0.0:9901)")
    run.add_argument("--configmap", metavar="NS/NAME", type=configmap_ref, help="watch this ConfigMap through the API (in Kubernetes)")
    run.add_argument("--configmap-key", default="config.json", metavar="KEY", help="key of the ConfigMap (default config.json)")
    run.add_argument("--pod-labels", metavar="FILE", help="downward-API labels file: serve only rules whose selector matches")
    run.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default="info")

    check = sub.add_parser(
        "check",
        help="validate a sidecar config file (JSON or YAML)",
        description="Validate a sidecar config. Prints a one-line summary and exits 0 when it is "
        "valid; otherwise prints every error as 'FILE: path.to.field: message' and exits 2.",
    )
    check.add_argument("--config", required=True, metavar="FILE", help="config file to validate")

    prof = sub.add_parser(
        "seccomp-profile",
        help="print the seccomp profile this build needs (OCI/containerd JSON)",
        description="Print the default-deny seccomp profile for the sidecar: exactly the system calls it "
        "makes, with io_uring_register allowed only for the opcodes it uses (SCMP_CMP_EQ on argument 1). "
        "Install it under the kubelet's seccomp directory and reference it with type: Localhost.",
    )
    prof.add_argument("--engine", choices=("io_uring", "epoll"), default="io_uring",
                      help="io_uring (default) or epoll (no io_uring system calls at all)")
    prof.add_argument("--arch", action="append", choices=("x86_64", "aarch64"),
                      help="architectures to include (repeatable; default both)")
    prof.add_argument("--install", metavar="DIR",
                      help="write proxy-io_uring.json and proxy-epoll.json into DIR (atomically) instead of printing")

    sub.add_parser(
        "probe",
        help="report io_uring support on this kernel as JSON",
        description="Try io_uring on this kernel for real and print JSON: kernel version, whether "
        "io_uring_setup works (EPERM, ENOSYS and the io_uring_disabled sysctl are told apart), the "
        "features found, and the engine that --engine auto would pick and why.",
    )
    return parser


def positive_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text!r}")
    return n


def worker_count(text: str) -> int:
    n = positive_int(text)
    if n > MAX_WORKERS:
        raise argparse.ArgumentTypeError(f"at most {MAX_WORKERS}: {text!r}")
    return n


def cpu_list(text: str) -> list[int]:
    """'0,2-3' -> [0, 2, 3] (the kernel's cpuset list format)."""
    cpus: dict[int, None] = {}  # ordered, without repeats
    for part in text.split(","):
        if not re.fullmatch(r"[0-9]+(-[0-9]+)?", part):  # not int(): it takes "0_1", " 1", other digits
            raise argparse.ArgumentTypeError(f"invalid CPU list {text!r} (use e.g. 1 or 0,2-3)")
        lo_text, _, hi_text = part.partition("-")
        lo, hi = int(lo_text), int(hi_text or lo_text)
        if not 0 <= lo <= hi <= MAX_CPU:
            raise argparse.ArgumentTypeError(f"invalid CPU range {part!r} in {text!r} (CPUs are 0 to {MAX_CPU}, low-high)")
        cpus.update(dict.fromkeys(range(lo, hi + 1)))
    if len(cpus) > MAX_WORKERS:
        raise argparse.ArgumentTypeError(f"{len(cpus)} CPUs in {text!r}: at most {MAX_WORKERS} (one worker each)")
    return list(cpus)


def configmap_ref(text: str) -> str:
    """'NS/NAME', both parts non-empty."""
    ns, sep, name = text.partition("/")
    if not (ns and sep and name) or "/" in name:
        raise argparse.ArgumentTypeError(f"invalid ConfigMap {text!r} (use NAMESPACE/NAME)")
    return text


def cmd_run(args: argparse.Namespace) -> int:
    from ringlane_sidecar.agent import RunOptions, run

    if not args.config and not args.configmap:
        print("ringlane-sidecar run: give --config FILE or --configmap NS/NAME", file=sys.stderr)
        return 2
    return run(RunOptions(config=args.config, engine=args.engine, workers=args.workers, cpus=args.cpus,
                          admin=args.admin, configmap=args.configmap, configmap_key=args.configmap_key,
                          pod_labels=args.pod_labels, log_level=args.log_level))


def cmd_check(args: argparse.Namespace) -> int:
    from ringlane_sidecar.check import run_check

    return run_check(args.config, sys.stdout, sys.stderr)


def cmd_seccomp_profile(args: argparse.Namespace) -> int:
    from ringlane_sidecar.confine import uring_ops
    from ringlane_sidecar.confine.profile import seccomp_profile

    arches = tuple(args.arch) if args.arch else ("x86_64", "aarch64")
    if args.install:
        from ringlane_sidecar.confine.profile import install_profiles

        try:
            paths = install_profiles(args.install, uring_ops.from_core(), arches)
        except OSError as exc:
            where = exc.filename or args.install
            print(f"ringlane-sidecar seccomp-profile: --install {args.install}: cannot write {where}: "
                  f"{(exc.strerror or type(exc).__name__).lower()}", file=sys.stderr)
            return 2
        for path in paths:
            print(f"wrote {path}")
        return 0
    uring = uring_ops.from_core() if args.engine == "io_uring" else None
    print(json.dumps(seccomp_profile(args.engine, uring, arches), indent=2))
    return 0


def cmd_probe(_: argparse.Namespace) -> int:
    from ringlane_sidecar.probe import run_probe

    print(json.dumps(run_probe().to_dict(), indent=2))
    return 0


COMMANDS = {"run": cmd_run, "check": cmd_check, "probe": cmd_probe, "seccomp-profile": cmd_seccomp_profile}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # the edge: never a traceback for the user
        print(f"ringlane-sidecar {args.command}: internal error: {exc!r}", file=sys.stderr)
        return 70


if __name__ == "__main__":
    sys.exit(main())
