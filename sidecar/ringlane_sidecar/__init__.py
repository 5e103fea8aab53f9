"""Ringlane sidecar: the Python agent that drives the C proxy core."""

__version__ = "0.1.0"
