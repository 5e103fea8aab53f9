"""Confinement: one allowlist in code feeds the seccomp profile, the ring restrictions (in C)
and, on kernels that have them, the io_uring BPF filters."""
