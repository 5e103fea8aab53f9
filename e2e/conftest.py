"""Session fixture for the end-to-end tests: a real local Kubernetes.

`cluster` runs e2e/cluster/up.sh (idempotent: it reuses a running cluster) and
always runs e2e/cluster/down.sh when the session ends, pass or fail. Set
RINGLANE_E2E_KEEP=1 to leave the cluster running for debugging.

Tests marked `e2e_last` run after every other test of the session (e.g. the
one that checks what down.sh leaves behind).
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

E2E = Path(__file__).resolve().parent
UP = E2E / "cluster" / "up.sh"
DOWN = E2E / "cluster" / "down.sh"
STATE = Path(os.environ.get("RINGLANE_CLUSTER_DIR", "/tmp/ringlane-cluster"))
# Every namespace an e2e test creates carries this label, so a session can clear what an
# earlier one left behind.
E2E_NS_LABEL = "ringlane.io/e2e=true"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "e2e_last: run after all other tests (may stop the cluster)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Stable sort: e2e_last tests move to the end, everything else keeps its order.
    items.sort(key=lambda item: item.get_closest_marker("e2e_last") is not None)


@dataclass
class Cluster:
    kubeconfig: Path
    state_dir: Path
    kubectl_bin: Path
    helm_bin: Path
    up_output: str = ""
    stopped: bool = field(default=False)

    @property
    def seccomp_dir(self) -> Path:
        """The kubelet's seccomp root: Localhost profiles are paths relative to it."""
        return self.state_dir / "kubelet" / "seccomp"

    @property
    def images(self) -> dict:
        return json.loads((self.state_dir / "images.json").read_text())

    def env(self) -> dict[str, str]:
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig)}

    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run kubectl against the cluster; raises with stderr when check fails."""
        p = subprocess.run([str(self.kubectl_bin), *args], input=input, text=True, capture_output=True,
                           env=self.env(), timeout=timeout)
        if check and p.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({p.returncode}):\n{p.stderr}{p.stdout}")
        return p

    def apply(self, manifest: str | dict | list) -> None:
        if not isinstance(manifest, str):
            docs = manifest if isinstance(manifest, list) else [manifest]
            manifest = "\n---\n".join(json.dumps(d) for d in docs)
        self.kubectl("apply", "-f", "-", input=manifest)

    def wait(self, *args: str, timeout: int = 90) -> None:
        self.kubectl("wait", f"--timeout={timeout}s", *args, timeout=timeout + 15)

    def down(self, locked: bool = False) -> subprocess.CompletedProcess[str]:
        """Run down.sh; locked=True when the caller holds the cluster lock (see cluster_lock)."""
        env = {**os.environ, "RINGLANE_CLUSTER_LOCKED": "1"} if locked else None
        p = subprocess.run([str(DOWN)], text=True, capture_output=True, timeout=300, env=env)
        self.stopped = True
        return p


@contextlib.contextmanager
def cluster_lock(timeout: float = 900) -> Iterator[None]:
    """Hold the lock up.sh and down.sh take (next to the state dir). Other sessions on this
    host may call up.sh at any time; while this is held, none can start a cluster."""
    with open(f"{STATE}.lock", "w") as f:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{STATE}.lock held for more than {timeout}s") from None
                time.sleep(0.5)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _tool_path(up_output: str, name: str) -> Path:
    # up.sh extracts kubectl/helm into $RINGLANE_CACHE/bin/<wheel version>/.
    cache = Path(os.environ.get("RINGLANE_CACHE", Path.home() / ".cache" / "ringlane"))
    found = sorted((cache / "bin").glob(f"*/{name}"))
    if not found:
        raise RuntimeError(f"{name} not found under {cache}/bin after up.sh:\n{up_output}")
    return found[-1]


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    start = time.monotonic()
    try:
        p = subprocess.run([str(UP)], text=True, capture_output=True, timeout=1800)
        if p.returncode != 0:
            raise RuntimeError(f"up.sh failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
        last = p.stdout.strip().splitlines()[-1]
        assert last.startswith("export KUBECONFIG="), f"up.sh's last line is {last!r}"
        kubeconfig = Path(last.split("=", 1)[1])
        c = Cluster(kubeconfig=kubeconfig, state_dir=STATE, up_output=p.stdout,
                    kubectl_bin=_tool_path(p.stdout, "kubectl"), helm_bin=_tool_path(p.stdout, "helm"))
        print(f"\ncluster up in {time.monotonic() - start:.1f}s")
        # A `make demo` left running, or an earlier session kept with RINGLANE_E2E_KEEP=1, holds
        # the node's only exclusive CPU with its pinned sidecar: start from no test namespaces.
        for label in ("ringlane.io/demo=true", E2E_NS_LABEL):
            c.kubectl("delete", "namespace", "-l", label, "--wait=true", timeout=240)
        yield c
    finally:
        if os.environ.get("RINGLANE_E2E_KEEP") == "1":
            print(f"\nRINGLANE_E2E_KEEP=1: cluster left running (KUBECONFIG={STATE / 'kubeconfig'})")
        else:
            # Idempotent: a no-op when an e2e_last test already stopped the cluster.
            d = subprocess.run([str(DOWN)], text=True, capture_output=True, timeout=300)
            if d.returncode != 0:
                print(f"\ndown.sh failed ({d.returncode}):\n{d.stdout}\n{d.stderr}")
