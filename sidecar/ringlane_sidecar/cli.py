"""ringlane-sidecar: the command line of the sidecar (one subcommand per job)."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

from ringlane_sidecar import __version__

DESCRIPTION = """\
Ringlane's sidecar proxy: a CPU-pinned io_uring (or epoll) HTTP/TCP proxy driven by a
Python agent. Normally started by the operator's injected container; the commands below
are also useful on their own to validate configs and inspect a node."""

EPILOG = """\
examples:
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

    check = sub.add_parser(
        "check",
        help="validate a sidecar config file (JSON or YAML)",
        description="Validate a sidecar config. Prints a one-line summary and exits 0 when it is "
        "valid; otherwise prints every error as 'FILE: path.to.field: message' and exits 2.",
    )
    check.add_argument("--config", required=True, metavar="FILE", help="config file to validate")

    sub.add_parser(
        "probe",
        help="report io_uring support on this kernel as JSON",
        description="Try io_uring on this kernel for real and print JSON: kernel version, whether "
        "io_uring_setup works (EPERM, ENOSYS and the io_uring_disabled sysctl are told apart), the "
        "features found, and the engine that --engine auto would pick and why.",
    )
    return parser


def cmd_check(args: argparse.Namespace) -> int:
    from ringlane_sidecar.check import run_check

    return run_check(args.config, sys.stdout, sys.stderr)


def cmd_probe(_: argparse.Namespace) -> int:
    from ringlane_sidecar.probe import run_probe

    print(json.dumps(run_probe().to_dict(), indent=2))
    return 0


COMMANDS = {"check": cmd_check, "probe": cmd_probe}


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
