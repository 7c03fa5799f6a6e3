"""CPU lowering of tile creation, casts, element-wise operations and reductions.

Each instruction is a loop nest over its output elements that reads operands
as compute values, applies the scalar rules of cpu_math and writes the result
back rounded (floats) or wrapped (integers) to the output dtype.

Choice of compute type (the result must equal the interpreter's, which
computes in float64 and rounds once):
* float instead of double where that provably gives the same result, which
  doubles the SIMD width: exact operations (negation, abs, min, max, select,
  comparisons) on operands that are all exactly floats; and + - * / sqrt
  when the output is a format no wider than f16's (at most 5 exponent and 10
  mantissa bits) and every operand's format is contained in it: products are
  then exact in float, and for the others float's 24 bits are >= 2p+2, which
  makes rounding through float first innocuous (Figueroa's theorem);
* float for + - * / sqrt of f32 operands into an f32 result: IEEE float
  arithmetic is correctly rounded, as rounding the double result is (24-bit
  operands again), except where float overflows to inf and the interpreter
  saturates to ±max: finite operands giving inf (not a division by zero) are
  saturated explicitly (`_saturate_overflow`);
* double for every other float operation, i64 for integers.
"""
from __future__ import annotations

import llvmlite.ir as ir

from ..ir import vm
from .cpu_registry import register_lowering
from .cpu_types import F32, F64, I64, fits_f32, is_u64

CPU = "cpu"
_E = vm.ElementOp
_EXACT_OPS = frozenset({_E.NEG, _E.ABS, _E.MIN, _E.MAX, _E.WHERE, _E.LT, _E.LE, _E.GT, _E.GE, _E.EQ, _E.NE})
_ROUNDED_OPS = frozenset({_E.ADD, _E.SUB, _E.MUL, _E.DIV, _E.SQRT})


def _f16_sized(dt) -> bool:
    return dt.is_float and dt.exponent_bits <= 5 and dt.mantissa_bits <= 10


def element_compute_type(s: vm.Elementwise) -> ir.Type | None:
    """F32 where float arithmetic gives the interpreter's result (module doc),
    else None: the generic rule (double for floats, i64 for integers)."""
    values = s.args[1:] if s.op is _E.WHERE else s.args
    dts = [a.dtype for a in values]
    if not all(d.is_float for d in dts):
        return None
    if s.op in _EXACT_OPS and all(fits_f32(d) for d in dts):
        return F32
    out = s.out.dtype
    if s.op in _ROUNDED_OPS and _f16_sized(out) and all(
            d.exponent_bits <= out.exponent_bits and d.mantissa_bits <= out.mantissa_bits for d in dts):
        return F32
    if s.op in _ROUNDED_OPS and out.name == "f32" and all(fits_f32(d) for d in dts):
        return F32
    return None


def _saturate_overflow(cg, s: vm.Elementwise, vals: list, v: ir.Value) -> ir.Value:
    """Float + - * / of finite operands that overflowed to ±inf -> ±max (f32
    results; a division by zero stays infinite, as in double)."""
    if s.out.dtype.name != "f32" or s.op is _E.SQRT:
        return v
    b = cg.b
    inf = ir.Constant(F32, float("inf"))

    def fabs(x):
        return b.call(cg.intrinsic("llvm.fabs", F32), [x])
    cond = b.fcmp_ordered("==", fabs(v), inf)
    for x in vals:
        cond = b.and_(cond, b.fcmp_ordered("<", fabs(x), inf))
    if s.op is _E.DIV:
        cond = b.and_(cond, b.fcmp_unordered("!=", vals[1], ir.Constant(F32, 0.0)))
    limit = b.call(cg.intrinsic("llvm.copysign", F32), [ir.Constant(F32, s.out.dtype.max), v])
    return b.select(cond, limit, v)


# ------------------------------------------------------------------ creation


@register_lowering(vm.Full, CPU)
def lower_full(cg, s: vm.Full) -> None:
    value = cg.canonical(cg.scalar(s.value), s.value.dtype, s.out.dtype)
    stored = cg.conv.to_storage(value, s.out.dtype)
    tile = cg.tile(s.out)
    cg.elements(s.out.shape, lambda flat, index: cg.b.store(stored, cg.b.gep(tile, [flat])))


@register_lowering(vm.Arange, CPU)
def lower_arange(cg, s: vm.Arange) -> None:
    start = cg.scalar(s.start)
    cg.elements(s.out.shape, lambda flat, index: cg.write(s.out, flat, cg.b.add(start, flat)))


def _tile_reader(cg, values: dict | None):
    """read(tile, flat, ty): a tile element as a compute value, from an
    element computed earlier in the same fused loop when there is one."""
    def read(t, flat, ty):
        if values is not None and id(t) in values:
            return cg.conv.to_compute(values[id(t)], t.dtype, ty)
        return cg.read(t, flat, ty)
    return read


def prepare_cast(cg, s: vm.Cast):
    """The cast rule: floats round once (nearest even, saturating); float -> int
    truncates and saturates (NaN -> 0); int -> int wraps. Returns
    element(flat, index, read) -> the stored value of out[flat]."""
    src, dst = s.x.dtype, s.out.dtype
    read_type = (F32 if fits_f32(src) else F64) if src.is_float else I64

    def element(flat, index, read):
        v = read(s.x, flat, read_type)
        if dst.is_float and src.is_integer:
            v = cg.conv.int_to_float(v, src, dst)
        return cg.conv.to_storage(v, dst)
    return element


def prepare_elementwise(cg, s: vm.Elementwise):
    """Scalar operands are evaluated here, once; returns
    element(flat, index, read) -> the stored value of out[flat]."""
    b = cg.b
    narrow = element_compute_type(s)
    operand_dtypes = [a.dtype for a in s.args]
    floats = any(d.is_float for d in (operand_dtypes[1:] if s.op is _E.WHERE else operand_dtypes))
    unsigned = any(is_u64(d) for d in operand_dtypes)

    def as_compute(v, dt, is_condition: bool):
        if is_condition:
            return v
        if narrow is not None:
            return v if v.type == F32 else b.fptrunc(v, F32)     # exact: the value is a float
        if floats and v.type == I64:
            return b.uitofp(v, F64) if is_u64(dt) else b.sitofp(v, F64)
        return v

    def read_type(dt, is_condition: bool):
        if is_condition or dt.is_integer:
            return I64
        return narrow or F64

    scalars = {i: as_compute(cg.scalar(a), a.dtype, s.op is _E.WHERE and i == 0)
               for i, a in enumerate(s.args) if isinstance(a, vm.Expr)}

    def element(flat, index, read):
        vals = []
        for i, a in enumerate(s.args):
            if i in scalars:
                vals.append(scalars[i])
                continue
            cond = s.op is _E.WHERE and i == 0
            v = read(a, cg.broadcast_flat(a.shape, s.out.shape, index), read_type(a.dtype, cond))
            vals.append(as_compute(v, a.dtype, cond))
        if s.op is _E.WHERE:
            v = cg.math.where(*vals)
        elif s.op.arity == 1:
            v = cg.math.unary(s.op.name, vals[0])
        else:
            v = cg.math.binary(s.op.name, vals[0], vals[1], unsigned)
        if narrow is not None and s.op in _ROUNDED_OPS:
            v = _saturate_overflow(cg, s, vals, v)
        return cg.conv.to_storage(v, s.out.dtype)
    return element


_PREPARE = {vm.Cast: prepare_cast, vm.Elementwise: prepare_elementwise}


def _lower_pointwise(cg, s) -> None:
    element = _PREPARE[type(s)](cg, s)
    read = _tile_reader(cg, None)
    tile = cg.tile(s.out)
    cg.elements(s.out.shape,
                lambda flat, index: cg.b.store(element(flat, index, read), cg.b.gep(tile, [flat])))


@register_lowering(vm.Cast, CPU)
def lower_cast(cg, s: vm.Cast) -> None:
    _lower_pointwise(cg, s)


@register_lowering(vm.Elementwise, CPU)
def lower_elementwise(cg, s: vm.Elementwise) -> None:
    _lower_pointwise(cg, s)


def fusible(s) -> bool:
    return type(s) in _PREPARE


def lower_fused(cg, group: list, keep: set, dot_operands: set) -> None:
    """Consecutive casts and element-wise instructions with one output shape
    as one loop nest: each element goes through the whole chain in registers.
    Only the outputs in `keep` (ids of tiles used outside the group) are
    stored; the others never exist in memory. Results are those of the
    separate instructions: every value is still rounded to its dtype.

    `dot_operands` holds (tile, dot) pairs for outputs that the next
    instruction, a dot, multiplies: they are also decoded into the dot's
    operand array here (registered in cg.decoded), saving the dot a pass."""
    from .cpu_dot import decode_element, operand_buffer, operand_type
    elements = [_PREPARE[type(s)](cg, s) for s in group]
    tiles = {id(s.out): cg.tile(s.out) for s in group if id(s.out) in keep}
    decoded = {}
    for t, dot in dot_operands:
        ty = operand_type(dot)
        decoded[id(t)] = (t, ty, operand_buffer(cg, t, ty))
        cg.decoded[(id(t), str(ty))] = decoded[id(t)][2]

    def each(flat, index):
        values: dict = {}
        read = _tile_reader(cg, values)
        for s, element in zip(group, elements):
            stored = element(flat, index, read)
            values[id(s.out)] = stored
            if id(s.out) in tiles:
                cg.b.store(stored, cg.b.gep(tiles[id(s.out)], [flat]))
            if id(s.out) in decoded:
                t, ty, buf = decoded[id(s.out)]
                cg.b.store(decode_element(cg, t, stored, ty), cg.b.gep(buf, [flat]))
    cg.elements(group[0].out.shape, each)


# ---------------------------------------------------------------- reductions


@register_lowering(vm.Reduce, CPU)
def lower_reduce(cg, s: vm.Reduce) -> None:
    """Sums accumulate in double (reassociation allowed: they vectorize) or
    i64; min and max are exact in any type that holds the values."""
    b = cg.b
    dt = s.x.dtype
    shape = tuple(s.x.shape)
    outer, n, inner = _prod(shape[:s.dim]), shape[s.dim], _prod(shape[s.dim + 1:])
    if s.op is vm.ReduceOp.SUM or not dt.is_float:
        ty = F64 if dt.is_float else I64
    else:
        ty = F32 if fits_f32(dt) else F64
    unsigned = is_u64(dt)

    def combine(acc, v):
        if s.op is vm.ReduceOp.SUM:
            return cg.math.accumulate(acc, v)
        return cg.math.minmax(acc, v, s.op is vm.ReduceOp.MIN, unsigned)

    def c(v):
        return ir.Constant(I64, v)

    if inner == 1:
        acc = cg.alloca(ty, name="red.acc")

        def row(o):
            base = b.mul(o, c(n))
            b.store(cg.read(s.x, base, ty), acc)
            cg.loop(1, n, lambda r: b.store(combine(b.load(acc), cg.read(s.x, b.add(base, r), ty)), acc), "r")
            cg.write(s.out, o, b.load(acc))
        cg.loop(0, outer, row, "ro")
        return
    buf = cg.alloca(ty, inner, name="red.acc")

    def block(o):
        base = b.mul(o, c(n * inner))
        cg.loop(0, inner, lambda i: b.store(cg.read(s.x, b.add(base, i), ty), b.gep(buf, [i])), "ri")

        def step(r):
            rbase = b.add(base, b.mul(r, c(inner)))

            def each(i):
                ptr = b.gep(buf, [i])
                b.store(combine(b.load(ptr), cg.read(s.x, b.add(rbase, i), ty)), ptr)
            cg.loop(0, inner, each, "ri")
        cg.loop(1, n, step, "r")
        obase = b.mul(o, c(inner))
        cg.loop(0, inner, lambda i: cg.write(s.out, b.add(obase, i), b.load(b.gep(buf, [i]))), "ri")
    cg.loop(0, outer, block, "ro")


def _prod(dims) -> int:
    out = 1
    for d in dims:
        out *= d
    return out


__all__ = ["element_compute_type", "fusible", "lower_fused"]
