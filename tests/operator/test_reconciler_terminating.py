"""A namespace being deleted refuses new objects (403 from the NamespaceLifecycle admission):
the reconciler stops there instead of failing (which would hold the routes' finalizers, and so
the namespace, in a retry loop). The refusal is hard to time for real (it needs the namespace
controller to delete the ConfigMap before the routes), so the Kube here is a stand-in."""
from __future__ import annotations

import asyncio
from typing import Any

import pytest

from ringlane_operator.kube import KubeError
from ringlane_operator.reconciler import Reconciler, Sources
from operator_builders import route

TERMINATING = KubeError(403, "Forbidden", 'configmaps "ringlane-routes" is forbidden: unable to create new content '
                                         "in namespace shop because it is being terminated")


class RefusingKube:
    def __init__(self, error: KubeError) -> None:
        self.error, self.writes = error, 0

    async def read_configmap(self, namespace: str) -> None:
        return None

    async def write_configmap(self, body: dict[str, Any], create: bool) -> dict[str, Any]:
        self.writes += 1
        raise self.error


def reconciler(kube: RefusingKube) -> Reconciler:
    sources = Sources(routes=lambda ns: [route("a")], services=lambda ns: {}, slices=lambda ns: {})
    return Reconciler(kube, sources, events=lambda *a: None)  # type: ignore[arg-type]


def test_terminating_namespace_is_left_alone() -> None:
    kube = RefusingKube(TERMINATING)
    asyncio.run(reconciler(kube).reconcile("shop"))  # no exception: nothing to retry
    assert kube.writes == 1


def test_other_refusals_still_fail() -> None:
    kube = RefusingKube(KubeError(403, "Forbidden", 'configmaps is forbidden: User "x" cannot create'))
    with pytest.raises(KubeError):
        asyncio.run(reconciler(kube).reconcile("shop"))
