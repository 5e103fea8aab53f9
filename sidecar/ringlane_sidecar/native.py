"""Loading the C core. RINGLANE_CORE_SO points at another build of it (the ASan/UBSan build
that `make asan` runs the integration tests against); normally the installed one is used."""
from __future__ import annotations

import importlib.util
import os
import sys
from typing import Any


def load() -> tuple[Any, Any]:
    """(ffi, lib) of the C core."""
    mod = sys.modules.get("ringlane_sidecar._core")
    if mod is None:
        path = os.environ.get("RINGLANE_CORE_SO")
        if path:
            spec = importlib.util.spec_from_file_location("ringlane_sidecar._core", path)
            if spec is None or spec.loader is None:
                raise ImportError(f"RINGLANE_CORE_SO={path}: not a loadable extension")
            mod = importlib.util.module_from_spec(spec)
            sys.modules["ringlane_sidecar._core"] = mod
            spec.loader.exec_module(mod)
        else:
            import ringlane_sidecar._core as mod  # type: ignore[no-redef]
    return mod.ffi, mod.lib
