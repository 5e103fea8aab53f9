"""bench/ringbench/cpubuckets.py: perf call chains -> CPU buckets, and the bound they imply."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from ringbench.cpubuckets import parse, per_request_us  # noqa: E402

K = "ffffffff81000000"


def sample(*frames: str, user: bool = False) -> str:
    """One `perf script -F ip,sym` block, leaf first; a user leaf has a short address."""
    lines = [f"\t{'7f00deadbeef' if user and i == 0 else K} {f}" for i, f in enumerate(frames)]
    return "\n".join(lines) + "\n"


# The shapes seen in real profiles: a send whose softirq delivers to the peer, a multishot recv
# run as task work, io_uring's own submit path, a user-space parser, epoll and writev.
URING = "\n".join([
    sample("sock_def_readable", "tcp_rcv_established", "net_rx_action", "__dev_queue_xmit",
           "tcp_sendmsg_locked", "tcp_sendmsg", "sock_sendmsg", "io_send", "io_submit_sqes",
           "__do_sys_io_uring_enter"),
    sample("_copy_to_iter", "tcp_recvmsg_locked", "tcp_recvmsg", "sock_recvmsg", "io_recv",
           "io_poll_task_func", "__io_run_local_work", "io_cqring_wait"),
    sample("io_buffer_select", "io_recv", "io_poll_task_func", "__io_run_local_work"),
    sample("io_submit_sqes", "__do_sys_io_uring_enter", "do_syscall_64"),
    sample("llhttp__internal__run", user=True),
])
NGINX = "\n".join([
    sample("tcp_write_xmit", "tcp_sendmsg_locked", "tcp_sendmsg", "sock_write_iter", "do_writev"),
    sample("tcp_write_xmit", "tcp_sendmsg_locked", "tcp_sendmsg", "sock_write_iter", "do_writev"),
    sample("ep_poll", "do_epoll_wait", "do_syscall_64"),
    sample("ngx_http_parse_header_line", user=True),
])


def test_buckets_follow_the_call_chain() -> None:
    b = parse(URING)
    assert b.samples == 5
    assert b.shares == pytest.approx({
        "tcp/ip send (incl. the receiver's softirq)": 0.2, "tcp/ip receive": 0.2,
        "io_uring": 0.4, "user space": 0.2})
    assert b.tcp_share == pytest.approx(0.4)


def test_syscalls_and_epoll_are_their_own_bucket() -> None:
    b = parse(NGINX)
    assert b.shares["syscalls and epoll"] == pytest.approx(0.25)
    assert b.tcp_share == pytest.approx(0.5)


def test_samples_convert_to_cpu_per_request() -> None:
    b = parse(URING)  # 5 samples of 100 us each over 50 requests: 10 us per request
    us = per_request_us(b, 100.0, 50)
    assert us["total"] == pytest.approx(10.0)
    assert us["io_uring"] == pytest.approx(4.0)
    assert us["tcp/ip receive"] == pytest.approx(2.0)


def test_empty_input_gives_nothing() -> None:
    empty = parse("")
    assert empty.samples == 0 and empty.tcp_share == 0
    assert per_request_us(parse(NGINX), 100.0, 0) == {}
