"""io_uring opcodes the sidecar uses, read from the C core's allowlist (one list in code)."""
from __future__ import annotations

from dataclasses import dataclass

# Register opcodes used while a ring is created, before its restrictions apply, and by the
# start-up probe (uapi numbers: include/uapi/linux/io_uring.h).
SETUP_REGISTER_OPS: dict[int, str] = {
    8: "IORING_REGISTER_PROBE (start-up probe)",
    11: "IORING_REGISTER_RESTRICTIONS (ring creation)",
    12: "IORING_REGISTER_ENABLE_RINGS (ring creation)",
    23: "IORING_UNREGISTER_PBUF_RING (start-up probe)",
    35: "IORING_REGISTER_QUERY (start-up probe)",
}
REGISTER_NAMES: dict[int, str] = {
    20: "IORING_REGISTER_RING_FDS", 21: "IORING_UNREGISTER_RING_FDS", 22: "IORING_REGISTER_PBUF_RING",
}
SQE_OP_NAMES: dict[int, str] = {
    6: "IORING_OP_POLL_ADD", 13: "IORING_OP_ACCEPT", 14: "IORING_OP_ASYNC_CANCEL",
    9: "IORING_OP_SENDMSG", 15: "IORING_OP_LINK_TIMEOUT", 16: "IORING_OP_CONNECT", 26: "IORING_OP_SEND",
    27: "IORING_OP_RECV",
    18: "IORING_OP_OPENAT", 45: "IORING_OP_SOCKET",
}
SQE_FLAG_NAMES: dict[int, str] = {1: "IOSQE_FIXED_FILE", 2: "IOSQE_IO_DRAIN", 4: "IOSQE_IO_LINK",
                                  8: "IOSQE_IO_HARDLINK", 16: "IOSQE_ASYNC", 32: "IOSQE_BUFFER_SELECT",
                                  64: "IOSQE_CQE_SKIP_SUCCESS"}


@dataclass(frozen=True)
class UringAllowlist:
    sqe_ops: tuple[int, ...]
    sqe_flags: int
    runtime_register_ops: tuple[int, ...]  # on enabled, restricted rings

    @property
    def seccomp_register_ops(self) -> tuple[int, ...]:
        """Every io_uring_register opcode the process may call, set-up included."""
        return tuple(sorted(set(self.runtime_register_ops) | set(SETUP_REGISTER_OPS)))

    def describe(self) -> dict[str, list[str]]:
        return {
            "sqe_ops": [SQE_OP_NAMES.get(o, str(o)) for o in self.sqe_ops],
            "sqe_flags": [n for bit, n in SQE_FLAG_NAMES.items() if self.sqe_flags & bit],
            "register_ops": [REGISTER_NAMES.get(o) or SETUP_REGISTER_OPS.get(o, str(o))
                             for o in self.seccomp_register_ops],
        }


def from_core() -> UringAllowlist:
    from ringlane_sidecar.native import load

    _, lib = load()
    al = lib.rl_uring_allowlist_get()
    return UringAllowlist(
        sqe_ops=tuple(al.sqe_ops[i] for i in range(al.nsqe_ops)),
        sqe_flags=int(al.sqe_flags),
        runtime_register_ops=tuple(al.register_ops[i] for i in range(al.nregister_ops)),
    )
