"""Classic BPF: instruction encoding (struct sock_filter) and a small interpreter.

The interpreter runs the io_uring filter programs in tests on kernels that cannot load them
(io_uring BPF filters need Linux 7.0); it covers the instructions Ringlane's programs use.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

# linux/bpf_common.h
LD, LDX, ST, STX, ALU, JMP, RET, MISC = 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07
W, H, B = 0x00, 0x08, 0x10
IMM, ABS, IND, MEM, LEN = 0x00, 0x20, 0x40, 0x60, 0x80
ADD, SUB, MUL, DIV, OR, AND, LSH, RSH, NEG, MOD, XOR = 0x00, 0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70, 0x80, 0x90, 0xA0
JA, JEQ, JGT, JGE, JSET = 0x00, 0x10, 0x20, 0x30, 0x40
K, X, A = 0x00, 0x08, 0x10
SKF_AD_OFF, SKF_AD_CPU = -0x1000, 36


@dataclass(frozen=True)
class Insn:
    code: int
    jt: int
    jf: int
    k: int

    def pack(self) -> bytes:
        return struct.pack("<HBBI", self.code, self.jt, self.jf, self.k & 0xFFFFFFFF)


def stmt(code: int, k: int = 0) -> Insn:
    return Insn(code, 0, 0, k)


def jump(code: int, k: int, jt: int, jf: int) -> Insn:
    return Insn(code, jt, jf, k)


def pack(prog: list[Insn]) -> bytes:
    return b"".join(i.pack() for i in prog)


def unpack(data: bytes) -> list[Insn]:
    return [Insn(*struct.unpack_from("<HBBI", data, off)) for off in range(0, len(data), 8)]


class BpfError(Exception):
    pass


def run(prog: list[Insn], data: bytes, ancillary: dict[int, int] | None = None) -> int:
    """Returns the program's return value for the given input bytes (little-endian loads
    like io_uring's and seccomp's context structs; packets would be big-endian)."""
    a = x = 0
    pc = 0
    mem = [0] * 16
    for _ in range(4096):
        if pc >= len(prog):
            raise BpfError("fell off the end of the program")
        ins = prog[pc]
        cls, op, src = ins.code & 0x07, ins.code & 0xF0, ins.code & 0x08
        size = ins.code & 0x18
        pc += 1
        if cls in (LD, LDX) and (ins.code & 0xE0) == ABS:
            k = ins.k if ins.k < 0x80000000 else ins.k - (1 << 32)
            if k < 0 and ancillary is not None and k - SKF_AD_OFF in ancillary:
                val = ancillary[k - SKF_AD_OFF]
            else:
                width = {W: 4, H: 2, B: 1}[size]
                if k < 0 or k + width > len(data):
                    return 0  # out-of-bounds load: the kernel returns 0 (drop/deny)
                val = int.from_bytes(data[k:k + width], "little")
            if cls == LD:
                a = val
            else:
                x = val
        elif cls == LD and (ins.code & 0xE0) == IMM:
            a = ins.k
        elif cls == LDX and (ins.code & 0xE0) == IMM:
            x = ins.k
        elif cls in (LD, LDX) and (ins.code & 0xE0) == MEM:
            if cls == LD:
                a = mem[ins.k]
            else:
                x = mem[ins.k]
        elif cls == ST:
            mem[ins.k] = a
        elif cls == STX:
            mem[ins.k] = x
        elif cls == ALU:
            v = x if src == X else ins.k
            if op == ADD: a = (a + v)
            elif op == SUB: a = (a - v)
            elif op == MUL: a = (a * v)
            elif op == DIV: a = a // v if v else 0
            elif op == MOD: a = a % v if v else 0
            elif op == OR: a = a | v
            elif op == AND: a = a & v
            elif op == XOR: a = a ^ v
            elif op == LSH: a = a << v
            elif op == RSH: a = a >> v
            elif op == NEG: a = -a
            else: raise BpfError(f"unsupported ALU op {op:#x}")
            a &= 0xFFFFFFFF
        elif cls == JMP:
            v = x if src == X else ins.k
            if op == JA:
                pc += ins.k
            else:
                cond = {JEQ: a == v, JGT: a > v, JGE: a >= v, JSET: bool(a & v)}.get(op)
                if cond is None:
                    raise BpfError(f"unsupported jump {op:#x}")
                pc += ins.jt if cond else ins.jf
        elif cls == RET:
            return a if (ins.code & 0x18) == A else ins.k
        elif cls == MISC:
            if ins.code & 0xF8 == 0x00:  # TAX
                x = a
            else:  # TXA
                a = x
        else:
            raise BpfError(f"unsupported instruction {ins.code:#x}")
    raise BpfError("program did not terminate")
