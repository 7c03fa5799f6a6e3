"""Scalar arithmetic on CPU compute values (i64, float, double) with TL's rules.

Used for both block-uniform scalar expressions and tile elements, so the two
agree with each other and with the interpreter (backends/interp_values.py):
floor division and modulo (numpy's for floats), shifts that saturate instead
of being undefined, NaN-propagating min/max, unsigned comparison, division
and shifts for u64, and a status flag instead of a crash on integer division
by zero. Only `accumulate` and `product` carry fast-math flags: sums and dot
products are the only places where reassociation is allowed.
"""
from __future__ import annotations

import llvmlite.ir as ir

from ..runtime.cpu_launch import STATUS_DIV_ZERO
from .cpu_types import F64, I1, I64, is_float_type

_FAST = ("reassoc", "contract")
_CMP = {"LT": "<", "LE": "<=", "GT": ">", "GE": ">=", "EQ": "==", "NE": "!="}
COMPARISONS = frozenset(_CMP)


class Math:
    def __init__(self, builder: ir.IRBuilder, intrinsic, flag_error):
        self.b = builder
        self.intrinsic = intrinsic
        self.flag_error = flag_error   # (i1 condition, status code) -> None

    def truth(self, v: ir.Value) -> ir.Value:
        """x != 0 as i1 (NaN is true)."""
        if v.type == I1:
            return v
        if is_float_type(v.type):
            return self.b.fcmp_unordered("!=", v, ir.Constant(v.type, 0.0))
        return self.b.icmp_signed("!=", v, ir.Constant(v.type, 0))

    def _from_bool(self, c: ir.Value) -> ir.Value:
        return self.b.zext(c, I64)

    def _safe_divisor(self, d: ir.Value) -> ir.Value:
        zero = self.b.icmp_signed("==", d, ir.Constant(I64, 0))
        self.flag_error(zero, STATUS_DIV_ZERO)
        return self.b.select(zero, ir.Constant(I64, 1), d)

    def _call(self, name: str, *args: ir.Value) -> ir.Value:
        return self.b.call(self.intrinsic(name, args[0].type), list(args))

    # ------------------------------------------------------------ division
    def floor_div(self, a, c, unsigned: bool = False):
        b = self.b
        if is_float_type(a.type):
            return self._call("llvm.floor", b.fdiv(a, c))
        c = self._safe_divisor(c)
        if unsigned:
            return b.udiv(a, c)
        q, r = b.sdiv(a, c), b.srem(a, c)
        fix = b.and_(b.icmp_signed("!=", r, ir.Constant(I64, 0)),
                     b.icmp_signed("!=", b.icmp_signed("<", r, ir.Constant(I64, 0)),
                                   b.icmp_signed("<", c, ir.Constant(I64, 0))))
        return b.sub(q, b.zext(fix, I64))

    def mod(self, a, c, unsigned: bool = False):
        b = self.b
        if is_float_type(a.type):
            return self._float_mod(a, c)
        if unsigned:
            return b.urem(a, self._safe_divisor(c))
        return b.sub(a, b.mul(self.floor_div(a, c), self._safe_divisor(c)))

    def _float_mod(self, a, c):
        """numpy's float %: fmod, moved to the divisor's sign; a zero result
        takes the divisor's sign."""
        b = self.b
        zero = ir.Constant(a.type, 0.0)
        r = b.frem(a, c)
        nonzero = b.fcmp_unordered("!=", r, zero)
        fix = b.icmp_unsigned("!=", b.fcmp_ordered("<", c, zero), b.fcmp_ordered("<", r, zero))
        moved = b.select(fix, b.fadd(r, c), r)
        return b.select(nonzero, moved, self._call("llvm.copysign", zero, c))

    def cdiv(self, a, c, unsigned: bool = False):
        b = self.b
        if is_float_type(a.type):
            return self._call("llvm.ceil", b.fdiv(a, c))
        if unsigned:
            c = self._safe_divisor(c)
            q = b.udiv(a, c)
            return b.add(q, b.zext(b.icmp_unsigned("!=", b.urem(a, c), ir.Constant(I64, 0)), I64))
        return b.neg(self.floor_div(b.neg(a), c))

    def shift(self, a, c, left: bool, unsigned: bool = False):
        b = self.b
        big = b.icmp_unsigned(">=", c, ir.Constant(I64, 64))   # negative amounts too
        amount = b.select(big, ir.Constant(I64, 63), c)
        if left:
            return b.select(big, ir.Constant(I64, 0), b.shl(a, amount))
        return b.lshr(a, amount) if unsigned else b.ashr(a, amount)

    def minmax(self, a, c, is_min: bool, unsigned: bool = False):
        b = self.b
        if is_float_type(a.type):
            return self._call("llvm.minimum" if is_min else "llvm.maximum", a, c)
        cmp = b.icmp_unsigned if unsigned else b.icmp_signed
        return b.select(cmp("<" if is_min else ">", a, c), a, c)

    # ----------------------------------------------------------- operators
    def binary(self, name: str, a: ir.Value, c: ir.Value, unsigned: bool = False) -> ir.Value:
        """`name` is the op's enum name (ADD, FLOOR_DIV, LT, MIN ...); a and c
        have one compute type; `unsigned` selects u64 semantics."""
        b = self.b
        fl = is_float_type(a.type)
        if name in _CMP:
            op = _CMP[name]
            if fl:
                cond = b.fcmp_unordered(op, a, c) if op == "!=" else b.fcmp_ordered(op, a, c)
            else:
                cond = (b.icmp_unsigned if unsigned else b.icmp_signed)(op, a, c)
            return self._from_bool(cond)
        simple = {
            "ADD": (b.fadd, b.add), "SUB": (b.fsub, b.sub), "MUL": (b.fmul, b.mul),
            "BIT_AND": (None, b.and_), "BIT_OR": (None, b.or_), "BIT_XOR": (None, b.xor),
        }
        if name in simple:
            return simple[name][0 if fl else 1](a, c)
        if name == "DIV":
            return b.fdiv(a, c) if fl else self.floor_div(a, c, unsigned)
        if name == "FLOOR_DIV":
            return self.floor_div(a, c, unsigned)
        if name == "MOD":
            return self.mod(a, c, unsigned)
        if name == "CDIV":
            return self.cdiv(a, c, unsigned)
        if name in ("SHL", "SHR"):
            return self.shift(a, c, name == "SHL", unsigned)
        if name in ("MIN", "MAX"):
            return self.minmax(a, c, name == "MIN", unsigned)
        if name in ("AND", "OR"):
            x, y = self.truth(a), self.truth(c)
            return self._from_bool(b.and_(x, y) if name == "AND" else b.or_(x, y))
        raise NotImplementedError(name)

    def unary(self, name: str, a: ir.Value) -> ir.Value:
        b = self.b
        fl = is_float_type(a.type)
        if name == "NEG":
            return b.fneg(a) if fl else b.neg(a)
        if name == "INVERT":
            return b.xor(a, ir.Constant(I64, -1))
        if name == "NOT":
            return self._from_bool(b.not_(self.truth(a)))
        if name == "ABS":
            if fl:
                return self._call("llvm.fabs", a)
            return b.select(b.icmp_signed("<", a, ir.Constant(I64, 0)), b.neg(a), a)
        if not fl:
            a = b.sitofp(a, F64)
        if name == "RSQRT":
            return b.fdiv(ir.Constant(a.type, 1.0), self._call("llvm.sqrt", a))
        return self._call("llvm." + name.lower(), a)

    def where(self, cond: ir.Value, x: ir.Value, y: ir.Value) -> ir.Value:
        return self.b.select(self.truth(cond), x, y)

    def accumulate(self, acc: ir.Value, value: ir.Value) -> ir.Value:
        """acc + value where reassociation is allowed (sums and dot)."""
        if is_float_type(acc.type):
            return self.b.fadd(acc, value, flags=_FAST)
        return self.b.add(acc, value)

    def product(self, a: ir.Value, c: ir.Value) -> ir.Value:
        if is_float_type(a.type):
            return self.b.fmul(a, c, flags=_FAST)
        return self.b.mul(a, c)


def is_true(builder: ir.IRBuilder, v: ir.Value) -> ir.Value:
    if v.type == I1:
        return v
    if is_float_type(v.type):
        return builder.fcmp_unordered("!=", v, ir.Constant(v.type, 0.0))
    return builder.icmp_signed("!=", v, ir.Constant(v.type, 0))
