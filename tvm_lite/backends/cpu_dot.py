"""CPU lowering of `dot`: out = acc + a @ b, in the accumulator's precision.

The operands are decoded once into arrays of the compute type; the product
then runs in register blocks (`_blocked_gemm`): only the multiply-add carries
reassociation flags, so LLVM forms FMAs and vectorizes along rows of b.

An operand computed by a fused element-wise loop right before the dot is
decoded in that loop (cpu_compute.lower_fused), not in a pass of its own.

An f32 accumulator with operands that are exactly floats (f32, f16, bf16,
f8, narrower) sums in float, in place in the output tile: the order of the
additions differs from the interpreter's exact sum, as on every real
target. Other accumulators (f64, f16, integers) sum in double or i64 and
round once at the end.
"""
from __future__ import annotations

import llvmlite.ir as ir

from ..ir import vm
from .cpu_registry import register_lowering
from .cpu_types import F32, F64, I64, compute_type, fits_f32
from .llvm import host

CPU = "cpu"


def _tiles(total: int, block: int) -> list[tuple[int, int, int]]:
    """(start, stop, step) ranges covering [0, total): whole blocks, then the rest."""
    main = total - total % block
    out = [(0, main, block)] if main else []
    if total % block:
        out.append((main, total, total % block))
    return out


def _blocked_gemm(cg, a_buf, b_buf, acc, m: int, k: int, n: int, ty: ir.Type) -> None:
    """acc[m, n] += a[m, k] @ b[k, n], register-blocked.

    For each block of IB rows and JB columns the k loop is outermost, and the
    IB x JB accumulators are invariant in it: LLVM unrolls the constant row
    loop, vectorizes the column loop and keeps the accumulators in vector
    registers across k (IB*JB/lanes registers: 16 with AVX-512, 8 with AVX2),
    so each FMA costs a fraction of a load. Edge blocks use the remainders as
    their (constant) sizes.
    """
    b = cg.b
    lanes = max(1, host().simd_bits // (32 if ty == F32 else 64))
    ib_size = 4
    jb_size = lanes * (4 if host().simd_bits >= 512 else 2)

    def c(v):
        return ir.Constant(I64, v)

    for i_start, i_stop, ib in _tiles(m, ib_size):
        for j_start, j_stop, jb in _tiles(n, jb_size):
            def column_block(j0, i_start=i_start, i_stop=i_stop, ib=ib, jb=jb):
                def row_block(i0):
                    def step(kk):
                        b_row = b.add(b.mul(kk, c(n)), j0)

                        def row(ii):
                            i = b.add(i0, ii)
                            av = b.load(b.gep(a_buf, [b.add(b.mul(i, c(k)), kk)]))
                            c_row = b.add(b.mul(i, c(n)), j0)

                            def column(j):
                                bv = b.load(b.gep(b_buf, [b.add(b_row, j)]))
                                ptr = b.gep(acc, [b.add(c_row, j)])
                                b.store(cg.math.accumulate(b.load(ptr), cg.math.product(av, bv)), ptr)
                            cg.loop(0, jb, column, "j")
                        cg.loop(0, ib, row, "ii")
                    cg.loop(0, k, step, "k")
                cg.strided_loop(i_start, i_stop, ib, row_block, "ib")
            cg.strided_loop(j_start, j_stop, jb, column_block, "jb")


def operand_type(s: vm.Dot) -> ir.Type:
    """The type the product is computed in (see the module docstring)."""
    if s.out.dtype.name == "f32" and fits_f32(s.a.dtype) and fits_f32(s.b.dtype):
        return F32
    ty = compute_type(s.out.dtype)
    if ty == I64 and (s.a.dtype.is_float or s.b.dtype.is_float):
        return F64
    return ty


def decode_element(cg, t, stored: ir.Value, ty: ir.Type) -> ir.Value:
    """A stored element of operand t as a value of the product's type."""
    v = cg.conv.to_compute(stored, t.dtype, ty if t.dtype.is_float or ty == I64 else I64)
    if v.type != ty:
        v = cg.b.sitofp(v, ty) if t.dtype.is_signed else cg.b.uitofp(v, ty)
    return v


def operand_buffer(cg, t, ty: ir.Type) -> ir.Value:
    return cg.alloca(ty, max(2, t.shape[0] * t.shape[1]), name=f"{t.name}.{ty}")


def _decoded(cg, t, ty: ir.Type, reuse: bool = True) -> ir.Value:
    """t's elements as values of type ty in a scratch array (decoded once),
    or the array a fused element-wise loop already filled (cg.decoded)."""
    ready = cg.decoded.get((id(t), str(ty))) if reuse else None
    if ready is not None:
        return ready
    b = cg.b
    buf = operand_buffer(cg, t, ty)
    tile = cg.tile(t)
    cg.elements(t.shape, lambda flat, index: b.store(decode_element(cg, t, b.load(b.gep(tile, [flat])), ty),
                                                     b.gep(buf, [flat])))
    return buf


@register_lowering(vm.Dot, CPU)
def lower_dot(cg, s: vm.Dot) -> None:
    b = cg.b
    (m, k), n = s.a.shape, s.b.shape[1]
    ty = operand_type(s)
    single = ty == F32
    a_buf = _decoded(cg, s.a, ty)
    b_buf = _decoded(cg, s.b, ty)
    if single:
        acc = cg.tile(s.out)          # f32 storage: accumulate in place
        cg.memcpy(acc, cg.tile(s.acc), m * n * 4)
    else:
        acc = _decoded(cg, s.acc, ty, reuse=False)   # written: never an operand's array
    cg.decoded.clear()           # filled for this dot only
    _blocked_gemm(cg, a_buf, b_buf, acc, m, k, n, ty)
    if not single:
        cg.elements(s.out.shape, lambda flat, index: cg.write(s.out, flat, b.load(b.gep(acc, [flat]))))
