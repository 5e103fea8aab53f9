"""ringlane-operator: parse options, register the kopf handlers, run kopf on uvloop."""
from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    from .options import parse_options

    opts = parse_options(argv, os.environ)
    logging.basicConfig(level=logging.DEBUG if opts.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("aiohttp.access", "kopf.objects") if not opts.verbose else ():
        logging.getLogger(noisy).setLevel(logging.WARNING)

    import kopf
    import uvloop

    from . import handlers  # noqa: F401  (registers the handlers)

    memo = kopf.Memo(options=opts)
    try:
        uvloop.run(kopf.operator(
            clusterwide=not opts.namespaces,
            namespaces=opts.namespaces,
            standalone=opts.peering is None,
            peering_name=opts.peering,
            priority=opts.priority,
            liveness_endpoint=opts.liveness,
            memo=memo,
        ))
    except KeyboardInterrupt:
        return 130
    except Exception:
        fatal = getattr(memo, "fatal", None)  # set by a start-up handler that cannot succeed
        if fatal is None:
            raise
        print(f"ringlane-operator: {fatal}", file=sys.stderr)
        _termination_message(fatal)
        return 2
    return 0


def _termination_message(message: str) -> None:
    """In a pod, `kubectl describe` shows this as the container's last state message."""
    path = "/dev/termination-log"
    if os.path.exists(path):
        try:
            with open(path, "w") as f:
                f.write(message + "\n")
        except OSError:
            pass


if __name__ == "__main__":
    sys.exit(main())
