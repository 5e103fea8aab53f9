"""Seeded chaos soak of the data plane (`make soak`; entry point chaos.py). Not part of `make test`:
it runs for minutes and a failure is a seed to replay, not a deterministic test. What a soak finds
becomes a small test in tests/integration (test_chaos_findings.py)."""
