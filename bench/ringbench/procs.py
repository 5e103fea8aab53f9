"""Child processes: start them in their own process groups, wait for readiness with a deadline,
and kill every one of them on exit (normal return, exception, Ctrl-C, SIGTERM, SIGHUP).

Each child also gets PR_SET_PDEATHSIG=SIGKILL, so it dies even if the harness is killed
with SIGKILL (nginx's workers are then orphaned; the next run's ports are picked afresh).
"""
from __future__ import annotations

import ctypes
import os
import select
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)


def _die_with_parent() -> None:  # runs in the child between fork and exec
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


class StartError(Exception):
    """A peer did not come up; the message says why (with the tail of its log)."""


@dataclass
class Child:
    name: str
    argv: list[str]
    popen: subprocess.Popen[bytes]
    log: Path | None

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        if self.log is None or not self.log.exists():
            return ""
        text = self.log.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])


@dataclass
class Finished:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str
    timed_out: bool
    children_cpu_s: float  # user+system CPU of the finished process (and its waited-for children)


@dataclass
class Supervisor:
    """Owns every child process of the harness."""

    log_dir: Path
    children: list[Child] = field(default_factory=list)

    def spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Child:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_dir / f"{name}.log"
        with open(log, "ab") as out:
            popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                     start_new_session=True, preexec_fn=_die_with_parent, env=env)
        child = Child(name, argv, popen, log)
        self.children.append(child)
        return child

    def run(self, argv: list[str], timeout_s: float) -> Finished:
        """Runs a short-lived program to completion (killed at the timeout) and captures its output."""
        before = _children_cpu()
        popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 start_new_session=True, preexec_fn=_die_with_parent)
        child = Child(argv[0], argv, popen, None)
        self.children.append(child)
        timed_out = False
        try:
            out, err = popen.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(popen, grace_s=1.0)
            out, err = popen.communicate()
        except BaseException:  # Ctrl-C or SIGTERM while waiting: the child goes too
            _kill_group(popen, grace_s=1.0)
            raise
        finally:
            self.children.remove(child)
        return Finished(argv, popen.returncode, out.decode(errors="replace"), err.decode(errors="replace"),
                        timed_out, _children_cpu() - before)

    def stop(self, child: Child, grace_s: float = 5.0) -> None:
        if child in self.children:
            self.children.remove(child)
        _kill_group(child.popen, grace_s)

    def stop_all(self) -> None:
        while self.children:
            self.stop(self.children[-1])


def _children_cpu() -> float:
    import resource

    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _kill_group(popen: subprocess.Popen[bytes], grace_s: float) -> None:
    """SIGTERM to the child's process group, SIGKILL after grace_s, then reap."""
    if popen.poll() is None:
        try:
            os.killpg(popen.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            popen.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            pass
    try:  # the group may outlive its leader (nginx workers finishing): kill what is left
        os.killpg(popen.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    popen.wait()


def wait_until(what: str, probe: Callable[[], bool], timeout_s: float, child: Child | None = None) -> None:
    """Polls probe() until it holds; fails at the deadline or as soon as child exits.

    Between probes it blocks on the child's pidfd (so a crash is noticed at once), at most 20 ms.
    """
    deadline = time.monotonic() + timeout_s
    pidfd = os.pidfd_open(child.pid) if child is not None else None
    try:
        while True:
            if probe():
                return
            if child is not None and not child.alive():
                raise StartError(f"{child.name} exited with {child.popen.returncode} while waiting for {what}:\n"
                                 f"{child.log_tail()}")
            left = deadline - time.monotonic()
            if left <= 0:
                tail = child.log_tail() if child is not None else ""
                raise StartError(f"timed out after {timeout_s:.0f}s waiting for {what}\n{tail}".rstrip())
            select.select([pidfd] if pidfd is not None else [], [], [], min(0.02, left))
    finally:
        if pidfd is not None:
            os.close(pidfd)


def install_signal_handlers() -> None:
    """SIGINT, SIGTERM and SIGHUP unwind the stack like Ctrl-C, so every `finally` runs and the
    children die. A signal ignored at start-up (nohup, a shell's background job) stays ignored."""

    def handler(signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) is not signal.SIG_IGN:
            signal.signal(sig, handler)
