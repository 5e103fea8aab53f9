"""Applying the confinement layers the process can apply to itself (side effects live here).

Order matters: io_uring BPF filters (task-wide) before any ring exists, the seccomp lock
after every ring exists. Both are irreversible, by design.
"""
from __future__ import annotations

from dataclasses import dataclass

from ringlane_sidecar.confine import uring_bpf
from ringlane_sidecar.confine.cbpf import pack
from ringlane_sidecar.confine.uring_ops import UringAllowlist

# io_uring_register ops still allowed once locked: liburing unregisters the ring fd at exit.
KEEP_AFTER_LOCK = (21,)


@dataclass
class Layers:
    seccomp_profile: str = "unknown"  # what /proc/self/status says (the runtime's profile)
    ring_restrictions: str = "off"
    io_uring_bpf_filter: str = "off"
    seccomp_lock: str = "off"

    def to_dict(self) -> dict[str, str]:
        return dict(vars(self))


def seccomp_mode() -> str:
    """The Seccomp line of /proc/self/status: 0 none, 1 strict, 2 filter."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Seccomp:"):
                    mode = line.split()[1]
                    return {"0": "none", "1": "strict", "2": "filter"}.get(mode, mode)
    except OSError:
        pass
    return "unknown"


def register_bpf_filters(allow: UringAllowlist, nr_register_opcodes: int | None) -> str:
    ok, why = uring_bpf.availability(nr_register_opcodes)
    if not ok:
        return why
    from ringlane_sidecar.native import load

    ffi, lib = load()
    rc = lib.rl_confine_no_new_privs()
    if rc:
        return f"failed: no_new_privs: errno {-rc}"
    filters = uring_bpf.filters_for(allow)
    # DENY_REST goes with the last one: it attaches deny filters to every opcode still unset.
    for i, f in enumerate(filters):
        prog = ffi.new("char[]", pack(f.program))
        arg = ffi.new("char[]", uring_bpf.encode_register_arg(
            f, int(ffi.cast("uintptr_t", prog)), deny_rest=(i == len(filters) - 1)))
        rc = lib.rl_uring_register_raw(-1, uring_bpf.IORING_REGISTER_BPF_FILTER, arg, 1)
        if rc < 0:
            return f"failed: opcode {f.opcode}: errno {-rc}"
    return f"on: {len(filters)} opcodes allowed, all others denied"


def lock_io_uring() -> str:
    from ringlane_sidecar.native import load

    ffi, lib = load()
    keep = ffi.new("unsigned[]", list(KEEP_AFTER_LOCK))
    err = ffi.new("char[256]")
    rc = lib.rl_confine_lock_io_uring(keep, len(KEEP_AFTER_LOCK), err, 256)
    if rc:
        return "failed: " + ffi.string(err).decode(errors="replace")
    return "on: io_uring_setup and io_uring_register denied from now on"
