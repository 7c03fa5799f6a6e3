"""Explicit LLVM vectors for element-wise f32 chains on the CPU.

Assumes: `group` is a run of element-wise instructions that cpu_codegen would
otherwise lower as one scalar loop nest (cpu_compute.lower_fused).
Guarantees: the same stored values, bit for bit, computed `width` elements
at a time with LLVM vector instructions, where
* every instruction is an f32 element-wise op that cpu_compute computes in
  float (element_compute_type is F32): + - * / sqrt (with the f32 overflow
  saturation of cpu_compute._saturate_overflow), and the exact min, max,
  neg, abs;
* every operand is an f32 tile of the output's shape (no broadcast) or an
  f32 scalar (splatted once, before the loop);
* no dot takes its operands from the group's loop.
The width is the run of slots that the layout algebra's contiguity query
finds consecutive in memory (cpu_memory.vector_width: the tile's CPU layout,
all local), capped at the host's SIMD width. The run divides the tile's
element count, so whole tiles are covered by vectors and no tail is left;
a tile whose run is 1 keeps the scalar loop.
"""
from __future__ import annotations

import math

import llvmlite.ir as ir

from ..ir import vm
from .cpu_compute import element_compute_type
from .cpu_memory import vector_width
from .cpu_types import F32, I32

_E = vm.ElementOp
# Ops whose scalar lowering in float is a single IEEE operation (+ saturation).
_ROUNDED = {_E.ADD: "fadd", _E.SUB: "fsub", _E.MUL: "fmul", _E.DIV: "fdiv"}
_INTRINSIC = {_E.MIN: "llvm.minimum", _E.MAX: "llvm.maximum", _E.ABS: "llvm.fabs", _E.SQRT: "llvm.sqrt"}
_SUPPORTED = frozenset(_ROUNDED) | frozenset(_INTRINSIC) | {_E.NEG}


def _is_f32_operand(a, shape) -> bool:
    if isinstance(a, vm.Expr):
        return a.dtype.name == "f32"
    return a.dtype.name == "f32" and tuple(a.shape) == tuple(shape)


def chain_width(group: list, dot_operands) -> int:
    """Elements per vector for `group`, or 1 when it keeps the scalar loop."""
    if dot_operands or not group:
        return 1
    shape = tuple(group[0].out.shape)
    for s in group:
        if not isinstance(s, vm.Elementwise) or s.op not in _SUPPORTED or s.out.dtype.name != "f32" \
                or element_compute_type(s) != F32 or not all(_is_f32_operand(a, shape) for a in s.args):
            return 1
    return vector_width(shape, group[0].out.dtype)


def _splat(b, x: ir.Value, vty: ir.VectorType) -> ir.Value:
    one = b.insert_element(ir.Constant(vty, ir.Undefined), x, ir.Constant(I32, 0))
    return b.shuffle_vector(one, ir.Constant(vty, ir.Undefined), ir.Constant(ir.VectorType(I32, vty.count),
                                                                             [0] * vty.count))


def _constant(vty: ir.VectorType, value: float) -> ir.Constant:
    return ir.Constant(vty, [value] * vty.count)


def _saturate(cg, s: vm.Elementwise, vals: list, v: ir.Value) -> ir.Value:
    """cpu_compute._saturate_overflow on vectors: finite operands whose f32
    result overflowed to ±inf give ±max (a division by zero stays infinite)."""
    if s.op is _E.SQRT:
        return v
    b = cg.b
    vty = v.type
    fabs = cg.intrinsic("llvm.fabs", vty)
    inf = _constant(vty, float("inf"))
    cond = b.fcmp_ordered("==", b.call(fabs, [v]), inf)
    for x in vals:
        cond = b.and_(cond, b.fcmp_ordered("<", b.call(fabs, [x]), inf))
    if s.op is _E.DIV:
        cond = b.and_(cond, b.fcmp_unordered("!=", vals[1], _constant(vty, 0.0)))
    limit = b.call(cg.intrinsic("llvm.copysign", vty), [_constant(vty, s.out.dtype.max), v])
    return b.select(cond, limit, v)


def _apply(cg, s: vm.Elementwise, vals: list) -> ir.Value:
    b = cg.b
    if s.op in _ROUNDED:
        return _saturate(cg, s, vals, getattr(b, _ROUNDED[s.op])(vals[0], vals[1]))
    if s.op is _E.NEG:
        return b.fneg(vals[0])
    v = b.call(cg.intrinsic(_INTRINSIC[s.op], vals[0].type), vals)
    return _saturate(cg, s, vals, v) if s.op is _E.SQRT else v


def lower_chain(cg, group: list, keep: set, width: int) -> None:
    """The group's loop over whole vectors; only the tiles in `keep` are stored."""
    b = cg.b
    vty = ir.VectorType(F32, width)
    vptr = ir.PointerType(vty)
    scalars = {(id(s), i): _splat(b, b.fptrunc(cg.scalar(a), F32), vty)   # exact: a is an f32 value
               for s in group for i, a in enumerate(s.args) if isinstance(a, vm.Expr)}
    count = math.prod(group[0].out.shape) // width

    def chunk(q):
        flat = b.mul(q, ir.Constant(q.type, width))
        values: dict = {}

        def operand(s, i, a):
            if isinstance(a, vm.Expr):
                return scalars[(id(s), i)]
            if id(a) in values:
                return values[id(a)]
            return b.load(b.bitcast(cg.element_ptr(a, flat), vptr), align=4)
        for s in group:
            v = _apply(cg, s, [operand(s, i, a) for i, a in enumerate(s.args)])
            values[id(s.out)] = v
            if id(s.out) in keep:
                b.store(v, b.bitcast(cg.element_ptr(s.out, flat), vptr), align=4)
    cg.loop(0, count, chunk, "vec")


__all__ = ["chain_width", "lower_chain"]
