"""The OCI seccomp profile (as containerd, runc and kubelet's Localhost profiles read it).

Default deny (EPERM). io_uring_register is allowed only for listed opcodes with SCMP_CMP_EQ
on argument 1: an allowlist, because a denylist is bypassed by setting the opcode's upper
32 bits (the kernel truncates it to u32, seccomp compares 64 bits).
"""
from __future__ import annotations

import json
import os
import tempfile
from typing import Any

from ringlane_sidecar.confine.syscalls import allowed
from ringlane_sidecar.confine.uring_ops import UringAllowlist

ARCHES: dict[str, list[str]] = {
    "x86_64": ["SCMP_ARCH_X86_64"],
    "aarch64": ["SCMP_ARCH_AARCH64"],
}
EPERM = 1



def seccomp_profile(engine: str, uring: UringAllowlist | None, arches: tuple[str, ...] = ("x86_64", "aarch64"),
                    ) -> dict[str, Any]:
    names = allowed(engine)
    plain = sorted(n for n in names if n != "io_uring_register")
    rules: list[dict[str, Any]] = [{"names": plain, "action": "SCMP_ACT_ALLOW"}]
    if "io_uring_register" in names:
        if uring is None:
            raise ValueError("the io_uring profile needs the io_uring allowlist")
        for op in uring.seccomp_register_ops:
            rules.append({
                "names": ["io_uring_register"],
                "action": "SCMP_ACT_ALLOW",
                "args": [{"index": 1, "value": op, "valueTwo": 0, "op": "SCMP_CMP_EQ"}],
                "comment": f"opcode {op}",
            })
    return {
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": EPERM,
        "architectures": [a for arch in arches for a in ARCHES[arch]],
        "syscalls": rules,
    }


def profile_name(engine: str) -> str:
    """File name under the kubelet's seccomp root (pods use localhostProfile: ringlane/<name>)."""
    return f"proxy-{engine}.json"


def install_profiles(directory: str, uring: UringAllowlist, arches: tuple[str, ...]) -> list[str]:
    """Writes both engines' profiles into directory; each file appears complete or not at all."""
    os.makedirs(directory, exist_ok=True)
    written = []
    for engine in ("io_uring", "epoll"):
        path = os.path.join(directory, profile_name(engine))
        text = json.dumps(seccomp_profile(engine, uring if engine == "io_uring" else None, arches), indent=2)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
        with os.fdopen(fd, "w") as f:
            f.write(text + "\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
        written.append(path)
    return written
