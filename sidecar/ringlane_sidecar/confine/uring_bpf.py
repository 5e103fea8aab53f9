"""io_uring BPF filters (Linux 7.0+, IORING_REGISTER_BPF_FILTER = 37): one cBPF program per
SQE opcode the engine uses, registered task-wide with IO_URING_BPF_FILTER_DENY_REST so every
other opcode is denied. Built from the same allowlist as the ring restrictions and seccomp.

UAPI (include/uapi/linux/io_uring/bpf_filter.h): the program sees struct io_uring_bpf_ctx
(user_data @0, opcode @8, sqe_flags @9, pdu_size @10, socket family/type/protocol @16/@20/@24,
open flags/mode/resolve @16/@24/@32) and denies by returning 0.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

from ringlane_sidecar.confine import cbpf
from ringlane_sidecar.confine.cbpf import ABS, AND, B, JEQ, JSET, K, LD, RET, W, Insn, jump, stmt
from ringlane_sidecar.confine.uring_ops import UringAllowlist

IORING_REGISTER_BPF_FILTER = 37
NR_REGISTER_OPCODES_WITH_FILTERS = 38
IO_URING_BPF_CMD_FILTER = 1
IO_URING_BPF_FILTER_DENY_REST = 1
IORING_OP_SOCKET = 45

# struct io_uring_bpf_ctx offsets
CTX_SIZE = 40
OFF_OPCODE, OFF_SQE_FLAGS = 8, 9
OFF_SOCK_FAMILY, OFF_SOCK_TYPE, OFF_SOCK_PROTOCOL = 16, 20, 24
AF_INET, AF_INET6, SOCK_STREAM, SOCK_TYPE_MASK = 2, 10, 1, 0xF
DENY, ALLOW = 0, 1


def ctx_bytes(opcode: int, sqe_flags: int = 0, user_data: int = 0, socket: tuple[int, int, int] | None = None,
              order: str = "<") -> bytes:
    """A struct io_uring_bpf_ctx as the kernel fills it (for tests). The filter engine loads
    words in native order; order=">" lays them out for engines that load big-endian (socket
    filters), so the same program sees the same values there."""
    head = struct.pack(order + "QBBB5x", user_data, opcode, sqe_flags, 0)
    tail = struct.pack(order + "III12x", *socket) if socket else bytes(24)
    return head + tail


def flags_program(allowed_flags: int) -> list[Insn]:
    """Allow the opcode only with SQE flags from the allowed set."""
    return [
        stmt(LD | B | ABS, OFF_SQE_FLAGS),
        jump(cbpf.JMP | JSET | K, ~allowed_flags & 0xFF, 0, 1),
        stmt(RET | K, DENY),
        stmt(RET | K, ALLOW),
    ]


def socket_program(allowed_flags: int) -> list[Insn]:
    """IORING_OP_SOCKET only for AF_INET/AF_INET6 stream sockets (and allowed flags)."""
    return [
        stmt(LD | B | ABS, OFF_SQE_FLAGS),
        jump(cbpf.JMP | JSET | K, ~allowed_flags & 0xFF, 6, 0),
        stmt(LD | W | ABS, OFF_SOCK_FAMILY),
        jump(cbpf.JMP | JEQ | K, AF_INET, 1, 0),
        jump(cbpf.JMP | JEQ | K, AF_INET6, 0, 3),
        stmt(LD | W | ABS, OFF_SOCK_TYPE),
        stmt(cbpf.ALU | AND | K, SOCK_TYPE_MASK),
        jump(cbpf.JMP | JEQ | K, SOCK_STREAM, 1, 0),
        stmt(RET | K, DENY),
        stmt(RET | K, ALLOW),
    ]


@dataclass(frozen=True)
class Filter:
    opcode: int
    program: list[Insn]


def filters_for(allow: UringAllowlist) -> list[Filter]:
    out = []
    for op in allow.sqe_ops:
        prog = socket_program(allow.sqe_flags) if op == IORING_OP_SOCKET else flags_program(allow.sqe_flags)
        out.append(Filter(op, prog))
    return out


def encode_register_arg(f: Filter, program_address: int, deny_rest: bool) -> bytes:
    """struct io_uring_bpf { u16 cmd_type; u16 cmd_flags; u32 resv; struct io_uring_bpf_filter {
    u32 opcode; u32 flags; u32 filter_len; u32 resv; u64 filter_ptr; u64 resv2[5]; } } (72 bytes)."""
    flags = IO_URING_BPF_FILTER_DENY_REST if deny_rest else 0
    return struct.pack("<HHI", IO_URING_BPF_CMD_FILTER, 0, 0) + struct.pack(
        "<IIIIQ40x", f.opcode, flags, len(f.program), 0, program_address)


def availability(nr_register_opcodes: int | None) -> tuple[bool, str]:
    if nr_register_opcodes is None:
        return False, "unavailable: IORING_REGISTER_QUERY is absent (kernel older than 6.18)"
    if nr_register_opcodes < NR_REGISTER_OPCODES_WITH_FILTERS:
        return False, (f"unavailable on this kernel: it knows {nr_register_opcodes} io_uring_register opcodes, "
                       f"BPF filters need {NR_REGISTER_OPCODES_WITH_FILTERS} (Linux 7.0+)")
    return True, "available"
