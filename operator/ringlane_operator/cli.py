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

    try:
        uvloop.run(kopf.operator(
            clusterwide=not opts.namespaces,
            namespaces=opts.namespaces,
            standalone=opts.peering is None,
            peering_name=opts.peering,
            priority=opts.priority,
            liveness_endpoint=opts.liveness,
            memo=kopf.Memo(options=opts),
        ))
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
