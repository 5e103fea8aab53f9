"""Names shared by the operator's parts: API coordinates, objects it owns, labels, annotations."""
from __future__ import annotations

GROUP = "ringlane.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "ProxyRoute"
PLURAL = "proxyroutes"

# Per namespace: the rendered sidecar config and the RBAC that lets sidecars watch it.
CONFIGMAP = "ringlane-routes"
CONFIG_KEY = "config.json"
SIDECAR_ROLE = "ringlane-sidecar"

MANAGED_BY = {"app.kubernetes.io/managed-by": "ringlane"}
HASH_ANNOTATION = "ringlane.io/config-hash"  # sha256 of the config with generation 0
GENERATION_ANNOTATION = "ringlane.io/generation"

# Injection.
CONTAINER = "ringlane-proxy"
PODINFO_VOLUME = "ringlane-podinfo"
ROUTES_VOLUME = "ringlane-routes"
PODINFO_DIR = "/etc/ringlane/podinfo"
ROUTES_DIR = "/etc/ringlane/routes"
NAMESPACE_LABEL = "ringlane.io/injection"  # = "enabled" on namespaces that get sidecars
INJECT_LABEL = "ringlane.io/inject"  # = "false" on pods that opt out
INJECTED_ANNOTATION = "ringlane.io/injected"  # <version>-<hash of what was injected>
FORCE_HOST_NETWORK_ANNOTATION = "ringlane.io/inject-host-network"

# kopf's own bookkeeping on ProxyRoutes (kept out of status and out of our annotation keys).
FINALIZER = "ringlane.io/finalizer"
KOPF_ANNOTATION_PREFIX = "kopf.ringlane.io"

# Admission handler ids: kopf routes /<id> on its webhook server to the handler.
INJECT_WEBHOOK_ID = "inject-ringlane"
VALIDATE_WEBHOOK_ID = "validate-proxyroute"
