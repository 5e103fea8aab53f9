"""The generated seccomp profiles: shape, the io_uring opcode allowlist, and the CLI."""
from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from ringlane_sidecar.confine.syscalls import IO_URING_SYSCALLS, allowed
from ringlane_sidecar.confine.uring_ops import SETUP_REGISTER_OPS, UringAllowlist


def names(profile: dict[str, Any]) -> set[str]:
    return {n for rule in profile["syscalls"] for n in rule["names"]}


def test_default_deny_both_architectures(io_uring_profile: dict[str, Any]) -> None:
    assert io_uring_profile["defaultAction"] == "SCMP_ACT_ERRNO"
    assert io_uring_profile["defaultErrnoRet"] == 1
    assert io_uring_profile["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_AARCH64"]
    assert all(rule["action"] == "SCMP_ACT_ALLOW" for rule in io_uring_profile["syscalls"])


def test_io_uring_register_only_for_listed_opcodes(io_uring_profile: dict[str, Any],
                                                   uring_allowlist: UringAllowlist) -> None:
    reg = [r for r in io_uring_profile["syscalls"] if "io_uring_register" in r["names"]]
    assert reg, "io_uring_register must be allowed for some opcodes"
    ops = []
    for rule in reg:
        assert rule["names"] == ["io_uring_register"]
        (arg,) = rule["args"]
        assert arg["index"] == 1 and arg["op"] == "SCMP_CMP_EQ"  # an allowlist, never a denylist
        ops.append(arg["value"])
    assert sorted(ops) == sorted(set(uring_allowlist.runtime_register_ops) | set(SETUP_REGISTER_OPS))
    plain = [r for r in io_uring_profile["syscalls"] if "args" not in r]
    assert all("io_uring_register" not in r["names"] for r in plain)


def test_epoll_profile_has_no_io_uring(epoll_profile: dict[str, Any]) -> None:
    assert not names(epoll_profile) & set(IO_URING_SYSCALLS)
    assert names(epoll_profile) == set(allowed("epoll"))


def test_io_uring_profile_is_base_plus_three(io_uring_profile: dict[str, Any],
                                              epoll_profile: dict[str, Any]) -> None:
    assert names(io_uring_profile) - names(epoll_profile) == set(IO_URING_SYSCALLS)


def test_every_entry_says_why() -> None:
    for engine in ("io_uring", "epoll"):
        assert all(reason.strip() for reason in allowed(engine).values())


def test_cli_prints_the_profile(io_uring_profile: dict[str, Any], epoll_profile: dict[str, Any]) -> None:
    for engine, expected in (("io_uring", io_uring_profile), ("epoll", epoll_profile)):
        r = subprocess.run([sys.executable, "-m", "ringlane_sidecar.cli", "seccomp-profile", "--engine", engine],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout) == expected
