"""Run a command in a real runc container under a given seccomp profile.

The rootfs is an empty directory with the host's /usr, /etc, the Python install and the
project bind-mounted read-only, so the sidecar runs exactly as built here; the network
namespace is shared with the host so tests reach its loopback listeners.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
RUNC = shutil.which("runc") or "/usr/sbin/runc"


def _bind(path: str, rw: bool = False) -> dict[str, Any]:
    return {"destination": path, "type": "bind", "source": path,
            "options": ["rbind", "rprivate"] + ([] if rw else ["ro"])}


def host_binds() -> list[str]:
    """What the venv's Python needs: system dirs, the interpreter's prefix, the project."""
    paths = ["/usr", "/etc", "/bin", "/sbin", "/lib", "/lib64", str(ROOT)]
    prefix = os.path.realpath(sys.base_prefix)  # e.g. a pyenv install under /root
    if not prefix.startswith("/usr"):
        paths.append(prefix)
    return [p for p in paths if os.path.exists(p) and not os.path.islink(p)]


def bundle_config(args: list[str], seccomp: dict[str, Any] | None, rw_dirs: list[str],
                  env: dict[str, str] | None = None) -> dict[str, Any]:
    mounts = [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
        {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev"]},
    ]
    mounts += [_bind(p) for p in host_binds()] + [_bind(p, rw=True) for p in rw_dirs]
    base_env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/tmp", "PYTHONDONTWRITEBYTECODE": "1"}
    linux: dict[str, Any] = {
        "namespaces": [{"type": t} for t in ("pid", "mount", "ipc", "uts")],  # host network
        "maskedPaths": ["/proc/kcore", "/proc/keys"],
        "readonlyPaths": ["/proc/sys", "/proc/sysrq-trigger"],
    }
    if seccomp is not None:
        linux["seccomp"] = {k: v for k, v in seccomp.items()}
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False, "user": {"uid": 0, "gid": 0}, "args": args, "cwd": "/tmp",
            "env": [f"{k}={v}" for k, v in {**base_env, **(env or {})}.items()],
            "capabilities": {k: [] for k in ("bounding", "effective", "permitted", "inheritable", "ambient")},
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs", "readonly": True},
        "hostname": "ringlane-test",
        "mounts": mounts,
        "linux": linux,
    }


class Container:
    """`runc run` of one command; use as a context manager so it is always deleted."""

    def __init__(self, workdir: Path, args: list[str], seccomp: dict[str, Any] | None,
                 rw_dirs: list[str] | None = None, env: dict[str, str] | None = None) -> None:
        self.id = "rl-" + uuid.uuid4().hex[:12]
        self.bundle = workdir / self.id
        rootfs = self.bundle / "rootfs"
        rootfs.mkdir(parents=True)
        for top in ("/bin", "/sbin", "/lib", "/lib64", "/lib32"):  # merged-/usr symlinks
            if os.path.islink(top):
                (rootfs / top.lstrip("/")).symlink_to(os.readlink(top))
        (self.bundle / "config.json").write_text(json.dumps(bundle_config(args, seccomp, rw_dirs or [], env)))
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> subprocess.Popen[str]:
        self.proc = subprocess.Popen([RUNC, "run", "--bundle", str(self.bundle), self.id],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        return self.proc

    def run(self, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run([RUNC, "run", "--bundle", str(self.bundle), self.id],
                              capture_output=True, text=True, timeout=timeout)

    def kill(self, sig: str = "TERM") -> None:
        subprocess.run([RUNC, "kill", self.id, sig], capture_output=True)

    def __enter__(self) -> "Container":
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc and self.proc.poll() is None:
            self.kill("KILL")
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        subprocess.run([RUNC, "delete", "--force", self.id], capture_output=True)
        shutil.rmtree(self.bundle, ignore_errors=True)
