"""The operator against a real kube-apiserver (e2e/cluster/up.sh), run in --dev mode.

    .venv/bin/pytest -q -m e2e tests/operator/test_operator_api.py

Covers: CRD + CEL rejections (messages name the field), ProxyRoute -> ConfigMap + status +
RBAC, EndpointSlice changes re-rendered within a second, the validating webhook, pod
injection through the real admission chain (exactly once, with the ServiceAccount token),
and deletion. Everything lives in two fresh namespaces; the webhook configurations are
named per run and limited to them, so a shared cluster is not disturbed.
"""
from __future__ import annotations

import contextlib
import copy
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
UP = ROOT / "e2e" / "cluster" / "up.sh"
CRD = ROOT / "crds" / "proxyroutes.ringlane.io.yaml"
OPERATOR = Path(sys.executable).with_name("ringlane-operator")
RUN = uuid.uuid4().hex[:6]
NS_A, NS_B = f"rlop-{RUN}-a", f"rlop-{RUN}-b"  # A: injection enabled; B: not


# ------------------------------------------------------------------ cluster access
@pytest.fixture(scope="module")
def kubeconfig() -> str:
    if not UP.exists():
        pytest.skip("e2e/cluster/up.sh is not there")
    out = subprocess.run([str(UP)], capture_output=True, text=True, timeout=3600)
    assert out.returncode == 0, f"up.sh failed:\n{out.stdout[-4000:]}\n{out.stderr[-4000:]}"
    last = out.stdout.strip().splitlines()[-1]
    assert last.startswith("export KUBECONFIG="), last
    return last.split("=", 1)[1].strip().strip("'\"")


def _kubectl_binary() -> str:
    cache = Path(os.environ.get("RINGLANE_CACHE", Path.home() / ".cache" / "ringlane"))
    found = sorted(cache.glob("bin/*/kubectl"), key=lambda p: p.stat().st_mtime)
    assert found, f"no kubectl under {cache}/bin (up.sh puts it there)"
    return str(found[-1])


class Kubectl:
    def __init__(self, kubeconfig: str) -> None:
        self.binary = _kubectl_binary()
        self.env = {**os.environ, "KUBECONFIG": kubeconfig}

    def run(self, *args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        out = subprocess.run([self.binary, *args], input=stdin, capture_output=True, text=True, env=self.env,
                             timeout=60)
        if check:
            assert out.returncode == 0, f"kubectl {' '.join(args)}: {out.stderr}"
        return out

    def apply(self, obj: dict[str, Any] | list[dict[str, Any]], *extra: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        docs = obj if isinstance(obj, list) else [obj]
        return self.run("apply", *extra, "-f", "-", stdin=yaml.safe_dump_all(docs), check=check)

    def create(self, obj: dict[str, Any], check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run("create", "-o", "json", "-f", "-", stdin=json.dumps(obj), check=check)

    def get(self, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
        out = self.run("-n", namespace, "get", kind, name, "-o", "json", "--ignore-not-found", check=True)
        return json.loads(out.stdout) if out.stdout.strip() else None


@pytest.fixture(scope="module")
def kubectl(kubeconfig: str) -> Kubectl:
    return Kubectl(kubeconfig)


@pytest.fixture(scope="module")
def api(kubeconfig: str) -> Iterator[Any]:
    from kubernetes import config

    client = config.new_client_from_config(config_file=kubeconfig)
    yield client
    client.close()


def wait_for(what: str, check: Callable[[], Any], timeout: float = 20.0, every: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every)  # polling the API with a deadline
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------ the operator
@pytest.fixture(scope="module")
def crd(kubectl: Kubectl) -> None:
    kubectl.run("apply", "-f", str(CRD))
    kubectl.run("wait", "--for=condition=Established", "crd/proxyroutes.ringlane.io", "--timeout=30s")


@pytest.fixture(scope="module")
def namespaces(kubectl: Kubectl, crd: None) -> Iterator[None]:
    kubectl.apply([
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS_A, "labels": {"ringlane.io/injection": "enabled"}}},
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS_B}},
    ])
    yield
    for ns in (NS_A, NS_B):  # finalizers are gone by now (the operator fixture deleted the routes)
        kubectl.run("delete", "namespace", ns, "--wait=false", check=False)


@contextlib.contextmanager
def running_operator(kubectl: Kubectl, namespaces: list[str], log: Path, *extra: str) -> Iterator[subprocess.Popen[bytes]]:
    """ringlane-operator --dev for these namespaces, ready (liveness + webhooks) when entered."""
    liveness = free_port()
    name = f"rlop-{RUN}-{namespaces[0][-1]}"
    ns_args = [arg for ns in namespaces for arg in ("-n", ns)]
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(OPERATOR), "--dev", *ns_args, *extra, "--webhook-name", name,
             "--liveness", f"http://127.0.0.1:{liveness}/healthz", "--debounce-ms", "100", "--max-delay-ms", "300"],
            env=kubectl.env, stdout=out, stderr=subprocess.STDOUT)
    try:
        def alive() -> bool:
            assert proc.poll() is None, f"operator exited:\n{log.read_text()[-4000:]}"
            try:
                return urllib.request.urlopen(f"http://127.0.0.1:{liveness}/healthz", timeout=1).status == 200
            except OSError:
                return False
        wait_for("the operator's liveness endpoint", alive, timeout=60)
        wait_for("the webhook configurations", lambda: kubectl.run(
            "get", "mutatingwebhookconfiguration", name, check=False).returncode == 0, timeout=30)
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        print(log.read_text()[-6000:])  # shown by pytest on failure
    gone = kubectl.run("get", "mutatingwebhookconfiguration", name, "--ignore-not-found", "-o", "name")
    assert gone.stdout.strip() == "", "--dev must remove its webhook configurations at exit"


@pytest.fixture(scope="module")
def operator(kubectl: Kubectl, namespaces: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[subprocess.Popen[bytes]]:
    with running_operator(kubectl, [NS_A, NS_B], tmp_path_factory.mktemp("operator") / "operator.log") as proc:
        yield proc
        for ns in (NS_A, NS_B):  # while the operator runs, so its finalizer is handled
            kubectl.run("-n", ns, "delete", "proxyroutes", "--all", "--timeout=30s", check=False)


# ------------------------------------------------------------------ objects
def service(name: str, port: int = 80, target: str | int = "web") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"ports": [{"name": "http", "port": port, "targetPort": target}]}}


def endpoint_slice(service_name: str, ready: list[str], not_ready: list[str] = (), port: int = 8080) -> dict[str, Any]:
    """Selector-less Service: we own its slice (the EndpointSlice controller leaves it alone)."""
    return {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": f"{service_name}-1", "labels": {"kubernetes.io/service-name": service_name,
                                                             "endpointslice.kubernetes.io/managed-by": "ringlane-e2e"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
        "endpoints": [{"addresses": [a], "conditions": {"ready": True}} for a in ready]
        + [{"addresses": [a], "conditions": {"ready": False}} for a in not_ready],
    }


def proxy_route(name: str, **spec: Any) -> dict[str, Any]:
    body = {"selector": {"matchLabels": {"app": "web"}}, "listener": {"port": 8080},
            "rules": [{"backendRefs": [{"name": "api", "port": 80}]}]}
    body.update(spec)
    return {"apiVersion": "ringlane.io/v1alpha1", "kind": "ProxyRoute", "metadata": {"name": name}, "spec": body}


def config_of(kubectl: Kubectl, namespace: str) -> dict[str, Any] | None:
    cm = kubectl.get("configmap", "ringlane-routes", namespace)
    return None if cm is None else json.loads(cm["data"]["config.json"])


def rules_of(cfg: dict[str, Any] | None) -> list[str]:
    return [r["name"] for lst in (cfg or {}).get("listeners", []) for r in lst["rules"]]


def clusters_of(cfg: dict[str, Any] | None) -> dict[str, list[str]]:
    return {c["name"]: [e["address"] for e in c["endpoints"]] for c in (cfg or {}).get("clusters", [])}


def conditions(route: dict[str, Any] | None) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in ((route or {}).get("status") or {}).get("conditions", [])}


# ------------------------------------------------------------------ tests
CEL_CASES = [
    ("backendRequest longer than request", lambda s: s["rules"][0].update(timeouts={"request": "1m30s", "backendRequest": "2m"}),
     "spec.rules[0].timeouts.backendRequest", "backendRequest must not be longer than request"),
    ("TCP with two rules", lambda s: (s["listener"].update(protocol="TCP"), s["rules"].append(copy.deepcopy(s["rules"][0]))),
     "spec.rules", "a TCP listener takes exactly one rule"),
    ("TCP with matches", lambda s: (s["listener"].update(protocol="TCP"), s["rules"][0].update(matches=[{"path": {"value": "/"}}])),
     "spec.rules", "matches are not allowed on a TCP listener"),
    ("rewrite with an Exact match", lambda s: s["rules"][0].update(
        matches=[{"path": {"type": "Exact", "value": "/a"}}],
        filters=[{"type": "URLRewrite", "urlRewrite": {"path": {"replacePrefixMatch": "/"}}}]),
     "spec.rules[0].filters", "needs every match of the rule to be a PathPrefix match"),
    ("path without a leading slash", lambda s: s["rules"][0].update(matches=[{"path": {"value": "api"}}]),
     "spec.rules[0].matches[0].path.value", "path value must start with '/'"),
    ("weight above 1000000", lambda s: s["rules"][0]["backendRefs"][0].update(weight=1_000_001),
     "spec.rules[0].backendRefs[0].weight", "less than or equal to 1000000"),
    ("all weights zero", lambda s: s["rules"][0]["backendRefs"][0].update(weight=0),
     "spec.rules[0].backendRefs", "at least one backendRef must have a weight above 0"),
    ("retry code 404", lambda s: s["rules"][0].update(retry={"attempts": 1, "codes": [404]}),
     "spec.rules[0].retry.codes[0]", "greater than or equal to 500"),
    ("Local backend with a name", lambda s: s["rules"][0]["backendRefs"][0].update(kind="Local"),
     "spec.rules[0].backendRefs[0].name", "name must not be set for kind Local"),
    ("hostname that is an IP", lambda s: s.update(hostnames=["10.0.0.1"]),
     "spec.hostnames[0]", "must be a DNS name, not an IP address"),
    ("bad duration", lambda s: s["rules"][0].update(timeouts={"request": "1.5s"}),
     "spec.rules[0].timeouts.request", "should match"),
    ("filter edits a framing header", lambda s: s["rules"][0].update(filters=[
        {"type": "ResponseHeaderModifier", "responseHeaderModifier": {"remove": ["Transfer-Encoding"]}}]),
     "spec.rules[0].filters[0].responseHeaderModifier", "the proxy manages them and a filter cannot edit them"),
    ("request filter sets Content-Length", lambda s: s["rules"][0].update(filters=[
        {"type": "RequestHeaderModifier", "requestHeaderModifier": {"set": [{"name": "content-length", "value": "0"}]}}]),
     "spec.rules[0].filters[0].requestHeaderModifier", "the proxy manages them and a filter cannot edit them"),
    ("request filter adds Host", lambda s: s["rules"][0].update(filters=[
        {"type": "RequestHeaderModifier", "requestHeaderModifier": {"add": [{"name": "HOST", "value": "x"}]}}]),
     "spec.rules[0].filters[0].requestHeaderModifier", "can set it, not add or remove it"),
    ("request filter removes Host", lambda s: s["rules"][0].update(filters=[
        {"type": "RequestHeaderModifier", "requestHeaderModifier": {"remove": ["host"]}}]),
     "spec.rules[0].filters[0].requestHeaderModifier", "can set it, not add or remove it"),
]


@pytest.mark.parametrize("mutate,field,message", [c[1:] for c in CEL_CASES], ids=[c[0] for c in CEL_CASES])
def test_api_server_rejects_invalid_routes(kubectl: Kubectl, namespaces: None, mutate: Callable[[dict[str, Any]], Any],
                                           field: str, message: str) -> None:
    route = proxy_route("invalid")
    mutate(route["spec"])
    out = kubectl.apply(route, "-n", NS_B, "--dry-run=server", check=False)
    assert out.returncode != 0
    assert f"{field}:" in out.stderr and message in out.stderr, out.stderr


def test_cel_durations_compare_like_go(kubectl: Kubectl, namespaces: None) -> None:
    route = proxy_route("durations")
    route["spec"]["rules"][0]["timeouts"] = {"request": "1m30s", "backendRequest": "89s"}
    kubectl.apply(route, "-n", NS_B, "--dry-run=server")
    route["spec"]["rules"][0]["timeouts"] = {"request": "0s", "backendRequest": "10m"}  # 0s: no request timeout
    kubectl.apply(route, "-n", NS_B, "--dry-run=server")


def test_kubectl_explain_reads_well(kubectl: Kubectl, crd: None) -> None:
    out = kubectl.run("explain", "proxyroutes.spec.rules.backendRefs").stdout
    assert "Where matching traffic goes, split by weight." in out
    assert "weight\t<integer>" in out and "kind\t<string>" in out


def test_route_is_rendered_with_status_and_rbac(kubectl: Kubectl, operator: Any) -> None:
    kubectl.apply([service("api"), endpoint_slice("api", ready=["10.9.0.1", "10.9.0.2"], not_ready=["10.9.0.3"]),
                   proxy_route("web", rules=[{"backendRefs": [{"name": "api", "port": 80, "weight": 9},
                                                              {"name": "missing", "port": 80, "weight": 1}]}])],
                  "-n", NS_A)
    cfg = wait_for("the routes ConfigMap", lambda: (c := config_of(kubectl, NS_A)) and rules_of(c) and c)
    assert rules_of(cfg) == [f"{NS_A}/web/0"]
    assert clusters_of(cfg) == {f"{NS_A}/api:80": ["10.9.0.1:8080", "10.9.0.2:8080"], f"{NS_A}/missing:80": []}
    route = wait_for("status", lambda: (r := kubectl.get("proxyroute", "web", NS_A)) and conditions(r) and r)
    assert conditions(route) == {"Accepted": ("True", "Accepted"), "ResolvedRefs": ("False", "BackendNotFound"),
                                 "Programmed": ("True", "Programmed")}
    assert route["status"]["endpoints"] == 2 and route["status"]["observedGeneration"] == route["metadata"]["generation"]
    cm = kubectl.get("configmap", "ringlane-routes", NS_A)
    assert [o["name"] for o in cm["metadata"]["ownerReferences"]] == ["web"]
    assert cm["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "ringlane"
    events = kubectl.run("-n", NS_A, "get", "events", "--field-selector", "involvedObject.name=web", "-o", "json").stdout
    assert any(e["reason"] == "BackendNotFound" for e in json.loads(events)["items"])


def test_sidecar_rbac_allows_only_a_named_watch(kubectl: Kubectl, operator: Any) -> None:
    wait_for("the sidecar Role", lambda: kubectl.get("role", "ringlane-sidecar", NS_A))
    sa = ["--as", f"system:serviceaccount:{NS_A}:default", "-n", NS_A]
    wait_for("the routes ConfigMap", lambda: config_of(kubectl, NS_A))
    named = kubectl.run(*sa, "get", "configmaps", "--field-selector", "metadata.name=ringlane-routes", "-o", "name",
                        check=False)
    assert named.returncode == 0 and named.stdout.strip() == "configmap/ringlane-routes", named.stderr
    assert kubectl.run(*sa, "get", "configmap", "ringlane-routes", "-o", "name", check=False).returncode == 0
    everything = kubectl.run(*sa, "get", "configmaps", check=False)
    assert everything.returncode != 0 and "Forbidden" in everything.stderr


def test_endpoint_changes_rerender_within_a_second(kubectl: Kubectl, api: Any, operator: Any) -> None:
    from kubernetes import client

    kubectl.apply([service("api"), endpoint_slice("api", ready=["10.9.0.1"]), proxy_route("web")], "-n", NS_A)
    wait_for("first render", lambda: clusters_of(config_of(kubectl, NS_A)).get(f"{NS_A}/api:80") == ["10.9.0.1:8080"])
    discovery, core = client.DiscoveryV1Api(api), client.CoreV1Api(api)
    delays = []
    for n in range(2, 6):
        ready = [f"10.9.0.{i}" for i in range(1, n + 1)]
        start = time.monotonic()
        discovery.replace_namespaced_endpoint_slice("api-1", NS_A, endpoint_slice("api", ready=ready))

        def rendered() -> bool:
            cm = core.read_namespaced_config_map("ringlane-routes", NS_A)
            return clusters_of(json.loads(cm.data["config.json"])).get(f"{NS_A}/api:80") == [f"{a}:8080" for a in ready]
        wait_for(f"{n} endpoints in the ConfigMap", rendered, timeout=5, every=0.01)
        delays.append(time.monotonic() - start)
    print("re-render delays (s):", [round(d, 3) for d in delays])
    assert max(delays) < 1.0, delays


def test_generation_bumps_only_on_change(kubectl: Kubectl, operator: Any) -> None:
    kubectl.apply([service("api"), endpoint_slice("api", ready=["10.9.0.7"]), proxy_route("web")], "-n", NS_A)
    wait_for("render", lambda: clusters_of(config_of(kubectl, NS_A)).get(f"{NS_A}/api:80") == ["10.9.0.7:8080"])
    before = config_of(kubectl, NS_A)["generation"]
    kubectl.run("-n", NS_A, "annotate", "service", "api", f"touched={time.time()}", "--overwrite")  # no content change
    kubectl.apply(endpoint_slice("api", ready=["10.9.0.7", "10.9.0.8"]), "-n", NS_A)
    wait_for("re-render", lambda: len(clusters_of(config_of(kubectl, NS_A)).get(f"{NS_A}/api:80", [])) == 2)
    assert config_of(kubectl, NS_A)["generation"] == before + 1


def test_webhook_refuses_a_listener_clash(kubectl: Kubectl, operator: Any) -> None:
    kubectl.apply(proxy_route("web"), "-n", NS_A)
    wait_for("web accepted", lambda: conditions(kubectl.get("proxyroute", "web", NS_A)).get("Accepted") == ("True", "Accepted"))
    clash = proxy_route("db", listener={"port": 8080, "protocol": "TCP"}, selector={})
    out = kubectl.apply(clash, "-n", NS_A, check=False)
    assert out.returncode != 0
    assert "spec.listener.port: 8080 is served as HTTP by ProxyRoute web" in out.stderr, out.stderr
    elsewhere = proxy_route("db", listener={"port": 5432, "protocol": "TCP"}, selector={})
    kubectl.apply(elsewhere, "-n", NS_A)
    wait_for("db programmed", lambda: f"{NS_A}/db/0" in rules_of(config_of(kubectl, NS_A)))
    kubectl.run("-n", NS_A, "delete", "proxyroute", "db", "--timeout=30s")


def _validations(kubectl: Kubectl) -> float:
    """How often the API server has called the ProxyRoute validating webhook for an UPDATE."""
    text = kubectl.run("get", "--raw", "/metrics").stdout
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("apiserver_admission_webhook_admission_duration_seconds_count{")
               and 'name="proxyroutes.ringlane.io"' in line and 'operation="UPDATE"' in line)


def test_metadata_only_updates_skip_the_validating_webhook(kubectl: Kubectl, operator: Any) -> None:
    """matchConditions: kopf's own finalizer/annotation patches (and label edits) leave spec alone
    and are not sent to the webhook; a spec change is."""
    kubectl.apply(proxy_route("skip", listener={"port": 7070}), "-n", NS_A)
    wait_for("skip accepted", lambda: conditions(kubectl.get("proxyroute", "skip", NS_A)).get("Accepted") == ("True", "Accepted"))
    before = _validations(kubectl)
    kubectl.run("-n", NS_A, "label", "proxyroute", "skip", "tier=gold")  # admission runs inline
    assert _validations(kubectl) == before
    kubectl.apply(proxy_route("skip", listener={"port": 7070}, hostnames=["skip.example.com"]), "-n", NS_A)
    wait_for("the spec change to be validated", lambda: _validations(kubectl) >= before + 1)
    kubectl.run("-n", NS_A, "delete", "proxyroute", "skip", "--timeout=30s")


def pod(name: str, labels: dict[str, str] | None = None, annotations: dict[str, str] | None = None,
        guaranteed: bool = True) -> dict[str, Any]:
    amount = {"cpu": "1", "memory": "64Mi"}
    resources = {"limits": amount} if guaranteed else {"requests": {"cpu": "100m"}}
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": labels or {"app": "web"}, "annotations": annotations or {}},
            # bound to a node that does not exist: admission is what is tested, nothing runs
            "spec": {"nodeName": "ringlane-e2e-nowhere",
                     "containers": [{"name": "app", "image": "localhost/ringlane:dev", "resources": resources,
                                     "ports": [{"containerPort": 9000}]}]}}


def test_pod_is_injected_exactly_once(kubectl: Kubectl, operator: Any) -> None:
    wait_for("the default ServiceAccount", lambda: kubectl.get("serviceaccount", "default", NS_A))
    out = kubectl.run("-n", NS_A, "create", "-o", "json", "-f", "-", stdin=json.dumps(pod("injected")))
    created = json.loads(out.stdout)
    spec = created["spec"]
    names = [c["name"] for c in spec.get("initContainers", [])] + [c["name"] for c in spec["containers"]]
    assert names.count("ringlane-proxy") == 1 and spec["initContainers"][0]["name"] == "ringlane-proxy"
    proxy = spec["initContainers"][0]
    assert proxy["restartPolicy"] == "Always"
    vols = [v["name"] for v in spec["volumes"]]
    assert len(vols) == len(set(vols)) and {"ringlane-podinfo", "ringlane-routes"} <= set(vols)
    mounts = {m["mountPath"]: m["name"] for m in proxy["volumeMounts"]}
    token = "/var/run/secrets/kubernetes.io/serviceaccount"
    assert mounts[token] == {m["mountPath"]: m["name"] for m in spec["containers"][0]["volumeMounts"]}[token]
    ann = created["metadata"]["annotations"]
    assert ann["ringlane.io/injected"].startswith("0.1.0-") and ann["prometheus.io/port"] == "9901"
    assert proxy["resources"]["limits"] == proxy["resources"]["requests"] == {"cpu": "1", "memory": "128Mi"}
    assert "Warning" not in out.stderr, out.stderr  # Guaranteed, token mounted: nothing to warn about


def test_admission_warnings_and_rejections(kubectl: Kubectl, operator: Any) -> None:
    wait_for("the default ServiceAccount", lambda: kubectl.get("serviceaccount", "default", NS_A))
    out = kubectl.run("-n", NS_A, "create", "-o", "name", "-f", "-", stdin=json.dumps(pod("burstable", guaranteed=False)))
    assert "Warning: pod is not Guaranteed QoS" in out.stderr, out.stderr
    def event_on(kind: str, name: str) -> bool:
        out = kubectl.run("-n", NS_A, "get", "events", "-o", "json", "--field-selector",
                          f"involvedObject.kind={kind},involvedObject.name={name},reason=NotGuaranteedQoS").stdout
        return bool(json.loads(out)["items"])
    wait_for("a QoS Event on the pod", lambda: event_on("Pod", "burstable"))
    template = pod("x", guaranteed=False)
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "burst"},
                  "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "burst"}},
                           "template": {"metadata": {"labels": {"app": "burst"}}, "spec": template["spec"]}}}
    kubectl.apply(deployment, "-n", NS_A)  # pods named by generateName: the Event goes to their ReplicaSet
    rs = wait_for("the ReplicaSet", lambda: kubectl.run("-n", NS_A, "get", "rs", "-l", "app=burst", "-o",
                                                        "jsonpath={.items[0].metadata.name}", check=False).stdout)
    wait_for("a QoS Event on the ReplicaSet", lambda: event_on("ReplicaSet", rs))
    kubectl.run("-n", NS_A, "delete", "deployment", "burst", "--wait=false")
    bad = kubectl.run("-n", NS_A, "create", "-f", "-", check=False,
                      stdin=json.dumps(pod("bad", annotations={"ringlane.io/proxy-memory": "lots"})))
    assert bad.returncode != 0 and "annotation ringlane.io/proxy-memory='lots'" in bad.stderr, bad.stderr


def test_opt_outs_are_not_injected(kubectl: Kubectl, operator: Any) -> None:
    for ns in (NS_A, NS_B):
        wait_for("the default ServiceAccount", lambda: kubectl.get("serviceaccount", "default", ns))
    opted_out = json.loads(kubectl.create({**pod("optout", labels={"app": "web", "ringlane.io/inject": "false"}),
                                           "metadata": {"name": "optout", "namespace": NS_A,
                                                        "labels": {"app": "web", "ringlane.io/inject": "false"}}}).stdout)
    assert "initContainers" not in opted_out["spec"]
    unlabelled = json.loads(kubectl.create({**pod("plain"), "metadata": {"name": "plain", "namespace": NS_B,
                                                                         "labels": {"app": "web"}}}).stdout)
    assert "initContainers" not in unlabelled["spec"]


def test_deleting_routes_removes_their_rules(kubectl: Kubectl, operator: Any) -> None:
    kubectl.apply([service("api"), endpoint_slice("api", ready=["10.9.0.1"]), proxy_route("web"),
                   proxy_route("admin", selector={"matchLabels": {"app": "admin"}},
                               rules=[{"backendRefs": [{"kind": "Local", "port": 9000}]}])], "-n", NS_A)
    wait_for("both routes", lambda: set(rules_of(config_of(kubectl, NS_A))) == {f"{NS_A}/web/0", f"{NS_A}/admin/0"})
    owners = lambda: [o["name"] for o in kubectl.get("configmap", "ringlane-routes", NS_A)["metadata"].get("ownerReferences", [])]  # noqa: E731
    wait_for("both owners", lambda: owners() == ["admin", "web"])
    generation = config_of(kubectl, NS_A)["generation"]
    kubectl.run("-n", NS_A, "delete", "proxyroute", "admin", "--timeout=30s")  # waits for our finalizer
    cfg = config_of(kubectl, NS_A)
    assert rules_of(cfg) == [f"{NS_A}/web/0"] and "local:9000" not in clusters_of(cfg)
    assert cfg["generation"] == generation + 1 and owners() == ["web"]
    kubectl.run("-n", NS_A, "delete", "proxyroute", "web", "--timeout=30s")
    cfg = config_of(kubectl, NS_A)
    assert cfg["listeners"] == [] and cfg["clusters"] == [] and owners() == []
    assert kubectl.get("proxyroute", "web", NS_A) is None


def test_without_the_operator_garbage_collection_cleans_up(kubectl: Kubectl, crd: None, tmp_path: Path) -> None:
    """The ConfigMap is owned by every route (none as controller), the RBAC by the ConfigMap:
    when the last route goes while no operator runs, the garbage collector removes all three."""
    ns = f"rlop-{RUN}-c"
    kubectl.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    try:
        with running_operator(kubectl, [ns], tmp_path / "operator.log"):
            kubectl.apply([proxy_route("one"), proxy_route("two", listener={"port": 8081})], "-n", ns)
            wait_for("both rendered", lambda: len(rules_of(config_of(kubectl, ns))) == 2)
            wait_for("the sidecar RoleBinding", lambda: kubectl.get("rolebinding", "ringlane-sidecar", ns))
            for name in ("one", "two"):  # kopf done with both (else a finalizer patch may land after we stop it)
                wait_for(f"{name} handled", lambda: (r := kubectl.get("proxyroute", name, ns)) is not None
                         and "ringlane.io/finalizer" in r["metadata"].get("finalizers", [])
                         and conditions(r).get("Programmed") == ("True", "Programmed"))
        for name in ("one", "two"):  # our finalizer would wait for the operator: lift it by hand
            kubectl.run("-n", ns, "patch", "proxyroute", name, "--type=merge", "-p", '{"metadata":{"finalizers":null}}')
        kubectl.run("-n", ns, "delete", "proxyroute", "one", "--timeout=30s")
        time.sleep(2)  # give the garbage collector a chance to get it wrong
        assert kubectl.get("configmap", "ringlane-routes", ns) is not None, "another route still owns it"
        kubectl.run("-n", ns, "delete", "proxyroute", "two", "--timeout=30s")
        for kind in ("configmap", "role", "rolebinding"):
            name = "ringlane-routes" if kind == "configmap" else "ringlane-sidecar"
            wait_for(f"{kind} garbage-collected", lambda: kubectl.get(kind, name, ns) is None, timeout=60, every=0.5)
    finally:
        kubectl.run("delete", "namespace", ns, "--wait=false", check=False)


def test_deleting_a_namespace_is_not_held_up_by_our_finalizer(kubectl: Kubectl, crd: None, tmp_path: Path) -> None:
    ns = f"rlop-{RUN}-d"
    kubectl.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    with running_operator(kubectl, [ns], tmp_path / "operator.log"):
        kubectl.apply([proxy_route("one"), proxy_route("two", listener={"port": 8081})], "-n", ns)
        wait_for("rendered", lambda: len(rules_of(config_of(kubectl, ns))) == 2)
        kubectl.run("delete", "namespace", ns, "--wait=false")
        wait_for("the namespace gone", lambda: kubectl.run("get", "namespace", ns, "--ignore-not-found", "-o",
                                                           "name").stdout.strip() == "", timeout=90, every=0.5)


def _free_cpu(kubectl: Kubectl) -> float:
    from ringlane_operator.quantity import parse_quantity

    (node,) = json.loads(kubectl.run("get", "nodes", "-o", "json").stdout)["items"]
    pods = json.loads(kubectl.run("get", "pods", "-A", "-o", "json", "--field-selector",
                                  f"spec.nodeName={node['metadata']['name']},status.phase!=Succeeded,status.phase!=Failed").stdout)
    used = sum(parse_quantity(c.get("resources", {}).get("requests", {}).get("cpu", "0"))
               for p in pods["items"] for c in p["spec"]["containers"] + p["spec"].get("initContainers", []))
    return float(parse_quantity(node["status"]["allocatable"]["cpu"]) - used)


def test_injected_sidecar_serves_and_follows_the_configmap(kubectl: Kubectl, crd: None, tmp_path: Path) -> None:
    """A real pod on the node: the injected sidecar starts (probes, downward API, args), proxies
    to the app through a ProxyRoute, and picks up a new generation through its API watch
    (its token, the resourceNames Role). RuntimeDefault seccomp: the sidecar's own profile is
    delivered by the chart, which this test does not install."""
    if _free_cpu(kubectl) < 1:
        pytest.skip("the node has no whole free CPU for an injected pod right now")
    ns = f"rlop-{RUN}-e"
    kubectl.apply({"apiVersion": "v1", "kind": "Namespace",
                   "metadata": {"name": ns, "labels": {"ringlane.io/injection": "enabled"}}})
    try:
        with running_operator(kubectl, [ns], tmp_path / "operator.log", "--seccomp-profile", "RuntimeDefault"):
            wait_for("the default ServiceAccount", lambda: kubectl.get("serviceaccount", "default", ns))
            kubectl.apply(proxy_route("web", rules=[{"backendRefs": [{"kind": "Local", "port": 9000}]}]), "-n", ns)
            wait_for("the routes ConfigMap", lambda: rules_of(config_of(kubectl, ns)))
            app = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "labels": {"app": "web"}},
                   "spec": {"terminationGracePeriodSeconds": 1, "containers": [{
                       "name": "app", "image": "localhost/ringlane-testbox:dev", "imagePullPolicy": "Never",
                       "command": ["python3", "-m", "http.server", "9000", "--bind", "127.0.0.1"]}]}}
            kubectl.run("-n", ns, "create", "-f", "-", stdin=json.dumps(app))
            kubectl.run("-n", ns, "wait", "--for=condition=Ready", "pod/web", "--timeout=120s")
            ip = kubectl.get("pod", "web", ns)["status"]["podIP"]
            with urllib.request.urlopen(f"http://{ip}:8080/", timeout=5) as resp:  # through the sidecar
                assert resp.status == 200 and b"Directory listing" in resp.read()

            def sidecar_generation() -> int:
                with urllib.request.urlopen(f"http://{ip}:9901/config", timeout=5) as resp:
                    return int(json.loads(resp.read())["generation"])
            first = config_of(kubectl, ns)["generation"]
            wait_for("the sidecar on the first generation", lambda: sidecar_generation() == first)
            kubectl.run("-n", ns, "patch", "proxyroute", "web", "--type=merge", "-p",
                        '{"spec":{"hostnames":["shop.example.com"]}}')
            wait_for("a new generation", lambda: config_of(kubectl, ns)["generation"] == first + 1)
            wait_for("the sidecar on it", lambda: sidecar_generation() == first + 1, timeout=5)
            kubectl.run("-n", ns, "delete", "proxyroutes", "--all", "--timeout=30s")
    finally:
        kubectl.run("delete", "namespace", ns, "--wait=false", check=False)
