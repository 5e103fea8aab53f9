"""The seccomp lock the agent installs once its rings exist, and the ring restrictions."""
from __future__ import annotations

import errno
import json
import subprocess
import sys
import textwrap
from pathlib import Path

HERE = Path(__file__).parent

LOCKED = textwrap.dedent("""
    import json, subprocess, sys
    from ringlane_sidecar.core import Core
    from ringlane_sidecar.confine.apply import lock_io_uring
    core = Core("io_uring", [0])
    state = lock_io_uring()
    sys.path.insert(0, sys.argv[1])
    import probe_syscalls
    probe_syscalls.main()
    print(json.dumps({"lock": state}))
    core.close()
""")


def test_lock_denies_new_rings_and_registrations() -> None:
    r = subprocess.run([sys.executable, "-c", LOCKED, str(HERE)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    calls, lock = (json.loads(line) for line in r.stdout.strip().splitlines())
    assert lock["lock"].startswith("on")
    assert calls["io_uring_setup"] == -errno.EPERM  # a second ring after start-up
    assert calls["getpriority"] == 0                # the lock touches nothing else


def test_unlocked_process_is_not_affected() -> None:
    """The same calls without the lock: proves the lock (not something else) refused them."""
    r = subprocess.run([sys.executable, str(HERE / "probe_syscalls.py")], capture_output=True, text=True, timeout=60)
    calls = json.loads(r.stdout)
    assert calls["io_uring_setup"] >= 0
    assert calls["register_pbuf_ring"] == -errno.EINVAL  # reaches the kernel, which rejects the NULL arg


def test_ring_restrictions_refuse_other_opcodes() -> None:
    from ringlane_sidecar.native import load

    _, lib = load()
    IORING_OP_NOP, IORING_OP_OPENAT, IORING_OP_READ = 0, 18, 22
    for op in (IORING_OP_OPENAT, IORING_OP_NOP, IORING_OP_READ):
        assert lib.rl_uring_selftest_opcode(op) == -errno.EACCES, op
