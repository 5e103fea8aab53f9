"""`ringlane-sidecar probe`: what io_uring offers on this kernel, and which engine `auto` picks."""
from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from typing import Any

# (bit in rl_probe_result.features, name shown to users)
FEATURES = [
    ("RL_FEAT_MULTISHOT_ACCEPT", "multishot_accept"),
    ("RL_FEAT_MULTISHOT_RECV", "multishot_recv"),
    ("RL_FEAT_BUF_RING", "provided_buffer_ring"),
    ("RL_FEAT_SINGLE_ISSUER", "single_issuer"),
    ("RL_FEAT_DEFER_TASKRUN", "defer_taskrun"),
    ("RL_FEAT_SUBMIT_ALL", "submit_all"),
    ("RL_FEAT_COOP_TASKRUN", "coop_taskrun"),
    ("RL_FEAT_NO_SQARRAY", "no_sqarray"),
    ("RL_FEAT_R_DISABLED", "setup_r_disabled"),
    ("RL_FEAT_RESTRICTIONS", "ring_restrictions"),
    ("RL_FEAT_REG_RING_FD", "registered_ring_fd"),
    ("RL_FEAT_REGISTER_QUERY", "register_query"),
    ("RL_FEAT_BPF_FILTER", "io_uring_bpf_filter"),
]

# What the io_uring engine cannot run without.
REQUIRED = ("multishot_accept", "multishot_recv", "provided_buffer_ring")


@dataclass(frozen=True)
class ProbeReport:
    kernel: str
    io_uring_disabled: int | None
    io_uring_usable: bool
    setup_error: str | None
    features: dict[str, bool]
    nr_request_opcodes: int | None
    nr_register_opcodes: int | None
    engine: str
    reason: str
    confinement: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        return {
            "kernel": self.kernel,
            "io_uring": {
                "usable": self.io_uring_usable,
                "disabled_sysctl": self.io_uring_disabled,
                "setup_error": self.setup_error,
                "features": self.features,
                "nr_request_opcodes": self.nr_request_opcodes,
                "nr_register_opcodes": self.nr_register_opcodes,
            },
            "auto_engine": {"engine": self.engine, "reason": self.reason},
            "confinement": self.confinement,
        }


def explain_setup_errno(err: int, disabled: int | None) -> str:
    """Why io_uring_setup failed, in words an operator can act on."""
    if err == errno.EPERM and disabled and disabled > 0:
        return f"EPERM: kernel.io_uring_disabled={disabled}"
    if err == errno.EPERM:
        return "EPERM: blocked by seccomp or an LSM (io_uring_setup denied)"
    if err == errno.ENOSYS:
        return "ENOSYS: io_uring not available (kernel without it, or a seccomp profile returning ENOSYS)"
    return f"{errno.errorcode.get(err, str(err))}: io_uring_setup failed"


def choose_engine(usable: bool, setup_error: str | None, features: dict[str, bool]) -> tuple[str, str]:
    """The engine `auto` picks and why (pure: the probe result in, a decision out)."""
    if not usable:
        return "epoll", f"io_uring unusable ({setup_error})"
    missing = [f for f in REQUIRED if not features.get(f)]
    if missing:
        return "epoll", "io_uring lacks " + ", ".join(missing)
    return "io_uring", "io_uring usable with " + ", ".join(REQUIRED)


def run_probe() -> ProbeReport:
    from ringlane_sidecar.native import load  # the C build; loaded late so --help works without it

    ffi, lib = load()

    res = ffi.new("rl_probe_result *")
    rc = lib.rl_probe(res)
    disabled = res.io_uring_disabled if res.io_uring_disabled >= 0 else None
    usable = rc == 0
    setup_error = None if res.setup_errno == 0 else explain_setup_errno(res.setup_errno, disabled)
    if rc != 0 and setup_error is None:
        setup_error = f"{os.strerror(-rc)} while probing"
    feats = {name: usable and bool(res.features & getattr(lib, bit)) for bit, name in FEATURES}
    engine, reason = choose_engine(usable, setup_error, feats)
    return ProbeReport(
        confinement=confinement_report(usable, feats, res.nr_register_opcodes if res.nr_register_opcodes >= 0 else None),
        kernel=ffi.string(res.kernel).decode(),
        io_uring_disabled=disabled,
        io_uring_usable=usable,
        setup_error=setup_error,
        features=feats,
        nr_request_opcodes=res.nr_request_opcodes or None,
        nr_register_opcodes=res.nr_register_opcodes if res.nr_register_opcodes >= 0 else None,
        engine=engine,
        reason=reason,
    )


def confinement_report(usable: bool, feats: dict[str, bool], nr_register_opcodes: int | None) -> dict[str, str]:
    """Which confinement layers this process has and which `run` can add here."""
    from ringlane_sidecar.confine.apply import seccomp_mode
    from ringlane_sidecar.confine.uring_bpf import availability

    _, bpf_why = availability(nr_register_opcodes)
    return {
        "seccomp_mode": seccomp_mode(),
        "ring_restrictions": "available" if usable and feats.get("ring_restrictions") else "unavailable",
        "io_uring_bpf_filter": bpf_why,
        "seccomp_lock": "available (run installs it once its rings exist)",
    }
