"""Ringlane operator: kopf handlers for ProxyRoutes, pod injection and seccomp delivery."""

__version__ = "0.1.0"
