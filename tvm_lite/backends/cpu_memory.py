"""Reading and writing one element of a global tensor on the CPU.

Types whose width is 8, 16, 32 or 64 bits are plain loads and stores of the
storage type. Everything else follows the packing rule: element i sits in bits
[i*N, (i+1)*N) of the byte stream. A read gathers the bytes that cover the
field (never past the end of the buffer) and shifts; a write updates those
bytes with atomic AND/OR, because neighbouring blocks running on other cores
may own the other bits of a shared byte.
"""
from __future__ import annotations

import llvmlite.ir as ir

from ..errors import TLTargetError
from .cpu_types import I8, I64, storage_type


def _byte_sized(dt) -> bool:
    return dt.nbits in (8, 16, 32, 64)


def _nbytes(cg, g) -> ir.Value:
    bits = cg.b.mul(g.numel, ir.Constant(I64, g.tensor.dtype.nbits))
    return cg.b.lshr(cg.b.add(bits, ir.Constant(I64, 7)), ir.Constant(I64, 3))


def _field_bytes(nbits: int) -> int:
    return (nbits + 7 + 7) // 8   # a field may start at any bit of its first byte


def read_bits(cg, g, flat: ir.Value) -> ir.Value:
    b = cg.b
    n = g.tensor.dtype.nbits
    bit = b.mul(flat, ir.Constant(I64, n))
    first = b.lshr(bit, ir.Constant(I64, 3))
    last = b.sub(_nbytes(cg, g), ir.Constant(I64, 1))
    word = ir.Constant(I64, 0)
    for k in range(_field_bytes(n)):
        idx = b.add(first, ir.Constant(I64, k))
        inside = b.icmp_unsigned("<=", idx, last)
        byte = b.load(b.gep(g.base, [b.select(inside, idx, last)]))
        byte = b.select(inside, b.zext(byte, I64), ir.Constant(I64, 0))
        word = b.or_(word, b.shl(byte, ir.Constant(I64, 8 * k)))
    field = b.lshr(word, b.and_(bit, ir.Constant(I64, 7)))
    return b.and_(field, ir.Constant(I64, (1 << n) - 1))


def write_bits(cg, g, flat: ir.Value, bits: ir.Value) -> None:
    b = cg.b
    n = g.tensor.dtype.nbits
    bit = b.mul(flat, ir.Constant(I64, n))
    first = b.lshr(bit, ir.Constant(I64, 3))
    shift = b.and_(bit, ir.Constant(I64, 7))
    mask = b.shl(ir.Constant(I64, (1 << n) - 1), shift)
    value = b.shl(b.and_(bits, ir.Constant(I64, (1 << n) - 1)), shift)
    last = b.sub(_nbytes(cg, g), ir.Constant(I64, 1))
    for k in range(_field_bytes(n)):
        idx = b.add(first, ir.Constant(I64, k))
        byte_mask = b.trunc(b.lshr(mask, ir.Constant(I64, 8 * k)), I8)
        byte_value = b.trunc(b.lshr(value, ir.Constant(I64, 8 * k)), I8)
        touches = b.and_(b.icmp_unsigned("<=", idx, last), b.icmp_unsigned("!=", byte_mask, ir.Constant(I8, 0)))

        def update(idx=idx, byte_mask=byte_mask, byte_value=byte_value):
            ptr = b.gep(g.base, [idx])
            b.atomic_rmw("and", ptr, b.not_(byte_mask), "monotonic")
            b.atomic_rmw("or", ptr, byte_value, "monotonic")
        cg.masked(touches, update)


def load_element(cg, g, flat: ir.Value) -> ir.Value:
    dt = g.tensor.dtype
    b = cg.b
    if _byte_sized(dt):
        ptr = b.gep(b.bitcast(g.base, ir.PointerType(storage_type(dt))), [flat])
        return cg.conv.widen(b.load(ptr), dt)
    bits = read_bits(cg, g, flat)
    if dt.is_float:
        return cg.conv.decode(bits, dt)
    return cg.conv.wrap(bits, dt) if dt.is_signed else bits


def store_element(cg, g, flat: ir.Value, value: ir.Value, add: bool) -> None:
    dt = g.tensor.dtype
    b = cg.b
    if add:
        if not _byte_sized(dt) or (dt.is_float and dt.name not in ("f32", "f64")):
            raise TLTargetError(f"no lowering for atomic_add on {dt.name} tensors on cpu")
        ptr = b.gep(b.bitcast(g.base, ir.PointerType(storage_type(dt))), [flat])
        b.atomic_rmw("fadd" if dt.is_float else "add", ptr, cg.conv.narrow(value, dt), "monotonic")
        return
    if _byte_sized(dt):
        ptr = b.gep(b.bitcast(g.base, ir.PointerType(storage_type(dt))), [flat])
        b.store(cg.conv.narrow(value, dt), ptr)
        return
    narrowed = cg.conv.narrow(value, dt)
    write_bits(cg, g, flat, b.zext(narrowed, I64) if narrowed.type != I64 else narrowed)

