"""Ringlane's side-by-side benchmark harness (driven by bench/run.py)."""
