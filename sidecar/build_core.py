"""cffi out-of-line API-mode builder for the C core (ringlane_sidecar._core).

The cdef is read from core/rl_api.h, the one header that lists what Python may call.
llhttp is compiled from the C sources Debian's node-llhttp installs; liburing is linked
from Debian's liburing-dev. A missing package stops the build with the package's name.
"""
from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent
CORE = HERE / "core"
LLHTTP_SRC = Path("/usr/share/llhttp")
LLHTTP_INC = Path("/usr/share/include/llhttp")

# (file that must exist, Debian package that provides it)
REQUIRED = [
    (Path("/usr/include/liburing.h"), "liburing-dev"),
    (LLHTTP_SRC / "llhttp.c", "node-llhttp"),
    (LLHTTP_INC / "llhttp.h", "node-llhttp"),
]

# Hidden visibility: calls between modules go direct, not through the PLT (only PyInit is
# exported). LTO: the per-request helpers (output queue, buffers, llhttp's callbacks) inline
# across files.
CFLAGS = ["-std=gnu11", "-O2", "-g", "-Wall", "-Wextra", "-Werror", "-fno-strict-aliasing",
          "-fvisibility=hidden", "-flto=auto"]
LDFLAGS = ["-O2", "-flto=auto", "-fvisibility=hidden"]


def check_system_packages() -> None:
    missing = sorted({pkg for path, pkg in REQUIRED if not path.exists()})
    if missing:
        raise SystemExit(
            "ringlane: cannot build the C core, missing Debian package(s): "
            + " ".join(missing)
            + f"\n  install with: apt-get install -y {' '.join(missing)}   (or run: make setup)"
        )


def cdef_text() -> str:
    """The cffi:begin..cffi:end regions of the headers rl_api.h includes, in its order."""
    headers = re.findall(r'#include "(rl_\w+\.h)"', (CORE / "rl_api.h").read_text())
    regions = []
    for name in headers:
        text = (CORE / name).read_text()
        found = re.findall(r"/\* cffi:begin \*/(.*?)/\* cffi:end \*/", text, re.S)
        if not found:
            raise SystemExit(f"ringlane: {name} is included by rl_api.h but has no cffi:begin region")
        regions.extend(found)
    return "\n".join(regions)


check_system_packages()
ffibuilder = FFI()
ffibuilder.cdef(cdef_text())
ffibuilder.set_source(
    "ringlane_sidecar._core",
    '#include "rl_api.h"',
    sources=[str(p.relative_to(HERE.parent)) for p in sorted(CORE.glob("*.c"))],
    include_dirs=[str(CORE), str(LLHTTP_INC), str(LLHTTP_SRC)],
    define_macros=[("_GNU_SOURCE", None)],
    libraries=["uring", "pthread"],
    # RINGLANE_CFLAGS adds e.g. sanitizer flags for the ASan/UBSan build.
    extra_compile_args=CFLAGS + shlex.split(os.environ.get("RINGLANE_CFLAGS", "")),
    extra_link_args=LDFLAGS + shlex.split(os.environ.get("RINGLANE_LDFLAGS", "")),
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
