"""CPU lowering of instructions that move tile elements without computing:
assign, annotate, reshape, view, transpose, broadcast, slice and concat.

Tiles are row-major arrays, so assign, annotate and reshape are one memcpy,
and layouts (annotate's) do not exist at run time on a one-thread block.
`view` reinterprets the tile's bit stream (element i at bits [i*N, (i+1)*N)):
between byte-sized types that is the little-endian memory image, a memcpy;
otherwise the source is packed into a byte buffer and the result unpacked
from it.
"""
from __future__ import annotations

import llvmlite.ir as ir

from ..ir import vm
from .cpu_memory import read_bits, write_bits
from .cpu_registry import register_lowering
from .cpu_types import I8, I64, row_major_strides, storage_bytes, storage_type

CPU = "cpu"


def _size(t) -> int:
    n = 1
    for d in t.shape:
        n *= d
    return n


def copy_tile(cg, src, dst) -> None:
    cg.memcpy(cg.tile(dst), cg.tile(src), _size(src) * storage_bytes(src.dtype))


@register_lowering(vm.Assign, CPU)
def lower_assign(cg, s: vm.Assign) -> None:
    copy_tile(cg, s.x, s.out)


@register_lowering(vm.Annotate, CPU)
def lower_annotate(cg, s: vm.Annotate) -> None:
    copy_tile(cg, s.x, s.out)


@register_lowering(vm.ConvertLayout, CPU)
def lower_convert_layout(cg, s: vm.ConvertLayout) -> None:
    # A CPU block is one thread: every layout holds the whole tile, so a
    # layout conversion is a plain copy.
    copy_tile(cg, s.x, s.out)


@register_lowering(vm.Reshape, CPU)
def lower_reshape(cg, s: vm.Reshape) -> None:
    copy_tile(cg, s.x, s.out)


def _byte_sized(dt) -> bool:
    return dt.nbits in (8, 16, 32, 64)


@register_lowering(vm.View, CPU)
def lower_view(cg, s: vm.View) -> None:
    b = cg.b
    src, dst = s.x.dtype, s.out.dtype
    nbytes = (_size(s.x) * src.nbits + 7) // 8
    if _byte_sized(src) and _byte_sized(dst):
        cg.memcpy(cg.tile(s.out), cg.tile(s.x), nbytes)
        return
    buf = cg.alloca(I8, max(2, nbytes), name=f"{s.out.name}.bits")
    size = ir.Constant(I64, nbytes)
    if _byte_sized(src):
        cg.memcpy(buf, cg.tile(s.x), nbytes)
    else:
        cg.memset_zero(buf, nbytes)
        x = cg.tile(s.x)
        mask = ir.Constant(I64, src.mask)

        def pack(flat, index):
            raw = b.load(b.gep(x, [flat]))
            bits = b.and_(b.zext(raw, I64) if raw.type.width < 64 else raw, mask)
            write_bits(cg, buf, size, src.nbits, flat, bits, atomic=False)
        cg.elements(s.x.shape, pack)
    if _byte_sized(dst):
        cg.memcpy(cg.tile(s.out), buf, nbytes)
        return
    out = cg.tile(s.out)
    st = storage_type(dst)

    def unpack(flat, index):
        bits = read_bits(cg, buf, size, dst.nbits, flat)
        if dst.is_integer:
            value = cg.conv.to_storage(cg.conv.wrap(bits, dst) if dst.is_signed else bits, dst)
        else:
            value = bits if st.width == 64 else b.trunc(bits, st)
        b.store(value, b.gep(out, [flat]))
    cg.elements(s.out.shape, unpack)


def _copy(cg, src, sflat: ir.Value, dst, dflat: ir.Value) -> None:
    b = cg.b
    b.store(b.load(b.gep(cg.tile(src), [sflat])), b.gep(cg.tile(dst), [dflat]))


def _flat_of(cg, index: list, strides) -> ir.Value:
    flat = ir.Constant(I64, 0)
    for i, st in zip(index, strides):
        flat = cg.b.add(flat, cg.b.mul(i, ir.Constant(I64, st)))
    return flat


@register_lowering(vm.Transpose, CPU)
def lower_transpose(cg, s: vm.Transpose) -> None:
    in_strides = row_major_strides(s.x.shape)
    strides = [in_strides[p] for p in s.perm]
    cg.elements(s.out.shape, lambda flat, index: _copy(cg, s.x, _flat_of(cg, index, strides), s.out, flat))


@register_lowering(vm.BroadcastTo, CPU)
def lower_broadcast_to(cg, s: vm.BroadcastTo) -> None:
    cg.elements(s.out.shape, lambda flat, index: _copy(
        cg, s.x, cg.broadcast_flat(s.x.shape, s.out.shape, index), s.out, flat))


@register_lowering(vm.Slice, CPU)
def lower_slice(cg, s: vm.Slice) -> None:
    in_strides = row_major_strides(s.x.shape)
    base = ir.Constant(I64, sum(a * st for a, st in zip(s.starts, in_strides)))
    cg.elements(s.out.shape, lambda flat, index: _copy(
        cg, s.x, cg.b.add(_flat_of(cg, index, in_strides), base), s.out, flat))


@register_lowering(vm.Concat, CPU)
def lower_concat(cg, s: vm.Concat) -> None:
    out_strides = row_major_strides(s.out.shape)
    start = 0
    for part in s.parts:
        offset = ir.Constant(I64, start * out_strides[s.dim])

        def each(flat, index, part=part, offset=offset):
            _copy(cg, part, flat, s.out, cg.b.add(_flat_of(cg, index, out_strides), offset))
        cg.elements(part.shape, each)
        start += part.shape[s.dim]
