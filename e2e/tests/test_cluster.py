"""The local cluster itself: what Ringlane's e2e tests and `make demo` rely on.

Each test names the property it checks and carries a control case where the
property could otherwise hold by accident (e.g. RuntimeDefault seccomp also
shows `Seccomp: 2`, so the Localhost profile must also deny something).
"""
from __future__ import annotations

import base64
import ipaddress
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import cluster_lock

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]  # the first test pays for a cold up.sh

HERE = Path(__file__).resolve().parent
TESTBOX = "localhost/ringlane-testbox:dev"
POD_CIDR = ipaddress.ip_network("10.88.0.0/16")
NS = "rl-e2e-cluster"


# --- helpers -----------------------------------------------------------------------

def pod(name: str, command: str, *, ns: str = NS, restart: str = "Never", resources: dict | None = None,
        security: dict | None = None, labels: dict | None = None, volumes: list | None = None,
        mounts: list | None = None) -> dict:
    container = {"name": "main", "image": TESTBOX, "imagePullPolicy": "Never",
                 "command": ["sh", "-c", command]}
    if resources:
        container["resources"] = resources
    if mounts:
        container["volumeMounts"] = mounts
    spec: dict = {"restartPolicy": restart, "terminationGracePeriodSeconds": 0, "containers": [container]}
    if security:
        spec["securityContext"] = security
    if volumes:
        spec["volumes"] = volumes
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "labels": labels or {"app": name}}, "spec": spec}


def run_to_completion(cluster, manifest: dict, timeout: int = 90) -> str:
    """Create a run-once pod, wait for it to succeed, return its log."""
    name, ns = manifest["metadata"]["name"], manifest["metadata"]["namespace"]
    cluster.kubectl("delete", "pod", "-n", ns, name, "--ignore-not-found", "--wait=true")
    cluster.apply(manifest)
    cluster.wait("--for=jsonpath={.status.phase}=Succeeded", "-n", ns, f"pod/{name}", timeout=timeout)
    return cluster.kubectl("logs", "-n", ns, name).stdout


def make_tls(workdir: Path, cn: str, sans: str) -> tuple[bytes, Path, Path]:
    """A throwaway CA and a serving cert for `sans` (openssl syntax). Returns (CA PEM, cert, key)."""
    def ossl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=workdir)
    ossl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", "ca.key", "-out", "ca.crt", "-subj", "/CN=ringlane-e2e-webhook-ca", "-days", "1")
    ossl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", "tls.key", "-out", "tls.csr", "-subj", f"/CN={cn}")
    (workdir / "ext.cnf").write_text(f"subjectAltName={sans}\nextendedKeyUsage=serverAuth\n")
    ossl("x509", "-req", "-in", "tls.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
         "-days", "1", "-extfile", "ext.cnf", "-out", "tls.crt")
    return (workdir / "ca.crt").read_bytes(), workdir / "tls.crt", workdir / "tls.key"


def mutating_webhook(name: str, client_config: dict, ca: bytes, ns_label: str) -> dict:
    """Webhook for CREATE of ConfigMaps and Pods in namespaces labelled `ns_label`=on.
    failurePolicy Fail: if the apiserver cannot reach the webhook, creation fails loudly."""
    return {
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [{
            "name": f"{name}.ringlane.io",
            "clientConfig": {**client_config, "caBundle": base64.b64encode(ca).decode()},
            "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
                       "resources": ["configmaps", "pods"]}],
            "namespaceSelector": {"matchLabels": {ns_label: "on"}},
            "failurePolicy": "Fail", "sideEffects": "None", "timeoutSeconds": 10,
            "admissionReviewVersions": ["v1"],
        }],
    }


def namespace(cluster, name: str, labels: dict | None = None) -> None:
    # A namespace left Terminating by an earlier run cannot take new objects: wait it out.
    cluster.kubectl("wait", "--for=delete", f"namespace/{name}", "--timeout=120s", check=False, timeout=135)
    cluster.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": {**(labels or {}), "ringlane.io/e2e": "true"}}})
    # Pods need the namespace's default ServiceAccount (made by the controller-manager).
    for _ in range(60):
        if cluster.kubectl("get", "serviceaccount", "default", "-n", name, check=False).returncode == 0:
            return
        time.sleep(0.5)
    raise AssertionError(f"no default ServiceAccount in {name}")


def mutated_label(cluster, *args: str) -> str | None:
    obj = json.loads(cluster.kubectl(*args, "-o", "json").stdout)
    return (obj["metadata"].get("labels") or {}).get("ringlane-e2e/mutated")


@pytest.fixture(scope="module")
def ns(cluster):
    namespace(cluster, NS)
    yield NS
    cluster.kubectl("delete", "namespace", NS, "--wait=false", check=False)


# --- the control plane ---------------------------------------------------------------

def test_apiserver_readyz(cluster):
    assert cluster.kubectl("get", "--raw", "/readyz").stdout.strip() == "ok"
    verbose = cluster.kubectl("get", "--raw", "/readyz?verbose").stdout
    assert "[+]etcd ok" in verbose, verbose


def test_node_ready_with_static_cpu_manager(cluster):
    node = json.loads(cluster.kubectl("get", "node", "ringlane-node", "-o", "json").stdout)
    ready = {c["type"]: c["status"] for c in node["status"]["conditions"]}["Ready"]
    assert ready == "True"
    # kubeReserved cpu 100m: allocatable is capacity minus 100m (CPU 0 stays in the shared pool).
    assert node["status"]["allocatable"]["cpu"] == f'{int(node["status"]["capacity"]["cpu"]) * 1000 - 100}m'



# --- workloads ---------------------------------------------------------------------

def test_deployment_of_local_image_becomes_ready(cluster, ns):
    cluster.apply({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "testbox", "namespace": ns},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "testbox"}},
                 "template": {"metadata": {"labels": {"app": "testbox"}},
                              "spec": {"terminationGracePeriodSeconds": 0, "containers": [{
                                  "name": "main", "image": TESTBOX, "imagePullPolicy": "Never",
                                  "command": ["sleep", "infinity"]}]}}},
    })
    cluster.kubectl("rollout", "status", "-n", ns, "deployment/testbox", "--timeout=120s", timeout=135)
    pods = json.loads(cluster.kubectl("get", "pods", "-n", ns, "-l", "app=testbox", "-o", "json").stdout)["items"]
    assert len(pods) == 1
    assert ipaddress.ip_address(pods[0]["status"]["podIP"]) in POD_CIDR
    # The image the kubelet ran is the one up.sh imported (its id recorded in images.json).
    image_id = pods[0]["status"]["containerStatuses"][0]["imageID"]
    assert image_id == cluster.images[TESTBOX]["id"], (image_id, cluster.images)


def test_pod_reaches_apiserver_through_kubernetes_service(cluster, ns):
    """In-cluster clients (the operator) dial the `kubernetes` ClusterIP: needs kube-proxy,
    the advertised host address, and 10.0.0.1 in the serving cert."""
    cluster.kubectl("rollout", "status", "-n", ns, "deployment/testbox", "--timeout=120s", timeout=135)
    script = (
        "import os, ssl, urllib.request\n"
        "sa = '/var/run/secrets/kubernetes.io/serviceaccount'\n"
        "ctx = ssl.create_default_context(cafile=sa + '/ca.crt')\n"
        "url = 'https://%s:%s/version' % (os.environ['KUBERNETES_SERVICE_HOST'], os.environ['KUBERNETES_SERVICE_PORT'])\n"
        "req = urllib.request.Request(url, headers={'Authorization': 'Bearer ' + open(sa + '/token').read()})\n"
        "print(url, urllib.request.urlopen(req, context=ctx, timeout=10).read().decode())\n"
    )
    out = cluster.kubectl("exec", "-n", ns, "deployment/testbox", "--", "python3", "-c", script).stdout
    assert out.startswith("https://10.0.0.1:443/version"), out
    assert '"gitVersion": "v1.34' in out, out


def test_guaranteed_pod_gets_cpu1_exclusively(cluster, ns):
    one_cpu = {"cpu": "1", "memory": "64Mi"}
    show = "grep Cpus_allowed_list /proc/self/status; exec sleep infinity"
    cluster.apply(pod("pinned", show, resources={"requests": one_cpu, "limits": one_cpu}))
    cluster.wait("--for=condition=Ready", "-n", ns, "pod/pinned")
    # Created after "pinned" holds CPU 1 (a container started before sees 0-1 until the CPU
    # manager's next reconcile). BestEffort: allocatable CPU is 1 and "pinned" takes it all.
    cluster.apply(pod("shared", show))
    cluster.wait("--for=condition=Ready", "-n", ns, "pod/shared")
    assert json.loads(cluster.kubectl("get", "pod", "-n", ns, "pinned", "-o", "json").stdout)["status"]["qosClass"] == "Guaranteed"
    assert cluster.kubectl("logs", "-n", ns, "pinned").stdout.split() == ["Cpus_allowed_list:", "1"]
    # The same through exec (apiserver -> kubelet streaming, kubelet cert verified against our CA).
    status = cluster.kubectl("exec", "-n", ns, "pinned", "--", "cat", "/proc/self/status").stdout
    assert re.search(r"^Cpus_allowed_list:\s+1$", status, re.M), status
    # Control: any other pod is kept off the exclusive CPU (shared pool = reserved CPU 0).
    assert cluster.kubectl("logs", "-n", ns, "shared").stdout.split() == ["Cpus_allowed_list:", "0"]
    cluster.kubectl("delete", "pod", "-n", ns, "pinned", "shared", "--wait=false")


def test_seccomp_localhost_profile_from_kubelet_root(cluster, ns):
    profile_dir = cluster.seccomp_dir / "ringlane-e2e"
    profile_dir.mkdir(parents=True, exist_ok=True)
    # Allow everything except mkdir: distinguishable from RuntimeDefault, which also shows Seccomp: 2.
    (profile_dir / "deny-mkdir.json").write_text(json.dumps({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}],
    }))
    probe = "grep ^Seccomp: /proc/1/status; mkdir /tmp/probe 2>/dev/null && echo MKDIR=ok || echo MKDIR=denied"

    def run(name: str, profile: dict) -> list[str]:
        out = run_to_completion(cluster, pod(name, probe, security={"seccompProfile": profile}))
        return out.split()

    assert run("seccomp-localhost", {"type": "Localhost", "localhostProfile": "ringlane-e2e/deny-mkdir.json"}) \
        == ["Seccomp:", "2", "MKDIR=denied"]
    # Controls: the kubelet's default (seccompDefault: RuntimeDefault) filters but allows mkdir;
    # Unconfined does not filter at all.
    assert run("seccomp-default", {"type": "RuntimeDefault"}) == ["Seccomp:", "2", "MKDIR=ok"]
    assert run("seccomp-unconfined", {"type": "Unconfined"}) == ["Seccomp:", "0", "MKDIR=ok"]
    no_profile = run_to_completion(cluster, pod("seccomp-none", probe)).split()
    assert no_profile == ["Seccomp:", "2", "MKDIR=ok"], "seccompDefault: true should apply RuntimeDefault"


# --- admission webhooks ------------------------------------------------------------

def test_out_of_cluster_webhook_mutates(cluster, tmp_path):
    """The apiserver calls a webhook on https://127.0.0.1:<port> (clientConfig.url):
    how a developer runs the operator outside the cluster."""
    ca, cert, key = make_tls(tmp_path, "127.0.0.1", "IP:127.0.0.1")
    server = subprocess.Popen([sys.executable, str(HERE / "webhook_server.py"), "--cert", str(cert), "--key", str(key),
                               "--value", "out-of-cluster"], stdout=subprocess.PIPE, text=True)
    try:
        port = int(server.stdout.readline().split()[1])
        namespace(cluster, "rl-e2e-webhook-out", {"ringlane-e2e-webhook-out": "on"})
        cluster.apply(mutating_webhook("ringlane-e2e-out", {"url": f"https://127.0.0.1:{port}/mutate"}, ca,
                                       "ringlane-e2e-webhook-out"))
        cluster.kubectl("create", "configmap", "-n", "rl-e2e-webhook-out", "probe", "--from-literal=a=b")
        assert mutated_label(cluster, "get", "configmap", "-n", "rl-e2e-webhook-out", "probe") == "out-of-cluster"
        # A Pod too (server-side dry run: mutated, never scheduled).
        dry = cluster.kubectl("create", "--dry-run=server", "-o", "json", "-f", "-",
                              input=json.dumps(pod("probe", "true", ns="rl-e2e-webhook-out"))).stdout
        assert json.loads(dry)["metadata"]["labels"]["ringlane-e2e/mutated"] == "out-of-cluster"
        # Control: a namespace without the label is not sent to the webhook.
        namespace(cluster, "rl-e2e-webhook-none")
        cluster.kubectl("create", "configmap", "-n", "rl-e2e-webhook-none", "probe", "--from-literal=a=b")
        assert mutated_label(cluster, "get", "configmap", "-n", "rl-e2e-webhook-none", "probe") is None
    finally:
        cluster.kubectl("delete", "mutatingwebhookconfiguration", "ringlane-e2e-out", "--ignore-not-found")
        server.terminate()
        calls = server.communicate(timeout=10)[0]
        cluster.kubectl("delete", "namespace", "rl-e2e-webhook-out", "rl-e2e-webhook-none", "--wait=false", check=False)
    seen = [json.loads(line) for line in calls.splitlines()]
    assert {(c["kind"], c["dryRun"]) for c in seen} == {("ConfigMap", False), ("Pod", True)}, seen


def serve_webhook_in_pod(cluster, wns: str, tmp_path: Path, service_labels: dict | None = None,
                         timeout: int = 10) -> None:
    """webhook_server.py in a testbox pod behind Service `webhook`, registered for namespace `wns`."""
    namespace(cluster, wns, {wns: "on"})
    ca, cert, key = make_tls(tmp_path, f"webhook.{wns}.svc", f"DNS:webhook.{wns}.svc")
    cluster.kubectl("create", "secret", "tls", "-n", wns, "webhook-tls", f"--cert={cert}", f"--key={key}")
    cluster.kubectl("create", "configmap", "-n", wns, "webhook-code",
                    f"--from-file=webhook_server.py={HERE / 'webhook_server.py'}")
    server = pod("webhook", "exec python3 /code/webhook_server.py --host 0.0.0.0 --port 8443 "
                 "--cert /tls/tls.crt --key /tls/tls.key --value in-cluster",
                 ns=wns, restart="Always", labels={"app": "webhook"},
                 volumes=[{"name": "tls", "secret": {"secretName": "webhook-tls"}},
                          {"name": "code", "configMap": {"name": "webhook-code"}}],
                 mounts=[{"name": "tls", "mountPath": "/tls"}, {"name": "code", "mountPath": "/code"}])
    # The webhook's own pod must not need the webhook: create it before registering.
    cluster.apply([server, {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "webhook", "namespace": wns, "labels": service_labels or {}},
        "spec": {"selector": {"app": "webhook"}, "ports": [{"port": 443, "targetPort": 8443}]}}])
    cluster.wait("--for=condition=Ready", "-n", wns, "pod/webhook")
    svc_ip = cluster.kubectl("get", "svc", "-n", wns, "webhook", "-o", "jsonpath={.spec.clusterIP}").stdout
    assert ipaddress.ip_address(svc_ip) in ipaddress.ip_network("10.0.0.0/24")
    config = mutating_webhook(wns, {"service": {"namespace": wns, "name": "webhook", "path": "/mutate", "port": 443}},
                              ca, wns)
    config["webhooks"][0]["timeoutSeconds"] = timeout
    cluster.apply(config)


def test_in_cluster_webhook_through_service_clusterip(cluster, tmp_path):
    """The operator's webhook: a pod behind a Service. The apiserver dials the Service's
    ClusterIP (no --enable-aggregator-routing), which kube-proxy makes routable."""
    wns = "rl-e2e-webhook-svc"
    try:
        serve_webhook_in_pod(cluster, wns, tmp_path)
        # kube-proxy programs a new Service within a second or so; retry the first create briefly.
        deadline = time.monotonic() + 30
        while True:
            p = cluster.kubectl("create", "configmap", "-n", wns, "probe", "--from-literal=a=b", check=False)
            if p.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert p.returncode == 0, p.stderr
        assert mutated_label(cluster, "get", "configmap", "-n", wns, "probe") == "in-cluster"
        assert '"kind": "ConfigMap"' in cluster.kubectl("logs", "-n", wns, "webhook").stdout
    finally:
        cluster.kubectl("delete", "mutatingwebhookconfiguration", wns, "--ignore-not-found")
        cluster.kubectl("delete", "namespace", wns, "--wait=false", check=False)


def test_webhook_service_unreachable_without_kube_proxy_rules(cluster, tmp_path):
    """Control for the test above: the same webhook behind a Service that kube-proxy skips
    (label service.kubernetes.io/service-proxy-name) cannot be called, because the apiserver
    dials the ClusterIP, not the pod. So the positive test really depends on kube-proxy."""
    wns = "rl-e2e-webhook-noproxy"
    apiserver_cmd = Path(f"/proc/{(cluster.state_dir / 'run' / 'kube-apiserver.pid').read_text().strip()}/cmdline")
    if b"--enable-aggregator-routing=true" in apiserver_cmd.read_bytes():
        pytest.skip("kube-apiserver runs with --enable-aggregator-routing=true: it dials endpoints directly")
    try:
        serve_webhook_in_pod(cluster, wns, tmp_path,
                             service_labels={"service.kubernetes.io/service-proxy-name": "not-kube-proxy"}, timeout=3)
        time.sleep(2)  # give kube-proxy the time it would need to program the Service
        p = cluster.kubectl("create", "configmap", "-n", wns, "probe", "--from-literal=a=b", check=False)
        assert p.returncode != 0, "the webhook was reached without a kube-proxy rule for its ClusterIP"
        assert "failed calling webhook" in p.stderr, p.stderr
        assert '"kind"' not in cluster.kubectl("logs", "-n", wns, "webhook").stdout
    finally:
        cluster.kubectl("delete", "mutatingwebhookconfiguration", wns, "--ignore-not-found")
        cluster.kubectl("delete", "namespace", wns, "--wait=false", check=False)


# --- teardown -----------------------------------------------------------------------

# Matched against the 15-character process name (/proc/<pid>/comm): kube-controller-manager
# is "kube-controller", containerd-shim-runc-v2 is "containerd-shim"; prefixes cover them all.
# (pgrep refuses patterns longer than 15 characters, so it is not used here.)
CLUSTER_PROCESSES = re.compile(r"^(etcd|kube-|kubelet|containerd)")


def cluster_processes() -> list[str]:
    found = []
    for comm in Path("/proc").glob("[0-9]*/comm"):
        try:
            name = comm.read_text().strip()
        except OSError:  # exited meanwhile
            continue
        if CLUSTER_PROCESSES.match(name):
            found.append(f"{comm.parent.name} {name}")
    return found


@pytest.mark.e2e_last
def test_down_leaves_nothing_behind(cluster):
    netns_before = set(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else set()
    # Leave a workload running so down.sh has containers, mounts and a netns to clean.
    namespace(cluster, "rl-e2e-down")
    cluster.apply(pod("busy", "exec sleep infinity", ns="rl-e2e-down", restart="Always"))
    cluster.wait("--for=condition=Ready", "-n", "rl-e2e-down", "pod/busy")
    running = cluster_processes()
    assert any(p.endswith(" containerd-shim") for p in running) and any(p.endswith(" kubelet") for p in running), running
    netns_pods = (set(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else set()) - netns_before

    # Hold the cluster lock from down.sh through the checks: another session on this host
    # calling up.sh in between would otherwise bring processes and the state dir back.
    with cluster_lock():
        start = time.monotonic()
        p = cluster.down(locked=True)
        took = time.monotonic() - start
        assert p.returncode == 0, p.stdout + p.stderr
        print(f"\ndown.sh took {took:.1f}s")
        check_nothing_left(cluster, netns_pods)


def check_nothing_left(cluster, netns_pods: set[str]) -> None:
    """No cluster process, mount, state dir, pod netns, CNI bridge, Kubernetes iptables chain,
    or process in the kubelet's pod cgroups."""
    assert cluster_processes() == [], "cluster processes left"
    mounts = Path("/proc/self/mountinfo").read_text()
    assert str(cluster.state_dir) not in mounts
    assert not cluster.state_dir.exists()
    netns_after = set(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else set()
    assert not (netns_pods & netns_after), f"pod network namespaces left: {netns_pods & netns_after}"
    assert not list(Path("/var/lib/cni/results").glob("ringlane-pods-*")), "libcni result cache left"
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert "rl-cni0" not in links, links   # the pods' veths went with their network namespaces
    for save in ("iptables-save", "ip6tables-save"):
        rules = subprocess.run([save], capture_output=True, text=True).stdout
        assert ":KUBE-" not in rules and "ringlane-pods" not in rules, f"{save}:\n{rules}"
    for kubepods in Path("/sys/fs/cgroup").glob("*/kubepods"):
        procs = [f.read_text().split() for f in kubepods.rglob("cgroup.procs")]
        assert not any(procs), f"processes left in {kubepods}: {procs}"
