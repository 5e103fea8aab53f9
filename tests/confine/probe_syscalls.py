"""Run inside a container (or after the lock): try the calls the confinement must refuse and
print their results as JSON (negative errno, or the return value)."""
from __future__ import annotations

import ctypes
import json
import os

NR_IO_URING_SETUP, NR_IO_URING_REGISTER = 425, 427
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long


def call(*args: int | None) -> int:
    conv = [ctypes.c_ulong(a) if isinstance(a, int) else a for a in args]
    rc = libc.syscall(*conv)
    return -ctypes.get_errno() if rc < 0 else int(rc)


def main() -> None:
    out: dict[str, int] = {}
    try:
        os.getpriority(os.PRIO_PROCESS, 0)
        out["getpriority"] = 0
    except OSError as exc:
        out["getpriority"] = -(exc.errno or 0)
    params = ctypes.create_string_buffer(120)
    fd = call(NR_IO_URING_SETUP, 4, ctypes.addressof(params))
    out["io_uring_setup"] = fd
    if fd >= 0:
        out["register_buffers"] = call(NR_IO_URING_REGISTER, fd, 0, None, 0)            # opcode 0: not allowed
        out["register_pbuf_ring_junk"] = call(NR_IO_URING_REGISTER, fd, (1 << 32) | 22, None, 1)  # allowed low half
        out["register_pbuf_ring"] = call(NR_IO_URING_REGISTER, fd, 22, None, 1)        # allowed: EFAULT on NULL
        os.close(fd)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
