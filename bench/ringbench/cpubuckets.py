"""Where a proxy's CPU goes, from `perf script -F ip,sym` call chains: the kernel's TCP/IP work,
the I/O interface around it (io_uring, or syscalls and epoll), and user space.

A loopback send also runs the receiver's TCP input (and its wake-up) in the sender's softirq, so
"tcp/ip send" is most of any proxy's CPU. It is not the same for every proxy, even though every
one moves the same four segments per keep-alive request: how sends are batched decides how often
a sleeping peer has to be woken. Sampled with a fixed period, the buckets convert to CPU time
per request (`per_request_us`), which compares peers directly.
"""
from __future__ import annotations

from dataclasses import dataclass

# First match wins, in this order: a sample inside tcp_sendmsg is TCP/IP work even though
# io_uring or a syscall is further up the chain.
RULES: tuple[tuple[str, str], ...] = (
    ("tcp_sendmsg", "tcp/ip send (incl. the receiver's softirq)"),
    ("tcp_recvmsg", "tcp/ip receive"),
    ("io_recv", "io_uring"),
    ("io_send", "io_uring"),
    ("io_submit_sqes", "io_uring"),
    ("__io_run_local_work", "io_uring"),
    ("io_cqring_wait", "io_uring"),
    ("io_uring_enter", "io_uring"),
    ("do_epoll_wait", "syscalls and epoll"),
    ("do_writev", "syscalls and epoll"),
    ("__sys_recvfrom", "syscalls and epoll"),
    ("__sys_sendto", "syscalls and epoll"),
    ("do_syscall_64", "syscalls and epoll"),
    ("entry_SYSCALL", "syscalls and epoll"),
    ("__schedule", "scheduler"),
)
TCP_BUCKETS = ("tcp/ip send (incl. the receiver's softirq)", "tcp/ip receive")


@dataclass(frozen=True)
class Buckets:
    shares: dict[str, float]  # bucket -> fraction of the samples
    samples: int

    @property
    def tcp_share(self) -> float:
        return sum(self.shares.get(b, 0.0) for b in TCP_BUCKETS)


def classify(chain: list[tuple[str, str]]) -> str:
    """One sample's bucket from its (address, symbol) frames, leaf first."""
    syms = " ".join(sym for _, sym in chain)
    for needle, bucket in RULES:
        if needle in syms:
            return bucket
    leaf_is_kernel = bool(chain) and chain[0][0].startswith("ffffffff")
    return "kernel, other" if leaf_is_kernel else "user space"


def parse(perf_script: str) -> Buckets:
    """Buckets of `perf script -F ip,sym` output (one blank-line-separated block per sample)."""
    counts: dict[str, int] = {}
    total = 0
    for block in perf_script.split("\n\n"):
        frames = []
        for line in block.strip().splitlines():
            parts = line.split(None, 1)
            if parts:
                frames.append((parts[0], parts[1] if len(parts) > 1 else parts[0]))
        if not frames:
            continue
        total += 1
        bucket = classify(frames)
        counts[bucket] = counts.get(bucket, 0) + 1
    shares = {b: n / total for b, n in sorted(counts.items(), key=lambda kv: -kv[1])} if total else {}
    return Buckets(shares, total)


def per_request_us(b: Buckets, period_us: float, requests: float) -> dict[str, float]:
    """CPU microseconds per request in each bucket (and "total"), for samples taken every period_us."""
    if not requests:
        return {}
    total = b.samples * period_us / requests
    out = {bucket: share * total for bucket, share in b.shares.items()}
    out["total"] = total
    return out
