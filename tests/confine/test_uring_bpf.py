"""io_uring BPF filter programs (Linux 7.0+): encoding against the UAPI layout, and running the
programs both in the interpreter and in this kernel's classic-BPF engine (as socket filters
on an AF_UNIX datagram pair: the datagram is the io_uring_bpf_ctx, a drop means deny)."""
from __future__ import annotations

import ctypes
import socket
import struct

import pytest

from ringlane_sidecar.confine import cbpf, uring_bpf
from ringlane_sidecar.confine.uring_ops import UringAllowlist

SO_ATTACH_FILTER = 26


class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def kernel_verdict(prog: list[cbpf.Insn], ctx: bytes) -> bool:
    """True when the kernel's cBPF engine lets the datagram through (the program allowed)."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with a, b:
        code = ctypes.create_string_buffer(cbpf.pack(prog))
        fprog = SockFprog(len(prog), ctypes.addressof(code))
        b.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, bytes(memoryview(fprog)))  # type: ignore[arg-type]
        a.send(ctx)
        b.setblocking(False)
        try:
            return len(b.recv(64)) > 0
        except BlockingIOError:
            return False


def test_ctx_layout_matches_uapi() -> None:
    ctx = uring_bpf.ctx_bytes(opcode=45, sqe_flags=0x24, user_data=0x1122334455667788, socket=(10, 1, 6))
    assert len(ctx) == uring_bpf.CTX_SIZE == 40
    assert struct.unpack_from("<Q", ctx, 0)[0] == 0x1122334455667788
    assert ctx[uring_bpf.OFF_OPCODE] == 45 and ctx[uring_bpf.OFF_SQE_FLAGS] == 0x24
    assert struct.unpack_from("<III", ctx, 16) == (10, 1, 6)


def test_register_arg_layout() -> None:
    f = uring_bpf.Filter(27, uring_bpf.flags_program(0x24))
    arg = uring_bpf.encode_register_arg(f, 0xDEADBEEF000, deny_rest=True)
    assert len(arg) == 8 + 64  # struct io_uring_bpf with its io_uring_bpf_filter
    assert struct.unpack_from("<HHI", arg, 0) == (uring_bpf.IO_URING_BPF_CMD_FILTER, 0, 0)
    assert struct.unpack_from("<IIIIQ", arg, 8) == (27, uring_bpf.IO_URING_BPF_FILTER_DENY_REST, 4, 0, 0xDEADBEEF000)
    assert arg[32:] == bytes(40)


def test_instruction_encoding() -> None:
    ins = cbpf.jump(cbpf.JMP | cbpf.JEQ | cbpf.K, 10, 2, 3)
    assert ins.pack() == struct.pack("<HBBI", 0x15, 2, 3, 10)
    assert cbpf.unpack(cbpf.pack([ins])) == [ins]


FLAG_CASES = [(0, True), (0x04, True), (0x20, True), (0x24, True), (0x01, False), (0x10, False), (0x44, False)]


@pytest.mark.parametrize("flags,allow", FLAG_CASES)
def test_flags_program(flags: int, allow: bool, uring_allowlist: UringAllowlist) -> None:
    prog = uring_bpf.flags_program(uring_allowlist.sqe_flags)
    ctx = uring_bpf.ctx_bytes(opcode=27, sqe_flags=flags)
    assert bool(cbpf.run(prog, ctx)) is allow
    assert kernel_verdict(prog, ctx) is allow


SOCKET_CASES = [
    ((2, 1, 0), 0, True),             # AF_INET, SOCK_STREAM
    ((10, 1, 6), 0, True),            # AF_INET6, SOCK_STREAM, TCP
    ((10, 1 | 0x80000, 0), 0, True),  # SOCK_CLOEXEC is not the type
    ((2, 2, 0), 0, False),            # datagram
    ((1, 1, 0), 0, False),            # AF_UNIX
    ((16, 3, 0), 0, False),           # netlink raw
    ((2, 1, 0), 0x10, False),         # IOSQE_ASYNC is not allowed
]


@pytest.mark.parametrize("sock,flags,allow", SOCKET_CASES)
def test_socket_program(sock: tuple[int, int, int], flags: int, allow: bool) -> None:
    prog = uring_bpf.socket_program(0x24)
    ctx = uring_bpf.ctx_bytes(opcode=uring_bpf.IORING_OP_SOCKET, sqe_flags=flags, socket=sock)
    assert bool(cbpf.run(prog, ctx)) is allow
    # socket filters load words big-endian: give the kernel the same values in that order
    net_ctx = uring_bpf.ctx_bytes(opcode=uring_bpf.IORING_OP_SOCKET, sqe_flags=flags, socket=sock, order=">")
    assert kernel_verdict(prog, net_ctx) is allow


def test_one_filter_per_allowlisted_opcode(uring_allowlist: UringAllowlist) -> None:
    filters = uring_bpf.filters_for(uring_allowlist)
    assert [f.opcode for f in filters] == list(uring_allowlist.sqe_ops)
    assert uring_bpf.IORING_OP_SOCKET not in [f.opcode for f in filters]  # the engine never creates sockets in the ring


def test_availability_is_reported_for_this_kernel() -> None:
    assert uring_bpf.availability(36) == (False, "unavailable on this kernel: it knows 36 io_uring_register opcodes, "
                                                 "BPF filters need 38 (Linux 7.0+)")
    assert uring_bpf.availability(38) == (True, "available")
    assert uring_bpf.availability(None)[0] is False


def test_steering_program_maps_cpus_to_workers() -> None:
    """The reuseport program from the C core, run with the receiving CPU as ancillary data."""
    from ringlane_sidecar.native import load

    ffi, lib = load()
    cpus = ffi.new("int[]", [3, 1, -1])
    buf = ffi.new("char[]", 8 * 16)
    n = lib.rl_steer_program(3, cpus, buf, 16)
    prog = cbpf.unpack(bytes(ffi.buffer(buf, 8 * n)))
    verdict = {cpu: cbpf.run(prog, b"", ancillary={cbpf.SKF_AD_CPU: cpu}) for cpu in range(6)}
    assert verdict[3] == 0 and verdict[1] == 1       # pinned workers get their CPU's connections
    assert all(0 <= v < 3 for v in verdict.values())  # others spread over the group
