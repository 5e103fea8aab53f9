"""The system calls the sidecar makes, each with the reason it is there.

Derived from tracing the real sidecar (`strace -f` of `ringlane-sidecar run` serving HTTP and
TCP traffic, reloads, metrics scrapes and a drain, with each engine; tests/confine checks the
trace against these lists) plus the Kubernetes API watch (TLS over TCP, DNS over UDP).
"""
from __future__ import annotations

# Needed whatever the engine: the Python agent, uvloop, the worker threads and start-up.
BASE: dict[str, str] = {
    # process and threads
    "execve": "the container runtime starts the sidecar",
    "fstatfs": "runc checks /proc/self/fd after installing the filter, before execve",
    "close_range": "runc closes leaked fds after installing the filter",
    "exit": "thread exit", "exit_group": "process exit",
    "clone": "threads (older glibc)", "clone3": "worker and libuv threads",
    "set_tid_address": "libc start-up", "set_robust_list": "libc start-up", "rseq": "libc start-up",
    "arch_prctl": "TLS set-up (x86_64)", "prctl": "thread names, no_new_privs before the seccomp lock",
    "seccomp": "the io_uring lock installed after the rings exist",
    "futex": "locks and condition variables", "gettid": "logging, thread ids", "getpid": "signals, logs",
    "getppid": "Python start-up", "getuid": "Python start-up", "geteuid": "Python start-up",
    "getgid": "Python start-up", "getegid": "Python start-up",
    "sched_getaffinity": "the container's cpuset", "sched_setaffinity": "pinning workers",
    "sched_yield": "libc spin locks", "getrandom": "hash seeds, TLS", "uname": "probe: kernel version",
    "sysinfo": "Python start-up", "prlimit64": "Python start-up", "getrlimit": "Python start-up",
    "nanosleep": "timers", "clock_nanosleep": "timers", "clock_gettime": "time (when not in vDSO)",
    "restart_syscall": "interrupted sleeps",
    # signals
    "rt_sigaction": "SIGTERM/SIGINT handlers", "rt_sigprocmask": "signal masks",
    "rt_sigreturn": "signal delivery", "sigaltstack": "Python fault handler", "tgkill": "thread signals",
    # memory
    "brk": "heap", "mmap": "heap, buffers, rings", "munmap": "heap", "mremap": "heap",
    "mprotect": "loader, thread stacks", "madvise": "heap trimming",
    # files (Python imports, config, labels, /proc)
    "openat": "imports, config and label files, /proc", "read": "files, eventfd", "pread64": "imports",
    "write": "logs, eventfd wake-ups", "close": "files and sockets", "lseek": "imports",
    "newfstatat": "config polling, imports", "fstat": "imports", "statx": "imports", "readlink": "realpath of the config",
    "readlinkat": "realpath", "getdents64": "imports", "access": "imports", "faccessat2": "imports",
    "getcwd": "Python start-up", "fcntl": "non-blocking fds", "ioctl": "isatty checks, FIONBIO, FIONREAD/SIOCOUTQ (bytes unread or unsent at a reset)",
    "dup": "uvloop", "dup3": "uvloop", "pipe2": "uvloop self-pipe", "eventfd2": "worker wake-ups, uvloop",
    # readiness (uvloop, the epoll engine, the Kubernetes client)
    "epoll_create1": "uvloop, epoll engine", "epoll_ctl": "uvloop, epoll engine",
    "epoll_wait": "epoll engine", "epoll_pwait": "uvloop", "epoll_pwait2": "uvloop on newer libuv",
    "poll": "the Kubernetes client (TLS)", "ppoll": "the Kubernetes client",
    # sockets (listeners, clients, upstreams, admin port, Kubernetes API, DNS)
    "socket": "listeners, upstreams, API client, DNS", "socketpair": "uvloop, probe",
    "bind": "listeners, admin port", "listen": "listeners, admin port", "accept4": "epoll engine, admin port",
    "connect": "epoll engine upstreams, API client, DNS", "shutdown": "half-close",
    "getsockname": "listeners", "getpeername": "X-Forwarded-For", "setsockopt": "SO_REUSEPORT, TCP_NODELAY, cBPF steering",
    "getsockopt": "SO_ERROR: connect results, resets on sockets not being read", "sendto": "epoll engine sends, DNS", "recvfrom": "epoll engine receives, DNS",
    "sendmsg": "gathered sends (epoll engine), TLS, DNS", "recvmsg": "TLS, DNS", "sendmmsg": "glibc DNS (A+AAAA at once)",
}

# Per engine. io_uring_register is further limited by opcode (see uring_ops.py).
ENGINE: dict[str, dict[str, str]] = {
    "io_uring": {
        "io_uring_setup": "one ring per worker, at start-up only (then locked)",
        "io_uring_enter": "submit and wait",
        "io_uring_register": "restrictions, enable, buffer ring, ring fd (opcode allowlist)",
    },
    "epoll": {},
}

IO_URING_SYSCALLS = ("io_uring_setup", "io_uring_enter", "io_uring_register")


def allowed(engine: str) -> dict[str, str]:
    if engine not in ENGINE:
        raise ValueError(f"unknown engine {engine!r} (io_uring or epoll)")
    return {**BASE, **ENGINE[engine]}
