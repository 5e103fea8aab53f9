"""Builders of Kubernetes-shaped dicts for the operator's unit tests (ProxyRoutes, Services,
EndpointSlices, Pods), with the defaults the API server would have filled in."""
from __future__ import annotations

import copy
from typing import Any

from ringlane_operator.facts import ServiceInfo, SliceInfo, service_info, slice_info

Body = dict[str, Any]
TOKEN_VOLUME = "kube-api-access-x1y2z"
TOKEN_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


def route(name: str, *, port: int = 8080, protocol: str = "HTTP", selector: Body | None = None,
          rules: list[Body] | None = None, hostnames: list[str] | None = None, created: str = "2026-01-01T00:00:00Z",
          generation: int = 1, uid: str | None = None, deleting: bool = False, namespace: str = "shop") -> Body:
    meta: Body = {"name": name, "namespace": namespace, "uid": uid or f"uid-{name}", "generation": generation,
                  "creationTimestamp": created}
    if deleting:
        meta["deletionTimestamp"] = "2026-02-01T00:00:00Z"
    spec: Body = {
        "selector": {"matchLabels": {"app": "web"}} if selector is None else selector,
        "listener": {"port": port, "protocol": protocol},
        "rules": rules if rules is not None else [{"backendRefs": [{"name": "api", "port": 80}]}],
    }
    if hostnames is not None:
        spec["hostnames"] = hostnames
    return {"apiVersion": "ringlane.io/v1alpha1", "kind": "ProxyRoute", "metadata": meta, "spec": copy.deepcopy(spec)}


def service(name: str, *ports: tuple[int, str, int | str | None], type_: str = "ClusterIP") -> ServiceInfo:
    """ports: (port, name, targetPort)."""
    return service_info({"metadata": {"name": name}, "spec": {
        "type": type_, "ports": [{"port": p, "name": n, "targetPort": t, "protocol": "TCP"} for p, n, t in ports]}})


def slice_(service_name: str, ports: dict[str, int], ready: list[str] = (), not_ready: list[str] = (),
           unknown: list[str] = (), address_type: str = "IPv4", name: str | None = None) -> SliceInfo:
    endpoints = [{"addresses": [a], "conditions": {"ready": True}} for a in ready]
    endpoints += [{"addresses": [a], "conditions": {"ready": False, "terminating": True}} for a in not_ready]
    endpoints += [{"addresses": [a]} for a in unknown]
    info = slice_info({
        "metadata": {"name": name or f"{service_name}-abcde", "labels": {"kubernetes.io/service-name": service_name}},
        "addressType": address_type,
        "ports": [{"name": n, "port": p, "protocol": "TCP"} for n, p in ports.items()],
        "endpoints": endpoints,
    })
    assert info is not None
    return info


def pod(name: str = "web-1", *, containers: list[Body] | None = None, init: list[Body] | None = None,
        labels: Body | None = None, annotations: Body | None = None, volumes: list[Body] | None = None,
        host_network: bool = False, grace: int | None = None, token: bool = True) -> Body:
    """token: what the ServiceAccount admission plugin adds before any webhook runs."""
    guaranteed = {"requests": {"cpu": "1", "memory": "256Mi"}, "limits": {"cpu": "1", "memory": "256Mi"}}
    spec: Body = {"containers": copy.deepcopy(containers) if containers is not None else [
        {"name": "app", "image": "app:1", "ports": [{"containerPort": 9000}], "resources": guaranteed}]}
    if init is not None:
        spec["initContainers"] = copy.deepcopy(init)
    if volumes is not None:
        spec["volumes"] = copy.deepcopy(volumes)
    if token:
        spec.setdefault("volumes", []).append({"name": TOKEN_VOLUME, "projected": {"sources": [
            {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}}]}})
        for c in spec["containers"] + spec.get("initContainers", []):
            c.setdefault("volumeMounts", []).append({"name": TOKEN_VOLUME, "readOnly": True, "mountPath": TOKEN_DIR})
    if host_network:
        spec["hostNetwork"] = True
    if grace is not None:
        spec["terminationGracePeriodSeconds"] = grace
    meta: Body = {"name": name, "namespace": "shop", "labels": labels if labels is not None else {"app": "web"}}
    if annotations is not None:
        meta["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}
